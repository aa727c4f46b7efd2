"""Context-parallel benchmark: bytes each rank sends (measured vs analytic) and rank-max time, per strategy.

``lcbench bench cp`` runs causal attention at 16K tokens on 4 local gloo ranks for every
registered strategy that is available here (ours and the peers), through the real launcher and rank
executor (the correctness gate included), and prints one table:

* ``sent MB/rank`` — bytes rank 0..W-1 handed to the network per call (counted by
  :mod:`harness.interfaces.comm`) next to the strategy's analytic model (:mod:`context_parallel.volumes`);
* rank-max time per iteration (median and p20-p80), the slowest rank's CPU time per call, time and area
  imbalance (max/mean over ranks) and TFLOP/s per device (total FLOPs / (rank-max time x W)).

Communication volumes are exact and machine-independent. Times are NOT meaningful as speed-ups here: the
W ranks share a 2-core machine (with other users), so 4 ranks run at most 2 at a time and "parallel" wall
clock is mostly contention; compare CPU time per call and the imbalance columns instead, and run on real
devices for speed. Default shapes are CPU sizes (heads 8:4 — every Ulysses variant, ours and the peers',
can split them over 4 ranks — head dim 32); a 16K fwd+bwd pass of all strategies takes ~10 minutes on 2
cores. :func:`run_bench` and :func:`format_table` are what a CLI calls.
"""

from __future__ import annotations

import json
import time
from typing import Optional, Sequence

from rich.console import Console

from harness.bench.args import heads_pair, registered
from harness.catalog import strategies
from harness.user_input import OneLineParser, integer, positive, writable_file
from harness.cluster.launch import run_local_many
from harness.progress import ProgressLines
from harness.run import DTYPES, Run, Timing
from harness.status import FAILED

BENCH_TIMING = Timing(warmup=1, min_samples=3, min_run_time=0.0, max_samples=3)


def bench_runs(
    names: Optional[Sequence[str]] = None,
    seqlen: int = 16384,
    world_size: int = 4,
    heads: tuple[int, int] = (8, 4),
    head_dim: int = 32,
    direction: str = "fwd+bwd",
    mask: str = "causal",
    dtype: str = "float32",
    timing: Timing = BENCH_TIMING,
) -> list[Run]:
    """One run per available strategy (all registered ones by default)."""
    registry = strategies()
    names = list(names) if names else [n for n, s in registry.items() if s.unavailable_reason() is None]
    return [
        Run.make(
            method="blocksparse", strategy=name, mask=mask, seqlen=seqlen, heads_q=heads[0], heads_kv=heads[1],
            head_dim=head_dim, dtype=dtype, direction=direction, world_size=world_size, timing=timing,
        )
        for name in names
    ]


def run_bench(runs: Sequence[Run], timeout_s: float = 1800.0, measure_memory: bool = False) -> list[dict]:
    """Every run's record, each on a local gloo group; a progress line on stderr per run (ETA, failures)."""
    err = Console(stderr=True)
    report = ProgressLines("bench cp", len(runs), lambda text: err.print(text, markup=False, highlight=False),
                           unit="strategies done", interval_s=0.0)
    done: list[dict] = []

    def on_record(record: dict) -> None:
        done.append(record)
        report.update(len(done), failed=sum(r["status"] in FAILED for r in done))

    return run_local_many(runs, timeout_s=timeout_s, measure_memory=measure_memory, on_record=on_record)


def _mb(values: Optional[str]) -> str:
    if not values:
        return "-"
    return " ".join(f"{v / 2**20:.1f}" for v in json.loads(values))


def format_table(records: Sequence[dict]) -> str:
    """A fixed-width text table, one line per strategy (failures show their status and reason)."""
    head = (
        f"{'strategy':<24} {'status':<11} {'sent MB/rank (measured)':<26} {'analytic':<26} {'=':<2} "
        f"{'rank-max ms':>11} {'p20-p80':>15} {'cpu ms':>9} {'t-imb':>6} {'a-imb':>6} {'TFLOP/s/dev':>11}"
    )
    lines = [head, "-" * len(head)]
    for r in records:
        if r["status"] != "ok":
            lines.append(f"{r['strategy']:<24} {r['status']:<11} {str(r['reason'])[:110]}")
            continue
        same = "==" if r.get("comm_bytes_model") and r["comm_bytes"] == r["comm_bytes_model"] else "!="
        if not r.get("comm_bytes_model"):
            same = "?"
        spread = f"{r['time_ms_p20']:.0f}-{r['time_ms_p80']:.0f}"
        lines.append(
            f"{r['strategy']:<24} {r['status']:<11} {_mb(r['comm_bytes']):<26} {_mb(r.get('comm_bytes_model')):<26} "
            f"{same:<2} {r['time_ms_median']:>11.0f} {spread:>15} {r['cpu_ms']:>9.0f} {r['time_imbalance']:>6.2f} "
            f"{r['area_imbalance']:>6.2f} {r['tflops']:>11.4f}"
        )
    return "\n".join(lines)


def main(argv: Optional[Sequence[str]] = None, prog: str = "lcbench bench cp") -> int:
    p = OneLineParser(prog=prog, description=__doc__.split("\n\n")[0])
    p.add_argument("--strategies", type=registered("strategy"), default=None,
                   help="comma-separated names (default: every available one)")
    p.add_argument("--seqlen", type=integer(1), default=16384,
                   help="tokens of the whole sequence (split over the ranks)")
    p.add_argument("--world-size", type=integer(1), default=4, help="ranks (gloo processes)")
    p.add_argument("--heads", type=heads_pair, default="8:4", help="heads_q:heads_kv")
    p.add_argument("--head-dim", type=integer(1), default=32, help="head dimension")
    p.add_argument("--direction", default="fwd+bwd", choices=("fwd", "bwd", "fwd+bwd"), help="what is timed")
    p.add_argument("--mask", type=lambda t: registered("mask")(t)[0], default="causal",
                   help="mask pattern (lcbench list masks)")
    p.add_argument("--dtype", default="float32", choices=DTYPES, help="dtype of q, k, v")
    p.add_argument("--samples", type=integer(1), default=3, help="timed iterations per strategy")
    p.add_argument("--memory", action="store_true", help="also measure peak memory (one profiled call)")
    p.add_argument("--timeout", type=positive, default=1800.0, help="seconds per run")
    p.add_argument("--json", help="also write the records to this file")
    a = p.parse_args(argv)
    if a.json:
        writable_file(a.json, "--json")
    hq, hkv = a.heads
    timing = Timing(warmup=1, min_samples=a.samples, min_run_time=0.0, max_samples=a.samples)
    runs = bench_runs(a.strategies, a.seqlen, a.world_size, a.heads, a.head_dim, a.direction, a.mask, a.dtype,
                      timing)
    started = time.perf_counter()
    records = run_bench(runs, a.timeout, a.memory)
    print(
        f"{a.mask} S={a.seqlen} W={a.world_size} H={hq}:{hkv} d={a.head_dim} {a.dtype} {a.direction}; "
        f"MB = 2^20 bytes sent per call, ranks 0..W-1; times: rank-max per iteration over {a.samples} iterations "
        f"(2 shared cores: not a speed-up measure)"
    )
    print(format_table(records))
    print(f"total {time.perf_counter() - started:.0f} s")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(records, f, indent=1, default=str)
    return 0
