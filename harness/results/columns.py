"""The columns of the results tables, each with the one explanation of its header (:data:`LEGEND`).

Two sorts of columns:

- **identity** (:class:`Field`): what tells one run from another — who ran, every workload parameter, the
  mask, the length, the shape, the dtype, the direction or phase, the world size, the options. In a table, a
  field whose value every run shares goes into the title (``mask=causal``); a field that varies is a column,
  so no two rows look alike. ``always`` fields (who ran, the length) stay columns either way.
- **figures** (:class:`Figure`): what was measured, read from a record's public view.

Rows sort in each field's natural order: lengths as numbers, directions ``fwd, bwd, fwd+bwd, decode``, a
workload's phases as the workload declares them.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from typing import Any, Callable, Optional

from rich.markup import escape

from harness.errors import UserError
from harness.results.records import cell, kind_of, mask_label, metric_unit, public_view, shape_label, timed
from harness.results.schema import number
from harness.results.sheet import Column
from harness.run import DECODE, DIRECTIONS
from harness.status import OK, PREDICTED

# Every abbreviation a results table uses, explained once; a table prints the lines of the columns it has.
LEGEND: dict[str, str] = {
    "S": "sequence length (tokens)",
    "B": "batch size",
    "ws": "world size (ranks of the run)",
    "dir": "direction: fwd, bwd (the backward alone), fwd+bwd, decode (the last rows against a KV cache)",
    "ms median": "median time per call after warm-up (on a rank group: the slowest rank's)",
    "p20-p80": "20th-80th percentile of the time per call, ms",
    "cpu ms": "process CPU time per call",
    "TFLOP/s": "per device: FLOPs / (rank-max time x world size)",
    "%peak": "TFLOP/s as a percentage of the device's peak calibrated at the sweep's start; >100? when above "
             "it: the peak was measured under load, not a fact",
    "peak mem": "the allocator's high-water mark of the timed call",
    "max err": "largest absolute error against the float64 reference",
    "MiB sent/rank": "the most MiB any rank sent per call",
    "t-imb": "time imbalance: the slowest rank's median / the mean of the ranks' medians (1 = balanced)",
    "a-imb": "area imbalance: the largest rank's mask area / the mean (1 = balanced)",
}


def column(header: str, justify: str = "right", identity: bool = False, wrap: bool = False) -> Column:
    """A column whose legend is its line of :data:`LEGEND` (none when its header needs none)."""
    return Column(header, justify=justify, identity=identity, wrap=wrap, legend=LEGEND.get(header, ""))


# ----- natural order -----------------------------------------------------------------------------------------
@functools.lru_cache(maxsize=None)
def declared_phases(workload: str) -> tuple[str, ...]:
    """The phases workload ``workload`` declares, in its order (empty when it is not registered here: a
    results file read without the plugin that wrote it still reads, its phases then by name)."""
    try:
        from harness.catalog import workloads  # only for the order; a results file never needs a plugin

        found = workloads().get(workload)
    except (UserError, ImportError):
        return ()
    return tuple(found.phases) if found is not None else ()


def phase_rank(record: dict) -> tuple:
    """Sort key of a record's phase or direction: a workload's phase in the order the workload declares its
    phases, an attention direction in :data:`DIRECTIONS` order, anything else by name after them."""
    step = timed(record)
    phases = declared_phases(str(record.get("workload"))) if record.get("workload") else ()
    if step in phases:
        return (0, phases.index(step), "")
    if step in DIRECTIONS:
        return (1, DIRECTIONS.index(step), "")
    return (2, 0, step)


def _natural(value: Any) -> tuple:
    """Numbers before text, numbers by value, text by itself: a sort key for any cell value."""
    n = number(value)
    return (0, n, "") if n is not None else (1, 0, cell(value))


# ----- identity ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Field:
    """One identity field: its header, its text for a record, its sort key, whether it is a column even
    when every run shares it, and whether an empty text means "does not apply" (not a value of its own)."""

    header: str
    text: Callable[[dict], str]
    sort: Optional[Callable[[dict], Any]] = None
    always: bool = False
    justify: str = "left"
    blank_means_none: bool = False

    def key(self, record: dict) -> Any:
        return self.sort(record) if self.sort else self.text(record)


def _documents(record: dict) -> str:
    """The realised document count of a packed mask (empty for other masks)."""
    info = record.get("mask_info") or "{}"
    docs = (json.loads(info) if isinstance(info, str) else info).get("documents")
    return f" [{docs['count']} docs]" if isinstance(docs, dict) and "count" in docs else ""


def kernel_label(record: dict) -> str:
    """The attention a run used: ``strategy[method]``, ``method`` or empty."""
    if record.get("strategy"):
        return f"{record['strategy']}[{record.get('method')}]"
    return record.get("method") or ""


def _number_field(header: str, name: str, default: Any = None) -> Field:
    return Field(header, lambda r: cell(r.get(name, default)), sort=lambda r: _natural(r.get(name, default)),
                 justify="right")


MASK = Field("mask", lambda r: mask_label(r) + _documents(r))
SEQLEN = Field("S", lambda r: cell(r.get("seqlen")), sort=lambda r: _natural(r.get("seqlen")), always=True,
               justify="right")
SHAPE = Field("shape", shape_label)
DTYPE = Field("dtype", lambda r: cell(r.get("dtype")))
WORLD = _number_field("ws", "world_size", 1)
BATCH = _number_field("B", "batch", 1)
DEVICE = Field("device", lambda r: cell(r.get("device")))
DECODE_ROWS = Field("decode rows", lambda r: cell(r.get("decode_tokens", 1)) if timed(r) == DECODE else "",
                    sort=lambda r: _natural(r.get("decode_tokens", 1)), justify="right",
                    blank_means_none=True)  # only a decode step has them


DIRECTION = Field("dir", lambda r: cell(r.get("direction")), sort=phase_rank)
PHASE = Field("phase", lambda r: cell(r.get("phase")), sort=phase_rank)


def _keys(records: list[dict], holder: str) -> list[str]:
    """The keys of mapping ``holder`` over the records, in the order they first appear."""
    return list(dict.fromkeys(k for r in records for k in (r.get(holder) or {})))


def _entry(header: str, holder: str, name: str) -> Field:
    def get(r: dict) -> Any:
        return (r.get(holder) or {}).get(name)

    return Field(header, lambda r: cell(get(r)), sort=lambda r: _natural(get(r)))


def _options(records: list[dict], taken: set[str]) -> list[Field]:
    return [_entry(name if name not in taken else f"option {name}", "options", name)
            for name in _keys(records, "options")]


def kernel_fields(records: list[dict]) -> list[Field]:
    """Identity of a method or strategy run, in column order."""
    who = Field("strategy" if any(r.get("strategy") for r in records) else "method", kernel_label, always=True)
    fields = [who, MASK, SEQLEN, SHAPE, DTYPE, DIRECTION, WORLD, DECODE_ROWS, DEVICE]
    return fields + _options(records, {f.header for f in fields})


def workload_fields(records: list[dict]) -> list[Field]:
    """Identity of a workload run, in column order: the workload, each of its parameters (the flavor first;
    a ``method``/``strategy`` parameter only where the attention column does not already say it), the
    attention it used, the mask, length, batch, dtype, phase, world size, options."""
    names = _keys(records, "params")
    names.sort(key=lambda n: n != "flavor")
    shown_elsewhere = {n for n in ("method", "strategy")
                       if all((r.get("params") or {}).get(n) in (None, r.get(n)) for r in records)}
    fields = [Field("workload", lambda r: cell(r.get("workload")))]  # a table is of one workload: its title
    fields += [_entry(n, "params", n) for n in names if n not in shown_elsewhere]
    fields += [Field("attention", kernel_label), MASK, SEQLEN, BATCH, DTYPE, PHASE, WORLD,
               DECODE_ROWS, DEVICE]
    return fields + _options(records, {f.header for f in fields})


def identity_fields(records: list[dict]) -> list[Field]:
    """The identity fields of the records' kind (they share one; see ``report.results_sheets``)."""
    kinds = {kind_of(r) for r in records}
    return workload_fields(records) if kinds == {"workload"} else kernel_fields(records)


