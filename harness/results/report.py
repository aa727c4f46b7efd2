"""Results as tables: one sweep (one table per kind), two sweeps compared, and exports (CSV, JSON, Markdown).

The tables of one sweep are :class:`harness.results.sheet.Sheet` s built from the column definitions of
:mod:`harness.results.columns`: ``show`` draws them with rich (folded to the console's width), ``export
--format md`` writes the same sheets as Markdown; csv and json export the raw record.

Every record is read through :func:`harness.results.records.public_view`: only runs with status ``ok``
(correct and measured) carry numbers; every other status is shown with its reason, so a table never presents
an unvalidated figure as a result.
"""

from __future__ import annotations

import csv
import io
import json
from datetime import datetime, timezone
from typing import Callable, Iterable, Optional

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from harness.results.records import (
    FLOP_CONVENTION, finite_values, flop_convention, is_predicted, kind_of, mask_label, metric_better, metric_unit,
    public_view, shape_label, source_label, timed, who,
)
from harness.results.schema import KINDS, number
from harness.results.columns import (
    column, fmt as _fmt, identity_fields, kernel_figures, metric_cell as _metric_cell, phase_rank, sort_key,
    split_identity, workload_figures,
)
from harness.results.sheet import Column, Sheet, layout, to_markdown, to_rich
from harness.results.store import export_columns
from harness.results.verdict import BETTER, INCONCLUSIVE, RULE, SAME, WORSE, Verdict, figure, judge
from harness.status import FAILED, NOT_RUN, OK

SKIPPED = NOT_RUN  # not run: the reason is about the method/library, not the run

TIME = "time_ms_median"  # the figure every comparison and every table has




def conventions_caption(records: list[dict]) -> str:
    """The FLOP convention(s) of the records: one line, or one per convention naming who uses it."""
    by_convention: dict[str, set[str]] = {}
    for r in records:
        by_convention.setdefault(flop_convention(r), set()).add(r.get("workload") or r.get("method") or "")
    if len(by_convention) <= 1:
        return next(iter(by_convention), FLOP_CONVENTION)
    return "\n".join(f"{', '.join(sorted(names))}: {conv}" for conv, names in sorted(by_convention.items()))


# ----- one sweep ---------------------------------------------------------------------------------------------
def results_sheet(records: list[dict], title: str = "results") -> Sheet:
    """The runs of one kind that ran, one row each: their identity (what varies among them a column, what
    they share in the title), then what was measured (timing, TFLOP/s, memory, error, a workload's metrics,
    the rank-group figures of a strategy), then the status; notes: the FLOP convention(s)."""
    ran = [r for r in records if r["status"] not in SKIPPED]
    fields = identity_fields(ran)
    shown, shared = split_identity(fields, ran)
    workload = all(kind_of(r) == "workload" for r in ran)
    figures = workload_figures(ran) if workload else kernel_figures(ran)
    columns = tuple(column(f.header, justify=f.justify, identity=True) for f in shown)
    rows = []
    for r in sorted(ran, key=sort_key(fields)):
        v = public_view(r)
        rows.append(tuple(escape(f.text(v)) for f in shown) + tuple(fig.cell(v) for fig in figures))
    said = set(title.split(" · "))  # a table of one phase is titled by it already
    shared = [label for label in shared if label.split("=", 1)[1] not in said]
    return Sheet(title=" · ".join([title, *shared]), columns=columns + tuple(fig.column for fig in figures),
                 rows=tuple(rows), notes=(conventions_caption(records),))


def results_table(records: list[dict], title: str = "results") -> Table:
    """Attention kernels (methods or strategies) as one rich table (see :func:`results_sheet`)."""
    return to_rich(results_sheet(records, title))


def workload_table(records: list[dict], title: str = "results") -> Table:
    """Workload runs of one phase as one rich table (see :func:`results_sheet`)."""
    return to_rich(results_sheet(records, title))


# Kinds whose runs are split into several tables, and by what (a workload's phases carry different metrics).
KIND_SPLITS: dict[str, Callable[[dict], tuple[str, ...]]] = {
    "workload": lambda r: (str(r.get("workload")), str(r.get("phase"))),
}


