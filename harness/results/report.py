"""Results as tables: one sweep, two sweeps compared, and exports (CSV, JSON, Markdown).

Only runs with status ``ok`` (correct and measured) carry numbers; every other status is shown with its
reason, so a table never presents an unvalidated figure as a result.
"""

from __future__ import annotations

import csv
import io
import json
from typing import Iterable, Optional

from rich.console import Console
from rich.table import Table

from harness.results.store import FIELDS, SESSION_FIELDS

SKIPPED = ("unavailable", "unsupported")  # not run: the reason is about the method/library, not the run

# Relative difference below which two timings are a tie (run-to-run noise on these machines).
TIE = 0.03
FLOP_CONVENTION = "FLOPs: fwd 4*area*Hq*d (exact mask area), bwd 2.5x, fwd+bwd 3.5x; TFLOP/s per device"

IDENTITY = ("strategy", "method", "mask", "mask_params", "seqlen", "batch", "heads_q", "heads_kv", "head_dim",
            "dtype", "direction", "world_size", "device", "options")


def identity(record: dict) -> tuple:
    """What makes two records the same benchmark point (across runs and machines)."""
    return tuple(json.dumps(record.get(f), sort_keys=True) for f in IDENTITY)


def who(record: dict) -> str:
    return f"{record['strategy']}[{record['method']}]" if record.get("strategy") else record["method"]


def mask_label(record: dict) -> str:
    params = record.get("mask_params") or {}
    inner = ",".join(f"{k}={v}" for k, v in params.items() if k not in ("seed",))
    return f"{record['mask']}({inner})" if inner else record["mask"]


def shape_label(record: dict) -> str:
    return f"B{record['batch']} H{record['heads_q']}:{record['heads_kv']} d{record['head_dim']}"


def _fmt(value: Optional[float], spec: str) -> str:
    return "" if value is None else format(value, spec)


def _bytes(n: Optional[int]) -> str:
    if n is None:
        return ""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return ""


def _documents(record: dict) -> str:
    """The realised document count of a packed mask (empty for other masks)."""
    info = json.loads(record.get("mask_info") or "{}")
    docs = info.get("documents")
    return f" [{docs['count']} docs]" if docs else ""


def _comm_mb(record: dict) -> str:
    sent = json.loads(record.get("comm_bytes") or "[]")
    return f"{max(sent) / 2**20:.1f}" if sent else ""


def results_table(records: list[dict], title: str = "results") -> Table:
    """One row per run that ran: who, mask, size, timing (median, p20-p80), TFLOP/s, memory, error, status.

    Shape and dtype become part of the title when every run shares them, to keep the table narrow; the
    context-parallel columns (bytes sent per rank, time and area imbalance) appear when a run has ranks.
    """
    distributed = any(r["world_size"] > 1 for r in records)
    shapes = {shape_label(r) for r in records}
    dtypes = {r["dtype"] for r in records}
    per_row_shape, per_row_dtype = len(shapes) > 1, len(dtypes) > 1
    if not per_row_shape and shapes:
        title += f" · {shapes.pop()}"
    if not per_row_dtype and dtypes:
        title += f" · {dtypes.pop()}"
    table = Table(title=title, caption=FLOP_CONVENTION, header_style="bold")
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
        ok = r["status"] == "ok"
        cells = [who(r), mask_label(r) + _documents(r), str(r["seqlen"])]
        cells += [shape_label(r)] * per_row_shape + [r["dtype"]] * per_row_dtype
        cells += [r["direction"], str(r["world_size"])]
        if ok:
            cells += [
                f"{r['time_ms_median']:.2f}", f"{r['time_ms_p20']:.2f}-{r['time_ms_p80']:.2f}", _fmt(r.get("cpu_ms"), ".1f"),
                _fmt(r.get("tflops"), ".3f"), _fmt(100 * r["frac_peak"], ".1f") if r.get("frac_peak") else "",
                _bytes(r.get("peak_mem_bytes")), _fmt(r.get("max_abs_err"), ".1e"),
            ]
            cells += [_comm_mb(r), _fmt(r.get("time_imbalance"), ".2f"), _fmt(r.get("area_imbalance"), ".2f")] * distributed
            cells += ["[green]ok[/]"]
        else:
            cells += [""] * (7 + 3 * distributed) + [f"[yellow]{r['status']}[/]: {r.get('reason') or ''}"]
        table.add_row(*cells)
    return table


