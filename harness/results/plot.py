"""Plots of a result store: any metric against any parameter, one line per label, one panel per
(mask, direction) for kernels and per (workload, phase) for workloads. Only validated (``ok``) runs and
``lcbench predict``'s predictions are plotted, read through :func:`harness.results.records.public_view`; a
prediction is drawn as a dashed line with hollow markers and "(predicted)" in its label, beside the measured
points.

Defaults per kind: kernels (methods, strategies) get TFLOP/s and time vs sequence length (``tflops.png``,
``time.png``); workloads get ms/token (the ``ms_per_token`` metric where they report it, else the median
time) and peak memory vs sequence length (``workload_*.png``). ``x``, ``y`` and ``by`` may name a record
field, ``params.<name>`` or ``metrics.<name>``; ``y`` may list several (``--y a,b``): they share one figure,
one panel per subject with its phases or directions merged and one line per label and metric — e.g. the
qTTT steps' cost (``ttt_step``) against the equal-FLOP thinking tokens' time (``decode``) vs context length.
A ``--by params.<name>`` puts the values of that parameter as lines in one panel. The y axis is logarithmic
for times and for any values spanning two decades or more.
"""

from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from harness.errors import UserError  # noqa: E402
from harness.results.records import (  # noqa: E402
    METRICS_PREFIX, field_names, field_value, is_predicted, kind_of, mask_label, metric_unit, number, params_label,
    public_view, shape_label, who,
)
from harness.results.report import conventions_caption  # noqa: E402
from harness.status import WITH_FIGURES  # noqa: E402

TIME = "time_ms_median"


@dataclass(frozen=True)
class Group:
    """How one family of kinds is plotted: its panels, its default line labels and default y axes."""

    prefix: str  # file name prefix
    subject: Callable[[dict], str]  # what a panel shows, before its direction / phase
    label: Callable[[dict], str]
    default_ys: Callable[[list[dict]], list[tuple[str, str]]]  # records -> [(y field, file stem)]

    def panel(self, r: dict) -> str:
        return f"{self.subject(r)} · {r.get('direction')}"


def _without(r: dict, by: Optional[str]) -> dict:
    """``r`` as its panel sees it: without the ``params.<name>`` that ``--by`` spreads into lines (a panel per
    value of it would leave one line per panel, nothing to compare or cross)."""
    if by is None or not by.startswith("params."):
        return r
    return {**r, "params": {k: v for k, v in (r.get("params") or {}).items() if k != by[len("params."):]}}


PREDICTED_TAG = " (predicted)"  # ends the label of every line drawn from predicted records (dashed, hollow)


def _kernel_label(r: dict) -> str:
    ws = f" ws{r['world_size']}" if (r.get("world_size") or 1) > 1 else ""
    return f"{who(r)} {shape_label(r)} {r.get('dtype')}{ws}" + (PREDICTED_TAG if is_predicted(r) else "")


def _workload_label(r: dict) -> str:
    ws = f" ws{r['world_size']}" if (r.get("world_size") or 1) > 1 else ""
    return f"{who(r)} B{r.get('batch')} {r.get('dtype')}{ws}" + (PREDICTED_TAG if is_predicted(r) else "")


def _workload_ys(records: list[dict]) -> list[tuple[str, str]]:
    per_token = METRICS_PREFIX + "ms_per_token"
    time = per_token if any(field_value(r, per_token) is not None for r in records) else TIME
    return [(time, "ms_per_token"), ("peak_mem_bytes", "peak_mem")]


KERNELS = Group("", mask_label, _kernel_label, lambda records: [("tflops", "tflops"), (TIME, "time")])
WORKLOADS = Group("workload_", lambda r: f"{r.get('workload')}({params_label(r)})", _workload_label, _workload_ys)
GROUPS = {"method": KERNELS, "strategy": KERNELS, "workload": WORKLOADS}


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name)


def _short(name: str) -> str:
    return name[len(METRICS_PREFIX):] if name.startswith(METRICS_PREFIX) else name


def _axis_label(name: str, records: list[dict]) -> str:
    if name.startswith(METRICS_PREFIX):
        unit = metric_unit(records, _short(name))
        return f"{_short(name)} ({unit})" if unit else name
    return {TIME: "time (ms, median; bars p20-p80)", "tflops": "TFLOP/s per device", "seqlen": "sequence length",
            "peak_mem_bytes": "peak memory (bytes)"}.get(name, name)