def _group_order(group: tuple[str, tuple[str, ...]]) -> tuple:
    """Kinds in :data:`KINDS` order; a workload's phases in the order it declares them."""
    kind, split = group
    rank = KINDS.index(kind) if kind in KINDS else len(KINDS)
    if kind == "workload" and len(split) >= 2:
        return (rank, split[0], phase_rank({"workload": split[0], "phase": split[1]}), split[2:])
    return (rank, "", (), split)


def results_sheets(records: list[dict], title: str = "results") -> list[Sheet]:
    """One sheet per kind present (method, strategy, workload), each with its own FLOP convention; workloads
    get one per (workload, phase), with the metrics that phase reports, the phases in the workload's order;
    predicted runs one of their own. Kinds whose runs were all not run get none (see :func:`skipped_sheet`)."""
    groups: dict[tuple[str, tuple[str, ...]], list[dict]] = {}
    for r in records:
        kind = kind_of(r)
        split = KIND_SPLITS.get(kind, lambda _: ())(r)
        if is_predicted(r):  # a model's figures never share a table with measurements
            split = (*split, source_label(r).upper())
        groups.setdefault((kind, split), []).append(r)
    return [
        results_sheet(groups[kind, split], " · ".join((title, kind, *split)))
        for kind, split in sorted(groups, key=_group_order)
        if any(r["status"] not in SKIPPED for r in groups[kind, split])
    ]


def results_tables(records: list[dict], title: str = "results", width: Optional[int] = None) -> list[Table]:
    """:func:`results_sheets` as rich tables; with ``width``, a sheet wider than that folds into parts that
    each repeat the identity columns, or is turned to a column per run (:func:`harness.results.sheet.layout`)."""
    sheets = results_sheets(records, title)
    parts = [part for sheet in sheets for part in (layout(sheet, width) if width else [sheet])]
    return [to_rich(part) for part in parts]


def skipped_sheet(records: list[dict]) -> Optional[Sheet]:
    """Runs that were not run (unavailable here, unsupported by the method/strategy/workload), by reason."""
    groups: dict[tuple, int] = {}
    for r in records:
        if r["status"] in SKIPPED:
            key = (who(r), r["status"], r.get("reason") or "")
            groups[key] = groups.get(key, 0) + 1
    if not groups:
        return None
    columns = (Column("run", justify="left", identity=True), Column("status", justify="left"), Column("runs"),
               Column("reason", justify="left", wrap=True))
    rows = tuple((escape(name), f"[yellow]{status}[/]", str(n), escape(reason))
                 for (name, status, reason), n in sorted(groups.items()))
    return Sheet(title=f"not run: {sum(groups.values())} runs", columns=columns, rows=rows)


def skipped_table(records: list[dict]) -> Optional[Table]:
    """:func:`skipped_sheet` as a rich table (None when every run ran)."""
    sheet = skipped_sheet(records)
    return to_rich(sheet) if sheet is not None else None


def _sort_key(r: dict) -> tuple:
    return (str(r.get("mask")), phase_rank(r), r.get("seqlen") or 0, r.get("world_size") or 1, who(r))


# ----- two sweeps --------------------------------------------------------------------------------------------
def ratios(base: dict, new: dict) -> list[tuple[str, float, float, Verdict]]:
    """(metric, base value, new value, verdict) for the median time and every metric both ok records carry,
    each judged by :func:`harness.results.verdict.judge` (the time with its spreads and CPU time; a metric by
    the 3% rule: no spread is stored for it); figures that are missing or zero in base are left out."""
    names = [TIME] + sorted(set(base.get("metrics") or {}) & set(new.get("metrics") or {}))
    out = []
    for name in names:
        b, n = figure(base, name), figure(new, name)
        if b is None or n is None or b.median == 0:
            continue
        out.append((name, b.median, n.median, judge(b, n, metric_better(new, name))))
    return out


COLOURS = {SAME: "white", BETTER: "green", WORSE: "red", INCONCLUSIVE: "yellow", "broken": "red", "fixed": "green"}
COMPARE_CAPTION = f"ratio new/base. {RULE}"


