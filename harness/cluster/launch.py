"""Local launcher: run context-parallel runs on this machine in W spawned processes over gloo.

:func:`run_local_many` starts one group of ``world_size`` processes per world size and feeds it all runs of
that size in order (a group is reused until a run fails or hangs; the ranks pass a barrier after each run,
so none runs ahead into the next one). Every rank calls :func:`harness.execution.distributed.execute_distributed`; rank 0
returns the records through a queue. A run that does not finish within ``timeout_s`` (or a rank that dies)
is recorded as ``timeout`` (``error``), its processes are terminated and a fresh group takes the remaining
runs — the caller never hangs. :func:`run_local` is the one-run form used by the in-process scheduler.

Processes come from a forkserver that pre-imported the runner (spawn where there is none), so a group
starts in well under a second. Each rank uses ``max(1, cores // W)`` intra-op threads so that W ranks do
not oversubscribe the machine.
"""

from __future__ import annotations

import datetime
import importlib
import os
import queue as queue_mod
import socket
import time
import traceback
from typing import Callable, Optional, Sequence

import torch.multiprocessing as mp

from harness.execution.distributed import RankFailed
from harness.execution.executor import classify_exception
from harness.status import RUN_BREAKING, base_record, outcome
from harness.spec import Run

_POLL_S = 0.2
_DEAD_GRACE_S = 1.0
_GROUP_TIMEOUT_MARGIN_S = 5.0  # the group's collectives time out a little after the launcher's per-run limit
_STARTUP_GRACE_S = 60.0  # process start-up and group initialisation, on top of the first run's limit
DEFAULT_EXECUTOR = "harness.execution.distributed:execute_distributed"
STATUS_PREFIXES = ("error: ", "oom: ", "timeout: ")  # RankFailed's text: "<status>: rank r: <reason>"


