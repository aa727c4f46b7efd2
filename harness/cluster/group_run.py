"""One run on every rank of a group: what each rank reported, and the wait for all of them.

Shared by the two rank-group supervisors — :class:`harness.cluster.rank_group.RankGroup` (one Ray actor per
rank) and :class:`harness.cluster.local_group.LocalRankGroup` (the rank processes are children of this
process) — which both have the shape :class:`RankGroupSupervisor` declares, stop waiting by the same rule and
give :func:`harness.cluster.run_records.group_record` the same :class:`GroupRun`. Neither Ray nor torch is
imported here.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable, Hashable, Iterable, Optional, Protocol

from harness.cluster.isolation import Outcome


class GroupError(Exception):
    """A group could not be built (the message is the record's one-line reason)."""

    def __init__(self, reason: str, status: str = "error"):
        super().__init__(reason)
        self.status = status


@dataclass(frozen=True)
class RankFailure:
    """What a rank other than 0 returns when its part of a run failed (``execute_distributed`` raised
    ``RankFailed``): the run's status and the rank's own one-line reason, as data rather than exception text."""

    status: str
    reason: str


@dataclass
class RankResult:
    rank: int
    outcome: Outcome


def failed(o: Outcome) -> bool:
    """The rank's call failed (raised, died, overran, outgrew its budget) or it reported a :class:`RankFailure`."""
    return not o.ok or isinstance(o.value, RankFailure)


@dataclass
class GroupRun:
    """What each rank reported for one run (``missing``: ranks that gave no answer before the group gave up)."""

    results: list[RankResult] = field(default_factory=list)
    missing: list[int] = field(default_factory=list)
    elapsed_s: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.missing and not any(failed(r.outcome) for r in self.results)


# wait_any(pending, timeout_s) -> (ready, still pending): ray.wait or concurrent.futures.wait, one at least
WaitAny = Callable[[list, float], tuple[Iterable, list]]


def collect(handles: dict[Hashable, int], wait_any: WaitAny, outcome_of: Callable[[Hashable], Outcome],
            time_limit_s: float, failure_grace_s: float, answer_grace_s: float,
            started: Optional[float] = None) -> GroupRun:
    """Wait for the ranks' answers (``handles``: handle -> rank). The ranks enforce ``time_limit_s`` themselves;
    the group waits ``answer_grace_s`` longer before giving up on a rank, and only ``failure_grace_s`` after
    the first rank failed: the ranks left are then stuck in a collective with a failed peer."""
    started = time.perf_counter() if started is None else started
    deadline = started + time_limit_s + answer_grace_s
    out = GroupRun()
    pending = list(handles)
    while pending:
        now = time.perf_counter()
        if now >= deadline:
            break
        ready, pending = wait_any(pending, deadline - now)
        for handle in ready:
            o = outcome_of(handle)
            out.results.append(RankResult(handles[handle], o))
            if failed(o):
                deadline = min(deadline, time.perf_counter() + failure_grace_s)
    out.missing = sorted(handles[h] for h in pending)
    out.elapsed_s = time.perf_counter() - started
    return out


class RankGroupSupervisor(Protocol):
    """A group of W rank processes that runs one run at a time on all of them: built once, reused while
    ``healthy``, torn down (and built afresh by its owner) after a run that failed."""

    healthy: bool

    def build(self) -> "RankGroupSupervisor":
        """Start the ranks and their process group (a :class:`GroupError` when it cannot)."""

    def run(self, executor: str, run: Any, time_limit_s: float, memory_budget: Optional[int],
            failure_grace_s: float, answer_grace_s: float, **extra: Any) -> GroupRun:
        """``executor`` on every rank, waited for by :func:`collect` (``extra``: the supervisor's own knobs)."""

    def teardown(self) -> None:
        """Stop every rank; the group is unhealthy afterwards."""
