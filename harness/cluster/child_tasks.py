"""What runs inside a supervised benchmark process (see ``harness.cluster.isolation``): set-up (threads, and the
driver's niceness: ``harness.cluster.priority``), one single-device run, torch.distributed initialisation of a
rank, one distributed run. Every record made here states its process's niceness and the load when it started.

The forkserver imports this module once (with torch) and warms the method and strategy registries, so every
forked child starts with them loaded instead of scanning entry points per run.
"""

from __future__ import annotations

import os
from datetime import timedelta
from typing import Optional

import torch

from harness.cluster.group_run import RankFailure
from harness.cluster.isolation import resolve
from harness.cluster.priority import reset_niceness, run_conditions
from harness.run import Run

def _warm_registries() -> None:
    """Load methods/strategies (built-ins, ``LCBENCH_PLUGINS``, entry points) in the forkserver, once; and the
    rank runner with what the profiler of its memory measurement imports on first use (torch._inductor, ~4 s
    that every rank child would otherwise pay again)."""
    try:
        from harness.catalog import methods, strategies

        methods()
        strategies()
        import harness.execution.distributed  # noqa: F401
        import torch._inductor  # noqa: F401
    except Exception:  # noqa: BLE001 — a broken plugin is reported by the run that needs it, not here
        pass


_warm_registries()


def set_threads(threads: int) -> int:
    """Pin this process's intra-op threads (torch and the OpenMP/MKL env its libraries read). Called first in
    every child (directly or by :func:`init_rank`), after the child's environment was applied. (The catalog is
    cached per ``LCBENCH_PLUGINS`` value, so a child whose plugins differ from the forkserver's sees its own.)"""
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(threads)
    torch.set_num_threads(threads)
    return torch.get_num_threads()


def prepare(threads: int, nice: Optional[int] = None) -> int:
    """Start-up of a single-run benchmark process: ``threads`` torch threads, niceness ``nice`` (the driver's;
    None: as inherited). Returns the thread count."""
    reset_niceness(nice)
    return set_threads(threads)


def execute_single(run: Run) -> dict:
    """One single-device run (``harness.execution.executor.execute`` never raises for a run's failure), with
    the process's niceness and the load when it started."""
    from harness.execution.single import execute

    conditions = run_conditions()
    record = execute(run)
    if isinstance(record, dict):
        record.update(conditions)
    return record


def init_rank(
    rank: int, world_size: int, master_addr: str, master_port: int, backend: str, timeout_s: float, threads: int,
    device_index: Optional[int], nice: Optional[int] = None,
) -> dict:
    """Join the group's default process group (once per group), at niceness ``nice`` (the driver's; None: as
    inherited); on GPU bind this rank's device first."""
    import torch.distributed as dist

    reset_niceness(nice)
    set_threads(threads)
    if device_index is not None:
        torch.cuda.set_device(device_index)
    dist.init_process_group(
        backend=backend, init_method=f"tcp://{master_addr}:{master_port}", rank=rank, world_size=world_size,
        timeout=timedelta(seconds=timeout_s),
    )
    return {"rank": dist.get_rank(), "world_size": dist.get_world_size(), "backend": dist.get_backend(),
            "pid": os.getpid(), "threads": torch.get_num_threads()}


def execute_rank(executor: str, run: Run, kwargs: Optional[dict] = None) -> Optional[dict | RankFailure]:
    """One distributed run on this rank: ``executor(run, **kwargs)`` returns the record on rank 0, None elsewhere;
    a rank other than 0 whose part failed returns its status and reason as a :class:`RankFailure`. Rank 0's
    record states its niceness and the load when the run started."""
    from harness.execution.distributed import RankFailed

    conditions = run_conditions()
    try:
        record = resolve(executor)(run, **(kwargs or {}))
    except RankFailed as e:
        return RankFailure(e.status, e.reason)
    if isinstance(record, dict):
        record.update(conditions)
    return record
