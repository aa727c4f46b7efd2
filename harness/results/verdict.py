"""Signal or noise: the one rule that says whether one measured figure beats another.

``compare`` (a run against itself in another sweep) and ``recommend`` (options against each other in one
configuration) both ask it, so both speak one vocabulary:

- ``better`` / ``worse``: the new figure improves / regresses on the base by more than the field's 3% rule
  (:data:`TIE`) and by more than the noise of the two runs (their p20-p80 spreads do not overlap);
- ``tie``: the difference is within the noise — under 3%, or each median lies inside the other's spread;
- ``inconclusive``: the spreads overlap but the medians differ by more than either run's noise explains (one
  of the runs is too noisy to tell), or the wall clock and the CPU time disagree.

Where the wall clock was contended (a CPU run's median wall time much above its CPU time per call:
:data:`CONTENDED`, the process waited for cores), the per-process CPU time is the honest cost: a wall-clock
verdict stands only when the CPU time agrees with it, and when the wall clock cannot tell, the CPU time
(3% rule: it has no stored spread) decides. Every verdict carries its reason in words.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Optional

from harness.results.records import number

# Relative difference below which two figures are a tie (run-to-run noise on these machines).
TIE = 0.03
# A CPU run whose median wall time exceeds its CPU time per call by this factor waited for cores.
CONTENDED = 1.5

BETTER, WORSE, SAME, INCONCLUSIVE = "better", "worse", "tie", "inconclusive"
VERDICTS = (BETTER, WORSE, SAME, INCONCLUSIVE)
# The rule in one line, for the captions of every table that shows a verdict.
RULE = (
    f"better/worse: beyond {TIE:.0%} and the p20-p80 spreads do not overlap; tie: within {TIE:.0%}, or each "
    "median inside the other's spread; inconclusive: the spreads overlap but the medians differ more than that, "
    f"or the wall clock was contended (wall > {CONTENDED}x CPU time per call) and the CPU time disagrees"
)


@dataclass(frozen=True)
class Figure:
    """One measured figure and what is known of its noise: the median, the p20-p80 spread (None when not
    stored) and, for a time, the per-process CPU time per call (None when unknown or not meaningful)."""

    median: float
    p20: Optional[float] = None
    p80: Optional[float] = None
    cpu: Optional[float] = None

    @property
    def spread(self) -> Optional[tuple[float, float]]:
        if self.p20 is None or self.p80 is None:
            return None
        return (min(self.p20, self.p80), max(self.p20, self.p80))

    @property
    def contention(self) -> Optional[float]:
        """Wall / CPU time when both are known and positive (None otherwise)."""
        if self.cpu is None or self.cpu <= 0 or self.median <= 0:
            return None
        return self.median / self.cpu


@dataclass(frozen=True)
class Verdict:
    """``verdict`` (one of :data:`VERDICTS`) of a new figure against a base one, ``ratio`` new/base of the
    medians, and the ``reason`` in words."""

    verdict: str
    ratio: float
    reason: str


def _direction(ratio: float, better: str) -> str:
    return BETTER if (ratio < 1) == (better == "lower") else WORSE


def _by_threshold(ratio: float, better: str) -> str:
    return SAME if abs(ratio - 1) < TIE else _direction(ratio, better)


def _wall(base: Figure, new: Figure, better: str, names: tuple[str, str]) -> Verdict:
    """The verdict of the medians and spreads alone."""
    ratio = new.median / base.median
    diff = f"{names[1]} {ratio - 1:+.1%} vs {names[0]}"
    if abs(ratio - 1) < TIE:
        return Verdict(SAME, ratio, f"{diff}: within {TIE:.0%}")
    bs, ns = base.spread, new.spread
    if bs is None or ns is None:
        return Verdict(_direction(ratio, better), ratio, f"{diff}, beyond {TIE:.0%} (no spread stored)")
    if bs[1] < ns[0] or ns[1] < bs[0]:
        return Verdict(_direction(ratio, better), ratio, f"{diff}; p20-p80 spreads disjoint")
    if bs[0] <= new.median <= bs[1] and ns[0] <= base.median <= ns[1]:
        return Verdict(SAME, ratio, f"{diff}, each median inside the other's p20-p80 spread")
    noisy = names[1] if (ns[1] - ns[0]) / new.median > (bs[1] - bs[0]) / base.median else names[0]
    return Verdict(INCONCLUSIVE, ratio, f"{diff} but the p20-p80 spreads overlap ({noisy} is noisier)")


def judge(base: Figure, new: Figure, better: str = "lower", names: tuple[str, str] = ("base", "new")) -> Verdict:
    """Whether ``new`` is better, worse, tied with or not distinguishable from ``base`` (module docstring);
    ``better``: ``lower`` or ``higher``, which way the figure improves; ``names``: what the reason calls base
    and new. ``base.median`` must be > 0."""
    wall = _wall(base, new, better, names)
    contention = max((c for c in (base.contention, new.contention) if c is not None), default=None)
    if contention is None or contention < CONTENDED:
        return wall
    assert base.cpu is not None and new.cpu is not None
    cpu_ratio = new.cpu / base.cpu
    cpu = _by_threshold(cpu_ratio, better)
    context = f"wall clock contended (wall {contention:.1f}x CPU time); CPU time {cpu_ratio - 1:+.1%}"
    if wall.verdict == cpu:
        return Verdict(cpu, wall.ratio, f"{wall.reason}; {context} agrees")
    if wall.verdict in (BETTER, WORSE):
        return Verdict(INCONCLUSIVE, wall.ratio, f"{wall.reason}, but {context} says {cpu}")
    return Verdict(cpu, wall.ratio, f"{wall.reason}; {context} decides: {cpu}")


# ----- figures of records ----------------------------------------------------------------------------------
TIME = "time_ms_median"


def _max_of(value: object) -> Optional[float]:
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            return None
    values = [number(v) for v in value] if isinstance(value, list) else []
    values = [v for v in values if v is not None]
    return max(values) if values else None


def cpu_time(record: dict) -> Optional[float]:
    """The CPU time per call a run's wall time compares with: ``cpu_ms`` (a rank group's: the most any rank
    used, ``rank_cpu_ms``). None on a GPU, where the host's CPU time says nothing of the kernel's."""
    if record.get("device", "cpu") != "cpu":
        return None
    cpu = number(record.get("cpu_ms"))
    return cpu if cpu is not None else _max_of(record.get("rank_cpu_ms"))


def time_figure(record: dict) -> Optional[Figure]:
    """The median time of a record with its spread and CPU time (None when it has no median)."""
    median = number(record.get(TIME))
    if median is None:
        return None
    return Figure(median, number(record.get("time_ms_p20")), number(record.get("time_ms_p80")), cpu_time(record))


def figure(record: dict, name: str) -> Optional[Figure]:
    """Figure ``name`` of a record: the median time (with spread and CPU time), or a metric (a value alone:
    no spread is stored for metrics)."""
    if name == TIME:
        return time_figure(record)
    value = number((record.get("metrics") or {}).get(name))
    return None if value is None else Figure(value)
