"""Plots of a result store: any metric against any parameter, one line per label, one panel per
(mask, direction) for kernels and per (workload, phase) for workloads. Only validated (``ok``) runs are
plotted, read through :func:`harness.results.records.public_view`.

Defaults per kind: kernels (methods, strategies) get TFLOP/s and time vs sequence length (``tflops.png``,
``time.png``); workloads get ms/token (the ``ms_per_token`` metric where they report it, else the median
time) and peak memory vs sequence length (``workload_*.png``). ``x``, ``y`` and ``by`` may name a record
field, ``params.<name>`` or ``metrics.<name>``.
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
    METRICS_PREFIX, field_names, field_value, kind_of, mask_label, metric_unit, number, params_label,
    public_view, shape_label, who,
)
from harness.results.report import conventions_caption  # noqa: E402
from harness.status import OK  # noqa: E402

TIME = "time_ms_median"


@dataclass(frozen=True)
class Group:
    """How one family of kinds is plotted: its panels, its default line labels and default y axes."""

    prefix: str  # file name prefix
    panel: Callable[[dict], str]
    label: Callable[[dict], str]
    default_ys: Callable[[list[dict]], list[tuple[str, str]]]  # records -> [(y field, file stem)]


def _kernel_label(r: dict) -> str:
    ws = f" ws{r['world_size']}" if (r.get("world_size") or 1) > 1 else ""
    return f"{who(r)} {shape_label(r)} {r.get('dtype')}{ws}"


def _workload_label(r: dict) -> str:
    ws = f" ws{r['world_size']}" if (r.get("world_size") or 1) > 1 else ""
    return f"{who(r)} B{r.get('batch')} {r.get('dtype')}{ws}"


def _workload_ys(records: list[dict]) -> list[tuple[str, str]]:
    per_token = METRICS_PREFIX + "ms_per_token"
    time = per_token if any(field_value(r, per_token) is not None for r in records) else TIME
    return [(time, "ms_per_token"), ("peak_mem_bytes", "peak_mem")]


KERNELS = Group("", lambda r: f"{mask_label(r)} · {r.get('direction')}", _kernel_label,
                lambda records: [("tflops", "tflops"), (TIME, "time")])
WORKLOADS = Group("workload_", lambda r: f"{r.get('workload')}({params_label(r)}) · {r.get('direction')}",
                  _workload_label, _workload_ys)
GROUPS = {"method": KERNELS, "strategy": KERNELS, "workload": WORKLOADS}


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name)


def _axis_label(name: str, records: list[dict]) -> str:
    if name.startswith(METRICS_PREFIX):
        unit = metric_unit(records, name[len(METRICS_PREFIX):])
        return f"{name[len(METRICS_PREFIX):]} ({unit})" if unit else name
    return {TIME: "time (ms, median; bars p20-p80)", "tflops": "TFLOP/s per device", "seqlen": "sequence length",
            "peak_mem_bytes": "peak memory (bytes)"}.get(name, name)


def _check_names(records: list[dict], names: dict[str, Optional[str]]) -> None:
    """Every name given (``--x``, ``--y``, ``--by``) must be a field some record has."""
    known = field_names(records)
    for option, name in names.items():
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
    if y == TIME and all(r.get("time_ms_p20") is not None and r.get("time_ms_p80") is not None for r in recs):
        err = [[v - r["time_ms_p20"] for v, r in zip(ys, recs)], [r["time_ms_p80"] - v for v, r in zip(ys, recs)]]
        ax.errorbar(xs, ys, yerr=err, marker="o", capsize=3, label=label, linestyle=style)
    else:
        ax.plot(xs, ys, marker="o", label=label, linestyle=style)


def _draw(records: list[dict], group: Group, x: str, y: str, by: Optional[str], path: Path) -> Optional[Path]:
    """One figure of ``y`` vs ``x`` for ``records`` (ok views), one panel per group panel; None if empty."""
    points = [r for r in records if number(field_value(r, y)) is not None and field_value(r, x) is not None]
    if not points:
        return None
    panels: dict[str, dict[str, list[dict]]] = defaultdict(lambda: defaultdict(list))
    for r in points:
        line = group.label(r) if by is None else f"{by}={field_value(r, by)}"
        panels[group.panel(r)][line].append(r)
    keys = sorted(panels)
    ticks = _ticks([field_value(r, x) for r in points])
    log_x = ticks is None and min(float(field_value(r, x)) for r in points) > 0
    log_y = y == TIME and all(float(field_value(r, y)) > 0 for r in points)
    cols = min(3, len(keys))
    rows = (len(keys) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(5.5 * cols, 4 * rows), squeeze=False)
    for ax, key in zip(axes.flat, keys):
        for label, recs in sorted(panels[key].items()):
            _line(ax, recs, x, y, ticks, label)
        if ticks:
            ax.set_xticks(range(len(ticks)), ticks, rotation=30, fontsize=7)
        if log_x:
            ax.set_xscale("log", base=2)
        if log_y:
            ax.set_yscale("log")
        ax.set_title(key, fontsize=9)
        ax.set_xlabel(_axis_label(x, points))
        ax.set_ylabel(_axis_label(y, points))
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7)
    for ax in list(axes.flat)[len(keys):]:
        ax.axis("off")
    if y in ("tflops", "flops", "frac_peak"):
        fig.suptitle(conventions_caption(points), fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_records(
    records: list[dict], out_dir: str | Path, x: Optional[str] = None, y: Optional[str] = None,
    by: Optional[str] = None,
) -> list[Path]:
    """Write PNG plots of the ``ok`` records into ``out_dir``; returns the paths written.

    Without ``y`` each kind gets its default plots (see the module docstring); with ``y`` one plot per kind
    family that has it. ``x`` defaults to ``seqlen``; ``by`` (default: who ran, shape, dtype) names the lines.
    A name no record has is a :class:`UserError` listing the available ones."""
    views = [public_view(r) for r in records]
    _check_names(views, {"--x": x, "--y": y, "--by": by})
    ok = [v for v in views if v["status"] == OK]
    families: dict[Group, list[dict]] = defaultdict(list)
    for v in ok:
        families[GROUPS.get(kind_of(v), KERNELS)].append(v)
    if y is not None and not any(number(field_value(v, y)) is not None for v in ok):
        raise UserError(f"plot --y {y!r}: no ok run has a number there (y must be a numeric field or metric)")
    out_dir = Path(out_dir)
    suffix = (f"_vs_{_slug(x)}" if x else "") + (f"_by_{_slug(by)}" if by else "")
    written = []
    for group, recs in families.items():
        ys = [(y, _slug(y))] if y else group.default_ys(recs)
        for y_name, stem in ys:
            out_dir.mkdir(parents=True, exist_ok=True)
            path = _draw(recs, group, x or "seqlen", y_name, by, out_dir / f"{group.prefix}{stem}{suffix}.png")
            if path is not None:
                written.append(path)
    return written
