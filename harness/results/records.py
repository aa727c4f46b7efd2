"""What a stored result record says, read the same way by show, compare, export and plot.

The one rule that keeps an unvalidated number from ever looking like a result lives here:
:func:`public_view` strips every timing, throughput and memory figure from a record whose status is not
``ok`` (optionally keeping them aside in a ``diagnostics`` field that only the csv/json exports carry).
Everything that prints or draws a record reads it through that view.

Records of lcbench 0.1.0 (no ``kind``, ``metrics`` or ``flop_convention``) read as method/strategy records
under the softmax FLOP convention they were measured with.
"""

from __future__ import annotations

import json
from typing import Any, Optional

from harness.status import OK, PREDICTED, WITH_FIGURES

KINDS = ("method", "strategy", "workload")  # the order tables and plots take

# The FLOP convention of records written before records stated their own (all were softmax kernels).
FLOP_CONVENTION = "FLOPs: fwd 4*area*Hq*d (exact mask area), bwd 2.5x, fwd+bwd 3.5x; TFLOP/s per device"

# Performance figures of a run: only an ``ok`` run shows them. ``flops``/``area`` (the problem's size),
# ``peak_tflops`` (the device's), errors and mask facts are not measurements of the run and stay.
MEASURED = (
    "time_ms_median", "time_ms_p20", "time_ms_p80", "samples", "cpu_ms", "tflops", "frac_peak",
    "peak_mem_bytes", "mem_method", "rank_time_ms", "rank_cpu_ms", "time_imbalance", "rank_peak_mem_bytes",
    "comm_bytes", "timed_s", "metrics",
)
# Name patterns of measured figures added later (a workload's own timing fields), caught without a list.
MEASURED_PREFIXES = ("time_ms",)
MEASURED_SUFFIXES = ("_ms", "_per_s", "_per_token", "_tflops")
NOT_MEASURED = ("peak_tflops",)  # the device's peak, matched by a suffix above but not a run's figure

DIAGNOSTICS = "diagnostics"  # where a non-ok record's figures go, in csv/json exports only
METRIC_PREFIX = "metric."  # export column of one workload metric: ``metric.tokens_per_s``

# Metric names whose larger value is better when a record does not say (``metric_better``).
HIGHER_IS_BETTER = ("tflops", "frac_peak")
HIGHER_SUFFIXES = ("_per_s", "tflops")


def kind_of(record: dict) -> str:
    """``method``, ``strategy`` or ``workload``; records without ``kind`` (0.1.0) by what they name."""
    if record.get("kind"):
        return record["kind"]
    if record.get("workload"):
        return "workload"
    return "strategy" if record.get("strategy") else "method"


def is_measured(name: str) -> bool:
    """Whether field ``name`` is a performance figure of the run (hidden unless the run is ``ok``)."""
    if name in NOT_MEASURED:
        return False
    return name in MEASURED or name.startswith(MEASURED_PREFIXES) or name.endswith(MEASURED_SUFFIXES)


def public_view(record: dict, diagnostics: bool = False) -> dict:
    """The record as anything outside the store may show it.

    An ``ok`` record comes back unchanged (a copy). Any other record loses every measured figure (see
    :func:`is_measured`); with ``diagnostics=True`` those figures are kept under ``diagnostics`` together
    with ``not_valid: true``, so an export can still explain a failure without a number in a result column.
    """
    view = dict(record)
    if record.get("status") in WITH_FIGURES:
        return view
    moved = {name: view.pop(name) for name in list(view) if is_measured(name)}
    moved = {k: v for k, v in moved.items() if v not in (None, {}, [])}
    if diagnostics and moved:
        view[DIAGNOSTICS] = {"not_valid": True, "status": record.get("status"), **moved}
    return view


def is_predicted(record: dict) -> bool:
    """Whether the record is a model's prediction (``lcbench predict``), not a measurement."""
    return record.get("status") == PREDICTED


def source_label(record: dict) -> str:
    """``measured`` or ``predicted on CLUSTER (model vN)``: what kind of fact the record's figures are."""
    if not is_predicted(record):
        return "measured"
    return f"predicted on {record.get('cluster')} (model v{record.get('model_version')})"


