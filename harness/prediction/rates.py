"""Kernel rate tables: how long a device's local attention kernel takes for the call a rank really makes.

A table is a plain YAML file of measured points, one per (method, mask kind, size, direction) run — lcbench's
own measurements (``lcbench calibrate``, the GPU self-check) or, where a file says so in its ``source``, a
kernel library's published benchmark. The model interpolates **time against work** (work = (q, k, q-head)
pairs x batch of the call) piecewise-linearly in log-log between the points of the same dtype, direction and
kind, and extrapolates at constant rate beyond the largest point and at the slope of the two smallest below
the smallest (small calls are latency-bound: time falls slower than work). A call's time scales with
``head_dim`` linearly from the nearest measured head dim (FLOPs are linear in it).

The kind of a call: ``full`` when its pairs fill the whole q x k rectangle (a dense block), else the mask
pattern's name when the table has that pattern, else ``causal`` (the partial-tile kind every table has).
Directions are derived inside a kind: ``bwd`` as ``fwd+bwd - fwd``, ``fwd`` as ``fwd+bwd - bwd``, ``fwd+bwd`` as
``fwd + bwd`` when only the others were measured; a kind measured only as ``fwd+bwd`` (a published fwd+bwd
figure) gives a schedule's forward and backward calls 1 and 2.5 of its 3.5 FLOP shares (equal rates). A kind
that cannot give the direction falls back to ``causal`` as a whole.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Optional

import yaml

from harness.errors import UserError

FULL = "full"
PARTIAL = "causal"  # the fallback kind: a table must hold it
POINT_KEYS = ("dtype", "direction", "kind", "work", "head_dim", "time_ms")
DIRECTIONS = ("fwd", "bwd", "fwd+bwd")
# A kind measured only as fwd+bwd: a schedule's forward and backward calls take the shares of the softmax FLOP
# convention (1 and 2.5 of 3.5), i.e. the same rate in both passes.
SPLIT = {"fwd": 1 / 3.5, "bwd": 2.5 / 3.5}


@dataclass(frozen=True)
class RatePoint:
    dtype: str
    direction: str
    kind: str
    work: float  # (q, k, q-head) pairs x batch of the call
    head_dim: int
    time_ms: float


@dataclass
class RateTable:
    """Measured kernel times of one method on one device (see the module docstring)."""

    method: str
    device: str
    source: str
    points: list[RatePoint]
    threads: Optional[int] = None  # CPU threads per process the points were measured with
    path: Optional[Path] = None
    _curves: dict = field(default_factory=dict, repr=False)

    # ----- files -----------------------------------------------------------------------------------------
    @staticmethod
    def load(path: Path) -> "RateTable":
        where = str(path)
        try:
            data = yaml.safe_load(Path(path).read_text())
        except (OSError, yaml.YAMLError) as e:
            raise UserError(f"rate table {where}: cannot be read ({type(e).__name__}: {e})") from None
        if not isinstance(data, dict):
            raise UserError(f"rate table {where}: expected a mapping with method, device, source, points")
        unknown_keys = set(data) - {"method", "device", "source", "threads", "points"}
        if unknown_keys:
            raise UserError(f"rate table {where}: unknown key {sorted(unknown_keys)[0]!r}; expected method, device, "
                            "source, threads, points")
        for key in ("method", "device", "source", "points"):
            if not data.get(key):
                raise UserError(f"rate table {where}: missing {key!r}")
        points = [_point(p, f"{where}: points[{i}]") for i, p in enumerate(data["points"])]
        table = RateTable(str(data["method"]), str(data["device"]), str(data["source"]), points,
                          data.get("threads"), Path(path))
        table.require_kind(PARTIAL, where)
        return table

    def dump(self) -> str:
        body = {"method": self.method, "device": self.device, "source": self.source, "threads": self.threads,
                "points": [{k: getattr(p, k) for k in POINT_KEYS} for p in
                           sorted(self.points, key=lambda p: (p.dtype, p.direction, p.kind, p.head_dim, p.work))]}
        return yaml.safe_dump(body, sort_keys=False, width=120)

    def require_kind(self, kind: str, where: str) -> None:
        if not any(p.kind == kind for p in self.points):
            raise UserError(f"rate table {where}: no point of kind {kind!r} (every table needs the {kind} kind)")

    # ----- the model ------------------------------------------------------------------------------------------
    @property
    def dtypes(self) -> set[str]:
        return {p.dtype for p in self.points}

    def kinds(self) -> set[str]:
        return {p.kind for p in self.points}

    def supports(self, dtype: str, direction: str) -> Optional[str]:
        """None when the table can time ``direction`` in ``dtype``, else why not (one line)."""
        if dtype not in self.dtypes:
            return (f"rate table of {self.method} on {self.device} has no {dtype} points "
                    f"(has {', '.join(sorted(self.dtypes))})")
        have = {p.direction for p in self.points if p.dtype == dtype}
        needed = {"fwd": [{"fwd"}, {"bwd", "fwd+bwd"}], "bwd": [{"bwd"}, {"fwd", "fwd+bwd"}],
                  "fwd+bwd": [{"fwd+bwd"}, {"fwd", "bwd"}]}[direction]
        if not any(n <= have for n in needed):
            return (f"rate table of {self.method} on {self.device} cannot time {direction} in {dtype} "
                    f"(measured: {', '.join(sorted(have))})")
        return None

    def kind_for(self, dense: bool, mask: str) -> str:
        if dense and FULL in self.kinds():
            return FULL
        return mask if mask in self.kinds() else PARTIAL

    def time_ms(self, work: float, dtype: str, direction: str, kind: str, head_dim: int) -> float:
        """Modelled time of one call (ms); 0 for no work."""
        if work <= 0:
            return 0.0
        curve = self._curve(dtype, direction, kind, head_dim)
        if curve is not None:
            dim, xs, ys = curve
            return math.exp(_interpolate(math.log(work), xs, ys)) * head_dim / dim
        have = {p.direction for p in self.points if (p.dtype, p.kind) == (dtype, kind)}
        if direction == "bwd" and {"fwd", "fwd+bwd"} <= have:
            return max(0.0, self.time_ms(work, dtype, "fwd+bwd", kind, head_dim)
                       - self.time_ms(work, dtype, "fwd", kind, head_dim))
        if direction == "fwd" and {"bwd", "fwd+bwd"} <= have:
            return max(0.0, self.time_ms(work, dtype, "fwd+bwd", kind, head_dim)
                       - self.time_ms(work, dtype, "bwd", kind, head_dim))
        if direction == "fwd+bwd" and {"fwd", "bwd"} <= have:
            return self.time_ms(work, dtype, "fwd", kind, head_dim) + self.time_ms(work, dtype, "bwd", kind, head_dim)
        if direction in SPLIT and have == {"fwd+bwd"}:
            return SPLIT[direction] * self.time_ms(work, dtype, "fwd+bwd", kind, head_dim)
        if kind != PARTIAL:
            return self.time_ms(work, dtype, direction, PARTIAL, head_dim)
        raise UserError(f"rate table of {self.method} on {self.device}: no {dtype} {direction} points")

    def _curve(self, dtype: str, direction: str, kind: str, head_dim: int):
        key = (dtype, direction, kind, head_dim)
        if key not in self._curves:
            pts = [p for p in self.points if (p.dtype, p.direction, p.kind) == (dtype, direction, kind)]
            if not pts:
                self._curves[key] = None
            else:
                dim = min({p.head_dim for p in pts}, key=lambda d: (abs(math.log(d / head_dim)), d))
                chosen = sorted((p for p in pts if p.head_dim == dim), key=lambda p: p.work)
                xs, ys = _monotone([math.log(p.work) for p in chosen], [math.log(p.time_ms) for p in chosen])
                self._curves[key] = (dim, xs, ys)
        return self._curves[key]


def _monotone(xs: list[float], ys: list[float]) -> tuple[list[float], list[float]]:
    """Points of equal work averaged (in log), so that the interpolation is a function of work."""
    merged: dict[float, list[float]] = {}
    for x, y in zip(xs, ys):
        merged.setdefault(round(x, 9), []).append(y)
    keys = sorted(merged)
    return keys, [sum(merged[k]) / len(merged[k]) for k in keys]


def _interpolate(x: float, xs: list[float], ys: list[float]) -> float:
    """Log time at log work ``x``: linear between points, rate-constant above, the lowest slope (in [0, 1])
    below."""
    if len(xs) == 1:
        return ys[0] + (x - xs[0])
    if x >= xs[-1]:
        return ys[-1] + (x - xs[-1])  # slope 1 in log-log: constant rate
    if x <= xs[0]:
        slope = min(1.0, max(0.0, (ys[1] - ys[0]) / (xs[1] - xs[0])))
        return ys[0] + slope * (x - xs[0])
    for i in range(1, len(xs)):
        if x <= xs[i]:
            t = (x - xs[i - 1]) / (xs[i] - xs[i - 1])
            return ys[i - 1] + t * (ys[i] - ys[i - 1])
    return ys[-1]


def _point(raw, where: str) -> RatePoint:
    if not isinstance(raw, dict):
        raise UserError(f"rate table {where}: expected a mapping with {', '.join(POINT_KEYS)}")
    missing = [k for k in POINT_KEYS if k not in raw]
    extra = sorted(set(raw) - set(POINT_KEYS))
    if missing or extra:
        what = f"missing {missing[0]!r}" if missing else f"unknown key {extra[0]!r}"
        raise UserError(f"rate table {where}: {what}; expected {', '.join(POINT_KEYS)}")
    if raw["direction"] not in DIRECTIONS:
        raise UserError(f"rate table {where}: direction={raw['direction']!r}; expected one of {', '.join(DIRECTIONS)}")
    for key in ("work", "time_ms", "head_dim"):
        value = raw[key]
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
            raise UserError(f"rate table {where}: {key}={value!r} is not allowed; expected a number > 0")
    return RatePoint(str(raw["dtype"]), raw["direction"], str(raw["kind"]), float(raw["work"]),
                     int(raw["head_dim"]), float(raw["time_ms"]))


def softmax_work(record: dict) -> float:
    """A softmax kernel's work: the (q, k, q-head) pairs of the call, over batch (the record's ``area``)."""
    return float(record.get("area") or 0)


def rows_work(record: dict) -> float:
    """A linear-attention kernel's work: rows x heads x batch (what a linear strategy's rank computes)."""
    return float(record["seqlen"] * record["heads_q"] * (record.get("batch") or 1))


def alone_ms(record: dict) -> float:
    """A kernel run's time with its cores to itself: a one-thread CPU run's CPU time per call (what the call
    costs whatever else shares the machine; on a quiet machine it equals the wall median), else the wall median
    (a GPU kernel, or threads that may wait on each other)."""
    cpu = record.get("cpu_ms")
    if record.get("device") == "cpu" and record.get("threads") == 1 and cpu:
        return float(cpu)
    return float(record["time_ms_median"])


def table_from_records(records: Iterable[dict], method: str, device: str, source: str,
                       threads: Optional[int] = None, work_of: Callable[[dict], float] = softmax_work) -> RateTable:
    """A rate table from ``ok`` single-device runs of ``method`` (what ``lcbench calibrate`` measured): each run
    is one point, its work ``work_of(record)`` (:func:`softmax_work`, or :func:`rows_work` for a linear method),
    its kind ``full`` for the full mask, else the mask's name (``causal`` for the causal square), its time
    :func:`alone_ms`."""
    points = []
    for r in records:
        if r.get("status") != "ok" or r.get("method") != method or r.get("strategy") or r.get("workload"):
            continue
        if r.get("direction") not in DIRECTIONS or not r.get("time_ms_median"):
            continue
        work = work_of(r)
        if not work:
            continue
        kind = FULL if r.get("mask") == "full" else r["mask"]
        points.append(RatePoint(r["dtype"], r["direction"], kind, work, int(r["head_dim"]), alone_ms(r)))
    if not points:
        raise UserError(f"no ok runs of method {method} to make a rate table from")
    return RateTable(method, device, source, points, threads)
