"""Paired measurement: calls alternate A, B, A, B, ... so slow drift of a shared machine hits every side alike.

:func:`alternate` times ``reps`` rounds of a set of named calls, one call of each per round in the given
order, recording per call the wall seconds (``perf_counter``), this process's CPU seconds (``process_time``:
all threads of the process, so CPU work of a multi-threaded kernel counts in full) and the system part of them
(``getrusage``, microseconds; page faults of fresh memory land there, a cost of the allocator rather than of the
kernel).
:class:`Paired` holds the samples in call order and gives medians and ratios. The benchmarks of lcbench
(``lcbench bench kernels``, ``lcbench bench peers``) compare their sides with it; the distributed one
passes ``before=barrier`` so every call of every rank starts together, and combines ranks with
:func:`rank_max_wall`.
"""

from __future__ import annotations

import resource
import statistics
import time
from dataclasses import dataclass, field
from typing import Callable, Mapping, Optional, Sequence


@dataclass
class Paired:
    """Samples of alternating calls: ``order`` is every call's name in the order it ran."""

    order: list[str] = field(default_factory=list)
    wall_s: dict[str, list[float]] = field(default_factory=dict)
    cpu_s: dict[str, list[float]] = field(default_factory=dict)
    sys_s: dict[str, list[float]] = field(default_factory=dict)

    @property
    def names(self) -> list[str]:
        return list(self.wall_s)

    def add(self, name: str, wall: float, cpu: float, system: float = 0.0) -> None:
        self.order.append(name)
        self.wall_s.setdefault(name, []).append(wall)
        self.cpu_s.setdefault(name, []).append(cpu)
        self.sys_s.setdefault(name, []).append(system)

    def median_wall(self, name: str) -> float:
        return statistics.median(self.wall_s[name])

    def median_cpu(self, name: str) -> float:
        return statistics.median(self.cpu_s[name])

    def median_sys(self, name: str) -> float:
        return statistics.median(self.sys_s[name])

    def median_user(self, name: str) -> float:
        """The median of each call's CPU time less its system time."""
        return statistics.median(c - s for c, s in zip(self.cpu_s[name], self.sys_s[name]))

    def ratio(self, a: str, b: str, metric: str = "wall") -> float:
        """median(a) / median(b) of ``metric`` ("wall" or "cpu"); < 1: ``a`` is faster."""
        if metric not in ("wall", "cpu"):
            raise ValueError(f"metric {metric!r}: 'wall' or 'cpu'")
        med = self.median_wall if metric == "wall" else self.median_cpu
        return med(a) / med(b)


def measure(call: Callable[[], object]) -> tuple[float, float, float]:
    """(wall seconds, process CPU seconds, of which system seconds) of one call."""
    s0, c0 = _system(), time.process_time()
    w0 = time.perf_counter()  # read last before the call and first after it: the wall time is the call's alone
    call()
    wall = time.perf_counter() - w0
    return wall, time.process_time() - c0, _system() - s0


def _system() -> float:
    """This process's system CPU seconds so far (``os.times`` counts in 10 ms clock ticks; this does not)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_stime


def alternate(calls: Mapping[str, Callable[[], object]], reps: int,
              before: Optional[Callable[[], object]] = None) -> Paired:
    """``reps`` rounds; each round calls every entry of ``calls`` once, in order. ``before`` runs untimed
    ahead of every call (e.g. a barrier). No warm-up: warm the calls up first."""
    if reps < 1:
        raise ValueError(f"reps={reps}: at least 1")
    out = Paired()
    for _ in range(reps):
        for name, call in calls.items():
            if before is not None:
                before()
            out.add(name, *measure(call))
    return out


def rank_max_wall(per_rank: Sequence[Paired], name: str) -> list[float]:
    """Per call of ``name``: the slowest rank's wall seconds (a distributed call ends when its last rank does)."""
    samples = [p.wall_s[name] for p in per_rank]
    if len({len(s) for s in samples}) != 1:
        raise ValueError(f"{name}: ranks recorded different numbers of calls {[len(s) for s in samples]}")
    return [max(column) for column in zip(*samples)]
