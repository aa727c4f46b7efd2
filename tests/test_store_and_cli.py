"""Results land durably per run, resume skips what is stored, and the CLI reads them back.

The sweeps here use the inline scheduler (this process); the Ray scheduler has its own tests.
"""

import csv
import io
import json

import pytest
import yaml

from harness.cli import main
from harness.results.store import FIELDS, ResultStore

SUITE = {
    "name": "tiny",
    "methods": ["sdpa", "blocksparse"],
    "masks": ["causal", {"name": "sliding_window_causal", "window": 32}],
    "seqlens": [128],
    "shapes": [{"heads_q": 4, "heads_kv": 2, "head_dim": 16}, {"heads_q": 6, "heads_kv": 3, "head_dim": 16}],
    "directions": ["fwd", "bwd"],
    "timing": {"warmup": 1, "min_samples": 3, "min_run_time": 0.01},
}
REQUIRED_EXPORT = ["method", "strategy", "mask", "seqlen", "batch", "heads_q", "heads_kv", "head_dim", "dtype",
                   "direction", "world_size", "status", "reason", "time_ms_median", "time_ms_p20", "time_ms_p80",
                   "flops", "area", "tflops", "peak_mem_bytes", "max_abs_err", "hostname", "cpu", "commit", "versions"]


@pytest.fixture(scope="module")
def swept(tmp_path_factory):
    d = tmp_path_factory.mktemp("sweep")
    suite = d / "tiny.yaml"
    suite.write_text(yaml.safe_dump(SUITE))
    db = d / "r.db"
    assert main(["run", str(suite), "--results", str(db), "--scheduler", "inline", "--quiet"]) == 0
    return suite, db


@pytest.mark.integration
def test_every_run_is_stored_with_metadata(swept):
    suite, db = swept
    store = ResultStore(db)
    records = store.records()
    assert len(records) == 2 * 2 * 2 * 2
    assert {r["status"] for r in records} == {"ok"}
    for r in records:
        assert r["time_ms_p20"] <= r["time_ms_median"] <= r["time_ms_p80"]
        assert r["samples"] >= 3 and r["flops"] > 0 and r["peak_mem_bytes"] > 0 and r["threads"] >= 1
    session = next(iter(store.sessions().values()))
    assert session["commit"] and session["versions"]["torch"]


@pytest.mark.integration
def test_resume_repeats_nothing(swept):
    suite, db = swept
    before = {r["key"]: r["finished_at"] for r in ResultStore(db).records()}
    assert main(["run", str(suite), "--results", str(db), "--scheduler", "inline", "--resume", "--quiet"]) == 0
    after = {r["key"]: r["finished_at"] for r in ResultStore(db).records()}
    assert after == before


@pytest.mark.parametrize("fmt", ["csv", "json", "md"])
def test_export_has_the_required_fields(swept, fmt, capsys):
    _, db = swept
    assert main(["export", str(db), "--format", fmt]) == 0
    text = capsys.readouterr().out
    if fmt == "csv":
        rows = list(csv.DictReader(io.StringIO(text)))
        assert set(REQUIRED_EXPORT) <= set(rows[0]) and len(rows) == 16
    elif fmt == "json":
        rows = json.loads(text)
        assert set(REQUIRED_EXPORT) <= set(rows[0]) and len(rows) == 16
    else:
        assert text.startswith(f"# lcbench results: {db}")  # the tables of show, one row per run
        rows = [line for line in text.splitlines() if line.startswith(("| sdpa ", "| blocksparse "))]
        assert len(rows) == 16 and "| method | mask | S | shape | dir |" in text


def test_compare_flags_ties_and_ratios(swept, capsys):
    _, db = swept
    assert main(["compare", str(db), str(db)]) == 0
    out = capsys.readouterr().out
    assert "16 tie" in out and "1.000" in out


@pytest.mark.integration
def test_plot_writes_pngs(swept, tmp_path):
    _, db = swept
    assert main(["plot", str(db), "-o", str(tmp_path)]) == 0
    for name in ("tflops.png", "time.png"):
        assert (tmp_path / name).read_bytes()[:4] == b"\x89PNG"


def test_store_survives_a_new_connection(tmp_path):
    store = ResultStore(tmp_path)
    sid = store.start_session("s", {"hostname": "h"})
    store.put({"key": "k1", "status": "ok"}, sid, "s")
    # a second connection (another process would be the same) sees the committed record at once
    assert ResultStore(tmp_path).done_keys() == {"k1"}
    assert set(FIELDS) >= {"key", "status", "session"}


# ----- the exit status of run ------------------------------------------------------------------------------------
@pytest.mark.parametrize("statuses,allow,code", [
    (["ok", "ok"], False, 0),
    (["ok", "unsupported", "unavailable"], False, 0),  # what a method or machine cannot do is not a failure
    *[(["ok", failed], False, 1) for failed in ("error", "timeout", "oom", "invalid")],
    (["ok", "invalid", "error"], True, 0),  # --allow-failures
])
def test_run_exit_status_counts_failures_only(statuses, allow, code, capsys):
    from harness.cli import failure_status

    assert failure_status([{"key": str(i), "status": s} for i, s in enumerate(statuses)], allow) == code
    err = capsys.readouterr().err
    assert ("exit status 1" in err) == (code == 1) and ("--allow-failures" in err) == (code == 1 or allow)


@pytest.mark.integration
def test_run_reports_progress_and_exits_1_when_a_run_is_invalid(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("LCBENCH_PLUGINS", "tests.fault_injection")  # fault_wrong: ignores the mask, fails the gate
    suite = tmp_path / "wrong.yaml"
    suite.write_text(yaml.safe_dump({**SUITE, "name": "wrong", "methods": ["fault_wrong"], "masks": ["causal"],
                                     "shapes": [SUITE["shapes"][0]], "directions": ["fwd"]}))
    db = tmp_path / "r.db"
    assert main(["run", str(suite), "--results", str(db), "--scheduler", "inline"]) == 1
    err = capsys.readouterr().err  # not a terminal: plain progress lines, the failure named as it happens
    assert "wrong: invalid: fault_wrong causal S=128" in err and "wrong: 1/1 runs done (100%), 1 failed" in err
    assert "failed: 1 invalid: exit status 1" in err
    # the stored failure still counts on --resume (nothing re-run), unless failures are allowed
    assert main(["run", str(suite), "--results", str(db), "--scheduler", "inline", "--quiet", "--resume"]) == 1
    assert main(["run", str(suite), "--results", str(db), "--scheduler", "inline", "--quiet", "--resume",
                 "--allow-failures"]) == 0


def test_a_workload_record_written_with_its_phase_in_direction_reads_with_its_phase(tmp_path):
    """Records stored before ``phase`` and ``facts`` were fields spelled the phase as ``direction`` and put the
    workload's facts beside the declared fields: read, they say phase and hold their facts under ``facts``."""
    store = ResultStore(tmp_path / "old.db")
    session = store.start_session("old", {"cpu": "x"})
    old = {"key": "k1", "kind": "workload", "workload": "hybrid_lm", "method": "", "direction": "prefill",
           "seqlen": 256, "status": "ok", "reason": None, "kernel": "hybrid_lm", "kv_cache_bytes": 4096}
    store.put(old, session, "old")
    (read,) = store.records()
    assert read["phase"] == "prefill" and read["direction"] is None
    assert read["facts"] == {"kv_cache_bytes": 4096} and "kv_cache_bytes" not in read
    assert read["key"] == "k1" and ResultStore(tmp_path / "old.db").done_keys() == {"k1"}  # resumes unchanged
