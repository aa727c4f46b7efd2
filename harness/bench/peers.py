"""Side-by-side benchmark of our strategies against the peers that run here, in ONE process group.

    lcbench bench peers                      # W=2, causal, S=4096, H=8, d=64, float32
    lcbench bench peers --world-size 4 --seqlen 8192 --reps 7

Pairs (ours vs peer, same run): ``ulysses`` vs ``deepspeed_ulysses`` and ``yunchang_ulysses`` (the peers run
the aten local kernel, what their users call); ``ring_zigzag`` vs ``torch_ring_alltoall`` (K/V passed one ring
step at a time, head-tail layout on both sides) and ``all_gather`` vs ``torch_ring`` (K/V gathered once,
torch's default); ``--pairs ring:torch_ring_alltoall`` adds our plain contiguous ring. Ours runs once per
``--ours-kernels`` local method (default: ``blocksparse``, the aten CPU flash kernel per tile, and
``blocksparse_native``, lcbench's C++ kernel), each side by side with the peer in the same alternation.

Method: W gloo processes are started once; every strategy is built by the executor's own strategy case
(plans, groups, DeepSpeed's comm init and its one-time JIT build — outside timing) and passes the
correctness gate (the executor's own gate: output and dq/dk/dv vs the float64 reference). Then, per pair and
direction, calls alternate A, B, A, B, ... ``--reps`` times each (:func:`harness.bench.paired.alternate`),
every call starting at a barrier, so slow drift of the shared machine's load hits both sides alike.
Reported per strategy and local kernel: the median over calls of the RANK-MAX wall time, and the median
per-rank CPU time (process time of each rank; the sum over ranks is the CPU work of the call); the ratio ours/peer of each
(< 1: ours is faster). ``bwd`` times the backward alone (the forward is built outside the timed call).
The load average before and after is printed: on a shared machine the figures move with it.
"""

from __future__ import annotations

import os
import queue as queue_mod
import statistics
import sys
import time
from typing import Optional, Sequence

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from harness.user_input import OneLineParser, integer
from harness.run import DTYPES

OURS_KERNELS = ("blocksparse", "blocksparse_native")  # the aten CPU flash kernel per tile, lcbench's C++ kernel
PEER_KERNEL = "blocksparse"  # what a peer that takes our local kernel runs (torch's peers run their own op)
DEFAULT_PAIRS = (
    ("ulysses", "deepspeed_ulysses"),
    ("ulysses", "yunchang_ulysses"),
    ("ring_zigzag", "torch_ring_alltoall"),
    ("all_gather", "torch_ring"),
)


def entry(strategy: str, method: str) -> str:
    """The label of one side: a strategy with its local method, e.g. ``ulysses@blocksparse_native``."""
    return f"{strategy}@{method}"


def _build(name: str, run_kw: dict, direction: str, executor, gate: bool):
    """The timed call of entry ``name`` (strategy@method) for ``direction`` as the executor builds it (prepared,
    outside timing), the bytes this rank sends per call (one warm-up call, counted) and, when ``gate``, rank 0's
    verdict of the correctness gate (None otherwise)."""
    from harness.execution.cases import case_for
    from harness.run import Run

    strategy, method = name.split("@")
    case = case_for(Run.make(strategy=strategy, method=method, direction=direction, **run_kw))
    why = case.unavailable()
    problem = None if why else case.problem(executor)
    why = why or case.unsupported(problem)
    if why:
        raise RuntimeError(f"{name}: {why}")
    built = case.build(problem, executor)
    verdict = built.check() if gate else None
    built.warm()  # the warm-up call (barrier first), bytes counted
    return built.call, built.per_rank()["sent"], verdict


