"""Side-by-side benchmark of our strategies against the peers that run here, in ONE process group.

    python -m harness.bench.peers                      # W=2, causal, S=4096, H=8, d=64, float32
    python -m harness.bench.peers --world-size 4 --seqlen 8192 --reps 7

Pairs (ours vs peer, same run): ``ulysses`` vs ``deepspeed_ulysses`` and ``yunchang_ulysses`` (same local
kernel: only the communication differs); ``ring_zigzag`` vs ``torch_ring_alltoall`` (K/V passed one ring
step at a time, head-tail layout on both sides) and ``all_gather`` vs ``torch_ring`` (K/V gathered once,
torch's default); ``--pairs ring:torch_ring_alltoall`` adds our plain contiguous ring.

Method: W gloo processes are started once; every strategy is prepared (plans, groups, DeepSpeed's comm
init — outside timing) and passes the correctness gate (the executor's own gate: output and dq/dk/dv vs the
float64 reference). Then, per pair and direction, calls alternate A, B, A, B, ... ``--reps`` times each,
every call starting at a barrier, so slow drift of the shared machine's load hits both sides alike.
Reported per strategy: the median over calls of the RANK-MAX wall time, and the median per-rank CPU time
(process time of each rank; the sum over ranks is the CPU work of the call); the ratio ours/peer of each
(< 1: ours is faster). ``bwd`` times the backward alone (the forward is built outside the timed call).
The load average before and after is printed: on a shared machine the figures move with it.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from typing import Optional

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

DEFAULT_PAIRS = (
    ("ulysses", "deepspeed_ulysses"),
    ("ulysses", "yunchang_ulysses"),
    ("ring_zigzag", "torch_ring_alltoall"),
    ("all_gather", "torch_ring"),
)


def _prepare(name: str, run_kw: dict, rank: int):
    """(strategy, ctx, local inputs, global inputs) for one strategy, prepared, plus its gate result."""
    from harness.catalog import get_strategy
    from harness.interfaces import CPContext, CPProblem
    from harness.interfaces.comm import Comm
    from harness.execution.distributed import _gate
    from harness.execution.executor import make_inputs, mask_for
    from harness.interfaces import torch_dtype
    from harness.spec import Run

    run = Run.make(strategy=name, **run_kw)
    strategy = get_strategy(name)
    problem = CPProblem(run=run, mask=mask_for(run), dtype=torch_dtype(run.dtype), device=torch.device("cpu"))
    why = strategy.unavailable_reason() or strategy.unsupported_reason(problem)
    if why:
        raise RuntimeError(f"{name}: {why}")
    ctx = CPContext(problem=problem, rank=rank, comm=Comm(), positions=strategy.layout(problem))
    q, k, v = make_inputs(run, torch.device("cpu"))
    local = tuple(strategy.shard(ctx, t) for t in (q, k, v))
    strategy.prepare(ctx)
    fn = lambda a, b, c, s=strategy, cx=ctx: s.attention(cx, a, b, c)  # noqa: E731
    gate = _gate(strategy, ctx, fn, (q, k, v), local, rank)
    return fn, ctx, local, gate


def _timed(call) -> tuple[float, float]:
    dist.barrier()
    c0, t0 = time.process_time(), time.perf_counter()
    call()
    return time.perf_counter() - t0, time.process_time() - c0


def _rank_main(rank: int, world: int, port: int, args: dict, results) -> None:
    from harness.execution.executor import direction_call

    torch.set_num_threads(args["threads"])
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        run_kw = dict(
            method="blocksparse", mask="causal", seqlen=args["seqlen"], heads_q=args["heads"],
            heads_kv=args["heads_kv"], head_dim=args["head_dim"], dtype=args["dtype"], world_size=world,
        )
        names = list(dict.fromkeys(n for pair in args["pairs"] for n in pair))
        out: dict = {"gate": {}, "bytes": {}, "times": {}}
        prepared = {}
        for name in names:
            fn, ctx, local, gate = _prepare(name, {**run_kw, "direction": "bwd"}, rank)
            prepared[name] = (fn, ctx, local)
            out["gate"][name] = (gate.ok, {k: float(f"{e:.1e}") for k, e in gate.errors.items()})
        for direction in ("fwd", "bwd"):
            calls = {}
            for name in names:
                fn, ctx, local = prepared[name]
                calls[name] = direction_call(fn, *local, direction)
                ctx.comm.reset()
                calls[name]()  # warm-up, and the bytes of one call
                out["bytes"][(name, direction)] = ctx.comm.sent_bytes
            for a, b in args["pairs"]:
                samples = {a: [], b: []}
                for _ in range(args["reps"]):
                    for name in (a, b):
                        samples[name].append(_timed(calls[name]))
                out["times"][(a, b, direction)] = samples
        everyone: list = [None] * world
        dist.all_gather_object(everyone, out)
        if rank == 0:
            results.put(everyone)
    finally:
        dist.destroy_process_group()


def _summary(per_rank: list[dict], name_a: str, name_b: str, direction: str) -> dict:
    """Median rank-max wall ms and per-rank median CPU ms of both sides of a pair."""
    res = {}
    for name in (name_a, name_b):
        samples = [r["times"][(name_a, name_b, direction)][name] for r in per_rank]
        n = len(samples[0])
        wall = statistics.median(max(s[i][0] for s in samples) for i in range(n)) * 1e3
        cpu = [statistics.median(c for _, c in s) * 1e3 for s in samples]
        res[name] = (wall, cpu)
    return res


def main(argv: Optional[list[str]] = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--world-size", type=int, default=2)
    ap.add_argument("--seqlen", type=int, default=4096)
    ap.add_argument("--heads", type=int, default=8)
    ap.add_argument("--heads-kv", type=int, default=None)
    ap.add_argument("--head-dim", type=int, default=64)
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--reps", type=int, default=5, help="timed calls per strategy, alternating within a pair")
    ap.add_argument("--threads", type=int, default=None, help="intra-op threads per rank (default cores // W)")
    ap.add_argument("--pairs", default=None, help="ours:peer,... (default: %s)" % ",".join(":".join(p) for p in DEFAULT_PAIRS))
    a = ap.parse_args(argv)
    pairs = [tuple(p.split(":")) for p in a.pairs.split(",")] if a.pairs else list(DEFAULT_PAIRS)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    threads = a.threads or max(1, cores // a.world_size)
    args = dict(seqlen=a.seqlen, heads=a.heads, heads_kv=a.heads_kv or a.heads, head_dim=a.head_dim,
                dtype=a.dtype, reps=a.reps, threads=threads, pairs=pairs)
    if any("deepspeed" in n for p in pairs for n in p):
        from context_parallel.peer_deepspeed_ulysses import prebuild

        prebuild()  # the one-time JIT build, before any rank starts

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
    per_rank = results.get()
    for p in procs:
        p.join()
    load1 = os.getloadavg()

    print(
        f"causal S={a.seqlen} H={args['heads']}:{args['heads_kv']} d={a.head_dim} {a.dtype} W={a.world_size} "
        f"threads/rank={threads} reps={a.reps} (alternating A,B) wall={time.perf_counter() - started:.0f}s "
        f"load avg before {load0[0]:.2f} after {load1[0]:.2f} on {cores} cores"
    )
    print("gate:", ", ".join(f"{n} {'ok' if ok else 'FAILED'} {errs}" for n, (ok, errs) in per_rank[0]["gate"].items()))
    head = (f"{'ours vs peer':36s} {'dir':3s} {'wall ms ours':>12s} {'peer':>8s} {'ratio':>6s}   "
            f"{'cpu ms/rank ours':>20s} {'peer':>20s} {'ratio':>6s}   {'bytes/rank ours':>15s} {'peer':>10s}")
    print(head)
    for name_a, name_b in pairs:
        for direction in ("fwd", "bwd"):
            s = _summary(per_rank, name_a, name_b, direction)
            (wa, ca), (wb, cb) = s[name_a], s[name_b]
            by_a, by_b = per_rank[0]["bytes"][(name_a, direction)], per_rank[0]["bytes"][(name_b, direction)]
            print(
                f"{name_a + ' vs ' + name_b:36s} {direction:3s} {wa:12.1f} {wb:8.1f} {wa / wb:6.2f}   "
                f"{'/'.join(f'{c:.0f}' for c in ca):>20s} {'/'.join(f'{c:.0f}' for c in cb):>20s} "
                f"{sum(ca) / sum(cb):6.2f}   {by_a:15d} {by_b:10d}"
            )


if __name__ == "__main__":
    main()
