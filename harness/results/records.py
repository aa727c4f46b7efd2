"""What a stored result record says, read the same way by show, compare, export and plot.

The one rule that keeps an unvalidated number from ever looking like a result lives here:
:func:`public_view` strips every timing, throughput and memory figure from a record whose status is not
``ok`` (optionally keeping them aside in a ``diagnostics`` field that only the csv/json exports carry).
Everything that prints or draws a record reads it through that view. Which fields are figures, and what
each field may hold, is declared in :mod:`harness.results.schema`.

Records of lcbench 0.1.0 (no ``kind``, ``metrics`` or ``flop_convention``) read as method/strategy records
under the softmax FLOP convention they were measured with.
"""

from __future__ import annotations

import json
import math
from typing import Any, Optional

from harness.results.schema import (FIELD_TYPES, FIGURES, METRIC_FIELDS, is_finite_number, nonfinite_paths,
                                    part_of, shown)
from harness.status import ERROR, PREDICTED, STATUSES, WITH_FIGURES

# The FLOP convention of records written before records stated their own (all were softmax kernels).
FLOP_CONVENTION = "FLOPs: fwd 4*area*Hq*d (exact mask area), bwd 2.5x, fwd+bwd 3.5x; TFLOP/s per device"

DIAGNOSTICS = "diagnostics"  # where a non-ok record's figures go, in csv/json exports only
# The mappings an export spreads into one column per entry, and each one's column prefix.
FLATTENED = {"metrics": "metric.", "facts": "fact."}  # ``metric.tokens_per_s``, ``fact.kv_cache_bytes``

# Metric names whose larger value is better when a record does not say (``metric_better``).
HIGHER_IS_BETTER = ("tflops", "frac_peak")
HIGHER_SUFFIXES = ("_per_s", "tflops")


def upgraded(record: dict) -> dict:
    """A stored record in today's spelling: a workload record written before ``phase`` and ``facts`` were
    fields of their own (its phase then in ``direction``, its workload's facts beside the declared fields)
    gets its ``phase``, no ``direction``, and those facts under ``facts``. Every reader reads through the
    store, which applies this on the way out; a current record comes back unchanged (its key never changes)."""
    if not record.get("workload") or "phase" in record:
        return record
    facts = {k: v for k, v in record.items() if part_of(k) is None}
    kept = {k: v for k, v in record.items() if k not in facts}
    return {**kept, "phase": record.get("direction"), "direction": None,
            **({"facts": facts} if facts else {})}


def timed(record: dict) -> str:
    """What the record's run timed: a workload's phase, or a method's or strategy's direction."""
    return str(record.get("phase") or record.get("direction") or "")


def kind_of(record: dict) -> str:
    """``method``, ``strategy`` or ``workload``; records without ``kind`` (0.1.0) by what they name."""
    if record.get("kind"):
        return record["kind"]
    if record.get("workload"):
        return "workload"
    return "strategy" if record.get("strategy") else "method"


def is_hidden_when_failed(name: str) -> bool:
    """Whether field ``name`` leaves the record of a run that is not ``ok``: every figure the schema declares
    (:data:`harness.results.schema.FIGURES`), and every field it does not declare (a plugin's or a later
    lcbench's: whether it is a figure is unknown, so it is not shown beside a failure)."""
    return name in FIGURES or part_of(name) is None