def skipped_table(records: list[dict]) -> Optional[Table]:
    """Runs that were not run (unavailable here, unsupported by the method/strategy), grouped by reason."""
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
        table.add_row(name, f"[yellow]{status}[/]", str(n), reason)
    return table


def _sort_key(r: dict) -> tuple:
    return (r["mask"], r["direction"], r["seqlen"], r["world_size"], who(r))


def compare_table(base: list[dict], new: list[dict]) -> tuple[Table, dict]:
    """Time ratio new/base per matching point; |ratio - 1| < 3% is flagged as a tie."""
    base_by = {identity(r): r for r in base if r["status"] == "ok"}
    table = Table(title="compare (new / base time)", caption=f"tie: |ratio-1| < {TIE:.0%}", header_style="bold")
    for col in ("method", "mask", "S", "shape", "dtype", "dir", "ws", "base ms", "new ms", "ratio", "verdict"):
        table.add_column(col, justify="right" if col in ("S", "ws", "base ms", "new ms", "ratio") else "left")
    tally = {"faster": 0, "slower": 0, "tie": 0, "unmatched": 0}
    for r in sorted(new, key=_sort_key):
        b = base_by.get(identity(r))
        if r["status"] != "ok" or b is None:
            tally["unmatched"] += 1
            continue
        ratio = r["time_ms_median"] / b["time_ms_median"]
        verdict = "tie" if abs(ratio - 1) < TIE else ("faster" if ratio < 1 else "slower")
        tally[verdict] += 1
        colour = {"tie": "white", "faster": "green", "slower": "red"}[verdict]
        table.add_row(
            who(r), mask_label(r), str(r["seqlen"]), shape_label(r), r["dtype"], r["direction"], str(r["world_size"]),
            f"{b['time_ms_median']:.2f}", f"{r['time_ms_median']:.2f}", f"{ratio:.3f}", f"[{colour}]{verdict}[/]",
        )
    return table, tally


def export(rows: Iterable[dict], fmt: str) -> str:
    """Rows (see ``ResultStore.export_rows``) as csv, json or md text."""
    rows = list(rows)
    columns = list(FIELDS) + list(SESSION_FIELDS)
    if fmt == "json":
        return json.dumps(rows, indent=1, default=str)
    if fmt == "csv":
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
        return buf.getvalue()
    if fmt == "md":
        md_cols = ["method", "strategy", "mask", "seqlen", "heads_q", "heads_kv", "head_dim", "dtype", "direction",
                   "world_size", "status", "time_ms_median", "time_ms_p20", "time_ms_p80", "tflops", "peak_mem_bytes",
                   "max_abs_err", "reason"]
        lines = ["| " + " | ".join(md_cols) + " |", "|" + "---|" * len(md_cols)]
        for r in rows:
            cells = []
            for c in md_cols:
                v = r.get(c)
                cells.append(f"{v:.4g}" if isinstance(v, float) else ("" if v is None else str(v).replace("|", "/")))
            lines.append("| " + " | ".join(cells) + " |")
        return "\n".join(lines) + "\n"
    raise ValueError(fmt)


def wide_console(stderr: bool = False) -> Console:
    """A console that does not squeeze tables to 80 columns when output is not a terminal (logs, CI)."""
    probe = Console(stderr=stderr)
    return probe if probe.is_terminal else Console(stderr=stderr, width=240)
