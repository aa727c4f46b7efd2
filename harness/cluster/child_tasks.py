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

from harness.cluster.isolation import resolve
from harness.spec import Run

def _warm_registries() -> None:
    """Load methods/strategies (built-ins, ``LCBENCH_PLUGINS``, entry points) in the forkserver, once."""
    try:
        from harness.catalog import methods

        methods()
        from harness.catalog import strategies

        strategies()
    except Exception:  # noqa: BLE001 — a broken plugin is reported by the run that needs it, not here
        pass


_warm_registries()


def set_threads(threads: int) -> int:
    """Pin this process's intra-op threads (torch and the OpenMP/MKL env its libraries read)."""
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


def execute_rank(executor: str, run: Run) -> Optional[dict]:
    """One distributed run on this rank: ``executor(run)`` returns the record on rank 0, None elsewhere."""
    return resolve(executor)(run)
