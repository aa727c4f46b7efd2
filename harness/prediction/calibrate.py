"""``lcbench calibrate``: this machine's cluster profile (``local``) from measurements, nothing else.

* **Kernel rates**: the ``kernel_rates`` suite (the local method on every mask kind a rank's steps run, over
  the sizes a rank meets) runs through the ordinary sweep — the same executor, correctness gate and store as
  any run, one thread per process as a CPU rank has — and its ``ok`` records become the rate table
  (:func:`harness.prediction.rates.table_from_records`). ``--resume`` reuses stored runs.
* **Links**: W = 2..4 gloo ranks on this machine time the four operations the strategies use, through the
  strategies' own byte-counting :class:`~harness.interfaces.comm.Comm` (a ring send/recv step, all-gather,
  reduce-scatter, all-to-all) over message sizes 64 KiB..16 MiB; per operation a least-squares fit of
  ``time = launch + steps x latency + bytes sent / busbw`` (steps 1 for send/recv, n-1 for the collectives)
  gives the ``node`` tier's bus bandwidth, and all operations together the latency and launch cost.

The profile and its table are written as plain YAML files (the built-in ``local`` is such a pair, committed
with the command and the machine it came from).
"""

from __future__ import annotations

import datetime
import os
import socket
import statistics
import time
from pathlib import Path
from typing import Optional

import numpy as np

from harness.errors import UserError
from harness.interfaces.schedule import ALL_GATHER, ALL_TO_ALL, OPS, REDUCE_SCATTER, SEND_RECV
from harness.prediction.cluster import ClusterProfile, dump_profile
from harness.prediction.rates import RateTable, rows_work, softmax_work, table_from_records

KERNEL_SUITE = "kernel_rates"
COMM_SIZES = tuple(1 << s for s in range(16, 25, 2))  # 64 KiB .. 16 MiB sent per rank
COMM_WORLD_SIZES = (2, 3, 4)
COMM_REPS = 7


# ----- kernels -----------------------------------------------------------------------------------------------
def calibrate_kernels(method: str, results: Path, threads: int, profile: Optional[str], resume: bool,
                      device: str) -> RateTable:
    """Run the kernel_rates suite for ``method`` (stored in ``results``) and make its rate table."""
    from harness.cluster.ray_scheduler import RayScheduler
    from harness.cluster.sweep import run_sweep
    from harness.results.store import ResultStore
    from suites.loader import load_suite

    suite = load_suite(KERNEL_SUITE, profile)
    runs = list(dict.fromkeys(_with_method(r, method) for r in suite.runs))  # the suite's runs, for this method
    store = ResultStore(results)
    scheduler = RayScheduler(threads=threads)
    try:
        run_sweep(f"{KERNEL_SUITE}:{method}", runs, store, scheduler, resume=resume, show_progress=False)
    finally:
        scheduler.close()
    keys = {r.key for r in runs}
    records = [r for r in store.records() if r["key"] in keys]
    source = (f"lcbench calibrate --method {method} (suite {KERNEL_SUITE}, {len(records)} runs, {threads} thread(s) "
              f"per process) on {device}, {datetime.date.today().isoformat()}")
    from harness.catalog import get_method

    work_of = rows_work if get_method(method).linear_kernel is not None else softmax_work
    return table_from_records(records, method, device, source, threads, work_of)


def _with_method(run, method: str):
    from dataclasses import replace

    return replace(run, method=method)


# ----- links --------------------------------------------------------------------------------------------------
def _rank_main(rank: int, world: int, port: int, sizes: tuple[int, ...], reps: int, queue) -> None:
    """One gloo rank: time every operation at every size (rank-max of each rep, median over reps)."""
    import torch
    import torch.distributed as dist

    from harness.interfaces.comm import Comm

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    comm = Comm()
    everyone = comm.partition([list(range(world))])
    out = []
    try:
        for size in sizes:
            elems = size // 4
            for op in OPS:
                call, sent = _op_call(op, comm, everyone, rank, world, elems)
                samples = []
                for i in range(reps + 2):
                    dist.barrier()
                    t0 = time.perf_counter()
                    call()
                    elapsed = torch.tensor([time.perf_counter() - t0], dtype=torch.float64)
                    dist.all_reduce(elapsed, op=dist.ReduceOp.MAX)
                    if i >= 2:
                        samples.append(float(elapsed))
                out.append((op, world, sent, statistics.median(samples)))
    finally:
        dist.destroy_process_group()
    if rank == 0:
        queue.put(out)


