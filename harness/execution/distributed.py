"""Rank-side execution of one context-parallel run: the same steps on every rank, the record on rank 0.

:func:`execute_distributed` is called on every rank of an initialised default process group whose size
is ``run.world_size`` (by the Ray scheduler and by :mod:`harness.cluster.launch`). It

1. checks the strategy (availability, capabilities, limits, layout) — deterministic, so every rank agrees
   without communicating, and an impossible combination is ``unsupported`` with its reason;
2. builds the mask and the seeded global inputs identically on every rank, shards them and runs the
   strategy's ``prepare`` (plans, subgroups; ranks then agree that every prepare succeeded);
3. runs the correctness gate: one forward (+ backward with an upstream gradient that is zero outside the
   sampled rows), gathers out/dq/dk/dv and compares on rank 0 with the float64 reference;
4. measures bytes sent per rank over one call (``comm_bytes``, counted by :mod:`harness.interfaces.comm`);
5. times each iteration between barriers on every rank and summarises the RANK-MAX time per iteration
   (median, p20, p80); per-rank medians and CPU times, time and area imbalance (max/mean), peak memory.

TFLOP/s per device = total FLOPs / (rank-max time x world size), via ``fill_measurement``. Failures become
records (``classify_exception``); a rank that fails where the others wait in a collective makes them
time out after the group's timeout (set at ``init_process_group``), never hang forever.
"""

from __future__ import annotations

import json
import math
import statistics
import time
import traceback
from typing import Callable, Optional

import torch
import torch.distributed as dist

from harness.catalog import get_strategy
from harness.interfaces.strategy import CPContext, CPProblem, Strategy, Unsupported
from harness.interfaces.comm import Comm
from harness.execution.executor import (
    base_record, classify_exception, direction_call, fill_measurement, make_inputs, mask_for, outcome,
)
from harness.execution.gate import GateResult, compare, reference_outputs, upstream_gradient
from harness.execution.measure import peak_memory, summarize
from harness.interfaces.reference import sample_rows
from harness.interfaces import Problem, softmax_forward_flops, torch_dtype
from harness.spec import Run


class RankFailed(RuntimeError):
    """Raised on a rank other than 0 whose run failed: the supervisor (Ray actor, local launcher) sees the
    rank's own reason at once, instead of rank 0 waiting out the group timeout and reporting a peer error."""

    def __init__(self, status: str, reason: str):
        super().__init__(f"{status}: {reason}")
        self.status, self.reason = status, reason


def execute_distributed(run: Run, measure_memory: bool = True) -> Optional[dict]:
    """Run ``run`` on this rank; rank 0 returns the record, the other ranks None (see module docstring).

    A rank other than 0 whose run fails raises :class:`RankFailed` with its reason."""
    rank = dist.get_rank()
    record = base_record(run)
    started = time.perf_counter()
    try:
        if dist.get_world_size() != run.world_size:
            raise RuntimeError(f"process group has {dist.get_world_size()} ranks, run wants {run.world_size}")
        _execute(run, record, rank, measure_memory)
    except Exception as e:  # noqa: BLE001 — every failure is a result
        status, reason = failure_status(e)
        outcome(record, status, f"rank {rank}: {reason}")
        record["traceback"] = traceback.format_exc(limit=8)
    record["wall_s"] = time.perf_counter() - started
    if rank != 0 and record["status"] in ("error", "oom", "timeout"):
        raise RankFailed(record["status"], record["reason"])
    return record if rank == 0 else None


def _execute(run: Run, record: dict, rank: int, measure_memory: bool) -> None:
    strategy = get_strategy(run.strategy or "")
    why = strategy.unavailable_reason()
    if why:
        outcome(record, "unavailable", why)
        return
    device = torch.device(run.device)
    problem = CPProblem(run=run, mask=mask_for(run), dtype=torch_dtype(run.dtype), device=device)
    why = strategy.unsupported_reason(problem)
    if why:
        outcome(record, "unsupported", why)
        return
    collectives = run.option_kwargs.get("collectives", "native")
    if collectives not in ("native", "p2p"):
        outcome(record, "unsupported", f"option collectives={collectives!r}; expected 'native' or 'p2p'")
        return
    comm = Comm(native_collectives=collectives == "native")
    ctx = CPContext(problem=problem, rank=rank, comm=comm, positions=strategy.layout(problem))
    q, k, v = make_inputs(run, device)
    local = tuple(strategy.shard(ctx, t) for t in (q, k, v))
    problem_why = _agree(_try_prepare(strategy, ctx))
    if problem_why:
        outcome(record, *problem_why)
        return
    fn: Callable = lambda a, b, c: strategy.attention(ctx, a, b, c)  # noqa: E731
    gate = _gate(strategy, ctx, fn, (q, k, v), local, rank)

    call = direction_call(fn, *local, run.direction)
    comm.reset()
    dist.barrier()
    call()
    sent = comm.sent_bytes
    seconds, cpu = _time(call, run)
    peak, mem_method = peak_memory(call, local, device) if measure_memory else (0, "not measured")
    per_rank = _all_gather(
        {"times": seconds, "cpu": cpu, "sent": sent, "area": ctx.area, "peak": peak, "info": ctx.state.get("info")}
    )
    if rank != 0:
        return
    n = len(seconds)
    rank_max = [max(r["times"][i] for r in per_rank) for i in range(n)]
    stats = summarize(rank_max, max(r["cpu"] for r in per_rank))
    medians = [statistics.median(r["times"]) * 1e3 for r in per_rank]
    areas = [r["area"] for r in per_rank]
    hp = Problem(
        mask=problem.mask, batch=run.batch, seqlen=run.seqlen, heads_q=run.heads_q, heads_kv=run.heads_kv,
        head_dim=run.head_dim, dtype=problem.dtype, device=device, needs_grad=problem.needs_grad,
        options=run.option_kwargs,
    )
    fill_measurement(record, run, hp, softmax_forward_flops(hp), stats, gate)
    model = strategy.comm_model(problem, run.direction) if strategy.comm_model else None
    record.update(
        peak_mem_bytes=max(r["peak"] for r in per_rank),
        mem_method=f"rank max of: {mem_method}",
        rank_peak_mem_bytes=json.dumps([r["peak"] for r in per_rank]),
        rank_time_ms=json.dumps([round(t, 4) for t in medians]),
        rank_cpu_ms=json.dumps([round(r["cpu"] * 1e3, 4) for r in per_rank]),
        time_imbalance=max(medians) / statistics.mean(medians) if statistics.mean(medians) > 0 else None,
        rank_area=json.dumps(areas),
        area_imbalance=max(areas) / statistics.mean(areas) if statistics.mean(areas) > 0 else None,
        comm_bytes=json.dumps([r["sent"] for r in per_rank]),
        comm_bytes_model=json.dumps(model) if model is not None else None,
        cp_info=json.dumps(per_rank[0]["info"] or {}),
    )
    if gate.ok:
        outcome(record, "ok", None)
    else:
        outcome(record, "invalid", gate.reason)


