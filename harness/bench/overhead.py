"""``lcbench bench overhead``: a sweep of tiny runs through the real driver and store (inline scheduler): what
each run costs beyond its timed work."""

from __future__ import annotations

import tempfile
import time
from typing import Optional, Sequence

from rich.table import Table

from harness.user_input import OneLineParser, integer
from harness.cluster.inline_scheduler import InlineScheduler
from harness.cluster.sweep import run_sweep
from harness.results.report import wide_console
from harness.results.store import ResultStore
from harness.run import Run, Timing

console = wide_console()


def tiny_runs(points: int) -> list[Run]:
    """``points`` distinct tiny blocksparse runs (3 samples each)."""
    timing = Timing(warmup=1, min_samples=3, min_run_time=0.0, max_samples=3)
    return [Run.make(method="blocksparse", mask="causal", seqlen=64 + i, heads_q=2, heads_kv=1, head_dim=16,
                     timing=timing) for i in range(points)]


def bench_overhead(points: int) -> None:
    """Sweep ``points`` tiny runs with the inline scheduler into a fresh store; report the overhead per run."""
    runs = tiny_runs(points)
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


def main(argv: Optional[Sequence[str]] = None, prog: str = "lcbench bench overhead") -> int:
    p = OneLineParser(prog=prog, description=__doc__.split("\n\n")[0])
    p.add_argument("--points", type=integer(1), default=100,
                   help="tiny runs timed inline (each one's cost beyond its timed work)")
    a = p.parse_args(argv)
    bench_overhead(a.points)
    return 0
