"""A single-device attention method: ``fn(q, k, v)`` for a direction, gated against the method's float64
reference; FLOPs from the method's own ``flops(problem, direction)``; decode steps report KV bytes read."""

from __future__ import annotations

import json
from typing import Callable, Optional

import torch

from harness.catalog import get_method
from harness.execution.executor import Built, Executor
from harness.execution.gate import check_method, run_seed
from harness.execution.inputs import direction_call, make_inputs, problem_for
from harness.interfaces import Problem
from harness.run import Run


def decode_metrics(problem: Problem, method) -> tuple[Callable[[float], dict[str, float]], dict, dict]:
    """(metric function of the step's seconds, units, better-direction) of a decode step: time per token,
    tokens per second, the KV bytes one step reads, the cache size and the read bandwidth."""
    read = method.decode_bytes(problem)
    cache = method.cache_bytes(problem)
    tokens = problem.decode_tokens * problem.batch

    def metrics(seconds: float) -> dict[str, float]:
        return {"ms_per_token": seconds * 1e3 / problem.decode_tokens, "tokens_per_s": tokens / seconds,
                "kv_bytes_read": read, "cache_bytes": cache, "read_GBps": read / seconds / 1e9}

    units = {"ms_per_token": "ms", "tokens_per_s": "tokens/s", "kv_bytes_read": "B", "cache_bytes": "B",
             "read_GBps": "GB/s"}
    better = {"tokens_per_s": "higher", "read_GBps": "higher"}
    return metrics, units, better


class MethodCase:
    def __init__(self, run: Run):
        self.run = run
        self.method = get_method(run.method)

    def unavailable(self) -> Optional[str]:
        return self.method.unavailable_reason()

    def problem(self, executor: Executor) -> Problem:
        return problem_for(self.run, torch.device(self.run.device))

    def unsupported(self, problem: Problem) -> Optional[str]:
        run = self.run
        if run.heads_q % run.heads_kv:
            return f"heads_q={run.heads_q} is not a multiple of heads_kv={run.heads_kv}"
        return self.method.unsupported_reason(problem)

    def build(self, problem: Problem, executor: Executor) -> Built:
        run, method = self.run, self.method
        fn = method.build(problem)
        q, k, v = make_inputs(run, problem.device)
        if problem.is_decode:
            q = q[:, problem.q_offset:].contiguous()
        built = Built(
            call=direction_call(fn, q, k, v, run.direction),
            flops=method.flops(problem, run.direction),
            check=lambda: check_method(fn, q, k, v, problem.mask, problem.scale, with_grad=problem.needs_grad,
                                       seed=run_seed(run.key),
                                       reference=method.reference, q_offset=problem.q_offset,
                                       options=problem.options),
            fields=dict(area=problem.area, mask_info=json.dumps(problem.mask.describe()), kernel=method.name,
                        flop_convention=method.flop_convention),
            inputs=(q, k, v), dtype=problem.dtype, device=problem.device,
        )
        if problem.is_decode:
            built.metrics, built.units, built.better = decode_metrics(problem, method)
        return built
