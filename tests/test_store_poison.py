"""Nothing a plugin, a broken row or a broken file does can poison a results file or crash a reader.

- At ``put`` every record is checked: each malformed plugin result below is stored as an ``error`` record whose
  reason says what was wrong, never as ``ok`` (and a result that is no record at all becomes its run's error).
- Each malformed row below, written into a file with raw SQLite, is skipped by every reader (show, export in
  every format, compare on either side, plot), which reads every other row exactly as without it and says
  ``skipped 1 malformed record`` once.
- A corrupt database is one line (exit 2) for every command that reads it; a read-only file, and a file in a
  read-only directory, read; two drivers on one results file exclude each other; JSON export is valid JSON.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
import shutil
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from harness import status as st
from harness.cli import main
from harness.cluster.sweep import run_sweep
from harness.errors import UserError
from harness.results.records import validate_record
from harness.results.schema import FIELD_TYPES
from harness.results.store import ResultStore
from harness.run import Run

REPO = Path(__file__).resolve().parents[1]
FIXTURE = REPO / "tests" / "fixtures" / "results_v0_1_0.db"
UNITS = {"tokens_per_s": "tokens/s", "ms_per_token": "ms"}


# ----- records ---------------------------------------------------------------------------------------------
def _kernel(method: str, seqlen: int, time_ms: float, /, **extra) -> dict:
    """An ok attention record shaped like the executor's."""
    run = Run.make(method=method, mask="causal", seqlen=seqlen, heads_q=4, heads_kv=2, head_dim=16)
    record = {**st.base_record(run), "kind": "method", "status": "ok", "kernel": method,
              "time_ms_median": time_ms, "time_ms_p20": time_ms * 0.9, "time_ms_p80": time_ms * 1.1, "samples": 5,
              "cpu_ms": time_ms * 2, "flops": 4.0 * seqlen * seqlen * 32, "area": seqlen * (seqlen + 1) // 2,
              "tflops": 4.0 * seqlen * seqlen * 32 / (time_ms * 1e9), "peak_tflops": 1.0, "frac_peak": 0.1,
              "peak_suspect": False, "peak_mem_bytes": 1 << 20, "mem_method": "tracemalloc", "max_abs_err": 1e-7,
              "gate_errors": json.dumps({"out": 1e-8}), "threads": 2, "mask_info": "{}", "wall_s": 0.3,
              "timed_s": 0.2}
    return {**record, **extra}


def _workload(phase: str, seqlen: int, time_ms: float, /, **extra) -> dict:
    """An ok workload record with metrics, their units and directions."""
    run = Run.make(workload="good_lm", params={"flavor": "tiny", "layers": 2}, phase=phase, seqlen=seqlen,
                   method="sdpa")
    record = {**_kernel("sdpa", seqlen, time_ms), **st.base_record(run), "kind": "workload", "status": "ok"}
    record.update(metrics={"tokens_per_s": seqlen / time_ms * 1e3, "ms_per_token": time_ms / seqlen},
                  metric_units=dict(UNITS), metric_better={"tokens_per_s": "higher", "ms_per_token": "lower"})
    return {**record, **extra}


def good_records() -> list[dict]:
    return [_kernel("good_a", 128, 1.5), _kernel("good_a", 256, 4.0), _kernel("good_b", 128, 2.5),
            _kernel("good_b", 256, 9.0, status="invalid", reason="failed correctness gate: out error 1e-2"),
            _workload("prefill", 128, 10.0), _workload("prefill", 256, 30.0)]


