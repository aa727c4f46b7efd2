"""Signal or noise: the one rule that says whether one measured figure beats another.

``compare`` (a run against itself in another sweep) and ``recommend`` (options against each other in one
configuration) both ask it, so both speak one vocabulary:

- ``better`` / ``worse``: the new figure improves / regresses on the base by more than the field's 3% rule
  (:data:`TIE`) and by more than the noise of the two runs (their p20-p80 spreads do not overlap);
- ``tie``: the difference is within the noise — under 3%, or each median lies inside the other's spread;
- ``inconclusive``: the spreads overlap but the medians differ by more than either run's noise explains (one
  of the runs is too noisy to tell), or the wall clock and the CPU time disagree.

Where the wall clock was contended — a CPU run's median wall time x its threads more than :data:`CONTENDED`
x its CPU time per call: its threads waited for cores a fifth of the time or more — the wall clock alone
decides nothing: ``better``/``worse`` needs the per-process CPU time to agree (the same way, by more than the
3% rule and than the runs' own relative p20-p80 spread: the CPU time has no stored spread, and contention
inflates it too), ``tie`` needs both to tie, and anything else is ``inconclusive``. Every verdict carries its
reason in words.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Optional

from harness.results.schema import number

# Relative difference below which two figures are a tie (run-to-run noise on these machines).
TIE = 0.03
# A CPU run whose median wall time x threads exceeds its CPU time per call by this factor waited for cores.
CONTENDED = 1.25

BETTER, WORSE, SAME, INCONCLUSIVE = "better", "worse", "tie", "inconclusive"
VERDICTS = (BETTER, WORSE, SAME, INCONCLUSIVE)
# The rule in one line, for the captions of every table that shows a verdict.
RULE = (
    f"better/worse: beyond {TIE:.0%} and the p20-p80 spreads do not overlap; tie: within {TIE:.0%}, or each "
    "median inside the other's spread; inconclusive: the spreads overlap but the medians differ more than that, "
    f"or the wall clock was contended (wall x threads > {CONTENDED}x CPU time per call) and the CPU time "
    "does not agree beyond the runs' spread"
)


@dataclass(frozen=True)
class Figure:
    """One measured figure and what is known of its noise: the median, the p20-p80 spread (None when not
    stored) and, for a time, the per-process CPU time per call (None when unknown or not meaningful) of a
    process running ``threads`` threads."""

    median: float
    p20: Optional[float] = None
    p80: Optional[float] = None
    cpu: Optional[float] = None
    threads: int = 1

    @property
    def spread(self) -> Optional[tuple[float, float]]:
        if self.p20 is None or self.p80 is None:
            return None
        return (min(self.p20, self.p80), max(self.p20, self.p80))

    @property
    def relative_spread(self) -> float:
        """(p80 - p20) / median: the run's own noise, relative (0 when no spread is stored)."""
        spread = self.spread
        return 0.0 if spread is None or self.median <= 0 else (spread[1] - spread[0]) / self.median

    @property
    def contention(self) -> Optional[float]:
        """Wall time x threads / CPU time when both are known and positive (None otherwise): 1 when every
        thread ran all the time, above 1 when they waited (for cores, mostly, on a shared machine)."""
        if self.cpu is None or self.cpu <= 0 or self.median <= 0:
            return None
        return self.median * max(1, self.threads) / self.cpu


@dataclass(frozen=True)
class Verdict:
    """``verdict`` (one of :data:`VERDICTS`) of a new figure against a base one, ``ratio`` new/base of the
    medians, and the ``reason`` in words."""

    verdict: str
    ratio: float
    reason: str


def _direction(ratio: float, better: str) -> str:
    return BETTER if (ratio < 1) == (better == "lower") else WORSE


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
    if not base.median > 0:
        raise ValueError(f"judge: the base median must be > 0, not {base.median}")
    wall = _wall(base, new, better, names)
    contention = max((c for c in (base.contention, new.contention) if c is not None), default=None)
    if contention is None or contention < CONTENDED:
        return wall
    if base.cpu is None or new.cpu is None:  # the contended wall clock cannot be checked against the other's CPU
        missing = names[0] if base.cpu is None else names[1]
        return Verdict(wall.verdict if wall.verdict == SAME else INCONCLUSIVE, wall.ratio,
                       f"{wall.reason}; wall clock contended (wall x threads {contention:.1f}x CPU time) and no "
                       f"CPU time for {missing}")
    cpu_ratio = new.cpu / base.cpu
    noise = max(TIE, base.relative_spread, new.relative_spread)
    cpu = SAME if abs(cpu_ratio - 1) < noise else _direction(cpu_ratio, better)
    context = (f"wall clock contended (wall x threads {contention:.1f}x CPU time); CPU time {cpu_ratio - 1:+.1%} "
               f"(noise {noise:.0%})")
    if wall.verdict == cpu:
        return Verdict(cpu, wall.ratio, f"{wall.reason}; {context} agrees")
    return Verdict(INCONCLUSIVE, wall.ratio, f"{wall.reason}, but {context}: {cpu}")


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
    threads = record.get("threads")
    return Figure(median, number(record.get("time_ms_p20")), number(record.get("time_ms_p80")), cpu_time(record),
                  threads if isinstance(threads, int) and not isinstance(threads, bool) and threads > 0 else 1)


def figure(record: dict, name: str) -> Optional[Figure]:
    """Figure ``name`` of a record: the median time (with spread and CPU time), or a metric (a value alone:
    no spread is stored for metrics)."""
    if name == TIME:
        return time_figure(record)
    value = number((record.get("metrics") or {}).get(name))
    return None if value is None else Figure(value)
