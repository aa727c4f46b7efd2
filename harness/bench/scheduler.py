"""What the Ray scheduler costs: ``lcbench bench scheduler`` (figures for the docs; never a unit test).

1. Per-run overhead in a reused rank group, world sizes 2 and 4: a bucket of runs of a trivial strategy (one
   all_reduce; :func:`trivial_execute`) through ``RayScheduler.run``; the gaps between consecutive records
   (the group's build excluded) are what one point costs beyond its work. Next to it, the approach of the
   field's scripts: ``torch.multiprocessing`` spawn + ``init_process_group`` for every point, measured here on
   the same trivial work; and the ratio.
2. A 100-point single-device CPU sweep (sdpa and naive, small shapes) through the real driver and store:
   wall time vs the sum of the runs' own measured times (``wall_s`` of each record), and their ratio.
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time
from datetime import timedelta
from typing import Optional, Sequence

from harness.user_input import OneLineParser, integer

TRIVIAL = "bench_trivial"


def trivial_execute(run) -> Optional[dict]:
    """Rank executor of the overhead benchmark: one all_reduce, the record on rank 0."""
    import torch
    import torch.distributed as dist

    from harness.status import base_record, set_status

    t0 = time.perf_counter()
    x = torch.ones(1)
    dist.all_reduce(x)
    if dist.get_rank():
        return None
    record = set_status(base_record(run), "ok", None)
    record.update(wall_s=time.perf_counter() - t0, threads=torch.get_num_threads(), allreduce_sum=float(x[0]))
    return record


def _trivial_runs(world_size: int, n: int) -> list:
    from harness.run import Run

    return [Run.make(method="naive", strategy=TRIVIAL, world_size=world_size, mask="full", seqlen=16, heads_q=1,
                     heads_kv=1, head_dim=8, options={"i": i}) for i in range(n)]


def reused_group_overhead(scheduler, world_size: int, n: int) -> tuple[float, float, float]:
    """(median, p90 of the per-run gap in ms, group build s) for ``n`` trivial runs on one reused group."""
    scheduler.release_groups()
    t0 = time.perf_counter()
    stamps = []
    for record in scheduler.run(_trivial_runs(world_size, n + 1)):
        assert record["status"] == "ok", record["reason"]
        stamps.append(time.perf_counter())
    gaps = [(b - a) * 1e3 for a, b in zip(stamps, stamps[1:])]
    return statistics.median(gaps), _p90(gaps), stamps[0] - t0


def _p90(xs: list[float]) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(0.9 * (len(xs) - 1))))]


def _spawned_rank(rank: int, world_size: int, port: int) -> None:
    import torch
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world_size,
                            timeout=timedelta(seconds=120))
    x = torch.ones(1)
    dist.all_reduce(x)
    dist.destroy_process_group()


def fresh_group_cost(world_size: int, n: int) -> float:
    """Median seconds per point when every point spawns its ranks and initialises a process group."""
    import torch.multiprocessing as mp

    from harness.cluster.launch import free_port

    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        mp.spawn(_spawned_rank, args=(world_size, free_port()), nprocs=world_size, join=True)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def sweep_runs(n: int = 100) -> list:
    """``n`` small single-device CPU points (sdpa and naive over masks, lengths, directions)."""
    import itertools

    from harness.run import Run, Timing

    timing = Timing(warmup=1, min_samples=5, min_run_time=0.1)
    combos = itertools.product(("sdpa", "naive"), ("causal", "full", "sliding_window_causal"),
                               (128, 192, 256, 320, 384, 448, 512, 576, 640), ("fwd", "bwd"))
    runs = [Run.make(method=m, mask=mask, seqlen=s, heads_q=4, heads_kv=4, head_dim=32, direction=d, timing=timing)
            for m, mask, s, d in combos]
    return runs[:n]


def sweep_ratio(scheduler, n: int) -> tuple[float, float, float, dict]:
    """(sweep wall s, sum of run wall_s, sum of timed_s, status counts) of an ``n``-point sweep."""
    from harness.results.store import ResultStore
    from harness.cluster.sweep import run_sweep

    runs = sweep_runs(n)
    with tempfile.TemporaryDirectory() as d:
        store = ResultStore(os.path.join(d, "bench.db"))
        t0 = time.perf_counter()
        summary = run_sweep("bench-scheduler", runs, store, scheduler, show_progress=False)
        wall = time.perf_counter() - t0
        store.close()
    measured = sum(r.get("wall_s") or 0.0 for r in summary.records)
    timed = sum(r.get("timed_s") or 0.0 for r in summary.records)
    return wall, measured, timed, dict(summary.counts)


def main(argv: Optional[Sequence[str]] = None, prog: str = "lcbench bench scheduler") -> int:
    parser = OneLineParser(prog=prog, description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=integer(1), default=40, help="trivial runs per world size in a reused group")
    parser.add_argument("--fresh", type=integer(1), default=3, help="points per world size with a fresh process group")
    parser.add_argument("--sweep", type=integer(1), default=100, help="points of the single-device sweep")
    parser.add_argument("--world-sizes", type=integer(1), nargs="+", default=[2, 4],
                        help="rank-group sizes measured (space-separated)")
    args = parser.parse_args(argv)

    from harness.cluster.ray_scheduler import RayScheduler

    t0 = time.perf_counter()
    scheduler = RayScheduler(rank_executor="harness.bench.scheduler:trivial_execute")
    print(f"embedded Ray started in {time.perf_counter() - t0:.1f} s; {os.cpu_count()} cores, "
          f"node CPUs {scheduler.node_cpus():g}")
    try:
        print("\n1. per-run overhead: reused rank group vs a fresh process group per point (trivial all_reduce)")
        print(f"{'world size':>10} {'reused median ms':>17} {'reused p90 ms':>14} {'group build s':>14} "
              f"{'fresh spawn+init ms':>20} {'fresh / reused':>15}")
        for ws in args.world_sizes:
            med, p90, build = reused_group_overhead(scheduler, ws, args.runs)
            scheduler.release_groups()  # its CPUs to the spawned ranks below
            fresh = fresh_group_cost(ws, args.fresh) * 1e3
            print(f"{ws:>10} {med:>17.1f} {p90:>14.1f} {build:>14.1f} {fresh:>20.0f} {fresh / med:>14.0f}x",
                  flush=True)

        print(f"\n2. {args.sweep}-point single-device CPU sweep (one timed run at a time, real driver and store)")
        wall, measured, timed, counts = sweep_ratio(scheduler, args.sweep)
        print(f"sweep wall {wall:.1f} s; sum of run wall_s {measured:.1f} s (timed part {timed:.1f} s); "
              f"wall / sum {wall / measured:.2f}; per-run overhead {(wall - measured) / args.sweep * 1e3:.0f} ms; "
              f"statuses {counts}")
    finally:
        scheduler.close()
    return 0