def _rank_main(rank: int, world: int, port: int, args: dict, results) -> None:
    from harness.bench.paired import alternate
    from harness.execution.distributed import RankGroupExecutor
    from harness.progress import ProgressLines

    torch.set_num_threads(args["threads"])
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        executor = RankGroupExecutor(measure_memory=False)
        run_kw = dict(
            mask="causal", seqlen=args["seqlen"], heads_q=args["heads"],
            heads_kv=args["heads_kv"], head_dim=args["head_dim"], dtype=args["dtype"], world_size=world,
        )
        sides = {(a, b): [entry(a, m) for m in args["ours_kernels"]] + [entry(b, args["peer_kernel"])]
                 for a, b in args["pairs"]}
        names = list(dict.fromkeys(n for group in sides.values() for n in group))
        out: dict = {"gate": {}, "bytes": {}, "times": {}}
        report = ProgressLines("bench peers", 2 * len(args["pairs"]), lambda text: print(text, file=sys.stderr,
                               flush=True), unit="pairs timed", interval_s=0.0) if rank == 0 else None
        for direction in ("fwd", "bwd"):
            calls = {}
            for name in names:
                # the gate of a bwd run checks the output and dq/dk/dv: once per strategy
                gated = direction == "bwd"
                calls[name], out["bytes"][(name, direction)], gate = _build(name, run_kw, direction, executor, gated)
                if gated:
                    out["gate"][name] = (gate.ok, {k: float(f"{e:.1e}") for k, e in gate.errors.items()})
            for a, b in args["pairs"]:
                out["times"][(a, b, direction)] = alternate({n: calls[n] for n in sides[(a, b)]}, args["reps"],
                                                            before=dist.barrier)
                if report is not None:  # between pairs, outside the timed calls
                    report.update(len(out["times"]))
        everyone: list = [None] * world
        dist.all_gather_object(everyone, out)
        if rank == 0:
            results.put(everyone)
    finally:
        dist.destroy_process_group()


def _summary(per_rank: list[dict], name_a: str, name_b: str, direction: str) -> dict:
    """Median rank-max wall ms and per-rank median CPU ms of every side timed for a pair (entry -> figures)."""
    from harness.bench.paired import rank_max_wall

    pairs = [r["times"][(name_a, name_b, direction)] for r in per_rank]
    return {name: (statistics.median(rank_max_wall(pairs, name)) * 1e3, [p.median_cpu(name) * 1e3 for p in pairs])
            for name in pairs[0].wall_s}


def parse_methods(flag: str, text: str, most: Optional[int] = None) -> list[str]:
    """``a,b,...`` (at most ``most`` of them) -> registered method names that have a local kernel (a user error
    names the bad one)."""
    from harness.catalog import get_method
    from harness.errors import UserError

    names = [n for n in text.split(",") if n]
    if not names or (most is not None and len(names) > most):
        raise UserError(f"{flag} {text!r}: expected {most or 'one or more'} method name(s), comma-separated")
    for name in names:
        if get_method(name).local_kernel is None:
            raise UserError(f"{flag} {name!r}: method {name} has no local kernel (a strategy cannot run it)")
    return names


def parse_pairs(text: str) -> list[tuple[str, str]]:
    """``ours:peer,...`` -> pairs of registered strategy names (a user error names the bad entry)."""
    from harness.catalog import get_strategy
    from harness.errors import UserError

    pairs = []
    for item in (i for i in text.split(",") if i):
        parts = item.split(":")
        if len(parts) != 2:
            raise UserError(f"--pairs {item!r}: expected ours:peer, e.g. ulysses:deepspeed_ulysses")
        for name in parts:
            get_strategy(name)
        pairs.append((parts[0], parts[1]))
    return pairs


def _collect(results, procs: list) -> list[dict]:
    """Rank 0's gathered results; a rank that died first ends the wait (its exit code in the error)."""
    while True:
        try:
            per_rank = results.get(timeout=2.0)
            break
        except queue_mod.Empty:
            if any(p.exitcode not in (None, 0) for p in procs):
                for p in procs:
                    p.kill()
                raise RuntimeError(f"a rank failed (exit codes {[p.exitcode for p in procs]}); see its traceback")
    for p in procs:
        p.join()
    return per_rank