def _mp_context():
    """A forkserver that has imported the executor's modules once (children start in ~0.1 s instead of
    re-importing torch for ~4 s each, as spawn does); spawn where forkserver does not exist. Both give
    clean children: the server is a fresh single-threaded process, never the (threaded) caller."""
    try:
        ctx = mp.get_context("forkserver")
    except ValueError:
        return mp.get_context("spawn")
    # torch._inductor: the profiler of the memory measurement imports it (~4 s) on first use
    ctx.set_forkserver_preload(["harness.execution.distributed", "context_parallel", "harness.masks", "torch._inductor"])
    return ctx


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _threads_per_rank(world_size: int) -> int:
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:
        cores = os.cpu_count() or 1
    return max(1, cores // world_size)


def resolve(executor: str) -> Callable[..., Optional[dict]]:
    """``"module:function"`` -> the function (the rank executor every rank calls with a Run)."""
    module, _, name = executor.partition(":")
    return getattr(importlib.import_module(module), name)


def _worker(rank: int, world_size: int, port: int, runs: list[dict], results, timeout_s: float,
            threads: int, executor: str, executor_kwargs: dict, env: dict) -> None:
    """One rank: join the group, execute every run in order, rank 0 reports each record."""
    import torch
    import torch.distributed as dist

    os.environ.update(env)  # the forkserver's environment is the one it started with: pass LCBENCH_* on
    execute_distributed = resolve(executor)
    torch.set_num_threads(threads)
    try:
        dist.init_process_group(
            "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world_size,
            timeout=datetime.timedelta(seconds=timeout_s + _GROUP_TIMEOUT_MARGIN_S),
        )
        for index, spec in enumerate(runs):
            record = execute_distributed(Run.from_dict(spec), **executor_kwargs)
            if rank == 0:
                results.put((index, record))
            if record is not None and record["status"] in RUN_BREAKING:
                break  # the group may be out of step: the launcher starts a fresh one
            dist.barrier()  # no rank starts the next run (and maybe dies in it) before rank 0 reported this one
        dist.destroy_process_group()
    except Exception as e:  # noqa: BLE001 — report (the first report explains the run), then exit non-zero
        first = str(e) if isinstance(e, RankFailed) else f"rank {rank}: {type(e).__name__}: {e}"
        results.put((-1, f"{first}\n{traceback.format_exc(limit=5)}"))
        raise SystemExit(1)


def run_local_many(
    runs: Sequence[Run],
    timeout_s: float = 120.0,
    measure_memory: bool = True,
    executor: str = DEFAULT_EXECUTOR,
) -> list[dict]:
    """Records of ``runs`` (same order), each run executed by a local gloo group of its world size.

    ``timeout_s`` bounds each run (and is the process group's timeout); ``measure_memory=False`` skips the
    profiler pass; ``executor`` (``"module:function"``) replaces the rank
    executor (tests inject faults this way). The non-default settings are passed to the default executor only.
    """
    kwargs = {}
    if executor == DEFAULT_EXECUTOR:
        kwargs = {"measure_memory": measure_memory}
    records: list[Optional[dict]] = [None] * len(runs)
    by_size: dict[int, list[int]] = {}
    for i, run in enumerate(runs):
        by_size.setdefault(run.world_size, []).append(i)
    for world_size, indices in by_size.items():
        pending = list(indices)
        while pending:
            done = _run_group(world_size, [runs[i] for i in pending], timeout_s, executor, kwargs)
            for j, rec in enumerate(done):
                if rec is not None:
                    records[pending[j]] = rec
            # the first run without a record failed the group (recorded by _run_group); go on after it
            pending = [i for i in pending if records[i] is None]
    return [r for r in records if r is not None]


def _run_group(world_size: int, runs: list[Run], timeout_s: float, executor: str,
               executor_kwargs: dict) -> list[Optional[dict]]:
    """Run ``runs`` on one fresh group; on a hang or crash, record it for the current run and stop there."""
    ctx = _mp_context()
    results = ctx.Queue()
    port = free_port()
    threads = _threads_per_rank(world_size)
    env_before = {k: os.environ.get(k) for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = str(threads)
    specs = [r.to_dict() for r in runs]
    procs = [
        ctx.Process(
            target=_worker,
            args=(rank, world_size, port, specs, results, timeout_s, threads, executor, executor_kwargs,
                  {k: v for k, v in os.environ.items() if k.startswith("LCBENCH_")}),
            daemon=True,
        )
        for rank in range(world_size)
    ]
    try:
        for p in procs:
            p.start()
    finally:
        for k, v in env_before.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    out: list[Optional[dict]] = [None] * len(runs)
    current, started = 0, time.monotonic()
    failure: Optional[tuple[str, str]] = None
    dead_since: dict[str, float] = {}  # records already queued still count when a rank has just died
    # process start-up and group initialisation count against the first run's budget (plus a grace)
    deadline = started + timeout_s + _STARTUP_GRACE_S
    while current < len(runs):
        try:
            index, record = results.get(timeout=_POLL_S)
        except queue_mod.Empty:
            dead = [(r, p.exitcode) for r, p in enumerate(procs) if p.exitcode not in (None, 0)]
            if dead and time.monotonic() - dead_since.setdefault("t", time.monotonic()) > _DEAD_GRACE_S:
                failure = ("error", f"rank {dead[0][0]} exited with code {dead[0][1]}")
            elif time.monotonic() > deadline:
                failure = ("timeout", f"no result within {timeout_s:.0f} s")
            elif all(p.exitcode == 0 for p in procs) and results.empty():
                failure = ("error", "ranks exited without a result")
            if failure:
                break
            continue
        if index < 0:  # a rank failed outside rank 0's record (a rank's run, joining the group, a timeout)
            first = str(record).splitlines()[0]
            status, _, reason = first.partition(": ") if first.startswith(STATUS_PREFIXES) else ("", "", first)
            failure = (status or classify_exception(RuntimeError(first))[0], reason)
            break
        out[index] = record
        current = index + 1
        deadline = time.monotonic() + timeout_s
        if record["status"] in RUN_BREAKING:
            break  # the workers stop after such a run; a fresh group takes the rest
    if failure and current < len(runs):
        rec = base_record(runs[current])
        out[current] = outcome(rec, *failure)
        rec["wall_s"] = time.monotonic() - started
    _stop(procs)
    return out


def _stop(procs: list, grace_s: float = 5.0) -> None:
    end = time.monotonic() + grace_s
    for p in procs:
        p.join(timeout=max(0.0, end - time.monotonic()))
    for p in procs:
        if p.is_alive():
            p.terminate()
            p.join(timeout=2.0)
        if p.is_alive():
            p.kill()
            p.join(timeout=2.0)


def run_local(run: Run, timeout_s: float = 120.0, **kwargs) -> dict:
    """Rank 0's record of one run executed by ``run.world_size`` local gloo processes (see run_local_many)."""
    return run_local_many([run], timeout_s, **kwargs)[0]
