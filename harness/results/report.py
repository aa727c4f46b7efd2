"""Results as tables: one sweep (one table per kind), two sweeps compared, and exports (CSV, JSON, Markdown).

Every record is read through :func:`harness.results.records.public_view`: only runs with status ``ok``
(correct and measured) carry numbers; every other status is shown with its reason, so a table never presents
an unvalidated figure as a result.
"""

from __future__ import annotations

import csv
import io
import json
import math
from typing import Callable, Iterable, Optional

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from harness.results.records import (  # noqa: F401  (labels re-exported for older callers)
    DIAGNOSTICS, FLOP_CONVENTION, KINDS, METRIC_PREFIX, cell, flop_convention, is_predicted, kind_of, mask_label,
    metric_better, metric_names, metric_unit, number, params_label, public_view, shape_label, source_label, who,
)
from harness.results.store import export_columns
from harness.results.verdict import (  # noqa: F401  (TIE re-exported for older callers)
    BETTER, INCONCLUSIVE, RULE, SAME, TIE, WORSE, Verdict, figure, judge,
)
from harness.status import FAILED, NOT_RUN, OK, PREDICTED

SKIPPED = NOT_RUN  # not run: the reason is about the method/library, not the run

TIME = "time_ms_median"  # the figure every comparison and every table has


def _fmt(value: Optional[float], spec: str) -> str:
    return "" if value is None else format(value, spec)


def _bytes(n: Optional[float]) -> str:
    if n is None:
        return ""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return ""


def _documents(record: dict) -> str:
    """The realised document count of a packed mask (empty for other masks)."""
    info = record.get("mask_info") or "{}"
    docs = (json.loads(info) if isinstance(info, str) else info).get("documents")
    return f" [{docs['count']} docs]" if isinstance(docs, dict) and "count" in docs else ""


def _comm_mb(record: dict) -> str:
    """The most bytes any rank sent, in MiB (empty when the record lists no numbers)."""
    sent = record.get("comm_bytes") or "[]"
    sent = [number(b) for b in (json.loads(sent) if isinstance(sent, str) else sent)]
    sent = [b for b in sent if b is not None]
    return f"{max(sent) / 2**20:.1f}" if sent else ""


def _timing(view: dict) -> list[str]:
    """Median and p20-p80 cells (empty when the view carries no timing)."""
    median, p20, p80 = view.get(TIME), view.get("time_ms_p20"), view.get("time_ms_p80")
    spread = f"{p20:.2f}-{p80:.2f}" if p20 is not None and p80 is not None else ""
    return [_fmt(median, ".2f"), spread]


def _status(view: dict) -> str:
    if view["status"] == OK:
        return "[green]ok[/]"
    if view["status"] == PREDICTED:
        return "[cyan]predicted[/] (not measured)"
    return f"[yellow]{view['status']}[/]: {escape(view.get('reason') or '')}"


def _metric_cell(value: object, unit: str) -> str:
    if number(value) is not None and unit.lower() in ("b", "byte", "bytes"):
        return _bytes(value)
    return cell(value)


def conventions_caption(records: list[dict]) -> str:
    """The FLOP convention(s) of the records: one line, or one per convention naming who uses it."""
    by_convention: dict[str, set[str]] = {}
    for r in records:
        by_convention.setdefault(flop_convention(r), set()).add(r.get("workload") or r.get("method") or "")
    if len(by_convention) <= 1:
        return next(iter(by_convention), FLOP_CONVENTION)
    return "\n".join(f"{', '.join(sorted(names))}: {conv}" for conv, names in sorted(by_convention.items()))


# ----- one sweep ---------------------------------------------------------------------------------------------
def _percent_of_peak(record: dict) -> str:
    """%peak, or a flag when it exceeds 100% (the calibrated peak was measured under load): never a fact."""
    frac = record.get("frac_peak")
    if not frac:
        return ""
    if record.get("peak_suspect") or frac > 1:
        return "[yellow]>100?[/]"
    return f"{100 * frac:.1f}"