def public_view(record: dict, diagnostics: bool = False) -> dict:
    """The record as anything outside the store may show it.

    An ``ok`` record comes back unchanged (a copy). Any other record loses every measured figure (see
    :func:`is_hidden_when_failed`); with ``diagnostics=True`` those figures are kept under ``diagnostics`` together
    with ``not_valid: true``, so an export can still explain a failure without a number in a result column.
    """
    view = dict(record)
    if record.get("status") in WITH_FIGURES:
        return view
    moved = {name: view.pop(name) for name in list(view) if is_hidden_when_failed(name)}
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
    """The record with its ``metrics`` and ``facts`` spread into one ``metric.<name>`` / ``fact.<name>``
    column each."""
    row = {k: v for k, v in record.items() if k not in FLATTENED}
    for holder, prefix in FLATTENED.items():
        for name, value in (record.get(holder) or {}).items():
            row[prefix + name] = value
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
PARAMS_PREFIX, METRICS_PREFIX, FACTS_PREFIX = "params.", "metrics.", "facts."
NESTED = ((PARAMS_PREFIX, "params"), (METRICS_PREFIX, "metrics"), (FACTS_PREFIX, "facts"))


def field_value(record: dict, name: str) -> Any:
    """Field ``name`` of a record: a record key, ``params.<name>``, ``metrics.<name>`` or ``facts.<name>``
    (None if absent)."""
    for prefix, holder in NESTED:
        if name.startswith(prefix):
            return (record.get(holder) or {}).get(name[len(prefix):])
    return record.get(name)


def field_names(records: list[dict]) -> list[str]:
    """Every name :func:`field_value` answers for some record with a plain value (number, text, bool)."""
    names = {k for r in records for k, v in r.items() if isinstance(v, (int, float, str))}
    for prefix, holder in NESTED:
        names |= {prefix + k for r in records for k, v in (r.get(holder) or {}).items()
                  if isinstance(v, (int, float, str))}
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


# ----- what a stored record may hold -------------------------------------------------------------------------
# Every record is checked at ``put`` (a plugin's malformed result is stored as an ``error`` record saying what
# was wrong) and again when it is read (a row that fails is skipped and counted), so no reader meets a value
# of the wrong type and no export meets a number JSON cannot hold.


# The declared fields and their types live in :mod:`harness.results.schema`; a field it does not declare may
# hold any JSON value except a number that is not finite.
TIME_UNITS = ("ns", "us", "ms", "s")  # a metric in one of these is a time: >= 0


def metric_problems(record: dict) -> list[tuple[str, str]]:
    """(field, problem) for ``metrics`` (a mapping of metric names to finite numbers, times >= 0), its units
    (``metric_units``: a unit for every metric) and directions (``metric_better``: lower or higher)."""
    metrics, units, better = (record.get(name) for name in METRIC_FIELDS)
    if metrics is None:
        return []
    if not isinstance(metrics, dict):
        return [("metrics", f"metrics is {shown(metrics)} (allowed: a mapping of metric names to finite numbers)")]
    problems = [("metrics", f"metric {name!r} is {shown(v)} (allowed: a finite number)")
                for name, v in metrics.items() if not is_finite_number(v)]
    if not isinstance(units, dict):
        return problems + [("metric_units", f"metric_units is {shown(units)} (allowed: a mapping of each metric "
                                            "to its unit)")]
    for name, v in metrics.items():
        unit = units.get(name)
        if not isinstance(unit, str) or not unit:
            problems.append(("metric_units", f"metric {name!r} has unit {shown(unit)} (allowed: non-empty text)"))
        elif unit in TIME_UNITS and is_finite_number(v) and v < 0:
            problems.append(("metrics", f"metric {name!r} is a negative time: {v!r} {unit} (allowed: >= 0)"))
    if better is not None and not (isinstance(better, dict) and all(b in ("lower", "higher") for b in better.values())):
        problems.append(("metric_better", "metric_better is not a mapping of metric names to lower or higher"))
    return problems


def field_problems(record: dict) -> list[tuple[str, str]]:
    """(top-level field, what is wrong with it) for every problem of a record (see :func:`validate_record`)."""
    problems = [("key", f"key is missing (allowed: {FIELD_TYPES['key'].allowed})")] * ("key" not in record)
    problems += [("status", f"status is missing (allowed: {FIELD_TYPES['status'].allowed})")] * (
        "status" not in record)
    problems += metric_problems(record)
    for name, value in record.items():
        if name in METRIC_FIELDS:
            continue
        kind = FIELD_TYPES.get(name)
        problem = kind.problem(name, value) if kind is not None else None
        if problem:
            problems.append((name, problem))
            continue
        problems += [(name, f"{p} (allowed: finite numbers or null)") for p in nonfinite_paths(value, name)]
    return problems


