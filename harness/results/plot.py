"""Plots of a result store: any metric against any parameter, the methods of a panel on shared axes.

One panel per (mask, direction) for kernels (methods, strategies) and per (workload, phase) for workloads;
inside a panel one line per identity — who ran, mask, shape, dtype, world size — so two masks or two shapes
are never joined into one line; each line's label names what tells it apart from the others of its figure.
Every name (method, strategy, workload with its parameters, or the ``--by`` value) keeps one colour and marker
in every panel and figure of a call (:class:`harness.results.figures.Palette`, from the sorted names of all
the records), and one legend per figure sits outside the axes. Only validated (``ok``) runs and ``lcbench
predict``'s predictions are drawn, read through :func:`harness.results.records.public_view`; a prediction is
a dashed line with hollow markers and "(predicted)" in its label. Each figure's footer names the suite,
results file, machine and commit, and says what was left out (failed or invalid runs, not-run ones, runs
without the metric drawn).

Defaults per kind: kernels get TFLOP/s and time vs sequence length (``tflops.png``, ``time.png``) and the
roofline (``roofline.png``: achieved TFLOP/s against arithmetic intensity, :mod:`harness.results.roofline`,
under the machine's measured peak); workloads get ms/token (the ``ms_per_token`` metric where they report it,
else the median time; where only some phases report it, also ``workload_time.png``: the median time of every
phase), peak memory, and every metric that has an analytic or modelled twin
(``<metric>_analytic`` / ``<metric>_model``, drawn dotted beside the measured one; with ``--y`` too). ``x``,
``y`` and ``by`` may name a record field, ``params.<name>`` or ``metrics.<name>``; ``y`` may list several
(``--y a,b``): they share one figure, one panel per subject with its phases or directions merged and one line
per identity and metric. ``--by params.<name>`` puts the values of that parameter as lines in one panel.
Throughput axes (TFLOP/s and any higher-is-better figure) start at zero; times and other values spanning two
decades or more are logarithmic; the median time and TFLOP/s carry their p20-p80 spread as a band (error
bars on a categorical axis).
"""

from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from harness.errors import UserError  # noqa: E402
from harness.results import roofline  # noqa: E402
from harness.results.figures import (  # noqa: E402
    COMPANION_STYLE, FONT, PREDICTED_STYLE, VARIANT_STYLES, Palette, Provenance, footer, left_out_line,
    legend_width_in, outside_legend, provenance_line, wrap,
)
from harness.results.records import (  # noqa: E402
    METRICS_PREFIX, field_names, field_value, is_predicted, kind_of, mask_label, metric_better, metric_names,
    metric_unit, public_view, shape_label, timed, who,
)
from harness.results.schema import number  # noqa: E402
from harness.results.report import conventions_caption  # noqa: E402
from harness.status import WITH_FIGURES  # noqa: E402

TIME = "time_ms_median"
INTENSITY = "flop_per_byte"  # the roofline's x: a field computed for the plot (:func:`roofline.intensity`)
PREDICTED_TAG = " (predicted)"  # ends the label of every line drawn from predicted records (dashed, hollow)
COMPANIONS = ("analytic", "model")  # metric suffixes of a value computed beside the measured one
MAX_CROSSINGS_LISTED = 8


# ----- what a line is ----------------------------------------------------------------------------------------
# The parts of a run's identity, in label order: (name, the record fields it stands for, its text).
PARTS: tuple[tuple[str, tuple[str, ...], Callable[[dict], str]], ...] = (
    ("who", ("method", "strategy", "workload", "params", "kind", "kernel"), who),
    ("mask", ("mask", "mask_params"), mask_label),
    ("shape", ("batch", "heads_q", "heads_kv", "head_dim"), shape_label),
    ("dtype", ("dtype",), lambda r: str(r.get("dtype"))),
    ("ws", ("world_size",), lambda r: f"ws{r.get('world_size') or 1}"),
    ("dir", ("direction", "phase"), timed),
)


