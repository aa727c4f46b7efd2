"""Benchmarks of lcbench itself (figures for results/BENCHMARKS.md; performance is never a unit test).

``python -m harness.bench.kernels kernels``  blocksparse vs sdpa side by side (alternating A, B, A, B in one process)
                                    on causal, sliding_window_causal(1024) and causal_document: median wall
                                    time, per-process CPU time, per-area throughput and the ratios.
``python -m harness.bench.kernels overhead`` a sweep of 100 tiny runs through the real driver and store: what each
                                    run costs beyond its timed work.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import torch
from rich.table import Table

from harness.execution.executor import direction_call, make_inputs, mask_for
from harness.catalog import get_method
from harness.interfaces import Problem, torch_dtype
from harness.results.report import wide_console
from harness.interfaces.method import SOFTMAX_DIRECTION_FACTOR as DIRECTION_FLOP_FACTOR
from harness.spec import Run, Timing

console = wide_console()


def _call_for(run: Run):
    method = get_method(run.method)
    mask = mask_for(run)
    problem = Problem(mask, run.batch, run.seqlen, run.heads_q, run.heads_kv, run.head_dim,
                      torch_dtype(run.dtype), torch.device("cpu"), run.direction != "fwd", run.option_kwargs)
    q, k, v = make_inputs(run, problem.device)
    return direction_call(method.build(problem), q, k, v, run.direction), mask.area(run.heads_q)


def _sample(call) -> tuple[float, float]:
    w0, c0 = time.perf_counter(), time.process_time()
    call()
    return time.perf_counter() - w0, time.process_time() - c0


def bench_kernels(seqlen: int, reps: int, heads_q: int, heads_kv: int, head_dim: int) -> None:
    masks = [("causal", {}), ("sliding_window_causal", {"window": 1024}), ("causal_document", {})]
    table = Table(title=f"blocksparse vs sdpa, S={seqlen}, H={heads_q}:{heads_kv}, d={head_dim}, float32, "
                        f"{torch.get_num_threads()} threads, alternating A/B x{reps}", header_style="bold")
    for col in ("mask", "dir", "density", "sdpa ms", "blocksparse ms", "speed-up", "sdpa cpu ms", "bs cpu ms",
                "sdpa TFLOP/s", "bs TFLOP/s"):
        table.add_column(col, justify="right" if col not in ("mask", "dir") else "left")
    for mask, params in masks:
        for direction in ("fwd", "bwd"):
            calls = {}
            for name in ("sdpa", "blocksparse"):
                run = Run.make(method=name, mask=mask, mask_params=params, seqlen=seqlen, heads_q=heads_q,
                               heads_kv=heads_kv, head_dim=head_dim, direction=direction)
                calls[name] = _call_for(run)
                calls[name][0]()  # warm-up
            samples = {n: [] for n in calls}
            for _ in range(reps):
                for name, (call, _) in calls.items():  # A, B, A, B ...
                    samples[name].append(_sample(call))
            med = {n: statistics.median(w for w, _ in s) for n, s in samples.items()}
            cpu = {n: statistics.median(c for _, c in s) for n, s in samples.items()}
            # Same mask, same area: the per-area throughput ratio is the time ratio. TFLOP/s use the exact area,
            # so blocksparse's column staying level as the density falls means its time falls with the area.
            ratio = med["sdpa"] / med["blocksparse"]
            flops = calls["sdpa"][1] * 4 * head_dim * DIRECTION_FLOP_FACTOR[direction]
            density = calls["sdpa"][1] / heads_q / seqlen**2
            table.add_row(mask, direction, f"{density:.3f}", f"{med['sdpa'] * 1e3:.0f}",
                          f"{med['blocksparse'] * 1e3:.0f}", f"{ratio:.2f}x", f"{cpu['sdpa'] * 1e3:.0f}",
                          f"{cpu['blocksparse'] * 1e3:.0f}", f"{flops / med['sdpa'] / 1e12:.3f}",
                          f"{flops / med['blocksparse'] / 1e12:.3f}")
            console.print(f"  {mask} {direction}: sdpa {med['sdpa'] * 1e3:.0f} ms, blocksparse "
                          f"{med['blocksparse'] * 1e3:.0f} ms ({ratio:.2f}x)")
    console.print(table)


def bench_overhead(points: int) -> None:
    """Sweep ``points`` tiny runs with the inline scheduler into a fresh store; report the overhead per run."""
    from harness.results.store import ResultStore
    from harness.cluster.sweep import InlineScheduler, run_sweep

    timing = Timing(warmup=1, min_samples=3, min_run_time=0.0, max_samples=3)
    runs = [
        Run.make(method="blocksparse", mask="causal", seqlen=64 + i, heads_q=2, heads_kv=1, head_dim=16,
                 timing=timing)
        for i in range(points)
    ]
    with tempfile.TemporaryDirectory() as d:
        store = ResultStore(f"{d}/r.db")
        t0 = time.perf_counter()
        run_sweep("warm-up", runs[:1], ResultStore(f"{d}/warm.db"), InlineScheduler(), show_progress=False)
        first = time.perf_counter() - t0
        t0 = time.perf_counter()
        summary = run_sweep("overhead", runs, store, InlineScheduler(), show_progress=False)
        wall = time.perf_counter() - t0
        records = store.records()
    timed = sum(r["timed_s"] for r in records)
    in_run = sum(r["wall_s"] for r in records)
    table = Table(title=f"harness overhead, {points} tiny runs (inline scheduler, SQLite store)", header_style="bold")
    for col in ("sweep wall s", "timed work s", "overhead ms/run", "of which outside the run ms/run", "status"):
        table.add_column(col, justify="right")
    table.add_row(f"{wall:.2f}", f"{timed:.2f}", f"{(wall - timed) / points * 1e3:.1f}",
                  f"{(wall - in_run) / points * 1e3:.1f}", str(dict(summary.counts)))
    console.print(table)
    console.print("timed work = warm-up + samples + the memory-profiled call; overhead = everything else "
                  "(mask, inputs, plan, correctness gate, store, driver). One-time process costs (imports, GEMM "
                  f"calibration) are excluded by a first run: it took {first:.2f} s.")


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m harness.bench.kernels")
    sub = parser.add_subparsers(dest="what", required=True)
    k = sub.add_parser("kernels")
    k.add_argument("--seqlen", type=int, default=16384)
    k.add_argument("--reps", type=int, default=5)
    k.add_argument("--heads-q", type=int, default=8)
    k.add_argument("--heads-kv", type=int, default=2)
    k.add_argument("--head-dim", type=int, default=64)
    o = sub.add_parser("overhead")
    o.add_argument("--points", type=int, default=100)
    args = parser.parse_args()
    if args.what == "kernels":
        bench_kernels(args.seqlen, args.reps, args.heads_q, args.heads_kv, args.head_dim)
    else:
        bench_overhead(args.points)


if __name__ == "__main__":
    main()
