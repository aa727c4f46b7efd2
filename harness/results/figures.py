"""What every figure of a report shares: one colour and marker per method / strategy / workload (assigned once
from the sorted names of the whole report, so a name looks the same in every panel and every figure), the
footer naming where the figure's records come from and what was left out, text wrapped to the figure, the
legend outside the axes, and :func:`layout_problems`, the check that no text falls off a figure or covers
other text.
"""

from __future__ import annotations

import textwrap
from collections import Counter
from dataclasses import dataclass, field
from typing import Iterable

from matplotlib.figure import Figure
from matplotlib.text import Text

from harness.results.records import timed
from harness.status import NOT_RUN, WITH_FIGURES

COLOURS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22",
           "#17becf")  # matplotlib's tab10
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*", "h")  # 9: coprime with the 10 colours, so pairs stay unique
VARIANT_STYLES = ("-", "-.", ":", (0, (5, 1, 1, 1, 1, 1)), (0, (1, 3)))  # lines of one name that differ otherwise
PREDICTED_STYLE = "--"  # a model's line (``lcbench predict``): dashed, hollow markers
COMPANION_STYLE = (0, (1, 1))  # an analytic / modelled value drawn beside the measured one
FONT = 7  # points: legends, footers, tick labels of categorical axes
CHARS_PER_INCH = 13  # of FONT-point text: how wide a wrapped line may be


@dataclass(frozen=True)
class Palette:
    """Colour and marker of each name, by its place in the sorted names of the whole report."""

    names: tuple[str, ...]

    @classmethod
    def of(cls, names: Iterable[str]) -> "Palette":
        return cls(tuple(sorted(set(names))))

    def _index(self, name: str) -> int:
        return self.names.index(name) if name in self.names else len(self.names)

    def colour(self, name: str) -> str:
        return COLOURS[self._index(name) % len(COLOURS)]

    def marker(self, name: str) -> str:
        return MARKERS[self._index(name) % len(MARKERS)]


@dataclass
class Provenance:
    """Where records come from: the results files and their sessions (id -> suite, hostname, cpu, gpu, commit,
    peak_tflops, as :meth:`harness.results.store.ResultStore.sessions` gives them)."""

    files: tuple[str, ...] = ()
    sessions: dict[str, dict] = field(default_factory=dict)

    def of(self, records: list[dict]) -> dict[str, list[str]]:
        """The distinct suites, machines and commits of ``records`` (each sorted), and the files."""
        suites, machines, commits = set(), set(), set()
        for r in records:
            session = self.sessions.get(r.get("session") or "", {})
            if r.get("suite") or session.get("suite"):
                suites.add(str(r.get("suite") or session.get("suite")))
            machine = session.get("hostname")
            if machine:
                device = session.get("gpu") or session.get("cpu")
                machines.add(f"{machine} ({device})" if device else str(machine))
            if session.get("commit"):
                commits.add(str(session["commit"]))
        return {"suite": sorted(suites), "file": list(self.files), "machine": sorted(machines),
                "commit": sorted(commits)}


def wrap(text: str, width_in: float) -> str:
    """``text`` wrapped (each of its lines) to fit ``width_in`` inches of FONT-point text."""
    width = max(20, int(width_in * CHARS_PER_INCH))
    return "\n".join(textwrap.fill(line, width) or line for line in text.split("\n"))


def provenance_line(records: list[dict], provenance: Provenance) -> str:
    """``suite kernels · file results/k.db · machine box (x86) · commit abc123`` (several: comma-separated)."""
    facts = provenance.of(records)
    return " · ".join(f"{name} {', '.join(values)}" for name, values in facts.items() if values)


