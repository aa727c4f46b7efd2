"""``lcbench report DB... -o DIR``: one self-contained static HTML page (``DIR/index.html``) of results files.

Nothing on the page reaches the network: the CSS and the few lines of JavaScript that sort a table by the
column clicked are inline, every plot is an embedded PNG (``data:`` URI). The sections, in order:

- ``recommendation``: which option wins per configuration (:func:`recommendation_section`);
- ``tables``: every table ``lcbench show`` prints, per results file (sortable; a predicted row is marked);
- ``plots``: every default plot (:func:`harness.results.plot.build_figures`), over all the files at once;
- ``failures``: the runs that failed or were invalid, each with its reason;
- ``conventions``: how FLOPs, times and the roofline's bytes are counted;
- ``machine``: each session's machine, versions, commit and measured peak.

Every text that comes from a record or a session is escaped (:func:`html.escape`).
"""

from __future__ import annotations

import base64
import html
import io
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Optional

from rich.errors import MarkupError
from rich.table import Table
from rich.text import Text

from harness.user_input import write_output
from harness.results import roofline
from harness.results.figures import Provenance
from harness.results.records import (
    flop_convention, mask_label, shape_label, timed, who,
)
from harness.results.recommend import recommend, recommendation_tables
from harness.results.report import results_tables, skipped_table
from harness.status import FAILED, OK, PREDICTED, WITH_FIGURES

SECTIONS = {  # id -> heading, in page order
    "recommendation": "Recommendation", "tables": "Tables", "plots": "Plots",
    "failures": "Failed and invalid runs", "conventions": "Conventions", "machine": "Machine, versions, commit",
}
TIMING_CONVENTION = ("time: the median of the timed calls after warm-up, with the 20th-80th percentile spread "
                     "(p20-p80); cpu ms: the process CPU time per call; peak memory: the allocator's high-water "
                     "mark of the timed call. A run that fails its correctness check is invalid and never "
                     "shown as a result.")

CSS = """
body{font:14px/1.45 system-ui,sans-serif;margin:0 2em 3em;color:#222;max-width:1800px}
h1{margin:.6em 0 .2em}h2{border-bottom:2px solid #ddd;padding-top:.8em}
nav a{margin-right:1em}section{margin-bottom:1.5em}
table{border-collapse:collapse;margin:.6em 0 1.2em;font-size:12px}
caption{caption-side:top;text-align:left;font-weight:600;padding:.3em 0}
.note{color:#555;font-size:12px;white-space:pre-wrap;margin:.2em 0 1em}
th,td{border:1px solid #ddd;padding:2px 6px;text-align:left;vertical-align:top}
th{background:#f3f3f3;cursor:pointer;user-select:none;white-space:nowrap}
th[aria-sort=ascending]::after{content:" \\25B2"}th[aria-sort=descending]::after{content:" \\25BC"}
td.num{text-align:right;font-variant-numeric:tabular-nums}
tr.predicted td{font-style:italic;background:#eef7fb}tr.predicted td:first-child{border-left:4px solid #3a9ac9}
.status-ok{color:#17752b}.status-bad{color:#b3261e}.status-predicted{color:#1b6f99}
figure{margin:1em 0}figure img{max-width:100%;border:1px solid #eee}figcaption{font-size:12px;color:#555}
"""

# Sorting: a click on a header sorts its table by that column (again: the other way); numbers (with their
# byte unit) numerically, before text.
SCRIPT = """
(function () {
  var units = {B: 1, KiB: 1024, MiB: 1048576, GiB: 1073741824};
  function key(cell) {
    var t = cell ? cell.textContent.trim() : "";
    var m = /^([-+]?\\d[\\d,]*\\.?\\d*(?:e[-+]?\\d+)?)\\s*(B|KiB|MiB|GiB)?$/i.exec(t);
    return m ? [0, parseFloat(m[1].replace(/,/g, "")) * (units[m[2]] || 1), t] : [1, 0, t];
  }
  function compare(a, b) { return a[0] - b[0] || a[1] - b[1] || (a[2] < b[2] ? -1 : a[2] > b[2] ? 1 : 0); }
  document.querySelectorAll("table.sortable th").forEach(function (th) {
    th.addEventListener("click", function () {
      var table = th.closest("table"), body = table.tBodies[0], i = th.cellIndex;
      var asc = th.getAttribute("aria-sort") !== "ascending";
      table.querySelectorAll("th").forEach(function (h) { h.removeAttribute("aria-sort"); });
      th.setAttribute("aria-sort", asc ? "ascending" : "descending");
      Array.from(body.rows).map(function (r) { return [key(r.cells[i]), r]; })
        .sort(function (a, b) { return compare(a[0], b[0]) * (asc ? 1 : -1); })
        .forEach(function (p) { body.appendChild(p[1]); });
    });
  });
})();
"""