def results_table(records: list[dict], title: str = "results") -> Table:
    """Attention kernels (methods or strategies), one row per run that ran: who, mask, size, timing (median,
    p20-p80), TFLOP/s, memory, error, status; captioned with their FLOP convention.

    Shape and dtype become part of the title when every run shares them, to keep the table narrow; the
    context-parallel columns (bytes sent per rank, time and area imbalance) appear when a run has ranks.
    """
    distributed = any((r.get("world_size") or 1) > 1 for r in records)
    shapes = {shape_label(r) for r in records}
    dtypes = {r.get("dtype") for r in records}
    per_row_shape, per_row_dtype = len(shapes) > 1, len(dtypes) > 1
    if not per_row_shape and shapes:
        title += f" · {shapes.pop()}"
    if not per_row_dtype and dtypes:
        title += f" · {dtypes.pop()}"
    table = Table(title=title, caption=escape(conventions_caption(records)), header_style="bold")
    columns = [("method", "left"), ("mask", "left"), ("S", "right")]
    columns += [("shape", "left")] * per_row_shape + [("dtype", "left")] * per_row_dtype
    columns += [("dir", "left"), ("ws", "right"), ("ms median", "right"), ("p20-p80", "right"), ("cpu ms", "right"),
                ("TFLOP/s", "right"), ("%peak", "right"), ("peak mem", "right"), ("max err", "right")]
    columns += [("MB sent/rank", "right"), ("t-imb", "right"), ("a-imb", "right")] * distributed
    columns += [("status", "left")]
    for col, justify in columns:
        table.add_column(col, justify=justify, no_wrap=col != "status")
    for r in sorted(records, key=_sort_key):
        if r["status"] in SKIPPED:
            continue  # listed by skipped_table, grouped by reason
        v = public_view(r)
        cells = [escape(who(v)), escape(mask_label(v) + _documents(v)), str(v.get("seqlen"))]
        cells += [shape_label(v)] * per_row_shape + [str(v.get("dtype"))] * per_row_dtype
        cells += [str(v.get("direction")), str(v.get("world_size"))]
        cells += _timing(v) + [
            _fmt(v.get("cpu_ms"), ".1f"), _fmt(v.get("tflops"), ".3f"), _percent_of_peak(v),
            _bytes(v.get("peak_mem_bytes")), _fmt(v.get("max_abs_err"), ".1e"),
        ]
        cells += [_comm_mb(v), _fmt(v.get("time_imbalance"), ".2f"), _fmt(v.get("area_imbalance"), ".2f")] * distributed
        table.add_row(*cells, _status(v))
    return table


def workload_table(records: list[dict], title: str = "results") -> Table:
    """Workloads, one row per run that ran: workload, its parameters (flavor first), the attention it used,
    size, phase, timing, TFLOP/s, memory, then one column per metric (with its unit), status."""
    ran = [r for r in records if r["status"] not in SKIPPED]
    dtypes = {r.get("dtype") for r in ran}
    per_row_dtype = len(dtypes) > 1
    if not per_row_dtype and dtypes:
        title += f" · {dtypes.pop()}"
    attention = any(r.get("method") or r.get("strategy") for r in ran)
    metrics = metric_names([public_view(r) for r in ran])
    table = Table(title=title, caption=escape(conventions_caption(records)), header_style="bold")
    columns = [("workload", "left"), ("params", "left")] + [("attention", "left")] * attention
    columns += [("S", "right"), ("B", "right")] + [("dtype", "left")] * per_row_dtype
    columns += [("phase", "left"), ("ws", "right"), ("ms median", "right"), ("p20-p80", "right"),
                ("TFLOP/s", "right"), ("peak mem", "right")]
    columns += [(f"{m} ({metric_unit(ran, m)})" if metric_unit(ran, m) else m, "right") for m in metrics]
    for col, justify in columns + [("status", "left")]:
        table.add_column(col, justify=justify, no_wrap=col != "status")
    for r in sorted(ran, key=_workload_sort_key):
        v = public_view(r)
        kernel = f"{v['strategy']}[{v.get('method')}]" if v.get("strategy") else v.get("method") or ""
        cells = [escape(str(v.get("workload"))), escape(params_label(v))] + [escape(kernel)] * attention
        cells += [str(v.get("seqlen")), str(v.get("batch"))] + [str(v.get("dtype"))] * per_row_dtype
        cells += [str(v.get("direction")), str(v.get("world_size"))] + _timing(v)
        cells += [_fmt(v.get("tflops"), ".3f"), _bytes(v.get("peak_mem_bytes"))]
        values = v.get("metrics") or {}
        cells += [_metric_cell(values.get(m), metric_unit([v], m) or metric_unit(ran, m)) for m in metrics]
        table.add_row(*cells, _status(v))
    return table


# How each kind's runs are tabulated (kinds not listed here read as kernels).
KIND_TABLES: dict[str, Callable[[list[dict], str], Table]] = {
    "method": results_table, "strategy": results_table, "workload": workload_table,
}