def compare_table(base: list[dict], new: list[dict]) -> tuple[Table, dict]:
    """Ratios new/base per run matched by key: the median time and every workload metric both carry.

    A verdict per ratio (:func:`harness.results.verdict.judge`: better / worse / tie / inconclusive, with its
    reason); runs ok in one sweep and failed in the other are listed as ``broken`` or ``fixed`` without
    numbers; the tally counts ratios and runs."""
    if any(is_predicted(r) for r in base + new):
        return prediction_table(base, new)
    base_by = {r["key"]: public_view(r) for r in base}
    table = Table(title="compare (new / base)", header_style="bold", caption=escape(COMPARE_CAPTION))
    for col in ("method", "mask", "S", "shape", "dtype", "dir", "ws", "metric", "base", "new", "ratio", "verdict",
                "reason"):
        table.add_column(col, justify="right" if col in ("S", "ws", "base", "new", "ratio") else "left",
                         no_wrap=col not in ("reason", "method", "mask"))
    tally = {BETTER: 0, WORSE: 0, SAME: 0, INCONCLUSIVE: 0, "broken": 0, "fixed": 0, "not ok": 0, "unmatched": 0}
    for r in sorted(new, key=_sort_key):
        n, b = public_view(r), base_by.get(r["key"])
        if b is None:
            tally["unmatched"] += 1
            continue
        point = [escape(who(n)), escape(mask_label(n)), str(n.get("seqlen")), shape_label(n), str(n.get("dtype")),
                 timed(n), str(n.get("world_size"))]
        if n["status"] == OK and b["status"] == OK:
            for name, bv, nv, v in ratios(b, n):
                tally[v.verdict] += 1
                unit = metric_unit([n, b], name)
                table.add_row(*point, name, _metric_cell(bv, unit), _metric_cell(nv, unit), f"{v.ratio:.3f}",
                              f"[{COLOURS[v.verdict]}]{v.verdict}[/]", escape(v.reason))
        elif b["status"] == OK and n["status"] in FAILED:
            tally["broken"] += 1
            table.add_row(*point, "", "ok", n["status"], "", "[red]broken[/]", escape(n.get("reason") or ""))
        elif n["status"] == OK and b["status"] in FAILED:
            tally["fixed"] += 1
            table.add_row(*point, "", b["status"], "ok", "", "[green]fixed[/]", "")
        else:
            tally["not ok"] += 1
    return table, tally


def prediction_table(base: list[dict], new: list[dict]) -> tuple[Table, dict]:
    """A model against measurements: every predicted run (in either file) matched to the measured ``ok`` run of
    the same run key, with the predicted / measured rank-max time, TFLOP/s and bytes per rank, and the error of
    every rank's time (wall, or CPU time where the measurement's ranks shared cores: ``sharing`` > 1)."""
    measured = {r["key"]: r for r in base + new if r.get("status") == OK}
    predicted = [r for r in base + new if is_predicted(r)]
    table = Table(title="prediction vs measurement (predicted / measured)", header_style="bold",
                  caption="error = predicted/measured - 1 of the rank-max time; ranks: median |error| over every "
                          "rank's time (CPU time where ranks shared cores); bytes: exact when equal")
    for col in ("strategy", "mask", "S", "dir", "ws", "measured ms", "predicted ms", "error", "ranks |err|",
                "bytes", "cluster"):
        table.add_column(col, justify="left" if col in ("strategy", "mask", "dir", "bytes", "cluster") else "right")
    tally = {"matched": 0, "unmatched": 0}
    errors: list[float] = []
    for p in sorted(predicted, key=_sort_key):
        m = measured.get(p.get("run_key"))
        if m is None:
            tally["unmatched"] += 1
            continue
        tally["matched"] += 1
        rank_err = rank_errors(m, p)
        errors.extend(rank_err)
        err = p[TIME] / m[TIME] - 1 if m.get(TIME) else float("nan")
        same = _json_list(m.get("comm_bytes")) == _json_list(p.get("comm_bytes"))
        table.add_row(escape(who(p)), escape(mask_label(p)), str(p.get("seqlen")), timed(p),
                      str(p.get("world_size")), _fmt(m.get(TIME), ".2f"), _fmt(p.get(TIME), ".2f"), f"{err:+.1%}",
                      f"{_median([abs(e) for e in rank_err]):.1%}" if rank_err else "",
                      "exact" if same else "[red]differ[/]", escape(str(p.get("cluster"))))
    if errors:
        abs_err = sorted(abs(e) for e in errors)
        tally["median |rank error| %"] = round(100 * _median(abs_err), 1)
        tally["p90 |rank error| %"] = round(100 * abs_err[min(len(abs_err) - 1, int(0.9 * len(abs_err)))], 1)
    return table, tally