@dataclass
class Source:
    """One results file as the report reads it."""

    path: str
    records: list[dict]
    sessions: dict[str, dict]


def esc(value: Any) -> str:
    return html.escape("" if value is None else str(value), quote=True)


# ----- tables ------------------------------------------------------------------------------------------------
def _plain(renderable: Any) -> str:
    """A rich cell, title or caption as plain text (rich markup read, then dropped)."""
    if renderable is None:
        return ""
    if isinstance(renderable, Text):
        return renderable.plain
    if isinstance(renderable, str):
        try:
            return Text.from_markup(renderable).plain
        except MarkupError:  # not markup after all (stray brackets): as it is
            return renderable
    return str(renderable)


def _cell_class(text: str, numeric: bool) -> str:
    classes = ["num"] if numeric else []
    first = text.split(":")[0].split(" ")[0]
    if first == OK:
        classes.append("status-ok")
    elif first == PREDICTED:
        classes.append("status-predicted")
    elif first in FAILED or first == "broken":
        classes.append("status-bad")
    return f' class="{" ".join(classes)}"' if classes else ""


def table_html(table: Table, note: str = "") -> str:
    """A rich table (title, columns, cells, caption) as a sortable HTML table; a row whose ``status`` column
    says ``predicted`` is marked as such (class ``predicted``)."""
    columns = [(_plain(c.header), c.justify == "right", [_plain(x) for x in c.cells]) for c in table.columns]
    n_rows = max((len(cells) for _, _, cells in columns), default=0)
    head = "".join(f"<th>{esc(name)}</th>" for name, _, _ in columns)
    rows = []
    status = [j for j, (name, _, _) in enumerate(columns) if name == "status"]
    for i in range(n_rows):
        texts = [(cells[i] if i < len(cells) else "", numeric) for _, numeric, cells in columns]
        predicted = any(texts[j][0].startswith(PREDICTED) for j in status)
        tds = "".join(f"<td{_cell_class(t, numeric)}>{esc(t)}</td>" for t, numeric in texts)
        rows.append(f'<tr class="predicted">{tds}</tr>' if predicted else f"<tr>{tds}</tr>")
    caption = f"<caption>{esc(_plain(table.title))}</caption>" if table.title else ""
    notes = "\n".join(filter(None, [_plain(table.caption), note]))
    return (f'<table class="sortable">{caption}<thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody>'
            f"</table>" + (f'<p class="note">{esc(notes)}</p>' if notes else ""))


def shown_tables(records: list[dict], title: str) -> list[Table]:
    """The tables ``lcbench show`` prints for these records: one per kind (and phase), then the runs not
    run, by reason."""
    skipped = skipped_table(records)
    return results_tables(records, title=title) + ([skipped] if skipped is not None else [])


def tables_section(sources: list[Source]) -> str:
    parts = []
    for source in sources:
        tables = shown_tables(source.records, source.path)
        parts += [table_html(t) for t in tables] or [f"<p>{esc(source.path)}: no results.</p>"]
    return "".join(parts)


# ----- recommendation ----------------------------------------------------------------------------------------
def recommendation_section(records: list[dict]) -> str:
    """The recommendation view: :func:`harness.results.recommend.recommend`'s tables (one per kind, measured and
    predicted apart), with their ties and margins judged by the same rule as ``lcbench recommend``."""
    tables = recommendation_tables(recommend(records))
    return "".join(table_html(t) for t in tables) or "<p>No configuration has a valid run to recommend.</p>"


# ----- plots -------------------------------------------------------------------------------------------------
def plots_section(records: list[dict], provenance: Provenance) -> str:
    import matplotlib.pyplot as plt

    from harness.results.plot import build_figures

    out = []
    for name, fig in build_figures(records, provenance=provenance):
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=80)
        plt.close(fig)
        data = base64.b64encode(buf.getvalue()).decode("ascii")
        out.append(f'<figure><img alt="{esc(name)}" src="data:image/png;base64,{data}">'
                   f"<figcaption>{esc(name)}</figcaption></figure>")
    return "".join(out) or "<p>No measured or predicted run to plot.</p>"


# ----- failures, conventions, machine ------------------------------------------------------------------------
def failures_section(sources: list[Source]) -> str:
    table = Table(title="runs that failed or were invalid (no figure of theirs is shown anywhere)")
    for col in ("file", "who", "mask", "S", "shape", "dtype", "dir", "ws", "status", "reason"):
        table.add_column(col, justify="right" if col in ("S", "ws") else "left")
    n = 0
    for source in sources:
        for r in sorted((r for r in source.records if r.get("status") in FAILED),
                        key=lambda r: (who(r), mask_label(r), r.get("seqlen") or 0, timed(r))):
            n += 1
            table.add_row(*(Text(str(v)) for v in (
                source.path, who(r), mask_label(r), r.get("seqlen"), shape_label(r), r.get("dtype"),
                timed(r), r.get("world_size") or 1, r.get("status"), r.get("reason") or "")))
    return table_html(table) if n else "<p>None: every run that was tried passed its correctness check.</p>"