# Kinds whose runs are split into several tables, and by what (a workload's phases carry different metrics).
KIND_SPLITS: dict[str, Callable[[dict], tuple[str, ...]]] = {
    "workload": lambda r: (str(r.get("workload")), str(r.get("direction"))),
}


def results_tables(records: list[dict], title: str = "results") -> list[Table]:
    """One table per kind present (method, strategy, workload), each with its own FLOP convention caption;
    workloads get one table per (workload, phase), with the metrics that phase reports. Kinds whose runs were
    all not run get no table (see :func:`skipped_table`)."""
    groups: dict[tuple[str, tuple[str, ...]], list[dict]] = {}
    for r in records:
        kind = kind_of(r)
        split = KIND_SPLITS.get(kind, lambda _: ())(r)
        if is_predicted(r):  # a model's figures never share a table with measurements
            split = (*split, source_label(r).upper())
        groups.setdefault((kind, split), []).append(r)
    order = sorted(groups, key=lambda g: (KINDS.index(g[0]) if g[0] in KINDS else len(KINDS), g))
    return [
        KIND_TABLES.get(kind, results_table)(groups[kind, split], " · ".join((title, kind, *split)))
        for kind, split in order
        if any(r["status"] not in SKIPPED for r in groups[kind, split])
    ]


def skipped_table(records: list[dict]) -> Optional[Table]:
    """Runs that were not run (unavailable here, unsupported by the method/strategy/workload), by reason."""
    groups: dict[tuple, int] = {}
    for r in records:
        if r["status"] in SKIPPED:
            key = (who(r), r["status"], r.get("reason") or "")
            groups[key] = groups.get(key, 0) + 1
    if not groups:
        return None
    table = Table(title=f"not run: {sum(groups.values())} runs", header_style="bold")
    for col in ("method", "status", "runs", "reason"):
        table.add_column(col, justify="right" if col == "runs" else "left", no_wrap=col == "method")
    for (name, status, reason), n in sorted(groups.items()):
        table.add_row(escape(name), f"[yellow]{status}[/]", str(n), escape(reason))
    return table


def _sort_key(r: dict) -> tuple:
    return (str(r.get("mask")), str(r.get("direction")), r.get("seqlen") or 0, r.get("world_size") or 1, who(r))


def _workload_sort_key(r: dict) -> tuple:
    return (str(r.get("workload")), params_label(r), str(r.get("direction")), r.get("seqlen") or 0,
            r.get("world_size") or 1, who(r))


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
                 str(n.get("direction")), str(n.get("world_size"))]
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
        table.add_row(escape(who(p)), escape(mask_label(p)), str(p.get("seqlen")), str(p.get("direction")),
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
def _finite(value: object) -> object:
    """``value`` with every NaN or infinite float in it as None."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def _text(value: object) -> object:
    """A csv cell: dicts and lists as JSON, everything else as is."""
    return json.dumps(value, default=str) if isinstance(value, (dict, list)) else value


def _md_header(column: str, rows: list[dict]) -> str:
    if column.startswith(METRIC_PREFIX):
        unit = metric_unit(rows, column[len(METRIC_PREFIX):])
        return f"{column} [{unit}]" if unit else column
    return column


def export(rows: Iterable[dict], fmt: str) -> str:
    """Rows (see ``ResultStore.export_rows``) as csv, json or md text, with every column any row has.

    csv and json carry a non-ok run's figures only in its ``diagnostics`` column; md (for reading) leaves
    that column out."""
    rows = list(rows)
    columns = export_columns(rows)
    if fmt == "json":  # valid JSON: a number it cannot hold (NaN, infinity) is null
        return json.dumps([{c: _finite(r.get(c)) for c in columns} for r in rows], indent=1, default=str,
                          allow_nan=False)
    if fmt == "csv":
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=columns)
        writer.writeheader()
        writer.writerows({c: _text(r.get(c)) for c in columns} for r in rows)
        return buf.getvalue()
    if fmt == "md":
        md_cols = [c for c in columns if c != DIAGNOSTICS]
        lines = ["| " + " | ".join(_md_header(c, rows) for c in md_cols) + " |", "|" + "---|" * len(md_cols)]
        for r in rows:
            cells = (cell(r.get(c)).replace("|", "/").replace("\n", " ") for c in md_cols)
            lines.append("| " + " | ".join(cells) + " |")
        return "\n".join(lines) + "\n"
    raise ValueError(fmt)


def wide_console(stderr: bool = False) -> Console:
    """A console that does not squeeze tables to 80 columns when output is not a terminal (logs, CI)."""
    probe = Console(stderr=stderr)
    return probe if probe.is_terminal else Console(stderr=stderr, width=240)
