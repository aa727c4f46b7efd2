"""A model-level workload phase: the workload builds its step (weights, caches, optimizer state) outside the
timed region and brings its own FLOP model, correctness check and metrics; on a rank group it gets this rank,
the world size and a byte-counting :class:`~harness.interfaces.Comm`."""

from __future__ import annotations

from typing import Optional

import torch

from harness.catalog import get_method, get_strategy, get_workload, lookup
from harness.execution.executor import Built, Executor
from harness.interfaces import Comm, WorkloadProblem, torch_dtype
from harness.run import Run


class WorkloadCase:
    def __init__(self, run: Run):
        self.run = run
        self.workload = get_workload(run.workload or "")
        self.params = self.workload.resolve_params(run.param_kwargs, lookup)

    def unavailable(self) -> Optional[str]:
        return self.workload.unavailable_reason()

    def problem(self, executor: Executor) -> WorkloadProblem:
        run = self.run
        distributed = executor.world_size > 1
        comm = Comm(native_collectives=run.option_kwargs.get("collectives", "native") == "native") if distributed else None
        return WorkloadProblem(
            run=run, params=self.params, dtype=torch_dtype(run.dtype), device=torch.device(run.device),
            method=get_method, strategy=get_strategy, rank=executor.rank, world_size=executor.world_size,
            comm=comm,
        )

    def unsupported(self, problem: WorkloadProblem) -> Optional[str]:
        return self.workload.unsupported_reason(problem)

    def build(self, problem: WorkloadProblem, executor: Executor) -> Built:
        workload = self.workload
        step = workload.build(problem)
        units = {m.name: m.unit for m in workload.metrics}
        better = {m.name: m.better for m in workload.metrics}
        kernel = step.kernel or workload.named_kernels(problem.params, problem.world_size)
        fields = {"kernel": kernel or None, "flop_convention": workload.flop_convention,
                  "resolved_params": dict(problem.params), "facts": dict(step.fields)}
        return Built(
            call=step.call, flops=step.flops, check=step.check, fields=fields, inputs=step.inputs,
            metrics=step.metrics, units=units, better=better, per_rank=step.per_rank,
            summarize=lambda facts: {"rank_facts": facts} if len(facts) > 1 else {},
            dtype=problem.dtype, device=problem.device,
        )
