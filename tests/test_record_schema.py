"""The result record is declared once (harness/results/schema.py): every field an executed run, a prediction
or the store writes is declared there with its part, type and meaning; the identity part is exactly the run's
fields; a failed run hides its figures and anything undeclared; exports follow the schema's order."""

import dataclasses
import math

import pytest

from harness.execution.single import execute
from harness.prediction.cluster import load_cluster
from harness.prediction.predict import Predictor
from harness.results.records import public_view, storable
from harness.results.schema import (DECLARED, EXPORT_ORDER, FIGURES, IDENTITY, PARTS, SCHEMA, part_of)
from harness.results.store import FIELDS, ResultStore
from harness.run import Run, Timing

QUICK = Timing(warmup=1, min_samples=3, min_run_time=0.01)


def undeclared(record: dict) -> set[str]:
    return set(record) - set(DECLARED)


def test_the_identity_part_is_exactly_the_runs_fields_and_its_kind():
    identity = [f.name for f in SCHEMA if f.part == IDENTITY]
    assert set(identity) == {f.name for f in dataclasses.fields(Run)} | {"kind"}


def test_every_field_is_declared_once_in_a_known_part_with_a_meaning():
    assert len(DECLARED) == len(SCHEMA)
    assert all(f.part in PARTS and f.doc for f in SCHEMA)
    assert [part_of(name) for name in EXPORT_ORDER] == sorted((part_of(n) for n in EXPORT_ORDER), key=PARTS.index)


@pytest.mark.parametrize("direction", ["fwd", "fwd+bwd", "decode"])
def test_an_executed_methods_record_holds_only_declared_fields(direction):
    run = Run.make(method="blocksparse", mask="causal", seqlen=128, heads_q=4, heads_kv=2, head_dim=16,
                   direction=direction, decode_tokens=2, timing=QUICK)
    record = execute(run)
    assert record["status"] == "ok", record["reason"]
    assert undeclared(record) == set()


def test_a_failed_and_an_unsupported_record_hold_only_declared_fields():
    unsupported = execute(Run.make(method="sdpa", mask="causal", seqlen=128, heads_q=4, heads_kv=3, head_dim=16,
                                   timing=QUICK))
    assert unsupported["status"] in ("unsupported", "error") and undeclared(unsupported) == set()
    failed = storable({**unsupported, "status": "invalid", "time_ms_median": math.inf})
    assert failed["nonfinite"] and undeclared(failed) == set()
    malformed = storable({**unsupported, "status": "ok", "seqlen": "long"})
    assert malformed["status"] == "error" and undeclared(malformed) == set()


def test_a_predicted_record_holds_only_declared_fields():
    run = Run.make(method="blocksparse", strategy="ring_zigzag", mask="causal", seqlen=1024, heads_q=8, heads_kv=4,
                   head_dim=64, world_size=4, direction="fwd")
    record = Predictor(load_cluster("local")).record(run)
    assert record["status"] == "predicted" and undeclared(record) == set()


def test_the_store_adds_only_declared_bookkeeping(tmp_path):
    store = ResultStore(tmp_path / "r.db")
    sid = store.start_session("s", {"hostname": "box"})
    store.put({"key": "k", "status": "ok", "time_ms_median": 1.0}, sid, "s")
    assert undeclared(store.records()[0]) == set()
    assert FIELDS == tuple(n for n in EXPORT_ORDER if n not in ("metrics", "facts", "diagnostics"))


def test_a_failed_run_shows_no_figure_and_no_undeclared_field_but_keeps_its_facts():
    record = {"key": "k", "status": "invalid", "reason": "failed correctness gate", "flops": 8.0, "area": 4,
              "kernel": "sdpa", "plugin_speed": 3.0, **{name: 1.0 for name in FIGURES}}
    view = public_view(record)
    assert not FIGURES & set(view) and "plugin_speed" not in view
    assert view["flops"] == 8.0 and view["kernel"] == "sdpa" and view["reason"]
    assert public_view({**record, "status": "ok"}) == {**record, "status": "ok"}