def validate_record(record: Any) -> list[str]:
    """What is wrong with a record, one line each (empty when nothing is): a record is a mapping with a
    ``key`` and a ``status`` (one of :data:`harness.status.STATUSES`), its declared fields typed as
    :data:`FIELD_TYPES` says, every number in it finite, every time >= 0, and ``metrics`` a mapping of named
    finite numbers each with a unit."""
    if not isinstance(record, dict):
        return [f"the record is {shown(record)} (allowed: a mapping of field names to values)"]
    return [problem for _, problem in field_problems(record)]


def without_nonfinite(record: dict) -> dict:
    """A copy of ``record`` with every NaN/infinite float replaced by null; the fields so changed are listed
    under ``nonfinite`` (``max_abs_err is inf``). For the figures of a run that already failed (a gate that
    met a NaN output reports an infinite error): they are diagnostics, and JSON has no such number."""
    paths = nonfinite_paths(record, "")
    if not paths:
        return record
    return {**finite_values(record), "nonfinite": paths}


def finite_values(value: Any) -> Any:
    """``value`` with every NaN or infinite float in it (at any depth of mappings and sequences) as None."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: finite_values(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite_values(v) for v in value]
    return value


MAX_PROBLEMS_SHOWN = 4


def malformed_record(record: dict, problems: list[tuple[str, str]]) -> dict:
    """The ``error`` record that replaces a malformed one: the fields at fault removed (each described under
    ``malformed_fields``), the reason naming who reported it, what was wrong and the status it claimed."""
    bad = dict.fromkeys(field for field, _ in problems)
    if any(field in METRIC_FIELDS for field in bad):  # metrics, units and directions only make sense together
        bad.update(dict.fromkeys(f for f in METRIC_FIELDS if f in record))
    subject = next((f"{kind} {record[kind]!r}" for kind in ("workload", "strategy", "method")
                    if isinstance(record.get(kind), str) and record[kind]), "the run")
    texts = list(dict.fromkeys(text for _, text in problems))
    more = f" (+{len(texts) - MAX_PROBLEMS_SHOWN} more)" if len(texts) > MAX_PROBLEMS_SHOWN else ""
    claimed = record.get("status") if isinstance(record.get("status"), str) else None
    reason = (f"malformed result from {subject}: {'; '.join(texts[:MAX_PROBLEMS_SHOWN])}{more}"
              + (f" (it reported status {claimed})" if claimed else ""))
    kept = {k: v for k, v in record.items() if k not in bad}
    kept["malformed_fields"] = {field: shown(record.get(field)) for field in bad}
    return {**kept, "status": ERROR, "reason": reason[:1000]}


def storable(record: Any) -> Optional[dict]:
    """The record as the store keeps it: unchanged when :func:`validate_record` finds nothing; a failed run's
    NaN/infinite figures nulled (:func:`without_nonfinite`); any other problem makes it the ``error`` record of
    :func:`malformed_record`. None when it names no run (not a mapping, or no usable ``key``)."""
    if not isinstance(record, dict) or FIELD_TYPES["key"].problem("key", record.get("key")):
        return None
    if record.get("status") in STATUSES and record["status"] not in WITH_FIGURES:
        record = without_nonfinite(record)
    problems = field_problems(record)
    if not problems:
        return record
    error = malformed_record(record, problems)
    if field_problems(error):  # cannot happen (every field at fault is removed); never store a bad record
        error = {k: error[k] for k in ("key", "status", "reason", "session", "suite", "finished_at") if k in error}
    return error
