"""A strategy's schedule: the steps every rank runs, as plain data, for ``lcbench predict``.

A strategy that can be predicted declares ``schedule(problem, placement) -> Schedule`` in its own file (the
``Strategy.schedule`` field). The schedule says, per stage, what each rank computes (the exact (q, k) pairs of
its local attention calls, from the real mask sharded by the strategy's own layout) and what it communicates
(the strategy's exact bytes per rank, with the collective or the point-to-point peers), and whether the
communication of a stage is in flight while its compute runs (a ring step posts the next block's send/recv
before attending the current one) or comes first (an all-to-all before the attention it feeds).

The predictor (:mod:`harness.prediction`) walks the stages with a cluster's kernel rates and link tiers; it
knows no strategy by name, so a plugin strategy that declares its schedule is predicted like a built-in.

Arrays are numpy, one entry per rank (``[W]``), so that a 1024-rank schedule is a few hundred small vectors,
not a million Python objects.

Conventions (as the executed strategies): ``area`` counts (q, k, q-head) pairs x batch of one call, the same
quantity as ``CPContext.area``; ``bytes`` are what a rank SENDS (what :mod:`harness.interfaces.comm` counts).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import numpy as np

SEND_RECV = "send_recv"
ALL_GATHER = "all_gather"
REDUCE_SCATTER = "reduce_scatter"
ALL_TO_ALL = "all_to_all"
COLLECTIVES = (ALL_GATHER, REDUCE_SCATTER, ALL_TO_ALL)
OPS = (SEND_RECV, *COLLECTIVES)

FWD, BWD = "fwd", "bwd"  # the pass a compute belongs to (a ``fwd+bwd`` schedule holds both)

Partition = tuple[tuple[int, ...], ...]


@dataclass(frozen=True)
class Placement:
    """Where ranks sit: ``devices_per_node`` consecutive ranks share a node (rank r on node r // that)."""

    world_size: int
    devices_per_node: int

    def node(self, rank: int) -> int:
        return rank // self.devices_per_node


@dataclass(frozen=True)
class Compute:
    """The local attention each rank runs in a stage (one kernel call per rank; ``area`` 0: nothing)."""

    area: np.ndarray  # int64 [W]: (q, k, q-head) pairs x batch of the call
    q_rows: np.ndarray  # int64 [W]: query rows of the call
    k_rows: np.ndarray  # int64 [W]: key rows of the call
    heads: int  # q heads of the call (H, or H/u after a head all-to-all of degree u)
    dense: np.ndarray  # bool [W]: the call's pairs fill its whole q x k x heads rectangle (a full block)
    direction: str = FWD  # FWD or BWD

    @staticmethod
    def of(area, q_rows, k_rows, heads: int, batch: int, direction: str = FWD) -> "Compute":
        area, q_rows, k_rows = (np.asarray(a, dtype=np.int64) for a in (area, q_rows, k_rows))
        dense = (area > 0) & (area == q_rows * k_rows * heads * batch)
        return Compute(area, q_rows, k_rows, heads, dense, direction)


@dataclass(frozen=True)
class Transfer:
    """The communication of a stage.

    ``SEND_RECV``: rank r receives ``bytes[peer[r]]`` from ``peer[r]`` (-1: receives nothing) and sends
    ``bytes[r]``; ``chain``: a relay (rank r forwards only after its own receive completed, LASP-1's state
    pass), else every rank posts its send and receive at the stage start (a ring step). A collective runs over
    each group of ``groups`` (each rank in exactly one group; singleton groups do nothing) and starts when all
    of the group's members reached it.
    """

    op: str
    bytes: np.ndarray  # int64 [W]: bytes each rank sends
    peer: Optional[np.ndarray] = None  # int64 [W]: SEND_RECV source of each rank (-1: none)
    groups: Optional[Partition] = None  # collectives
    chain: bool = False

    def __post_init__(self) -> None:
        if self.op not in OPS:
            raise ValueError(f"transfer op {self.op!r}; expected one of {', '.join(OPS)}")
        if (self.op == SEND_RECV) != (self.peer is not None) or (self.op in COLLECTIVES) != (self.groups is not None):
            raise ValueError(f"{self.op}: give peer for send_recv, groups for a collective")


@dataclass(frozen=True)
class Stage:
    """One step of every rank's program, in order: it starts once the rank finished the previous stage's compute
    and every transfer in ``waits`` (``(stage index, transfer index)`` of earlier stages) has arrived; it posts
    ``transfers`` at its start (they fly while this and later stages compute) and runs ``compute``, if any.

    So a ring step is a stage with a compute and the next block's send/recv, waited for by the next step; an
    all-to-all feeding the attention is a transfer-only stage waited for by the compute stage after it."""

    name: str
    compute: Optional[Compute] = None
    transfers: tuple[Transfer, ...] = ()
    waits: tuple[tuple[int, int], ...] = ()


@dataclass(frozen=True)
class Schedule:
    """Every rank's stages in program order (a rank ends when its last stage and every transfer it posted or
    receives are done), and the modelled peak memory of each rank (bytes)."""

    stages: tuple[Stage, ...]
    peak_bytes: np.ndarray  # int64 [W]
    info: dict = field(default_factory=dict)  # plain facts the strategy wants stored (degrees, ring sizes)

    @property
    def world_size(self) -> int:
        return len(self.peak_bytes)

    def sent_bytes(self) -> np.ndarray:
        """Bytes each rank sends over the whole schedule (equals the strategy's comm model)."""
        total = np.zeros(self.world_size, dtype=np.int64)
        for s in self.stages:
            for t in s.transfers:
                total = total + t.bytes
        return total

    def areas(self) -> np.ndarray:
        """(q, k, head) pairs x batch each rank computes over all stages (a fwd+bwd schedule counts both)."""
        total = np.zeros(self.world_size, dtype=np.int64)
        for s in self.stages:
            if s.compute is not None:
                total = total + s.compute.area
        return total


class ProgramBuilder:
    """Builds a :class:`Schedule` in program order: ``post`` transfers, ``wait`` for them, ``compute``.

    Posts and waits are gathered onto the next stage that computes (or a transfer-only stage when posts follow
    a compute directly), so a strategy writes its algorithm as the code runs it."""

    def __init__(self) -> None:
        self.stages: list[Stage] = []
        self._posts: list[Transfer] = []
        self._waits: list[tuple[int, int]] = []
        self._names: list[str] = []

    def post(self, name: str, transfer: Transfer) -> tuple[int, int]:
        """Post ``transfer`` now; returns its handle for :meth:`wait`."""
        if self._waits and not self._posts:  # a wait before this post must hold before it is posted
            self._flush(None)
        self._posts.append(transfer)
        self._names.append(name)
        return (len(self.stages), len(self._posts) - 1)

    def wait(self, handle: tuple[int, int]) -> None:
        if self._posts:  # posts before this wait go out first
            self._flush(None)
        self._waits.append(handle)

    def compute(self, name: str, compute: Compute) -> None:
        self._names.append(name)
        self._flush(compute)

    def _flush(self, compute: Optional[Compute]) -> None:
        self.stages.append(Stage(" + ".join(self._names), compute, tuple(self._posts), tuple(self._waits)))
        self._posts, self._waits, self._names = [], [], []

    def build(self, peak_bytes: np.ndarray, info: Optional[dict] = None) -> Schedule:
        if self._posts or self._waits:
            self._flush(None)
        return Schedule(tuple(self.stages), np.asarray(peak_bytes, dtype=np.int64), dict(info or {}))