@dataclass(frozen=True)
class Group:
    """How one family of kinds is plotted: its panels (``merged``: several ys share a panel, directions
    merged), the identity parts a panel's title already names, and the default figures."""

    prefix: str  # file name prefix
    panel: Callable[[dict, bool], str]
    panel_parts: Callable[[bool], frozenset]
    default_ys: Callable[[list[dict]], list[tuple[str, str]]]  # records -> [(y field, file stem)]


def _companions(name: str, names: set[str]) -> list[tuple[str, str]]:
    """(field, what it is) of each analytic / modelled twin of metric ``name`` present in ``names``."""
    if not name.startswith(METRICS_PREFIX):
        return []
    return [(f"{name}_{suffix}", suffix) for suffix in COMPANIONS if f"{name}_{suffix}" in names]


def _workload_ys(records: list[dict]) -> list[tuple[str, str]]:
    per_token = METRICS_PREFIX + "ms_per_token"
    reported = sum(field_value(r, per_token) is not None for r in records)
    times = [(per_token if reported else TIME, "ms_per_token")]
    if 0 < reported < len(records):  # phases without ms/token: their median time, in a figure of every phase
        times.append((TIME, "time"))
    names = {METRICS_PREFIX + m for m in metric_names(records)}
    twins = [(name, name[len(METRICS_PREFIX):]) for name in sorted(names) if _companions(name, names)]
    return times + [("peak_mem_bytes", "peak_mem")] + twins


KERNELS = Group("", lambda r, merged: mask_label(r) if merged else f"{mask_label(r)} · {timed(r)}",
                lambda merged: frozenset({"mask"} if merged else {"mask", "dir"}),
                lambda records: [("tflops", "tflops"), (TIME, "time")])
WORKLOADS = Group("workload_",
                  lambda r, merged: str(r.get("workload")) + ("" if merged else f" · {timed(r)}"),
                  lambda merged: frozenset() if merged else frozenset({"dir"}), _workload_ys)
ROOFLINE = Group("", lambda r, merged: f"roofline · {timed(r)}", lambda merged: frozenset({"dir"}),
                 lambda records: [])
GROUPS = {"method": KERNELS, "strategy": KERNELS, "workload": WORKLOADS}


def _without(r: dict, names: tuple[Optional[str], ...]) -> dict:
    """``r`` without the ``params.<name>`` that ``--x`` or ``--by`` spread along an axis or into lines (a line or
    panel per value of it would leave nothing to compare)."""
    drop = {n[len("params."):] for n in names if n and n.startswith("params.")}
    if not drop:
        return r
    return {**r, "params": {k: v for k, v in (r.get("params") or {}).items() if k not in drop}}


@dataclass
class Line:
    """The runs of one identity in one panel, for one y."""

    panel: str
    y: str
    parts: dict[str, str]
    name: str  # what its colour and marker follow (:func:`style_name`)
    predicted: bool
    recs: list[dict] = field(default_factory=list)


WHO_FIELDS = PARTS[0][1]


def style_name(r: dict, x: str, by: Optional[str]) -> str:
    """The name a record's colour and marker follow: the ``--by`` value, else who ran (empty when the x axis
    spreads who ran: its points are then the names)."""
    if by:
        return f"{by}={field_value(r, by)}"
    return "" if x in WHO_FIELDS else who(_without(r, (x, by)))


def _identity(r: dict, x: str, by: Optional[str]) -> dict[str, str]:
    """The identity parts of a record that neither the x axis nor ``--by`` spreads out."""
    r = _without(r, (x, by))
    return {name: text(r) for name, fields, text in PARTS if x not in fields and by not in fields}


# ----- naming -------------------------------------------------------------------------------------------------
def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name)


def _short(name: str) -> str:
    return name[len(METRICS_PREFIX):] if name.startswith(METRICS_PREFIX) else name


def _axis_label(name: str, records: list[dict]) -> str:
    if name.startswith(METRICS_PREFIX):
        unit = metric_unit(records, _short(name))
        return f"{_short(name)} ({unit})" if unit else name
    return {TIME: "time (ms, median; p20-p80)", "tflops": "TFLOP/s per device (p20-p80)", "seqlen": "sequence length",
            "peak_mem_bytes": "peak memory (bytes)", INTENSITY: "FLOPs per byte (compulsory traffic)"}.get(name, name)