def main(argv: Optional[Sequence[str]] = None, prog: str = "lcbench bench peers") -> int:
    ap = OneLineParser(prog=prog, description=__doc__.split("\n")[0])
    ap.add_argument("--world-size", type=integer(2), default=2, help="ranks (gloo processes)")
    ap.add_argument("--seqlen", type=integer(1), default=4096, help="tokens of the whole sequence")
    ap.add_argument("--heads", type=integer(1), default=8, help="query heads")
    ap.add_argument("--heads-kv", type=integer(1), default=None, help="key/value heads (default: --heads)")
    ap.add_argument("--head-dim", type=integer(1), default=64, help="head dimension")
    ap.add_argument("--dtype", default="float32", choices=DTYPES, help="dtype of q, k, v")
    ap.add_argument("--reps", type=integer(1), default=5, help="timed calls per strategy, alternating within a pair")
    ap.add_argument("--threads", type=integer(1), default=None, help="intra-op threads per rank (default cores // W)")
    ap.add_argument("--pairs", default=None,
                    help="ours:peer,... (default: %s)" % ",".join(":".join(p) for p in DEFAULT_PAIRS))
    ap.add_argument("--ours-kernels", default=",".join(OURS_KERNELS),
                    help="local methods our strategies run, each timed beside the peer (default: %(default)s)")
    ap.add_argument("--peer-kernel", default=PEER_KERNEL,
                    help="the local method of a peer that takes ours (default: %(default)s)")
    a = ap.parse_args(argv)
    pairs = parse_pairs(a.pairs) if a.pairs else list(DEFAULT_PAIRS)
    ours_kernels = parse_methods("--ours-kernels", a.ours_kernels)
    peer_kernel, = parse_methods("--peer-kernel", a.peer_kernel, most=1)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    threads = a.threads or max(1, cores // a.world_size)
    args = dict(seqlen=a.seqlen, heads=a.heads, heads_kv=a.heads_kv or a.heads, head_dim=a.head_dim,
                dtype=a.dtype, reps=a.reps, threads=threads, pairs=pairs, ours_kernels=ours_kernels,
                peer_kernel=peer_kernel)
    from harness.cluster.launch import free_port

    load0 = os.getloadavg()
    ctx = mp.get_context("spawn")
    results = ctx.Queue()
    port = free_port()
    os.environ["OMP_NUM_THREADS"] = str(threads)
    procs = [ctx.Process(target=_rank_main, args=(r, a.world_size, port, args, results)) for r in range(a.world_size)]
    started = time.perf_counter()
    for p in procs:
        p.start()
    per_rank = _collect(results, procs)
    load1 = os.getloadavg()

    print(
        f"causal S={a.seqlen} H={args['heads']}:{args['heads_kv']} d={a.head_dim} {a.dtype} W={a.world_size} "
        f"threads/rank={threads} reps={a.reps} (alternating ours and the peer) "
        f"wall={time.perf_counter() - started:.0f}s "
        f"load avg before {load0[0]:.2f} after {load1[0]:.2f} on {cores} cores"
    )
    print("gate:", ", ".join(f"{n} {'ok' if ok else 'FAILED'} {errs}" for n, (ok, errs) in per_rank[0]["gate"].items()))
    head = (f"{'ours (local kernel) vs peer':58s} {'dir':3s} {'wall ms ours':>12s} {'peer':>8s} {'ratio':>6s}   "
            f"{'cpu ms/rank ours':>20s} {'peer':>20s} {'ratio':>6s}   {'bytes/rank ours':>15s} {'peer':>10s}")
    print(head)
    for name_a, name_b in pairs:
        peer = entry(name_b, peer_kernel)
        for direction in ("fwd", "bwd"):
            s = _summary(per_rank, name_a, name_b, direction)
            wb, cb = s[peer]
            by_b = per_rank[0]["bytes"][(peer, direction)]
            for method in ours_kernels:
                ours = entry(name_a, method)
                wa, ca = s[ours]
                by_a = per_rank[0]["bytes"][(ours, direction)]
                print(
                    f"{ours + ' vs ' + name_b:58s} {direction:3s} {wa:12.1f} {wb:8.1f} {wa / wb:6.2f}   "
                    f"{'/'.join(f'{c:.0f}' for c in ca):>20s} {'/'.join(f'{c:.0f}' for c in cb):>20s} "
                    f"{sum(ca) / sum(cb):6.2f}   {by_a:15d} {by_b:10d}"
                )
    return 0
