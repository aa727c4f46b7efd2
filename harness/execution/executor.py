"""One single-device run, start to finish: mask -> method -> gate -> timing and memory -> a result record.

Every outcome is a record with a status (see ``STATUSES``) and a one-line reason, never an exception: a
sweep goes on whatever one run does. Context-parallel runs go through ``context_parallel`` instead.
"""

from __future__ import annotations

import functools
import json
import time
import traceback
from typing import Callable, Optional

import torch

from harness.errors import UserError
from harness.execution.gate import GateResult, check_method
from harness.execution.machine import peak_tflops
from harness.masks import Mask, build_mask
from harness.execution.measure import TimingStats, peak_memory, time_call
from harness.catalog import get_method
from harness.interfaces import AttentionFn, Problem, torch_dtype
from harness.interfaces.method import SOFTMAX_DIRECTION_FACTOR as DIRECTION_FLOP_FACTOR
from harness.spec import Run

STATUSES = ("ok", "unsupported", "unavailable", "oom", "timeout", "error", "invalid")


@functools.lru_cache(maxsize=16)
def cached_mask(name: str, seqlen: int, num_heads: int, params: tuple) -> Mask:
    return build_mask(name, seqlen, num_heads, **dict(params))


def mask_for(run: Run) -> Mask:
    return cached_mask(run.mask, run.seqlen, run.heads_q, run.mask_params)


def make_inputs(run: Run, device: torch.device, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Seeded q, k, v of shape [B, S, H, d] (identical on every rank and machine for the same run)."""
    g = torch.Generator().manual_seed(seed)
    dtype = torch_dtype(run.dtype)

    def rnd(heads: int) -> torch.Tensor:
        return torch.randn(run.batch, run.seqlen, heads, run.head_dim, generator=g).to(dtype).to(device)

    return rnd(run.heads_q), rnd(run.heads_kv), rnd(run.heads_kv)


def direction_call(fn: AttentionFn, q, k, v, direction: str) -> Callable[[], object]:
    """The measured call for a direction; the forward of a ``bwd`` run happens here, outside the timing."""
    if direction == "fwd":
        def forward():
            with torch.no_grad():
                return fn(q, k, v)
        return forward
    leaves = tuple(t.detach().requires_grad_(True) for t in (q, k, v))
    if direction == "bwd":
        out = fn(*leaves)
        dout = torch.randn_like(out)
        return lambda: torch.autograd.grad(out, leaves, dout, retain_graph=True)
    dout = torch.randn(q.shape, dtype=q.dtype, device=q.device)
    return lambda: torch.autograd.grad(fn(*leaves), leaves, dout)


def base_record(run: Run) -> dict:
    return {"key": run.key, **run.to_dict(), "status": None, "reason": None}


def outcome(record: dict, status: str, reason: Optional[str]) -> dict:
    record["status"], record["reason"] = status, reason
    return record


def classify_exception(e: BaseException) -> tuple[str, str]:
    """(status, one-line reason) for an exception raised by a run."""
    text = f"{type(e).__name__}: {e}".splitlines()[0][:400]
    if isinstance(e, UserError):
        return "error", str(e)
    if isinstance(e, MemoryError) or "out of memory" in str(e).lower():
        return "oom", text
    return "error", text


def fill_measurement(
    record: dict, run: Run, problem: Problem, flops_fwd: float, stats: TimingStats, gate: GateResult
) -> None:
    """The measured fields shared by single-device and context-parallel records."""
    flops = flops_fwd * DIRECTION_FLOP_FACTOR[run.direction]
    seconds = stats.median_ms / 1e3 * run.world_size  # device-seconds: rank-max time x world size
    tflops = flops / seconds / 1e12 if seconds > 0 else 0.0
    peak = peak_tflops(problem.dtype, problem.device.type)
    record.update(
        time_ms_median=stats.median_ms,
        time_ms_p20=stats.p20_ms,
        time_ms_p80=stats.p80_ms,
        samples=stats.samples,
        cpu_ms=stats.cpu_ms,
        area=problem.mask.area(run.heads_q) * run.batch,
        flops=flops,
        tflops=tflops,
        peak_tflops=peak,
        frac_peak=tflops / peak if peak > 0 else None,
        max_abs_err=gate.max_abs_err,
        gate_errors=json.dumps({k: float(f"{v:.3e}") for k, v in gate.errors.items()}),
        threads=torch.get_num_threads(),
        mask_info=json.dumps(problem.mask.describe()),
    )


def execute(run: Run) -> dict:
    """Run one single-device benchmark point and return its record (never raises for a run's failure)."""
    record = base_record(run)
    started = time.perf_counter()
    try:
        _execute(run, record)
    except Exception as e:  # noqa: BLE001 — every failure is a result
        status, reason = classify_exception(e)
        outcome(record, status, reason)
        record["traceback"] = traceback.format_exc(limit=8)
    record["wall_s"] = time.perf_counter() - started
    return record


def _execute(run: Run, record: dict) -> None:
    method = get_method(run.method)
    why = method.unavailable_reason()
    if why:
        outcome(record, "unavailable", why)
        return
    if run.heads_q % run.heads_kv:
        outcome(record, "unsupported", f"heads_q={run.heads_q} is not a multiple of heads_kv={run.heads_kv}")
        return
    device = torch.device(run.device)
    mask = mask_for(run)
    problem = Problem(
        mask=mask, batch=run.batch, seqlen=run.seqlen, heads_q=run.heads_q, heads_kv=run.heads_kv,
        head_dim=run.head_dim, dtype=torch_dtype(run.dtype), device=device,
        needs_grad=run.direction != "fwd", options=run.option_kwargs,
    )
    why = method.unsupported_reason(problem, run.direction)
    if why:
        outcome(record, "unsupported", why)
        return
    fn = method.build(problem)
    q, k, v = make_inputs(run, device)
    gate = check_method(
        fn, q, k, v, mask, problem.scale, with_grad=run.direction != "fwd", reference=method.reference
    )
    call = direction_call(fn, q, k, v, run.direction)
    timed_from = time.perf_counter()
    stats = time_call(call, run.timing, device)
    record["peak_mem_bytes"], record["mem_method"] = peak_memory(call, (q, k, v), device)
    record["timed_s"] = time.perf_counter() - timed_from
    fill_measurement(record, run, problem, method.forward_flops(problem), stats, gate)
    if gate.ok:
        outcome(record, "ok", None)
    else:
        outcome(record, "invalid", gate.reason)