def left_out_line(family: list[dict], drawn: list[dict], y_names: list[str]) -> str:
    """What the figure does not show of its family's records: the runs without figures by status (invalid,
    failed, not run), and the runs with figures that lack a y metric, by phase / direction."""
    parts = []
    statuses = Counter(r.get("status") for r in family if r.get("status") not in WITH_FIGURES)
    failed = [f"{n} {s}" for s, n in sorted(statuses.items()) if s not in NOT_RUN]
    not_run = sum(n for s, n in statuses.items() if s in NOT_RUN)
    if failed:
        parts.append("failed or invalid: " + ", ".join(failed))
    if not_run:
        parts.append(f"{not_run} not run (unsupported/unavailable)")
    drawn_keys = {r.get("key") for r in drawn}
    missing = Counter(timed(r) for r in family
                      if r.get("status") in WITH_FIGURES and r.get("key") not in drawn_keys)
    if missing:
        names = ", ".join(n.removeprefix("metrics.") for n in y_names)
        parts.append(f"without {names}: " + ", ".join(f"{n} {d}" for d, n in sorted(missing.items())))
    return "left out: " + "; ".join(parts) if parts else "nothing left out"


def footer(fig: Figure, lines: list[str]) -> None:
    """The figure's footer (provenance, what was left out, notes), wrapped to its width; constrained layout
    keeps room for it."""
    width = fig.get_figwidth()
    fig.supxlabel("\n".join(wrap(line, width - 0.3) for line in lines if line), fontsize=FONT, color="dimgray")


def outside_legend(fig: Figure, handles: list, labels: list[str]) -> None:
    """One legend for the whole figure, right of the axes (constrained layout makes room; never over data)."""
    if handles:
        fig.legend(handles, labels, loc="outside right upper", fontsize=FONT, frameon=False)


def legend_width_in(labels: list[str]) -> float:
    """Inches the outside legend needs for ``labels`` (widest label, marker, padding)."""
    return 0.7 + max((len(s) for s in labels), default=0) / (CHARS_PER_INCH * 1.2)


# ----- the layout check ------------------------------------------------------------------------------------
def _drawn_tick_labels(axis) -> tuple[set[int], set[int]]:
    """(ids of the tick labels the axis draws: ticks inside its view, ids of all its tick labels)."""
    lo, hi = sorted(axis.get_view_interval())
    slack = 1e-9 * max(abs(lo), abs(hi), 1e-300)
    drawn, every = set(), set()
    for tick in axis.get_major_ticks() + axis.get_minor_ticks():
        labels = {id(tick.label1), id(tick.label2)}
        every |= labels
        if lo - slack <= tick.get_loc() <= hi + slack:
            drawn |= labels
    return drawn, every


def _texts(fig: Figure) -> list[Text]:
    """The texts a drawing of ``fig`` shows: visible, not empty, and for tick labels only those of ticks inside
    the axis' view (matplotlib keeps labels of ticks beyond it, which it never draws)."""
    drawn, every = set(), set()
    for ax in fig.axes:
        for axis in (ax.xaxis, ax.yaxis):
            shown, labels = _drawn_tick_labels(axis)
            drawn |= shown
            every |= labels
    return [t for t in fig.findobj(Text) if t.get_visible() and t.get_text().strip()
            and (id(t) not in every or id(t) in drawn)]


def layout_problems(fig: Figure, tolerance_px: float = 0.5) -> list[str]:
    """Every text of ``fig`` (titles, labels, tick labels, legend entries, footers, annotations) that lies
    partly outside the figure, and every pair of texts whose boxes overlap; empty when the layout holds."""
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    frame = fig.bbox
    boxes = [(t, t.get_window_extent(renderer)) for t in _texts(fig)]
    problems = []
    for t, box in boxes:
        if (box.x0 < frame.x0 - tolerance_px or box.y0 < frame.y0 - tolerance_px
                or box.x1 > frame.x1 + tolerance_px or box.y1 > frame.y1 + tolerance_px):
            problems.append(f"outside the figure: {t.get_text()[:60]!r}")
    for i, (a, box_a) in enumerate(boxes):
        for b, box_b in boxes[i + 1:]:
            overlap_x = min(box_a.x1, box_b.x1) - max(box_a.x0, box_b.x0)
            overlap_y = min(box_a.y1, box_b.y1) - max(box_a.y0, box_b.y0)
            if overlap_x > tolerance_px and overlap_y > tolerance_px:
                problems.append(f"overlap: {a.get_text()[:40]!r} and {b.get_text()[:40]!r}")
    return problems