def _check_names(records: list[dict], names: list[tuple[str, Optional[str]]]) -> None:
    """Every name given (``--x``, ``--y``, ``--by``) must be a field some record has."""
    known = field_names(records)
    for option, name in names:
        if name is not None and name not in known:
            raise UserError(f"plot {option} {name!r}: not a field of these results (available: {', '.join(known)})")


def _ticks(values: list[Any]) -> Optional[list[str]]:
    """None when every x value is a number; else the sorted distinct values as text (a categorical axis)."""
    if all(number(v) is not None for v in values):
        return None
    return sorted({str(v) for v in values})


def _xpos(value: Any, ticks: Optional[list[str]]) -> float:
    return float(ticks.index(str(value))) if ticks else float(value)


def _line(ax, recs: list[dict], x: str, y: str, ticks: Optional[list[str]], label: str) -> None:
    """One line of ``y`` vs ``x`` through ``recs`` (markers only on a categorical x axis); the median time
    gets p20-p80 error bars."""
    recs = sorted(recs, key=lambda r: _xpos(field_value(r, x), ticks))
    xs = [_xpos(field_value(r, x), ticks) for r in recs]
    ys = [float(field_value(r, y)) for r in recs]
    style = "none" if ticks else "-"
    if any(is_predicted(r) for r in recs):  # a model's line: dashed, hollow markers, never mistaken for data
        ax.plot(xs, ys, marker="o", markerfacecolor="none", label=label, linestyle="none" if ticks else "--")
        return
    if y == TIME and all(r.get("time_ms_p20") is not None and r.get("time_ms_p80") is not None for r in recs):
        err = [[v - r["time_ms_p20"] for v, r in zip(ys, recs)], [r["time_ms_p80"] - v for v, r in zip(ys, recs)]]
        ax.errorbar(xs, ys, yerr=err, marker="o", capsize=3, label=label, linestyle=style)
    else:
        ax.plot(xs, ys, marker="o", label=label, linestyle=style)


def crossings(lines: dict[str, list[tuple[float, float]]], log_x: bool = True) -> list[tuple[float, str, str]]:
    """Where two lines cross: ``(x, the line below after the crossing, the other)`` for every pair of lines and
    every place along their shared x values where their order flips: between two measured points, x
    interpolated linearly in log x (in x when ``log_x`` is false or x reaches 0); at a measured point where the
    two tie and the order on either side differs, that point."""
    out = []
    names = sorted(lines)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            ya, yb = dict(lines[a]), dict(lines[b])
            last = None  # (x, difference) at the last shared x where the two differ
            tie = None  # the first x of a run of ties since then
            for x1 in sorted(set(ya) & set(yb)):
                d1 = ya[x1] - yb[x1]
                if d1 == 0:
                    tie = x1 if tie is None else tie
                    continue
                if last is not None and last[1] * d1 < 0:
                    x0, d0 = last
                    t = d0 / (d0 - d1)
                    x = tie if tie is not None else (
                        x0 * (x1 / x0) ** t if log_x and x0 > 0 else x0 + t * (x1 - x0))
                    out.append((x, a, b) if d1 < 0 else (x, b, a))
                last, tie = (x1, d1), None
    return sorted(out)


def _apart(a: str, b: str) -> tuple[str, str]:
    """Two line labels with the words they share at the start and at the end left out: what tells them apart."""
    wa, wb = a.split(" "), b.split(" ")
    head = 0
    while head < min(len(wa), len(wb)) - 1 and wa[head] == wb[head]:
        head += 1
    tail = 0
    while tail < min(len(wa), len(wb)) - head - 1 and wa[-1 - tail] == wb[-1 - tail]:
        tail += 1
    return " ".join(wa[head:len(wa) - tail]), " ".join(wb[head:len(wb) - tail])


def _mark_crossings(ax, panel: dict[tuple[str, str], list[dict]], x: str, log_x: bool) -> None:
    lines = {label: [(float(field_value(r, x)), float(field_value(r, y))) for r in recs]
             for (label, y), recs in panel.items()}
    for at, lower, other in crossings(lines, log_x):
        ax.axvline(at, linestyle=":", color="gray", linewidth=1)
        low, high = _apart(lower, other)
        ax.annotate(f"x~{at:,.0f}: then\n{low} < {high}", (at, 0.98),
                    xycoords=("data", "axes fraction"), fontsize=6, va="top", ha="left", color="dimgray")