def failure_status(e: BaseException) -> tuple[str, str]:
    """``classify_exception``, plus: a collective that hit the group's timeout is a ``timeout``."""
    status, reason = classify_exception(e)
    if status == "error" and is_timeout(reason):
        status = "timeout"
    return status, reason


def is_timeout(text: str) -> bool:
    text = text.lower()
    return "timed out" in text or "timeout" in text


def _try_prepare(strategy: Strategy, ctx: CPContext) -> Optional[tuple[str, str]]:
    try:
        strategy.prepare(ctx)
    except Unsupported as e:
        return ("unsupported", str(e))
    except Exception as e:  # noqa: BLE001
        status, reason = failure_status(e)
        return (status, f"rank {ctx.rank}: prepare: {reason}")
    return None


def _agree(mine: Optional[tuple[str, str]]) -> Optional[tuple[str, str]]:
    """Every rank's prepare outcome: the first failure wins, on every rank (no rank goes on alone)."""
    everyone = _all_gather(mine)
    return next((o for o in everyone if o is not None), None)


def _all_gather(obj) -> list:
    out: list = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def _gate(strategy: Strategy, ctx: CPContext, fn: Callable, global_inputs: tuple, local: tuple,
          rank: int) -> GateResult:
    """One pass on the shards, gathered and compared on rank 0 with the float64 reference (sampled rows)."""
    q, k, v = global_inputs
    problem = ctx.problem
    rows = sample_rows(problem.seqlen)
    if problem.needs_grad:
        leaves = [t.detach().requires_grad_(True) for t in local]
        out = fn(*leaves)
        dout = upstream_gradient(q, rows)
        grads = torch.autograd.grad(out, leaves, strategy.shard(ctx, dout))
        got = {name: strategy.gather(ctx, t.detach()) for name, t in zip(("out", "dq", "dk", "dv"), (out, *grads))}
    else:
        with torch.no_grad():
            got = {"out": strategy.gather(ctx, fn(*local))}
        dout = None
    if rank != 0:
        return GateResult(ok=True, max_abs_err=0.0)
    ref = reference_outputs(q, k, v, problem.mask, problem.scale, rows, None if dout is None else dout[:, rows])
    return compare({n: t.cpu() for n, t in got.items()}, ref, rows, problem.run.dtype)


def _time(call: Callable[[], object], run: Run) -> tuple[list[float], float]:
    """Per-iteration seconds on this rank (each iteration starts at a barrier) and CPU seconds per call.

    Every rank runs the same number of iterations: chosen from the slowest rank's first sample so that
    ``timing.min_run_time`` and ``min_samples`` are met, capped at ``max_samples``.
    """
    timing = run.timing
    for _ in range(max(timing.warmup - 1, 0)):  # one warm-up call already ran (the comm-bytes call)
        dist.barrier()
        call()
    dist.barrier()
    t0 = time.perf_counter()
    call()
    first = torch.tensor([time.perf_counter() - t0], dtype=torch.float64)
    dist.all_reduce(first, op=dist.ReduceOp.MAX)
    wanted = math.ceil(timing.min_run_time / max(float(first), 1e-9))
    n = max(timing.min_samples, min(timing.max_samples, wanted))
    seconds: list[float] = []
    cpu = 0.0
    for _ in range(n):
        dist.barrier()
        c0, t0 = time.process_time(), time.perf_counter()
        call()
        seconds.append(time.perf_counter() - t0)
        cpu += time.process_time() - c0
    dist.barrier()
    return seconds, cpu / n