def _check_names(records: list[dict], names: list[tuple[str, Optional[str]]]) -> None:
    """Every name given (``--x``, ``--y``, ``--by``) must be a field some record has."""
    known = field_names(records)
    for option, name in names:
        if name is not None and name not in known:
            raise UserError(f"plot {option} {name!r}: not a field of these results (available: {', '.join(known)})")


def _higher_is_better(name: str, records: list[dict]) -> bool:
    carrier = next((r for r in records if field_value(r, name) is not None), {})
    return metric_better(carrier, _short(name)) == "higher"


# ----- axes ---------------------------------------------------------------------------------------------------
def _ticks(values: list[Any]) -> Optional[list[str]]:
    """None when every x value is a number; else the sorted distinct values as text (a categorical axis)."""
    if all(number(v) is not None for v in values):
        return None
    return sorted({str(v) for v in values})


def _xpos(value: Any, ticks: Optional[list[str]]) -> float:
    return float(ticks.index(str(value))) if ticks else float(value)


def _spread(r: dict, y: str) -> Optional[tuple[float, float]]:
    """The p20-p80 range of ``y`` for a run: the stored one of the median time; TFLOP/s from it (inversely)."""
    median, p20, p80 = (number(r.get(k)) for k in (TIME, "time_ms_p20", "time_ms_p80"))
    if p20 is None or p80 is None:
        return None
    if y == TIME:
        return p20, p80
    tflops = number(r.get("tflops"))
    if y == "tflops" and tflops is not None and median and p20 > 0:
        return tflops * median / p80, tflops * median / p20
    return None


def _line(ax, recs: list[dict], x: str, y: str, ticks: Optional[list[str]], label: str, colour: str = "C0",
          marker: str = "o", linestyle: Any = "-") -> Any:
    """One line of ``y`` vs ``x`` through ``recs`` (markers only on a categorical x axis) in its name's colour
    and marker; the median time and TFLOP/s get their p20-p80 spread (a band, or error bars on a categorical
    axis); a prediction is dashed with hollow markers and no spread."""
    recs = sorted(recs, key=lambda r: _xpos(field_value(r, x), ticks))
    xs = [_xpos(field_value(r, x), ticks) for r in recs]
    ys = [float(field_value(r, y)) for r in recs]
    if any(is_predicted(r) for r in recs):  # a model's line: dashed, hollow markers, never mistaken for data
        return ax.plot(xs, ys, marker=marker, markerfacecolor="none", color=colour, label=label,
                       linestyle="none" if ticks else PREDICTED_STYLE)[0]
    spreads = [_spread(r, y) for r in recs]
    if all(spreads):
        lo, hi = [s[0] for s in spreads], [s[1] for s in spreads]
        if ticks:
            err = [[v - a for v, a in zip(ys, lo)], [b - v for v, b in zip(ys, hi)]]
            return ax.errorbar(xs, ys, yerr=err, marker=marker, color=colour, capsize=3, label=label,
                               linestyle="none")
        ax.fill_between(xs, lo, hi, color=colour, alpha=0.15, linewidth=0)
    return ax.plot(xs, ys, marker=marker, color=colour, label=label, linestyle="none" if ticks else linestyle)[0]


# ----- crossings ---------------------------------------------------------------------------------------------
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


def _mark_crossings(ax, lines: list[tuple[str, Line]], x: str, log_x: bool, first: int) -> list[str]:
    """Mark where the panel's lines cross (a dotted rule and a number); returns one note per crossing."""
    points = {label: [(float(field_value(r, x)), float(field_value(r, line.y))) for r in line.recs]
              for label, line in lines}
    notes = []
    for i, (at, lower, other) in enumerate(crossings(points, log_x)):
        n = first + i
        ax.axvline(at, linestyle=":", color="gray", linewidth=1)
        ax.annotate(str(n), (at, 0.97 - 0.07 * (i % 12)), xycoords=("data", "axes fraction"), fontsize=FONT,
                    va="top", ha="left", color="dimgray", xytext=(2, 0), textcoords="offset points")
        notes.append(f"[{n}] x≈{at:,.0f}: from there {lower} < {other}")
    return notes