def flop_convention(record: dict) -> str:
    """How the record's ``flops`` (and so TFLOP/s) were counted."""
    return record.get("flop_convention") or FLOP_CONVENTION


def metric_better(record: dict, name: str) -> str:
    """``lower`` or ``higher``: which way metric (or field) ``name`` of the record improves."""
    stated = (record.get("metric_better") or {}).get(name)
    if stated in ("lower", "higher"):
        return stated
    return "higher" if name in HIGHER_IS_BETTER or name.endswith(HIGHER_SUFFIXES) else "lower"


def metric_unit(records: list[dict], name: str) -> str:
    """The unit the records state for metric ``name`` (empty when none does)."""
    for r in records:
        unit = (r.get("metric_units") or {}).get(name)
        if unit:
            return unit
    return ""


def metric_names(records: list[dict]) -> list[str]:
    """Every metric name any of the records carries, sorted."""
    return sorted({name for r in records for name in (r.get("metrics") or {})})


def flat_row(record: dict) -> dict:
    """The record with its ``metrics`` dict spread into one ``metric.<name>`` column each."""
    row = {k: v for k, v in record.items() if k != "metrics"}
    for name, value in (record.get("metrics") or {}).items():
        row[METRIC_PREFIX + name] = value
    return row


# ----- labels ----------------------------------------------------------------------------------------------
def params_label(record: dict) -> str:
    """A workload's parameters as ``flavor=tiny,layers=2`` (the flavor first)."""
    params = dict(record.get("params") or {})
    first = [("flavor", params.pop("flavor"))] if "flavor" in params else []
    return ",".join(f"{k}={v}" for k, v in first + sorted(params.items()))


def who(record: dict) -> str:
    """What ran: ``method``, ``strategy[method]`` or ``workload(params)[attention]``."""
    kernel = f"{record['strategy']}[{record.get('method')}]" if record.get("strategy") else record.get("method") or ""
    if kind_of(record) == "workload":
        return f"{record.get('workload')}({params_label(record)})" + (f"[{kernel}]" if kernel else "")
    return kernel


def mask_label(record: dict) -> str:
    params = record.get("mask_params") or {}
    inner = ",".join(f"{k}={v}" for k, v in params.items() if k not in ("seed",))
    mask = record.get("mask") or ""
    return f"{mask}({inner})" if inner else mask


def shape_label(record: dict) -> str:
    if record.get("heads_q") is None:
        return f"B{record.get('batch')}"
    return f"B{record.get('batch')} H{record['heads_q']}:{record.get('heads_kv')} d{record.get('head_dim')}"


# ----- fields by name (plot axes) ----------------------------------------------------------------------------
PARAMS_PREFIX, METRICS_PREFIX = "params.", "metrics."


def field_value(record: dict, name: str) -> Any:
    """Field ``name`` of a record: a record key, ``params.<name>`` or ``metrics.<name>`` (None if absent)."""
    for prefix, holder in ((PARAMS_PREFIX, "params"), (METRICS_PREFIX, "metrics")):
        if name.startswith(prefix):
            return (record.get(holder) or {}).get(name[len(prefix):])
    return record.get(name)


def field_names(records: list[dict]) -> list[str]:
    """Every name :func:`field_value` answers for some record with a plain value (number, text, bool)."""
    names = {k for r in records for k, v in r.items() if isinstance(v, (int, float, str)) and k != "metrics"}
    names |= {PARAMS_PREFIX + k for r in records for k in (r.get("params") or {})}
    names |= {METRICS_PREFIX + k for r in records for k in (r.get("metrics") or {})}
    return sorted(names)


def cell(value: Any) -> str:
    """A value as one table/markdown cell: floats to 6 significant digits, dicts/lists as compact JSON."""
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, (dict, list)):
        return json.dumps(value, separators=(",", ":"), default=str)
    return str(value)


def number(value: Any) -> Optional[float]:
    """``value`` as a float when it is a number (bools are not), else None."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)
