"""The scheduler interface — what runs a sweep's points somewhere and yields their records — and the placement
rules every scheduler shares. The schedulers: :class:`~harness.cluster.inline_scheduler.InlineScheduler` (this
machine, no Ray) and :class:`~harness.cluster.ray_scheduler.RayScheduler` (a Ray cluster, embedded or real).
"""

from __future__ import annotations

from typing import Iterator, Optional, Protocol

from harness import status as st
from harness.run import Run


class Scheduler(Protocol):
    """Runs benchmark points somewhere and yields their records as they finish (in any order)."""

    def run(self, runs: list[Run]) -> Iterator[dict]: ...

    def close(self) -> None: ...


def is_single(run: Run) -> bool:
    """A run on one device (a method, or a workload at world size 1); the others run on a rank group."""
    return run.strategy is None and run.world_size == 1


RANKS_PER_CPU = 4  # CPU ranks are processes sharing cores: beyond this many per core a group is pointless


def rank_capacity(device: str, cpus: float, gpus: float) -> int:
    """How many ranks a cluster with ``cpus`` CPUs and ``gpus`` GPUs can place for ``device`` runs."""
    return int(gpus) if device == "cuda" else int(cpus * RANKS_PER_CPU)


def unplaceable(run: Run, capacity: int) -> Optional[dict]:
    """The ``unsupported`` record of a run whose world size the cluster cannot place (None when it can):
    reported before any rank starts."""
    if run.world_size <= capacity:
        return None
    unit = "GPUs" if run.device == "cuda" else f"rank slots ({RANKS_PER_CPU} per CPU)"
    return st.set_status(st.base_record(run), st.UNSUPPORTED,
                      f"needs {run.world_size} ranks, cluster has {capacity} {unit}")