# ----- one figure --------------------------------------------------------------------------------------------
@dataclass
class Spec:
    """What one figure shows."""

    group: Group
    x: str
    ys: list[str]
    by: Optional[str]
    mark_crossings: bool = False
    log_y: Optional[bool] = None  # None: by the values (see the module docstring)
    title: Optional[str] = None


def _lines(records: list[dict], spec: Spec) -> dict[tuple, Line]:
    merged = len(spec.ys) > 1
    lines: dict[tuple, Line] = {}
    for y in spec.ys:
        for r in records:
            if number(field_value(r, y)) is None or field_value(r, spec.x) is None:
                continue
            panel = spec.group.panel(_without(r, (spec.x, spec.by)), merged)
            parts = _identity(r, spec.x, spec.by)
            name = style_name(r, spec.x, spec.by)
            key = (panel, y, tuple(parts.items()), name, is_predicted(r))
            lines.setdefault(key, Line(panel, y, parts, name, is_predicted(r))).recs.append(r)
    return lines


def _labels(lines: list[Line], spec: Spec) -> list[str]:
    """Each line's legend label: its name (who ran, or the ``--by`` value), then every identity part that
    varies among the figure's lines and no panel title names, then its metric when several share the figure."""
    hidden = spec.group.panel_parts(len(spec.ys) > 1) | {"who"}
    varying = [name for name, _, _ in PARTS if name not in hidden and len({ln.parts.get(name) for ln in lines}) > 1]
    if spec.by and len({ln.parts.get("who") for ln in lines}) > 1:
        varying.insert(0, "who")
    labels = []
    for ln in lines:
        words = [w for w in [ln.name] + [ln.parts[name] for name in varying if name in ln.parts] if w]
        metric = f" · {_short(ln.y)}" if len(spec.ys) > 1 else ""
        labels.append(" ".join(words or ["runs"]) + metric + (PREDICTED_TAG if ln.predicted else ""))
    return labels


def _variant_styles(lines: list[Line], spec: Spec) -> list[Any]:
    """A line style per variant (the identity beyond its name): lines of one colour stay apart."""
    shown_by_panel = spec.group.panel_parts(len(spec.ys) > 1) | {"who"}
    variants = [tuple((k, v) for k, v in ln.parts.items() if k not in shown_by_panel) + (ln.y,) for ln in lines]
    order = sorted(set(variants))
    return [VARIANT_STYLES[order.index(v) % len(VARIANT_STYLES)] for v in variants]


def _log_y(values: list[float], ys: list[str], throughput: bool) -> bool:
    if throughput or not values or min(values) <= 0:
        return False
    return ys == [TIME] or max(values) >= 100 * min(values)