def rank_errors(measured: dict, predicted: dict) -> list[float]:
    """predicted/measured - 1 of every rank's time: CPU time when the prediction modelled shared cores."""
    field = "rank_cpu_ms" if (predicted.get("sharing") or 1) > 1 else "rank_time_ms"
    m, p = _json_list(measured.get(field)), _json_list(predicted.get(field))
    return [b / a - 1 for a, b in zip(m, p) if a] if len(m) == len(p) else []


def _json_list(value) -> list:
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            return []
    return list(value) if isinstance(value, list) else []


def _median(values: list[float]) -> float:
    s = sorted(values)
    n = len(s)
    return (s[n // 2] if n % 2 else (s[n // 2 - 1] + s[n // 2]) / 2) if n else float("nan")


# ----- exports -----------------------------------------------------------------------------------------------
def _text(value: object) -> object:
    """A csv cell: dicts and lists as JSON, everything else as is."""
    return json.dumps(value, default=str) if isinstance(value, (dict, list)) else value


# Fields that hold a moment (seconds since the epoch, UTC): ISO 8601 in every view written for people (csv, md).
TIMESTAMPS = ("finished_at",)


def iso_time(seconds: object) -> str:
    """A moment as ISO 8601 UTC to the second (``2026-12-03T12:56:38Z``); empty for no number."""
    t = number(seconds)
    if t is None:
        return ""
    return datetime.fromtimestamp(t, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def export(rows: Iterable[dict], fmt: str) -> str:
    """Rows (see ``ResultStore.export_rows``) as csv or json text, with every column any row has: the raw
    record, for programs (the tables for people are :func:`markdown`).

    A non-ok run's figures are only in its ``diagnostics`` column. csv writes :data:`TIMESTAMPS` in ISO
    8601; json keeps them as stored (seconds since the epoch)."""
    rows = list(rows)
    columns = export_columns(rows)
    if fmt == "json":  # valid JSON: a number it cannot hold (NaN, infinity) is null
        return json.dumps([{c: finite_values(r.get(c)) for c in columns} for r in rows], indent=1, default=str,
                          allow_nan=False)
    if fmt == "csv":
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=columns)
        writer.writeheader()
        writer.writerows({c: iso_time(r.get(c)) if c in TIMESTAMPS else _text(r.get(c)) for c in columns}
                         for r in rows)
        return buf.getvalue()
    raise ValueError(f"export writes csv or json, not {fmt!r} (markdown: report.markdown)")


def markdown(records: list[dict], source: str) -> str:
    """The tables ``lcbench show`` prints, as Markdown: a heading naming ``source`` and when its runs
    finished (ISO 8601), then every results sheet with its conventions and legend, then the runs not run."""
    finished = sorted(t for t in (number(r.get("finished_at")) for r in records) if t is not None)
    span = f", finished {iso_time(finished[0])} to {iso_time(finished[-1])}" if finished else ""
    parts = [f"# lcbench results: {source}\n\n{len(records)} runs{span}.\n"]
    parts += [to_markdown(sheet) for sheet in results_sheets(records, title=source)]
    skipped = skipped_sheet(records)
    if skipped is not None:
        parts.append(to_markdown(skipped))
    return "\n".join(parts)


def wide_console(stderr: bool = False) -> Console:
    """A console that does not squeeze tables to 80 columns when output is not a terminal (logs, CI)."""
    probe = Console(stderr=stderr)
    return probe if probe.is_terminal else Console(stderr=stderr, width=240)