def _draw(records: list[dict], group: Group, x: str, ys: list[str], by: Optional[str], path: Path,
          mark_crossings: bool = False) -> Optional[Path]:
    """One figure of ``ys`` vs ``x`` for ``records`` (ok views), one panel per group panel (per subject when
    several ys share the figure: one line per label and metric), crossings of lines marked on request;
    None if empty."""
    panels: dict[str, dict[tuple[str, str], list[dict]]] = defaultdict(lambda: defaultdict(list))
    points: dict[int, dict] = {}  # the records drawn, each once
    values = []
    for y in ys:
        for r in records:
            if number(field_value(r, y)) is None or field_value(r, x) is None:
                continue
            points[id(r)] = r
            values.append(float(field_value(r, y)))
            line = group.label(r) if by is None else f"{by}={field_value(r, by)}" + (
                PREDICTED_TAG if is_predicted(r) else "")
            if len(ys) > 1:
                panels[group.subject(_without(r, by))][f"{line} · {_short(y)} ({r.get('direction')})", y].append(r)
            else:
                panels[group.panel(_without(r, by))][line, y].append(r)
    if not points:
        return None
    points = list(points.values())
    keys = sorted(panels)
    ticks = _ticks([field_value(r, x) for r in points])
    if mark_crossings and ticks:
        raise UserError(f"plot --crossings: needs a numeric --x ({x!r} has values that are not numbers)")
    log_x = ticks is None and min(float(field_value(r, x)) for r in points) > 0
    log_y = min(values) > 0 and (ys == [TIME] or max(values) >= 100 * min(values))  # times, or 2+ decades
    cols = min(3, len(keys))
    rows = (len(keys) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(5.5 * cols, 4 * rows), squeeze=False)
    for ax, key in zip(axes.flat, keys):
        for (label, y_line), recs in sorted(panels[key].items()):
            _line(ax, recs, x, y_line, ticks, label)
        if mark_crossings:
            _mark_crossings(ax, panels[key], x, log_x)
        if ticks:
            ax.set_xticks(range(len(ticks)), ticks, rotation=30, fontsize=7)
        if log_x:
            ax.set_xscale("log", base=2)
        if log_y:
            ax.set_yscale("log")
        ax.set_title(key, fontsize=9)
        ax.set_xlabel(_axis_label(x, points))
        ax.set_ylabel(" / ".join(dict.fromkeys(_axis_label(name, points) for name in ys)))
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7)
    for ax in list(axes.flat)[len(keys):]:
        ax.axis("off")
    if any(name in ("tflops", "flops", "frac_peak") for name in ys):
        fig.suptitle(conventions_caption(points), fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_records(
    records: list[dict], out_dir: str | Path, x: Optional[str] = None, y: Optional[str] = None,
    by: Optional[str] = None, mark_crossings: bool = False,
) -> list[Path]:
    """Write PNG plots of the ``ok`` records into ``out_dir``; returns the paths written.

    Without ``y`` each kind gets its default plots (see the module docstring); with ``y`` (one name, or several
    separated by commas to share one figure) one plot per kind family that has it. ``x`` defaults to ``seqlen``;
    ``by`` (default: who ran, shape, dtype) names the lines; ``mark_crossings`` marks where two lines cross (e.g.
    the length from which a hybrid model beats all-softmax). A name no record has is a :class:`UserError`
    listing the available ones."""
    views = [public_view(r) for r in records]
    y_names = list(dict.fromkeys(n.strip() for n in (y or "").split(",") if n.strip()))
    if y is not None and not y_names:
        raise UserError(f"plot --y {y!r}: no field named (give one, or several separated by commas)")
    _check_names(views, [("--x", x), ("--by", by), *(("--y", name) for name in y_names)])
    ok = [v for v in views if v["status"] in WITH_FIGURES]  # measured and valid, or predicted (drawn dashed)
    families: dict[Group, list[dict]] = defaultdict(list)
    for v in ok:
        families[GROUPS.get(kind_of(v), KERNELS)].append(v)
    for name in y_names:
        if not any(number(field_value(v, name)) is not None for v in ok):
            raise UserError(f"plot --y {name!r}: no ok run has a number there (y must be a numeric field or metric)")
    out_dir = Path(out_dir)
    suffix = (f"_vs_{_slug(x)}" if x else "") + (f"_by_{_slug(by)}" if by else "")
    written = []
    for group, recs in families.items():
        figures = [(y_names, _slug("_and_".join(y_names)))] if y_names else [
            ([name], stem) for name, stem in group.default_ys(recs)]
        for names, stem in figures:
            out_dir.mkdir(parents=True, exist_ok=True)
            path = _draw(recs, group, x or "seqlen", names, by, out_dir / f"{group.prefix}{stem}{suffix}.png",
                         mark_crossings)
            if path is not None:
                written.append(path)
    return written
