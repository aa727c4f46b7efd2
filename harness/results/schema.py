"""The result record, declared once: every field a stored record holds, which part of the record it is, what
it may hold, its unit and what it means.

A record has six parts (:data:`PARTS`), in the order an export writes them:

- **identity** — the run: exactly the fields of :class:`harness.run.Run`, plus its ``kind`` (a test holds
  them equal);
- **outcome** — its status and why, and what the correctness check found;
- **figures** — what was measured (or, for a ``predicted`` record, modelled): times, throughput, memory,
  bytes, a workload's metrics. Only an ``ok`` or ``predicted`` record shows them
  (:func:`harness.results.records.public_view`);
- **facts** — what the run was, not how fast: the kernel that really ran, its FLOPs and mask area, the mask's
  and the layout's description, a workload's own facts (under ``facts``), a prediction's provenance;
- **conditions** — what the machine was doing: threads, niceness, load, the node and the scheduler, wall time;
- **bookkeeping** — the key, the session and suite, when it finished.

This module is the single source of the store's validation (:data:`FIELD_TYPES`), of which fields a failed
run hides (:data:`FIGURES`) and of the export's column order (:data:`EXPORT_ORDER`). A field no entry declares
(a record of a plugin or of a later lcbench) is kept and exported after the declared ones; it may hold any
JSON value but a non-finite number, and a failed run does not show it (whether it is a figure is unknown).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any, Callable, Optional

from harness.status import STATUSES

KINDS = ("method", "strategy", "workload")  # the order tables and plots take

IDENTITY, OUTCOME, FIGURE, FACT, CONDITIONS, BOOKKEEPING = (
    "identity", "outcome", "figure", "fact", "conditions", "bookkeeping")
PARTS = (IDENTITY, OUTCOME, FIGURE, FACT, CONDITIONS, BOOKKEEPING)


# ----- what a value may be -------------------------------------------------------------------------------------
def number(value: Any) -> Optional[float]:
    """``value`` as a float when it is a number (bools are not), else None."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


def is_finite_number(value: Any) -> bool:
    """An int or a finite float (bools are not numbers here)."""
    return number(value) is not None and math.isfinite(value)