def conventions_section(records: list[dict]) -> str:
    """How the figures shown were counted: the FLOP convention of every run with figures, times, roofline."""
    by_convention: dict[str, set[str]] = {}
    for r in records:
        if r.get("status") not in WITH_FIGURES:
            continue
        by_convention.setdefault(flop_convention(r), set()).add(r.get("workload") or who(r))
    items = "".join(f"<li><strong>{esc(', '.join(sorted(names)))}</strong>: {esc(conv)}</li>"
                    for conv, names in sorted(by_convention.items()))
    return (f"<h3>FLOPs</h3><ul>{items}</ul><h3>Times</h3><p>{esc(TIMING_CONVENTION)}</p>"
            f"<h3>Roofline</h3><p>{esc(roofline.BYTES_CONVENTION)}; the roof is the machine's measured GEMM "
            f"peak (the session's <code>peak_tflops</code>).</p>")


def _iso(t: Any) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(t)) if isinstance(t, (int, float)) else ""


def _mapping(value: Any) -> str:
    """``{cpu: {float32: 0.0512}}`` as ``cpu float32 0.0512``; numbers to 3 significant digits."""
    if isinstance(value, dict):
        return ", ".join(f"{k} {_mapping(v)}" for k, v in sorted(value.items()))
    if isinstance(value, float):
        return f"{value:.3g}"
    return "" if value is None else str(value)


def machine_section(sources: list[Source]) -> str:
    table = Table(title="sessions: the machine and software every run of a session was measured with")
    for col in ("file", "session", "suite", "started", "runs", "hostname", "cpu", "gpu", "platform", "python",
                "commit", "peak TFLOP/s", "versions"):
        table.add_column(col, justify="right" if col == "runs" else "left")
    for source in sources:
        runs: dict[str, int] = {}
        for r in source.records:
            runs[r.get("session") or ""] = runs.get(r.get("session") or "", 0) + 1
        for sid, s in source.sessions.items():
            table.add_row(*(Text(str(v)) for v in (
                source.path, sid, s.get("suite") or "", _iso(s.get("started_at")), runs.get(sid, 0),
                s.get("hostname") or "", s.get("cpu") or "", s.get("gpu") or "", s.get("platform") or "",
                s.get("python") or "", s.get("commit") or "", _mapping(s.get("peak_tflops")),
                _mapping(s.get("versions")))))
    return table_html(table) if table.row_count else "<p>No session recorded its machine.</p>"


# ----- the page ----------------------------------------------------------------------------------------------
def report_html(sources: list[Source], generated_at: Optional[float] = None) -> str:
    """The whole page for ``sources`` (every section of :data:`SECTIONS`)."""
    records = [r for s in sources for r in s.records]
    sessions = {sid: meta for s in sources for sid, meta in s.sessions.items()}
    provenance = Provenance(files=tuple(s.path for s in sources), sessions=sessions)
    bodies = {
        "recommendation": recommendation_section(records),
        "tables": tables_section(sources),
        "plots": plots_section(records, provenance),
        "failures": failures_section(sources),
        "conventions": conventions_section(records),
        "machine": machine_section(sources),
    }
    counts = {status: sum(r.get("status") == status for r in records) for status in (OK, PREDICTED)}
    summary = (f"{len(records)} runs in {len(sources)} file(s): {counts[OK]} ok, {counts[PREDICTED]} predicted, "
               f"{sum(r.get('status') in FAILED for r in records)} failed or invalid; generated "
               f"{_iso(generated_at if generated_at is not None else time.time())}")
    nav = "".join(f'<a href="#{key}">{esc(title)}</a>' for key, title in SECTIONS.items())
    sections = "".join(f'<section id="{key}"><h2>{esc(title)}</h2>{bodies[key]}</section>'
                       for key, title in SECTIONS.items())
    files = ", ".join(esc(s.path) for s in sources)
    return (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>lcbench report: {files}</title>'
            f'<meta name="viewport" content="width=device-width, initial-scale=1"><style>{CSS}</style></head>'
            f"<body><h1>lcbench report</h1><p>{files}</p><p class=\"note\">{esc(summary)}</p><nav>{nav}</nav>"
            f"{sections}<script>{SCRIPT}</script></body></html>\n")


def read_sources(stores: Iterable[Any]) -> list[Source]:
    """A :class:`Source` per open :class:`harness.results.store.ResultStore`."""
    return [Source(str(store.path), store.records(), store.sessions()) for store in stores]


def write_report(sources: list[Source], out_dir: str | Path) -> Path:
    """Write ``out_dir/index.html`` (creating the folder); returns its path."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    return write_output(out / "index.html", report_html(sources), "report -o")