def _op_call(op: str, comm, group, rank: int, world: int, elems: int):
    """The call of ``op`` in which every rank sends about ``elems`` float32 values, and the bytes it sends."""
    import torch

    if op == SEND_RECV:  # one ring step: send to the next rank, receive from the previous one
        x, buf = torch.randn(elems), torch.empty(elems)
        return (lambda: comm.exchange([(x, (rank + 1) % world)], [(buf, (rank - 1) % world)], tag=7).wait(),
                elems * 4)
    chunk = max(1, elems // (world - 1))
    if op == ALL_GATHER:
        x = torch.randn(chunk)
        return (lambda: comm.all_gather(x, group)), (world - 1) * chunk * 4
    parts = [torch.randn(chunk) for _ in range(world)]
    if op == REDUCE_SCATTER:
        return (lambda: comm.reduce_scatter(parts, group)), (world - 1) * chunk * 4
    shapes = [p.shape for p in parts]
    return (lambda: comm.all_to_all(parts, group, shapes)), (world - 1) * chunk * 4


def measure_links(world_sizes: tuple[int, ...] = COMM_WORLD_SIZES, sizes: tuple[int, ...] = COMM_SIZES,
                  reps: int = COMM_REPS) -> list[tuple[str, int, int, float]]:
    """(op, world size, bytes sent per rank, seconds) of every measured point."""
    import torch.multiprocessing as mp

    ctx = mp.get_context("spawn")
    points = []
    for world in world_sizes:
        queue = ctx.Queue()
        port = _free_port()
        procs = [ctx.Process(target=_rank_main, args=(r, world, port, sizes, reps, queue)) for r in range(world)]
        for p in procs:
            p.start()
        try:
            points += queue.get(timeout=600)
        finally:
            for p in procs:
                p.join(timeout=60)
    return points


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def fit_tier(points: list[tuple[str, int, int, float]]) -> dict:
    """Least squares of ``t = launch + steps x latency + bytes / busbw_op`` over every point (us, GB/s)."""
    ops = sorted({op for op, *_ in points})
    rows, ts = [], []
    for op, world, sent, seconds in points:
        steps = 1 if op == SEND_RECV else world - 1
        rows.append([1.0, float(steps)] + [float(sent) if o == op else 0.0 for o in ops])
        ts.append(seconds)
    a, t = np.array(rows), np.array(ts)
    weights = 1.0 / t  # relative errors: small messages count as much as large ones
    coef, *_ = np.linalg.lstsq(a * weights[:, None], t * weights, rcond=None)
    launch, latency = max(coef[0], 0.0), max(coef[1], 0.0)
    busbw = {op: 1.0 / coef[2 + i] / 1e9 if coef[2 + i] > 0 else float("inf") for i, op in enumerate(ops)}
    if any(not np.isfinite(v) for v in busbw.values()):
        raise UserError("calibrate: the link fit found no bandwidth term (time does not grow with bytes)")
    predicted = a @ np.r_[launch, latency, coef[2:]]
    error = float(np.median(np.abs(predicted / t - 1)))
    return {"launch_us": launch * 1e6, "latency_us": latency * 1e6,
            "busbw_gbps": {op: round(v, 3) for op, v in busbw.items()}, "median_fit_error": error}


# ----- the profile ------------------------------------------------------------------------------------------
def local_profile(table: RateTable, method: str, fit: dict, cpu: str, cores: int, memory_gib: float,
                  threads: int, table_file: str, commit: str, points: int) -> ClusterProfile:
    """This machine as a one-node cluster of ``COMM_WORLD_SIZES[-1]`` CPU ranks."""
    when = datetime.date.today().isoformat()
    measured = (f"lcbench calibrate (commit {commit}, {when}, {cpu}): {points} gloo timings at W="
                f"{','.join(map(str, COMM_WORLD_SIZES))}, median fit error {fit['median_fit_error']:.1%}")
    tier = {"link_gbps": max(fit["busbw_gbps"].values()), "busbw_gbps": fit["busbw_gbps"],
            "latency_us": round(fit["latency_us"], 3)}
    data = {
        "name": "local", "summary": f"this machine: {cores} cores of {cpu}, gloo over loopback",
        "devices_per_node": COMM_WORLD_SIZES[-1], "max_nodes": 1, "launch_us": round(fit["launch_us"], 3),
        "device": {"name": cpu, "memory_gib": round(memory_gib, 1), "rates": {method: table_file}, "cores": cores,
                   "threads_per_rank": threads},
        "tiers": {"node": tier},
        "sources": {
            "devices_per_node": "the largest rank group calibrate measured (CP runs here use 2-4 gloo ranks)",
            "max_nodes": "one machine: calibrate starts every rank on this host", "launch_us": measured, "device.memory_gib": "os.sysconf (physical pages)",
            "device.cores": "os.sched_getaffinity of the calibrating process", "device.threads_per_rank":
                "harness.cluster.local_group.threads_per_rank at W >= cores (one thread per rank)",
            "tiers.node.link_gbps": "no datasheet for loopback: the fastest measured bus bandwidth",
            "tiers.node.latency_us": measured,
            **{f"tiers.node.busbw_gbps.{op}": measured for op in fit["busbw_gbps"]},
        },
    }
    return ClusterProfile.model_validate(data)


def write_local(out_dir: Path, profile: ClusterProfile, table: RateTable, table_file: str) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / table_file).parent.mkdir(parents=True, exist_ok=True)
    profile_path, table_path = out_dir / "local.yaml", out_dir / table_file
    profile_path.write_text("# written by `lcbench calibrate`: this machine's measured profile\n"
                            + dump_profile(profile))
    table_path.write_text("# written by `lcbench calibrate`: measured kernel times of one method\n" + table.dump())
    return [profile_path, table_path]