# (id, the stored text of a malformed row, a word its skip reason names)
MALFORMED_ROWS = [
    ("not JSON", "{not json", "not JSON"),
    ("JSON null", "null", "null"),
    ("a list", "[1, 2]", "a list"),
    ("params a string", json.dumps(_workload("decode", 512, 5.0, params="flavor=tiny")), "params"),
    ("metrics a list", json.dumps(_workload("decode", 512, 5.0, metrics=[1.0, 2.0])), "metrics"),
    ("NaN tflops", json.dumps(_kernel("bad", 512, 5.0, tflops=math.nan)), "tflops is nan"),
    ("Infinity metric", json.dumps(_workload("decode", 512, 5.0, metrics={"tokens_per_s": math.inf,
                                                                           "ms_per_token": 1.0})), "inf"),
    ("negative time", json.dumps(_kernel("bad", 512, 5.0, time_ms_median=-5.0)), "time_ms_median"),
    ("unknown status", json.dumps(_kernel("bad", 512, 5.0, status="great")), "status"),
    ("no key", json.dumps({k: v for k, v in _kernel("bad", 512, 5.0).items() if k != "key"}), "key"),
    ("seqlen text", json.dumps(_kernel("bad", 512, 5.0, seqlen="512")), "seqlen"),
    ("metric without a unit", json.dumps(_workload("decode", 512, 5.0, metric_units={})), "unit"),
    ("mask_info not JSON", json.dumps(_kernel("bad", 512, 5.0, mask_info="{oops")), "mask_info"),
    ("nested NaN", json.dumps(_kernel("bad", 512, 5.0, options={"block_q": math.nan})), "options.block_q"),
]


def _store(path: Path, records: list[dict]) -> Path:
    store = ResultStore(path)
    sid = store.start_session("poison", {"hostname": "box", "cpu": "x86", "gpu": None, "commit": "abc"})
    for r in records:
        assert store.put(r, sid, "poison")["status"] == r["status"], r["key"]
    store.close()
    return path


def _insert_raw(path: Path, text: str, key: str = "malformed-row") -> None:
    with sqlite3.connect(path) as con:
        session = con.execute("SELECT id FROM sessions").fetchone()[0]
        con.execute("INSERT INTO results VALUES (?, ?, ?, ?, ?, ?)", (key, session, "poison", "ok", 1e12, text))
    con.close()


def _strict_json(text: str):
    """json.loads that refuses NaN and Infinity, as every other JSON reader does."""
    return json.loads(text, parse_constant=lambda c: pytest.fail(f"export wrote {c}, not JSON"))