def split_identity(fields: list[Field], records: list[dict]) -> tuple[list[Field], list[str]]:
    """(the fields that are columns, ``header=value`` of each field every record shares, for the title)."""
    columns, shared = [], []
    for f in fields:
        values = {f.text(r) for r in records} - ({""} if f.blank_means_none else set())
        if f.always or len(values) > 1:
            columns.append(f)
        elif values and values != {""}:
            shared.append(f"{f.header}={values.pop()}")
    return columns, shared


def sort_key(fields: list[Field]) -> Callable[[dict], tuple]:
    """Rows by every identity field in column order, who ran last: the options of one configuration
    side by side."""
    order = fields[1:] + fields[:1]
    return lambda r: tuple(f.key(r) for f in order)


# ----- figures -----------------------------------------------------------------------------------------------
def fmt(value: Optional[float], spec: str) -> str:
    return "" if value is None else format(value, spec)


def size(n: Optional[float]) -> str:
    """Bytes in B, KiB, MiB or GiB (empty for no number)."""
    if n is None:
        return ""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return ""


def _json_numbers(value: Any) -> list[float]:
    value = json.loads(value) if isinstance(value, str) else value
    numbers = [number(v) for v in value] if isinstance(value, list) else []
    return [v for v in numbers if v is not None]


