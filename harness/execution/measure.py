"""Honest measurement of one callable: time (median and spread after warm-up), CPU time and peak memory.

Timing uses ``torch.utils.benchmark.Timer`` (which synchronises CUDA) on every device, or triton's
``do_bench`` on GPU when triton is present (it flushes L2 between iterations). Distributed runs time each
iteration between barriers themselves and summarise the rank-max times with :func:`summarize`.

Peak memory is the high-water mark of the timed call: on GPU ``max_memory_allocated`` after a reset; on CPU
the allocator's running total recorded by the PyTorch profiler's allocation events during one call, plus the
bytes of the live inputs — the same quantity as on GPU, measured by the allocator rather than the OS.
"""

from __future__ import annotations

import contextlib
import math
import os
import sys
import statistics
import time
from dataclasses import dataclass
from typing import Callable, Optional, Sequence

import torch
import torch.utils.benchmark as benchmark

from harness.run import Timing

CPU_MEMORY_METHOD = "torch allocator total during one call (profiler allocation events) + input bytes"
GPU_MEMORY_METHOD = "torch.cuda.max_memory_allocated after reset"


@dataclass(frozen=True)
class TimingStats:
    median_ms: float
    p20_ms: float
    p80_ms: float
    samples: int
    cpu_ms: float  # process CPU time per call (all threads): on a shared 2-core machine, the honest cost


def percentile(values: Sequence[float], q: float) -> float:
    """Linear-interpolated percentile, ``q`` in [0, 100]."""
    xs = sorted(values)
    if len(xs) == 1:
        return xs[0]
    pos = (len(xs) - 1) * q / 100.0
    lo, hi = math.floor(pos), math.ceil(pos)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def summarize(seconds: Sequence[float], cpu_seconds_per_call: float) -> TimingStats:
    ms = [s * 1e3 for s in seconds]
    return TimingStats(
        median_ms=statistics.median(ms),
        p20_ms=percentile(ms, 20),
        p80_ms=percentile(ms, 80),
        samples=len(ms),
        cpu_ms=cpu_seconds_per_call * 1e3,
    )


def time_call(fn: Callable[[], object], timing: Timing, device: torch.device) -> TimingStats:
    """Warm up, then sample ``fn`` until ``min_samples`` and ``min_run_time`` are both met."""
    if device.type == "cuda":
        stats = _do_bench(fn, timing)
        if stats is not None:
            return stats
    for _ in range(timing.warmup):
        fn()
    calls = [0]  # every call in the timed window, blocked_autorange's own block-size trials included

    def counted() -> None:
        calls[0] += 1
        fn()

    timer = benchmark.Timer(stmt="fn()", globals={"fn": counted})
    cpu0 = time.process_time()
    measurement = timer.blocked_autorange(min_run_time=timing.min_run_time)
    samples = list(measurement.times)
    while len(samples) < timing.min_samples:
        samples.append(timer.timeit(1).mean)
    samples = samples[: timing.max_samples]
    cpu = (time.process_time() - cpu0) / max(calls[0], 1)
    return summarize(samples, cpu)


def _do_bench(fn: Callable[[], object], timing: Timing) -> Optional[TimingStats]:
    """CUDA: ``timing.warmup`` calls, then triton's ``do_bench`` (event timing, L2 flushed before each call)
    for every per-call sample; ``cpu_ms`` is the process CPU time per counted call, as on CPU."""
    try:
        from triton.testing import do_bench
    except ImportError:
        return None
    for _ in range(timing.warmup):
        fn()
    calls = [0]

    def counted() -> None:
        calls[0] += 1
        fn()

    cpu0 = time.process_time()
    rep_ms = max(100, int(timing.min_run_time * 1e3))
    try:
        times_ms = do_bench(counted, warmup=25, rep=rep_ms, return_mode="all")
    except (TypeError, ValueError):  # a triton without return_mode="all": its quantiles only
        med, p20, p80 = do_bench(counted, warmup=25, rep=rep_ms, quantiles=[0.5, 0.2, 0.8])
        return TimingStats(med, p20, p80, samples=-1, cpu_ms=(time.process_time() - cpu0) * 1e3 / max(calls[0], 1))
    cpu = (time.process_time() - cpu0) / max(calls[0], 1)
    return summarize([t / 1e3 for t in list(times_ms)[: timing.max_samples]], cpu)


@contextlib.contextmanager
def _stderr_silenced():
    """The profiler's C++ layer prints start/stop lines on fd 2; keep them out of the user's terminal."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def peak_memory(fn: Callable[[], object], inputs: Sequence[torch.Tensor], device: torch.device) -> tuple[int, str]:
    """Peak bytes allocated during one call of ``fn`` (inputs included), and how it was measured."""
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats(device)
        fn()
        torch.cuda.synchronize()
        return int(torch.cuda.max_memory_allocated(device)), GPU_MEMORY_METHOD
    from torch._C._profiler import _EventType
    from torch.profiler import ProfilerActivity, profile

    with _stderr_silenced(), profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    peak = 0
    stack = list(prof.profiler.kineto_results.experimental_event_tree())
    while stack:
        node = stack.pop()
        if node.tag == _EventType.Allocation:
            peak = max(peak, int(node.extra_fields.total_allocated))
        stack.extend(node.children)
    input_bytes = sum(t.numel() * t.element_size() for t in {id(t): t for t in inputs}.values())
    return peak + input_bytes, CPU_MEMORY_METHOD