def build_figure(records: list[dict], family: list[dict], spec: Spec, palette: Palette, provenance: Provenance,
                 notes: list[str]) -> Optional[Figure]:
    """The figure of ``spec`` for ``records`` (views with figures) of a family (all its views, for the note of
    what was left out); None if nothing has the metric. Crossings found (or that none were) go to ``notes``."""
    by_key = _lines(records, spec)
    if not by_key:
        return None
    lines = list(by_key.values())
    labels = _labels(lines, spec)
    order = sorted(range(len(lines)), key=lambda i: (lines[i].panel, labels[i]))
    lines, labels = [lines[i] for i in order], [labels[i] for i in order]
    styles = _variant_styles(lines, spec)
    drawn = list({id(r): r for ln in lines for r in ln.recs}.values())
    names = set(field_names(drawn))
    panels = sorted({ln.panel for ln in lines})
    ticks = _ticks([field_value(r, spec.x) for r in drawn])
    if spec.mark_crossings and ticks:
        raise UserError(f"plot --crossings: needs a numeric --x ({spec.x!r} has values that are not numbers)")
    log_x = ticks is None and min(float(field_value(r, spec.x)) for r in drawn) > 0
    throughput = all(_higher_is_better(y, drawn) for y in spec.ys)
    values = [float(field_value(r, ln.y)) for ln in lines for r in ln.recs]
    log_y = _log_y(values, spec.ys, throughput) if spec.log_y is None else spec.log_y

    cols = min(3, len(panels))
    rows = (len(panels) + cols - 1) // cols
    legend_in = legend_width_in(labels)
    width = 4.6 * cols + legend_in
    height = max(3.4 * rows + 1.4, 0.2 * len(labels) + 1.8)  # the legend: ~0.19 in per entry
    fig, axes = plt.subplots(rows, cols, figsize=(width, height), squeeze=False, layout="constrained")
    handles: dict[str, Any] = {}
    crossing_notes: list[str] = []
    for ax, panel in zip(axes.flat, panels):
        in_panel = [(label, ln, style) for label, ln, style in zip(labels, lines, styles) if ln.panel == panel]
        for label, ln, style in in_panel:
            colour, marker = palette.colour(ln.name), palette.marker(ln.name)
            handles.setdefault(label, _line(ax, ln.recs, spec.x, ln.y, ticks, label, colour, marker, style))
            for twin, what in _companions(ln.y, names):
                twins = [r for r in ln.recs if number(field_value(r, twin)) is not None]
                if twins:
                    twin_label = f"{label} ({what})"
                    handles.setdefault(twin_label,
                                       _line(ax, twins, spec.x, twin, ticks, twin_label, colour, "x", COMPANION_STYLE))
        if spec.mark_crossings:
            crossing_notes += _mark_crossings(ax, [(label, ln) for label, ln, _ in in_panel], spec.x, log_x,
                                              len(crossing_notes) + 1)
        if ticks:
            ax.set_xticks(range(len(ticks)), ticks, rotation=30, ha="right", fontsize=FONT)
        if log_x:
            ax.set_xscale("log", base=2)
        if log_y:
            ax.set_yscale("log")
        elif throughput:
            ax.set_ylim(bottom=0)
        ax.tick_params(labelsize=FONT)
        ax.set_title(wrap(panel, 4.2), fontsize=8)
        ax.set_xlabel(wrap(_axis_label(spec.x, drawn), 4.0), fontsize=FONT + 1)
        ax.set_ylabel(wrap(" / ".join(dict.fromkeys(_axis_label(n, drawn) for n in spec.ys)), 2.8), fontsize=FONT + 1)
        ax.grid(True, alpha=0.3)
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    outside_legend(fig, list(handles.values()), list(handles))
    title = spec.title or (conventions_caption(drawn) if any(
        n in ("tflops", "flops", "frac_peak") for n in spec.ys) else "")
    lines_out = [title, provenance_line(drawn, provenance), left_out_line(family, drawn, spec.ys)]
    if spec.mark_crossings:
        listed = crossing_notes[:MAX_CROSSINGS_LISTED]
        more = len(crossing_notes) - len(listed)
        lines_out += ["crossings: " + ("; ".join(listed) + (f" (+{more} more)" if more else "")
                                       if crossing_notes else "none (no two lines cross in any panel)")]
        notes.append(f"{spec.group.prefix}{'_and_'.join(spec.ys)}: " + (
            f"{len(crossing_notes)} crossing(s): " + "; ".join(crossing_notes) if crossing_notes
            else "no two lines cross"))
    footer(fig, lines_out)
    return fig


def _roofline(records: list[dict], family: list[dict], palette: Palette, provenance: Provenance,
              notes: list[str]) -> Optional[Figure]:
    """Achieved TFLOP/s against arithmetic intensity, one panel per direction, under the measured peak."""
    views = [{**r, INTENSITY: roofline.intensity(r)} for r in records if roofline.intensity(r)]
    if not views:
        return None
    peak = roofline.peaks(views, provenance.sessions)
    spec = Spec(ROOFLINE, INTENSITY, ["tflops"], None, log_y=True,
                title=roofline.BYTES_CONVENTION + "\n" + conventions_caption(views))
    fig = build_figure(views, family, spec, palette, provenance, notes)
    if fig is None:
        return None
    for ax in fig.axes:
        if not ax.has_data():
            continue
        ax.set_xscale("log")
        for value in peak.values():
            ax.axhline(value, color="black", linewidth=1, linestyle=(0, (4, 2)))
        if peak:  # one label for every roof: peaks of two dtypes may lie too close for two
            text = "measured GEMM peak: " + ", ".join(f"{d} {v:.3g}" for d, v in sorted(peak.items())) + " TFLOP/s"
            ax.annotate(wrap(text, 3.5), (0.02, max(peak.values())), xycoords=("axes fraction", "data"),
                        fontsize=FONT - 1, va="bottom", ha="left")
            low, high = ax.get_ylim()
            ax.set_ylim(low, max(high, 10 * max(peak.values())))  # a decade above the roof for its label
    return fig