# ----- readers: each returns what a user sees (the path of the file read left out) --------------------------
def cli(*argv: str) -> tuple[int, str, str]:
    """``lcbench ARGV`` in this process: (exit code, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main([str(a) for a in argv])
    return code, out.getvalue(), err.getvalue()


def _show(db: Path, work: Path) -> tuple[int, str, str]:
    code, out, err = cli("show", db)
    return code, " ".join(out.replace(str(db), "DB").split()), err  # titles are centred: spaces vary


def _export(fmt: str):
    def read(db: Path, work: Path) -> tuple[int, str, str]:
        code, out, err = cli("export", db, "--format", fmt)
        return code, out.replace(str(db), "DB") if fmt == "md" else out, err  # md's tables name their file

    return read


def _compare(side: str):
    def read(db: Path, work: Path) -> tuple[int, str, str]:
        partner = _store(work / "partner.db", good_records())
        code, out, err = cli("compare", db, partner) if side == "base" else cli("compare", partner, db)
        return code, " ".join(out.split()), err

    return read


def _plot(db: Path, work: Path) -> tuple[int, str, str]:
    code, _, err = cli("plot", db, "-o", work / "plots")
    return code, json.dumps(sorted((p.name, p.read_bytes()[:4].hex()) for p in (work / "plots").glob("*.png"))), err


READERS = {"show": _show, "export csv": _export("csv"), "export json": _export("json"), "export md": _export("md"),
           "compare (as base)": _compare("base"), "compare (as new)": _compare("new"), "plot": _plot}


@pytest.fixture(scope="module")
def clean_db(tmp_path_factory) -> Path:
    """A results file of the good records alone (each test works on a copy)."""
    return _store(tmp_path_factory.mktemp("clean") / "clean.db", good_records())


def _copy(db: Path, into: Path) -> Path:
    into.mkdir(parents=True, exist_ok=True)
    return Path(shutil.copy(db, into / db.name))


@pytest.fixture(scope="module")
def clean_outputs(clean_db, tmp_path_factory) -> dict[str, str]:
    """What every reader shows for the clean file."""
    outputs = {}
    for name, read in READERS.items():
        work = tmp_path_factory.mktemp("reader")
        code, out, err = read(_copy(clean_db, work), work)
        assert code == 0 and "skipped" not in err, (name, err)
        outputs[name] = out
    return outputs


# Every reader in the default tier but plot (matplotlib, ~2 s a file), which the integration tier adds.
TIERED_READERS = [pytest.param(name, marks=[pytest.mark.integration] if name == "plot" else []) for name in READERS]


@pytest.mark.parametrize("reader", TIERED_READERS)
@pytest.mark.parametrize("row_id,text,word", MALFORMED_ROWS, ids=[r[0] for r in MALFORMED_ROWS])
def test_every_reader_skips_a_malformed_row_and_reads_every_other(row_id, text, word, reader, tmp_path, clean_db,
                                                                  clean_outputs):
    db = _copy(clean_db, tmp_path)
    _insert_raw(db, text)
    code, out, err = READERS[reader](db, tmp_path)
    assert code == 0 and "Traceback" not in err, err
    assert err.count("skipped 1 malformed record") == 1, err
    assert word in err.split("skipped 1 malformed record", 1)[1], err
    assert out == clean_outputs[reader]
    if reader == "export json":
        assert len(_strict_json(out)) == len(good_records())


# ----- put: a plugin's malformed result is stored as an error saying what was wrong -------------------------
def _planted(**changes) -> dict:
    """An ok workload result with ``changes`` planted."""
    return {**_workload("decode", 1024, 7.0), **changes}


# (id, what the plugin returned, words the stored error's reason must contain)
MALFORMED_RESULTS = [
    ("metrics a list", _planted(metrics=[1.0, 2.0]), ["metrics is a list"]),
    ("NaN metric", _planted(metrics={"tokens_per_s": math.nan, "ms_per_token": 1.0}), ["'tokens_per_s'", "nan"]),
    ("Inf metric", _planted(metrics={"tokens_per_s": 1.0, "ms_per_token": -math.inf}), ["'ms_per_token'", "-inf"]),
    ("NaN flops", _planted(flops=math.nan), ["flops is nan"]),
    ("Inf flops", _planted(flops=math.inf), ["flops is inf"]),
    ("params not a mapping", _planted(params=["tiny", 2]), ["params is a list", "mapping"]),
    ("negative time", _planted(time_ms_median=-3.0), ["time_ms_median is -3.0", ">= 0"]),
    ("negative time metric", _planted(metrics={"tokens_per_s": 1.0, "ms_per_token": -2.0}), ["negative time"]),
    ("seqlen a float", _planted(seqlen=1024.5), ["seqlen is 1024.5", "integer"]),
    ("unknown status", _planted(status="great"), ["status is 'great'", "ok, unsupported"]),
    ("metric without a unit", _planted(metric_units={"tokens_per_s": "tokens/s"}), ["'ms_per_token'", "unit"]),
    ("text metric", _planted(metrics={"tokens_per_s": "fast", "ms_per_token": 1.0}), ["'fast'"]),
    ("tensor of many values", _planted(metrics={"tokens_per_s": torch.ones(3), "ms_per_token": 1.0}),
     ["'tokens_per_s'", "(text)"]),
    ("NaN nested in options", _planted(options={"block": math.nan}), ["options.block is nan"]),
]


class Replay:
    """A scheduler that returns the given results for the runs it is handed, in order."""

    def __init__(self, results: list):
        self.results = results

    def run(self, runs):
        yield from self.results

    def close(self):
        pass


def _sweep(db: Path, results: list, runs: list[Run]) -> list[dict]:
    store = ResultStore(db)
    summary = run_sweep("poison", runs, store, Replay(results), show_progress=False)
    return summary.records


@pytest.mark.parametrize("result_id,result,words", MALFORMED_RESULTS, ids=[r[0] for r in MALFORMED_RESULTS])
def test_a_malformed_plugin_result_is_stored_as_an_error_saying_what_was_wrong(result_id, result, words, tmp_path):
    good = _workload("prefill", 64, 1.0)
    stored = _sweep(tmp_path / "r.db", [good, result], [])
    assert [r["status"] for r in stored] == ["ok", "error"]
    reason = stored[1]["reason"]
    assert reason.startswith("malformed result from workload 'good_lm': ") and "(it reported status" in reason
    for word in words:
        assert word in reason, (word, reason)
    # what is read back is what was stored, and every reader takes the file whole
    store = ResultStore(tmp_path / "r.db", create=False)
    assert {r["key"]: r["status"] for r in store.records()} == {good["key"]: "ok", result["key"]: "error"}
    assert not store.malformed and not validate_record(store.records()[1])
    for argv in (["show"], ["export", "--format", "json"], ["export", "--format", "csv"]):
        code, out, err = cli(argv[0], tmp_path / "r.db", *argv[1:])
        assert code == 0 and not err, err
    _strict_json(cli("export", tmp_path / "r.db", "--format", "json")[1])


def test_a_result_that_is_no_record_becomes_the_error_of_the_run_it_left_without_one(tmp_path):
    runs = [Run.from_dict(_workload("prefill", 64, 1.0)), Run.from_dict(_workload("prefill", 128, 1.0))]
    good = _workload("prefill", 64, 1.0)
    assert good["key"] == runs[0].key
    stored = _sweep(tmp_path / "r.db", [good, None], runs)
    assert [(r["key"], r["status"]) for r in stored] == [(runs[0].key, "ok"), (runs[1].key, "error")]
    assert "no record came back for this run" in stored[1]["reason"] and "1 result(s)" in stored[1]["reason"]
    assert ResultStore(tmp_path / "r.db").done_keys() == {runs[0].key, runs[1].key}


@pytest.mark.parametrize("not_a_record", [None, [1, 2], "ok", {"status": "ok"}, {"key": "", "status": "ok"}],
                         ids=["null", "a list", "text", "no key", "empty key"])
def test_put_stores_nothing_for_a_result_that_names_no_run(not_a_record, tmp_path):
    store = ResultStore(tmp_path / "r.db")
    assert store.put(not_a_record, store.start_session("s", {}), "s") is None
    assert store.records() == [] and not store.malformed


def test_a_failed_runs_nonfinite_figures_are_nulled_and_it_keeps_its_status(tmp_path):
    """The gate reports an infinite error for a NaN output: the run stays invalid, JSON gets null."""
    invalid = _kernel("nan_out", 128, 1.0, status="invalid", reason="failed correctness gate: out is not finite",
                      max_abs_err=math.inf, tflops=math.nan)
    stored = _sweep(tmp_path / "r.db", [invalid], [])[0]
    assert stored["status"] == "invalid" and stored["reason"] == invalid["reason"]
    assert stored["max_abs_err"] is None and stored["tflops"] is None
    assert sorted(stored["nonfinite"]) == ["max_abs_err is inf", "tflops is nan"]
    rows = _strict_json(cli("export", tmp_path / "r.db", "--format", "json")[1])
    assert rows[0]["status"] == "invalid" and rows[0]["max_abs_err"] is None


def test_scalars_of_numpy_and_torch_are_stored_as_numbers(tmp_path):
    record = _planted(metrics={"tokens_per_s": np.float32(2.5), "ms_per_token": torch.tensor(0.5)},
                      samples=np.int64(5), seqlen=torch.tensor(1024))
    stored = _sweep(tmp_path / "r.db", [record], [])[0]
    assert stored["status"] == "ok", stored["reason"]
    assert stored["metrics"] == {"tokens_per_s": 2.5, "ms_per_token": 0.5} and stored["samples"] == 5
    assert stored["seqlen"] == 1024 and isinstance(stored["seqlen"], int)


@pytest.mark.parametrize("field", sorted(FIELD_TYPES))
def test_every_declared_field_refuses_a_value_of_the_wrong_type(field):
    """Parametrised over the declared fields: a mapping where none is allowed, text where a mapping is."""
    wrong = "text" if FIELD_TYPES[field].test({}) else {"a": 1}
    problems = validate_record({"key": "k", "status": "ok", **{field: wrong}})
    assert problems and problems[0].startswith(f"{field} is "), problems


def test_records_of_lcbench_0_1_0_are_valid_and_read_whole():
    store = ResultStore(FIXTURE, create=False)
    records = store.records()
    assert len(records) == 24 and not store.malformed and store.skipped_note() is None
    assert all(not validate_record(r) for r in records)
    assert len(store.done_keys()) == 24


# ----- a corrupt file, a read-only file: one line, or read ----------------------------------------------------
def _lcbench(*argv, **kw) -> subprocess.CompletedProcess:
    """``lcbench ARGV`` as a user types it, in a fresh process."""
    return subprocess.run([sys.executable, "-m", "harness.cli", *map(str, argv)], capture_output=True, text=True,
                          timeout=300, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)}, **kw)


def _one_error_line(proc: subprocess.CompletedProcess) -> str:
    lines = [line for line in (proc.stdout + proc.stderr).splitlines() if line.strip()]
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, (proc.returncode, proc.stderr[-2000:])
    assert len(lines) == 1 and lines[0].startswith("error:"), lines
    return lines[0]


TINY_SUITE = {"name": "tiny_poison", "methods": ["sdpa"], "masks": ["causal"], "seqlens": [64],
              "shapes": [{"heads_q": 2, "heads_kv": 1, "head_dim": 8}], "directions": ["fwd"],
              "timing": {"warmup": 0, "min_samples": 1, "min_run_time": 0.001, "max_samples": 1}}


@pytest.fixture(scope="module")
def tiny_suite(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("suite") / "tiny_poison.yaml"
    path.write_text(yaml.safe_dump(TINY_SUITE))
    return path


@pytest.fixture(scope="module")
def corrupt_db(tmp_path_factory) -> Path:
    """A results file of 300 records with 4 KiB of garbage written into its middle."""
    db = tmp_path_factory.mktemp("corrupt") / "corrupt.db"
    _store(db, [_kernel(f"m{i}", 128, 1.0 + i, novel="x" * 200) for i in range(300)])
    size = db.stat().st_size
    with db.open("r+b") as f:
        f.seek(size // 2)
        f.write(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    return db


READING_COMMANDS = {
    "show": lambda db, d, suite: ["show", db],
    "export": lambda db, d, suite: ["export", db, "--format", "json"],
    "compare (base)": lambda db, d, suite: ["compare", db, FIXTURE],
    "compare (new)": lambda db, d, suite: ["compare", FIXTURE, db],
    "plot": lambda db, d, suite: ["plot", db, "-o", d / "plots"],
    "run --resume": lambda db, d, suite: ["run", suite, "--results", db, "--resume", "--scheduler", "inline"],
}


@pytest.mark.parametrize("command", READING_COMMANDS)
def test_a_corrupt_database_is_one_line_for_every_command_that_reads_it(command, corrupt_db, tiny_suite, tmp_path):
    line = _one_error_line(_lcbench(*READING_COMMANDS[command](corrupt_db, tmp_path, tiny_suite)))
    assert str(corrupt_db) in line and "not a readable lcbench results database" in line and "corrupt" in line


def _read_only(path: Path) -> list[str]:
    """A command prefix under which ``path`` (a file or directory) cannot be written: its write permission
    taken away for an ordinary user; for root (whom permissions do not stop), a read-only bind mount of it in a
    mount namespace of its own."""
    if os.geteuid() != 0:
        path.chmod(path.stat().st_mode & 0o555)
        return []
    probe = subprocess.run(["unshare", "-m", "true"], capture_output=True)
    if probe.returncode != 0:
        pytest.skip(f"root, and no mount namespace to make {path} read-only in: {probe.stderr.decode().strip()}")
    script = 'mount --bind "$1" "$1" && mount -o remount,bind,ro "$1" "$1" && shift && exec "$@"'
    return ["unshare", "-m", "sh", "-c", script, "sh", str(path)]


READERS_ARGV = {
    "show": lambda db, out: ["show", db],
    "export": lambda db, out: ["export", db, "--format", "csv"],
    "compare": lambda db, out: ["compare", db, db],
    "plot": lambda db, out: ["plot", db, "-o", out],
    "report": lambda db, out: ["report", db, "-o", out],
}


@pytest.mark.integration
@pytest.mark.parametrize("reader", READERS_ARGV)
@pytest.mark.parametrize("what", ["directory", "file"])
def test_a_read_only_results_file_or_directory_reads(what, reader, tmp_path):
    """The 0.1.0 file (WAL mode): read, and nothing written beside it (no -wal, -shm, lock or probe file)."""
    d = tmp_path / "ro"
    d.mkdir()
    db = Path(shutil.copy(FIXTURE, d / "r.db"))
    prefix = _read_only(d if what == "directory" else db)
    argv = [sys.executable, "-m", "harness.cli", *map(str, READERS_ARGV[reader](db, tmp_path / "plots"))]
    proc = subprocess.run(prefix + argv, capture_output=True, text=True, timeout=300, cwd=REPO,
                          env={**os.environ, "PYTHONPATH": str(REPO)})
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert sorted(p.name for p in d.iterdir()) == ["r.db"]
    if reader == "export":
        assert len(proc.stdout.strip().splitlines()) == 1 + 24
    if reader == "compare":
        assert "24 tie" in proc.stdout  # the file against itself: every run's time ratio is 1
    if reader == "plot":
        assert sorted(p.name for p in (tmp_path / "plots").glob("*.png")) == ["roofline.png", "tflops.png", "time.png"]
    if reader == "report":
        assert "<section id=\"tables\">" in (tmp_path / "plots" / "index.html").read_text()


# ----- two drivers on one results file ------------------------------------------------------------------------
HOLD = """
import os, sys, time
from harness.results.store import ResultStore
lock = ResultStore(sys.argv[1]).exclusive().__enter__()  # what `lcbench run` holds for its sweep
if sys.argv[2] == "orphan":  # a forked child keeps the locked descriptor; the driver itself dies
    if os.fork() == 0:
        time.sleep(120)
        os._exit(0)
    print(os.getpid(), flush=True)
    os._exit(0)
