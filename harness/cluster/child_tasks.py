"""What runs inside a supervised benchmark process (see ``harness.cluster.isolation``): thread set-up, one single-device
run, torch.distributed initialisation of a rank, one distributed run.

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
from harness.spec import Run

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


def execute_single(run: Run) -> dict:
    """One single-device run (``harness.execution.executor.execute`` never raises for a run's failure)."""
    from harness.execution.single import execute

    return execute(run)


def init_rank(
    rank: int, world_size: int, master_addr: str, master_port: int, backend: str, timeout_s: float, threads: int,
    device_index: Optional[int],
) -> dict:
    """Join the group's default process group (once per group); on GPU bind this rank's device first."""
    import torch.distributed as dist

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
    a rank other than 0 whose part failed returns its status and reason as a :class:`RankFailure`."""
    from harness.execution.distributed import RankFailed

    try:
        return resolve(executor)(run, **(kwargs or {}))
    except RankFailed as e:
        return RankFailure(e.status, e.reason)