# ----- every figure -------------------------------------------------------------------------------------------
def build_figures(
    records: list[dict], x: Optional[str] = None, y: Optional[str] = None, by: Optional[str] = None,
    mark_crossings: bool = False, provenance: Optional[Provenance] = None, notes: Optional[list[str]] = None,
) -> list[tuple[str, Figure]]:
    """``(file name, figure)`` of every plot of the records (see :func:`plot_records`); the caller closes them."""
    provenance = provenance or Provenance()
    notes = notes if notes is not None else []
    views = [public_view(r) for r in records]
    y_names = list(dict.fromkeys(n.strip() for n in (y or "").split(",") if n.strip()))
    if y is not None and not y_names:
        raise UserError(f"plot --y {y!r}: no field named (give one, or several separated by commas)")
    _check_names(views, [("--x", x), ("--by", by), *(("--y", name) for name in y_names)])
    ok = [v for v in views if v["status"] in WITH_FIGURES]  # measured and valid, or predicted (drawn dashed)
    for name in y_names:
        if not any(number(field_value(v, name)) is not None for v in ok):
            raise UserError(f"plot --y {name!r}: no ok run has a number there (y must be a numeric field or metric)")
    suffix = (f"_vs_{_slug(x)}" if x else "") + (f"_by_{_slug(by)}" if by else "")
    x = x or "seqlen"
    palette = Palette.of(style_name(v, x, by) for v in ok)
    families: dict[Group, list[dict]] = defaultdict(list)
    for v in views:
        families[GROUPS.get(kind_of(v), KERNELS)].append(v)
    out: list[tuple[str, Figure]] = []
    for group, family in families.items():
        recs = [v for v in family if v["status"] in WITH_FIGURES]
        figures = [(y_names, _slug("_and_".join(y_names)))] if y_names else [
            ([name], stem) for name, stem in group.default_ys(recs)]
        for names, stem in figures:
            fig = build_figure(recs, family, Spec(group, x, names, by, mark_crossings), palette, provenance, notes)
            if fig is not None:
                out.append((f"{group.prefix}{stem}{suffix}.png", fig))
        if group is KERNELS and not y_names and x == "seqlen" and by is None:
            fig = _roofline(recs, family, palette, provenance, notes)
            if fig is not None:
                out.append(("roofline.png", fig))
    return out


def plot_records(
    records: list[dict], out_dir: str | Path, x: Optional[str] = None, y: Optional[str] = None,
    by: Optional[str] = None, mark_crossings: bool = False, provenance: Optional[Provenance] = None,
    notes: Optional[list[str]] = None,
) -> list[Path]:
    """Write PNG plots of the records with figures into ``out_dir``; returns the paths written.

    Without ``y`` each kind gets its default plots (see the module docstring); with ``y`` (one name, or several
    separated by commas to share one figure) one plot per kind family that has it. ``x`` defaults to ``seqlen``;
    ``by`` (default: who ran) names the lines; ``mark_crossings`` marks where two lines cross (e.g. the length
    from which a hybrid model beats all-softmax) and says in ``notes`` (and the footer) when none do.
    ``provenance`` (files and sessions) is named in every footer. A name no record has is a
    :class:`UserError` listing the available ones."""
    figures = build_figures(records, x, y, by, mark_crossings, provenance, notes)
    out_dir = Path(out_dir)
    written = []
    for name, fig in figures:
        out_dir.mkdir(parents=True, exist_ok=True)
        fig.savefig(out_dir / name, dpi=110)
        plt.close(fig)
        written.append(out_dir / name)
    return written