print(os.getpid(), flush=True)
time.sleep(120)
"""


def _holder(db: Path, mode: str) -> tuple[subprocess.Popen, int]:
    """A process holding the lock of ``db`` (``orphan``: held by its forked child after it exited); its pid."""
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(db), mode], stdout=subprocess.PIPE, text=True,
                            cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)}, start_new_session=True)
    pid = int(proc.stdout.readline())
    if mode == "orphan":
        proc.wait(timeout=60)
    return proc, pid


def _end(proc: subprocess.Popen) -> None:
    """End the holder and, for an orphan, its child (both in the holder's own session)."""
    try:
        os.killpg(proc.pid, 9)
    except ProcessLookupError:
        pass
    proc.wait(timeout=60)


@pytest.mark.integration
def test_a_second_driver_on_a_results_file_is_one_line_naming_the_first(tmp_path, tiny_suite):
    db = tmp_path / "r.db"
    holder, pid = _holder(db, "hold")
    try:
        line = _one_error_line(_lcbench("run", tiny_suite, "--results", db, "--scheduler", "inline", "--quiet"))
    finally:
        _end(holder)
    assert "in use by another lcbench run" in line and str(db) in line
    assert f"pid {pid} on host {socket.gethostname()} since {time.strftime('%Y-%m-%d', time.gmtime())}" in line
    assert ResultStore(db).records() == []  # the second driver ran nothing


@pytest.mark.integration
def test_a_lock_whose_owner_is_gone_is_taken_over_and_released_after_the_sweep(tmp_path, tiny_suite):
    db = tmp_path / "r.db"
    holder, pid = _holder(db, "orphan")  # the flock is still held (by the child), its owner's pid is gone
    try:
        proc = _lcbench("run", tiny_suite, "--results", db, "--scheduler", "inline", "--quiet")
    finally:
        _end(holder)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert f"took over the lock of pid {pid} on host {socket.gethostname()}" in proc.stderr
    assert [r["status"] for r in ResultStore(db).records()] == ["ok"]
    assert not db.with_name("r.db.lock").exists()


def test_the_lock_says_who_holds_it_and_excludes_a_second_holder_in_process(tmp_path):
    store = ResultStore(tmp_path / "r.db")
    with store.exclusive() as lock:
        owner = json.loads(lock.path.read_text())
        assert owner["pid"] == os.getpid() and owner["host"] == socket.gethostname()
        assert abs(owner["since"] - time.time()) < 60
        with pytest.raises(UserError, match=f"in use by another lcbench run: pid {os.getpid()}"):
            ResultStore(tmp_path / "r.db").exclusive().acquire()
    assert not lock.path.exists()