def _comm_mib(view: dict) -> str:
    sent = _json_numbers(view.get("comm_bytes") or "[]")
    return f"{max(sent) / 2**20:.1f}" if sent else ""


def _spread(view: dict) -> str:
    p20, p80 = view.get("time_ms_p20"), view.get("time_ms_p80")
    return f"{p20:.2f}-{p80:.2f}" if p20 is not None and p80 is not None else ""


def _percent_of_peak(view: dict) -> str:
    """%peak, or a flag when it exceeds 100% (the calibrated peak was measured under load): never a fact."""
    frac = view.get("frac_peak")
    if not frac:
        return ""
    if view.get("peak_suspect") or frac > 1:
        return "[yellow]>100?[/]"
    return f"{100 * frac:.1f}"


def status_cell(view: dict) -> str:
    if view["status"] == OK:
        return "[green]ok[/]"
    if view["status"] == PREDICTED:
        return "[cyan]predicted[/] (not measured)"
    return f"[yellow]{view['status']}[/]: {escape(view.get('reason') or '')}"


@dataclass(frozen=True)
class Figure:
    """A measured column: the column and its cell (rich markup) from a record's public view."""

    column: Column
    cell: Callable[[dict], str]


def _figure(header: str, get: Callable[[dict], str]) -> Figure:
    return Figure(column(header), get)


TIMING = [_figure("ms median", lambda v: fmt(v.get("time_ms_median"), ".2f")), _figure("p20-p80", _spread)]
CPU = _figure("cpu ms", lambda v: fmt(v.get("cpu_ms"), ".1f"))
TFLOPS = _figure("TFLOP/s", lambda v: fmt(v.get("tflops"), ".3f"))
PEAK = _figure("%peak", _percent_of_peak)
MEMORY = _figure("peak mem", lambda v: size(v.get("peak_mem_bytes")))
ERROR = _figure("max err", lambda v: fmt(v.get("max_abs_err"), ".1e"))
DISTRIBUTED = [_figure("MiB sent/rank", _comm_mib), _figure("t-imb", lambda v: fmt(v.get("time_imbalance"), ".2f")),
               _figure("a-imb", lambda v: fmt(v.get("area_imbalance"), ".2f"))]
STATUS = Figure(column("status", justify="left", wrap=True), status_cell)


def kernel_figures(records: list[dict]) -> list[Figure]:
    """What a method or strategy table shows of each run; the rank-group columns when a run has ranks."""
    distributed = any((r.get("world_size") or 1) > 1 for r in records)
    return [*TIMING, CPU, TFLOPS, PEAK, MEMORY, ERROR, *DISTRIBUTED * distributed, STATUS]


def metric_cell(value: object, unit: str) -> str:
    """A metric's cell: a byte count in B/KiB/MiB/GiB, anything else as :func:`cell` writes it."""
    if number(value) is not None and unit.lower() in ("b", "byte", "bytes"):
        return size(value)
    return cell(value)


def _metric(name: str, unit: str) -> Figure:
    def get(view: dict) -> str:
        return metric_cell((view.get("metrics") or {}).get(name), metric_unit([view], name) or unit)

    return Figure(Column(f"{name} ({unit})" if unit and unit != name else name), get)


def metric_figures(records: list[dict]) -> list[Figure]:
    """One column per metric any of the records reports, in the order the workload reports them."""
    names = list(dict.fromkeys(m for r in records for m in (public_view(r).get("metrics") or {})))
    return [_metric(name, metric_unit(records, name)) for name in names]


def workload_figures(records: list[dict]) -> list[Figure]:
    """What a workload table shows of each run: timing, TFLOP/s, memory, its metrics, status."""
    return [*TIMING, TFLOPS, MEMORY, *metric_figures(records), STATUS]