def shown(value: Any) -> str:
    """A value as a problem text names it: ``nan``, ``'abc' (text)``, ``a list``, ``null``."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return f"{value[:40]!r} (text)"
    return f"a {'mapping' if isinstance(value, dict) else type(value).__name__}"


def nonfinite_paths(value: Any, path: str) -> list[str]:
    """``path`` (dotted, ``[i]`` for list items) of every float in ``value`` that is NaN or infinite."""
    if isinstance(value, float) and not math.isfinite(value):
        return [f"{path} is {value}"]
    if isinstance(value, dict):
        return [p for k, v in value.items() for p in nonfinite_paths(v, f"{path}.{k}" if path else str(k))]
    if isinstance(value, list):
        return [p for i, v in enumerate(value) for p in nonfinite_paths(v, f"{path}[{i}]")]
    return []


@dataclass(frozen=True)
class FieldType:
    """What one declared field may hold: ``allowed`` says it in words for the problem text."""

    allowed: str
    test: Callable[[Any], bool]
    nullable: bool = True

    def problem(self, name: str, value: Any) -> Optional[str]:
        """None when ``value`` is allowed, else ``'<name> is <value> (allowed: ...)'``."""
        if (value is None and self.nullable) or (value is not None and self.test(value)):
            return None
        return f"{name} is {shown(value)} (allowed: {self.allowed}{' or null' if self.nullable else ''})"


def _json_of(kind: type) -> Callable[[Any], bool]:
    """A value of ``kind``, or JSON text of one (how the executor stores some facts)."""

    def test(value: Any) -> bool:
        if isinstance(value, str):
            try:
                value = json.loads(value)
            except (ValueError, RecursionError):
                return False
        return isinstance(value, kind) and not nonfinite_paths(value, "")

    return test


def one_of(choices: tuple[str, ...]) -> FieldType:
    return FieldType(f"one of {', '.join(choices)}", lambda v: isinstance(v, str) and v in choices)


TEXT = FieldType("text", lambda v: isinstance(v, str))
KEY_TEXT = FieldType("non-empty text", lambda v: isinstance(v, str) and bool(v), nullable=False)
COUNT = FieldType("an integer >= 0", lambda v: number(v) is not None and isinstance(v, int) and v >= 0)
INTEGER = FieldType("an integer", lambda v: number(v) is not None and isinstance(v, int))
QUANTITY = FieldType("a finite number >= 0", lambda v: is_finite_number(v) and v >= 0)
FLAG = FieldType("true or false", lambda v: isinstance(v, bool))
MAPPING = FieldType("a mapping", lambda v: isinstance(v, dict))
LIST = FieldType("a list", lambda v: isinstance(v, list))
JSON_MAPPING = FieldType("a mapping (or its JSON text) of finite values", _json_of(dict))
JSON_LIST = FieldType("a list (or its JSON text) of finite values", _json_of(list))
STATUS = FieldType(f"one of {', '.join(STATUSES)}", lambda v: v in STATUSES, nullable=False)


# ----- the fields ------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class RecordField:
    """One field of a stored record: its part (:data:`PARTS`), what it may hold, its unit, what it means."""

    name: str
    part: str
    type: FieldType
    unit: str = ""
    doc: str = ""


def _fields(part: str, *entries: tuple) -> tuple[RecordField, ...]:
    return tuple(RecordField(name, part, kind, unit, doc) for name, kind, unit, doc in entries)


SCHEMA: tuple[RecordField, ...] = (
    *_fields(
        IDENTITY,
        ("method", TEXT, "", "the attention method (of a strategy: its local method; of a workload: its attention)"),
        ("strategy", TEXT, "", "the context-parallel strategy (null for a single-device run)"),
        ("workload", TEXT, "", "the model-level workload (null for an attention call)"),
        ("params", MAPPING, "", "the workload's parameters as the suite gave them"),
        ("kind", one_of(KINDS), "", "method, strategy or workload: which interface ran"),
        ("mask", TEXT, "", "the mask's registered name"),
        ("mask_params", MAPPING, "", "the mask's parameters (window, documents' seed, ...)"),
        ("seqlen", COUNT, "tokens", "sequence length"),
        ("batch", COUNT, "", "batch size"),
        ("heads_q", COUNT, "", "query heads"),
        ("heads_kv", COUNT, "", "key/value heads"),
        ("head_dim", COUNT, "", "head dimension"),
        ("dtype", TEXT, "", "the inputs' dtype"),
        ("direction", TEXT, "", "the attention call timed: fwd, bwd, fwd+bwd or decode (null for a workload)"),
        ("phase", TEXT, "", "the workload phase timed (train_step, prefill, decode, ...; null otherwise)"),
        ("decode_tokens", COUNT, "tokens", "rows decoded against the KV cache per call"),
        ("world_size", COUNT, "", "ranks of the run"),
        ("device", TEXT, "", "cpu or cuda"),
        ("options", MAPPING, "", "the method's or strategy's options"),
        ("timing", MAPPING, "", "the timing rule: warm-up, samples, minimum run time"),
    ),
    *_fields(
        OUTCOME,
        ("status", STATUS, "", "what became of the run (harness.status)"),
        ("reason", TEXT, "", "why, when the status is not ok"),
        ("max_abs_err", QUANTITY, "", "largest absolute error against the float64 reference"),
        ("gate_errors", JSON_MAPPING, "", "each checked output's error, as the gate measured it"),
        ("traceback", TEXT, "", "where an error was raised"),
        ("malformed_fields", MAPPING, "", "the fields of a malformed result that were removed, as they were"),
        ("nonfinite", LIST, "", "the figures of a failed run that were NaN or infinite (stored as null)"),
    ),
    *_fields(
        FIGURE,
        ("time_ms_median", QUANTITY, "ms", "median time per call after warm-up (rank max on a rank group)"),
        ("time_ms_p20", QUANTITY, "ms", "20th percentile of the time per call"),
        ("time_ms_p80", QUANTITY, "ms", "80th percentile of the time per call"),
        ("samples", COUNT, "", "timed samples behind the median"),
        ("cpu_ms", QUANTITY, "ms", "process CPU time per call"),
        ("tflops", QUANTITY, "TFLOP/s", "per device: FLOPs / (rank-max time x world size)"),
        ("frac_peak", QUANTITY, "", "tflops as a fraction of the device's calibrated peak"),
        ("peak_suspect", FLAG, "", "frac_peak above 1: the peak was calibrated under load"),
        ("peak_mem_bytes", QUANTITY, "B", "the allocator's high-water mark of the timed call (rank max)"),
        ("mem_method", TEXT, "", "how peak_mem_bytes was measured"),
        ("rank_time_ms", JSON_LIST, "ms", "each rank's median time per call"),
        ("rank_cpu_ms", JSON_LIST, "ms", "each rank's CPU time per call"),
        ("time_imbalance", QUANTITY, "", "the slowest rank's median / the mean of the ranks' medians"),
        ("rank_peak_mem_bytes", JSON_LIST, "B", "each rank's peak memory"),
        ("comm_bytes", JSON_LIST, "B", "bytes each rank sent per call, counted"),
        ("timed_s", QUANTITY, "s", "wall time of the timed region (warm-up, samples, memory)"),
        ("metrics", MAPPING, "", "a workload's (or decode's) own figures, each with its unit"),
        ("metric_units", MAPPING, "", "each metric's unit"),
        ("metric_better", MAPPING, "", "each metric's better direction: lower or higher"),
        ("compute_ms", QUANTITY, "ms", "predicted: the slowest rank's compute time"),
        ("exposed_comm_ms", QUANTITY, "ms", "predicted: the slowest rank's communication not hidden by compute"),
        ("rank_compute_ms", JSON_LIST, "ms", "predicted: each rank's compute time"),
        ("rank_comm_ms", JSON_LIST, "ms", "predicted: each rank's communication time"),
        ("rank_exposed_comm_ms", JSON_LIST, "ms", "predicted: each rank's exposed communication"),
        ("bytes_by_tier", JSON_MAPPING, "B", "predicted: the most bytes a rank sends across each network tier"),
        ("peak_rss_bytes", QUANTITY, "B", "the run's process peak resident memory (isolated runs)"),
    ),
    *_fields(
        FACT,
        ("kernel", TEXT, "", "the attention kernel(s) that really ran (a workload's: its methods and strategies)"),
        ("flops", QUANTITY, "FLOP", "FLOPs of one call, counted as flop_convention says"),
        ("area", QUANTITY, "", "the mask's exact area (query-key pairs computed)"),
        ("peak_tflops", QUANTITY, "TFLOP/s", "the device's peak, calibrated at the sweep's start"),
        ("flop_convention", TEXT, "", "how flops were counted"),
        ("mask_info", JSON_MAPPING, "", "the mask's description (density, documents, ...)"),
        ("cp_info", JSON_MAPPING, "", "the strategy's layout (shards, steps, ...)"),
        ("padded_seqlen", COUNT, "tokens", "the length a CP strategy laid out where its chunks do not divide seqlen: "
                                           "padding tokens at the end, outside flops, area and the check"),
        ("rank_area", JSON_LIST, "", "each rank's mask area"),
        ("area_imbalance", QUANTITY, "", "the largest rank's mask area / the mean"),
        ("comm_bytes_model", JSON_LIST, "B", "bytes each rank sends per call, modelled by the strategy"),
        ("resolved_params", MAPPING, "", "a workload's parameters after its flavor and defaults"),
        ("facts", MAPPING, "", "a workload's own facts of the run (parameter counts, cache model, ...)"),
        ("rank_facts", LIST, "", "each rank's facts of a workload on a rank group"),
        ("source", TEXT, "", "predicted: the model that produced the figures"),
        ("run_key", TEXT, "", "predicted: the key of the measured run it stands for"),
        ("cluster", TEXT, "", "predicted: the cluster profile"),
        ("cluster_version", TEXT, "", "predicted: the profile's version (a digest of it and its rate tables)"),
        ("model_version", TEXT, "", "predicted: the prediction model's version"),
        ("device_model", TEXT, "", "predicted: the profile's device"),
        ("sharing", QUANTITY, "", "predicted: the CPU sharing factor of ranks on one node"),
    ),
    *_fields(
        CONDITIONS,
        ("threads", COUNT, "", "torch's intra-op threads"),
        ("nice", INTEGER, "", "the run's process niceness"),
        ("load_avg", QUANTITY, "", "the machine's 1-minute load average at the run's start"),
        ("nice_error", TEXT, "", "why the niceness could not be reset"),
        ("node", TEXT, "", "the host that ran it"),
        ("scheduler", TEXT, "", "inline or ray"),
        ("wall_s", QUANTITY, "s", "the whole run's wall time"),
    ),
    *_fields(
        BOOKKEEPING,
        ("suite", TEXT, "", "the suite it belongs to"),
        ("key", KEY_TEXT, "", "the run's stable key (harness.run.Run.key)"),
        ("session", TEXT, "", "the sweep session that stored it (its machine, versions and commit)"),
        ("finished_at", QUANTITY, "s", "when it was stored (Unix time)"),
        ("diagnostics", MAPPING, "", "a failed run's figures, kept aside (exports only)"),
    ),
)

DECLARED: dict[str, RecordField] = {f.name: f for f in SCHEMA}
EXPORT_ORDER: tuple[str, ...] = tuple(f.name for f in SCHEMA)
FIGURES: frozenset[str] = frozenset(f.name for f in SCHEMA if f.part == FIGURE)
METRIC_FIELDS = ("metrics", "metric_units", "metric_better")  # checked together (records.metric_problems)
# The declared fields checked one by one (the metric fields are checked together).
FIELD_TYPES: dict[str, FieldType] = {f.name: f.type for f in SCHEMA if f.name not in METRIC_FIELDS}


def part_of(name: str) -> Optional[str]:
    """The part field ``name`` belongs to; None for a field no entry declares."""
    field = DECLARED.get(name)
    return field.part if field else None
