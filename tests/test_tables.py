"""The tables a person reads (``lcbench show``, ``lcbench export --format md``), over every suite's runs.

Records are built directly from each suite's expanded runs (``load_suite``: the same runs a sweep makes),
with made-up figures and the metrics each workload declares, so every kind of table of every suite is
checked in seconds without running anything: rows told apart by their identity cells, identity cells shown
in full on a narrow console, every abbreviation explained once, directions and phases in their natural order,
the same tables in Markdown, and what a bare ``show`` reads.
"""

from __future__ import annotations

import csv
import functools
import io
import json
import os
import re

import pytest
from rich.console import Console

from harness.catalog import workloads
from harness.cli import main
from harness.results.columns import LEGEND
from harness.results.report import iso_time, markdown, results_sheets, results_tables
from harness.results.sheet import Column, Sheet, fold, layout, plain, to_markdown, to_rich
from harness.results.store import ResultStore
from harness.run import DIRECTIONS, Run
from harness.status import INVALID, PREDICTED, UNSUPPORTED
from suites.loader import available_suites, load_suite, suite_profiles

NARROW = 100  # the console width every identity cell must survive
FINISHED = 1_796_302_598.0  # 2026-12-03T12:56:38Z
SMOKE = available_suites()  # every suite has a smoke profile (tests/test_suites.py)

# Headers that need no legend: plain words, and the names of parameters, options and metrics (their
# workload, method or suite declares them). Any other header must have a line in LEGEND.
PLAIN_HEADERS = {"method", "strategy", "workload", "attention", "mask", "shape", "dtype", "phase", "device",
                 "decode rows", "status", "run", "runs", "reason"}


def fake_record(run: Run, i: int, suite: str) -> dict:
    """A stored record of ``run`` as the executor writes it, with figures that differ per run; every 7th run
    invalid (its figures kept, for public_view to hide), every 11th unsupported; cp_cluster's predicted."""
    record = {**run.to_dict(), "key": run.key, "kind": run.kind, "status": "ok", "reason": None,
              "time_ms_median": 1.5 + i, "time_ms_p20": 1.25 + i, "time_ms_p80": 2.5 + i, "samples": 9,
              "cpu_ms": 3.0 + i, "flops": 1e9 * (i + 1), "tflops": 0.0123 * (i + 1),
              "peak_mem_bytes": 1 << (20 + i % 4), "max_abs_err": 1e-7, "frac_peak": 0.05 * (i % 25), "peak_suspect": i % 25 > 20,
              "suite": suite, "finished_at": FINISHED + i}
    if run.world_size > 1:
        record.update(comm_bytes=json.dumps([4096 * (i + 1)] * run.world_size), time_imbalance=1.1,
                      area_imbalance=1.25)
    if run.workload:
        declared = workloads()[run.workload].metrics
        record["metrics"] = {m.name: 1000.0 / (i + 1) for m in declared}
        record["metric_units"] = {m.name: m.unit for m in declared}
    if suite == "cp_cluster":
        record.update(status=PREDICTED, cluster="dgx-h100", model_version="1", run_key=run.key)
    elif i % 7 == 3:
        record.update(status=INVALID, reason=f"failed correctness gate: err {i}")
    elif i % 11 == 5:
        record.update(status=UNSUPPORTED, reason="dtype float32 (supports bfloat16)")
    return record


@functools.lru_cache(maxsize=None)
def suite_records(suite: str, profile: str = "smoke") -> tuple[dict, ...]:
    return tuple(fake_record(run, i, suite) for i, run in enumerate(load_suite(suite, profile).runs))


def identity(sheet: Sheet) -> list[tuple[str, ...]]:
    """Each row's identity cells, as text."""
    index = [i for i, c in enumerate(sheet.columns) if c.identity]
    return [tuple(plain(row[i]) for i in index) for row in sheet.rows]


def rendered(parts: list[Sheet], width: int) -> str:
    console = Console(width=width, record=True, file=io.StringIO())
    for part in parts:
        console.print(to_rich(part))
    return console.export_text()


def param_names(records) -> set[str]:
    return {k for r in records for holder in ("params", "options", "metrics") for k in (r.get(holder) or {})}


# ----- identity ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("suite", SMOKE)
def test_every_row_of_every_table_is_told_apart_by_its_identity_cells(suite):
    sheets = results_sheets(list(suite_records(suite)), title=suite)
    assert sheets
    for sheet in sheets:
        rows = identity(sheet)
        assert len(set(rows)) == len(rows), f"{sheet.title}: two rows look alike"


def _check_narrow(sheets: list[Sheet]) -> None:
    for sheet in sheets:
        parts = layout(sheet, NARROW)
        lines = rendered(parts, NARROW).splitlines()
        assert max(len(line) for line in lines) <= NARROW, sheet.title
        assert not any("…" in line for line in lines), sheet.title
        for cells in identity(sheet):
            for text in cells:
                assert any(text in line for line in lines), f"{sheet.title}: {text!r} is cut"
        assert sum(bool(p.notes) for p in parts) == 1  # the conventions and legend: once, under the last part
        assert parts[-1].notes[0] == sheet.notes[0]


@pytest.mark.parametrize("suite", SMOKE)
def test_on_a_narrow_console_every_identity_cell_is_shown_in_full_and_the_notes_once(suite):
    _check_narrow(results_sheets(list(suite_records(suite)), title=suite))


@pytest.mark.slow
@pytest.mark.parametrize("suite,profile", [(s, p) for s in SMOKE for p in suite_profiles(s) if p != "smoke"])
def test_every_profiles_tables_tell_their_rows_apart_and_keep_the_identity_whole(suite, profile):
    sheets = results_sheets(list(suite_records(suite, profile)), title=f"{suite}/{profile}")
    for sheet in sheets:
        rows = identity(sheet)
        assert len(set(rows)) == len(rows), f"{sheet.title}: two rows look alike"
    _check_narrow(sheets)


def test_a_wide_metric_set_folds_or_turns_and_keeps_the_identity_whole():
    """A workload phase with 24 metrics (power_reach's ~20 and more) at 100 columns."""
    runs = [Run.make(workload="power_reach", method="blocksparse", mask=mask, seqlen=1024, phase="reach",
                     params={"method": "blocksparse", "layers": layers}, mask_params={"block": 32})
            for mask in ("power", "sliding_window_sink", "causal") for layers in (8, 24)]
    records = [fake_record(run, i, "wide") for i, run in enumerate(runs)]
    for r in records:
        r.update(status="ok", metrics={f"coverage_L{k}": k / 24 for k in range(1, 25)},
                 metric_units={f"coverage_L{k}": "fraction" for k in range(1, 25)})
    (sheet,) = results_sheets(records, title="wide")
    assert len(sheet.columns) > 24 and [c.header for c in sheet.columns if c.identity] == ["layers", "mask", "S"]
    parts = layout(sheet, NARROW)
    assert len(parts) < len(fold(sheet, NARROW))  # turned: fewer tables than folding the 24 columns
    text = rendered(parts, NARROW)
    assert "coverage_L24 (fraction)" in text and "sliding_window_sink(block=32)" in text
    assert max(len(line) for line in text.splitlines()) <= NARROW
    assert text.count("S: sequence length") == 1


def test_fold_repeats_the_identity_columns_and_spreads_the_others():
    columns = (Column("who", "left", identity=True), *(Column(f"figure {k}", legend=f"the {k}th") for k in range(9)))
    sheet = Sheet("t", columns, rows=(("a-long-name", *("12345.678",) * 9),), notes=("convention",))
    parts = fold(sheet, 60)
    assert len(parts) > 1 and [p.part for p in parts] == [(k, len(parts)) for k in range(1, len(parts) + 1)]
    assert all(p.columns[0].header == "who" for p in parts)
    assert [c.header for p in parts for c in p.columns[1:]] == [f"figure {k}" for k in range(9)]
    assert [bool(p.caption()) for p in parts] == [False] * (len(parts) - 1) + [True]
    assert parts[-1].caption().splitlines() == ["convention", *(f"figure {k}: the {k}th" for k in range(9))]
    assert fold(sheet, 1000) == [sheet]


# ----- the parameters that vary --------------------------------------------------------------------------------
def test_what_varies_is_a_column_and_what_every_run_shares_is_in_the_title():
    """attention_layer's smoke: two methods x two masks x two lengths per phase, one flavor and dtype."""
    for sheet in results_sheets(list(suite_records("attention_layer")), title="al"):
        headers = [c.header for c in sheet.columns if c.identity]
        assert headers == ["attention", "mask", "S"], sheet.title
        for shared in ("flavor=tiny", "dtype=float32", "ws=1"):
            assert shared in sheet.title


@pytest.mark.parametrize("suite", SMOKE)
def test_every_abbreviation_is_explained_once_under_its_table(suite):
    records = list(suite_records(suite))
    named = param_names(records)
    for sheet in results_sheets(records, title=suite):
        legend = sheet.caption().splitlines()[len(sheet.notes):]
        assert len(legend) == len(set(legend)), sheet.title
        for c in sheet.columns:
            name = re.sub(r" \(.*\)$", "", c.header)  # a metric's unit
            if c.header in LEGEND:
                assert sum(line.startswith(f"{c.header}: ") for line in legend) == 1, (sheet.title, c.header)
            else:
                assert c.header in PLAIN_HEADERS or name in named, f"{sheet.title}: {c.header!r} is not explained"


def test_the_legend_explains_the_issues_abbreviations():
    for header in ("%peak", "t-imb", "a-imb", "MiB sent/rank", "p20-p80", "cpu ms", "S", "ws", "dir", "B"):
        assert LEGEND[header], header
    assert ">100?" in LEGEND["%peak"]


# ----- natural order -------------------------------------------------------------------------------------------
def test_directions_sort_fwd_bwd_fwd_bwd_decode_not_by_name():
    runs = [Run.make(method="sdpa", mask="causal", seqlen=256, direction=d, heads_q=4, heads_kv=2, head_dim=16)
            for d in sorted(DIRECTIONS)]
    (sheet,) = results_sheets([{**fake_record(r, 0, "order"), "status": "ok"} for r in runs], title="order")
    column = [c.header for c in sheet.columns].index("dir")
    assert [plain(row[column]) for row in sheet.rows] == list(DIRECTIONS)


@pytest.mark.parametrize("suite", ["attention_layer", "power_attention", "ttt", "hybrid_minimax"])
def test_a_workloads_phases_come_in_the_order_it_declares_them(suite):
    records = list(reversed(suite_records(suite)))
    sheets = [s for s in results_sheets(records, title=suite) if " · workload · " in s.title]
    by_workload: dict[str, list[str]] = {}
    for s in sheets:
        _, _, name, phase = s.title.split(" · ")[:4]
        by_workload.setdefault(name, []).append(phase)
    assert by_workload
    for name, phases in by_workload.items():
        declared = workloads()[name].phases
        assert phases == [p for p in declared if p in phases], name


# ----- markdown, csv -------------------------------------------------------------------------------------------
def _store(path, records) -> str:
    store = ResultStore(path)
    sid = store.start_session("handmade", {"hostname": "box", "commit": "abc123"})
    for r in records:
        store.put(r, sid, r.get("suite") or "handmade")
    store.close()
    return str(path)


@pytest.mark.parametrize("suite", ["power_attention", "context_parallel", "ttt"])
def test_markdown_export_is_the_tables_show_prints(suite, tmp_path, capsys):
    records = list(suite_records(suite))
    db = _store(tmp_path / "r.db", records)
    assert main(["export", db, "--format", "md"]) == 0
    md = capsys.readouterr().out
    stored = ResultStore(db, create=False).records()  # the store stamps finished_at when it stores a run
    first, last = iso_time(stored[0]["finished_at"]), iso_time(stored[-1]["finished_at"])
    assert md.startswith(f"# lcbench results: {db}\n\n{len(stored)} runs, finished {first} to {last}.")
    for sheet in results_sheets(stored, title=db):
        assert to_markdown(sheet) in md  # every table, whole: title, header, rows, notes and legend
    assert "finished_at" not in md and "| key |" not in md and "diagnostics" not in md
    assert markdown(stored, db) == md


def test_csv_writes_times_in_iso_8601_and_json_keeps_them_as_stored(tmp_path, capsys):
    db = _store(tmp_path / "r.db", list(suite_records("quickstart"))[:3])
    assert main(["export", db, "--format", "csv"]) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    stamps = [r["finished_at"] for r in ResultStore(db, create=False).records()]
    assert [r["finished_at"] for r in rows] == [iso_time(t) for t in stamps]
    assert all(re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", r["finished_at"]) for r in rows)
    assert main(["export", db, "--format", "json"]) == 0
    assert [r["finished_at"] for r in json.loads(capsys.readouterr().out)] == stamps


def test_iso_time_is_utc_to_the_second():
    assert iso_time(FINISHED) == "2026-12-03T12:56:38Z" and iso_time(None) == ""


# ----- which file show reads -----------------------------------------------------------------------------------
def test_a_bare_show_reads_the_newest_results_file_and_says_which(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    old = _store(tmp_path / "results" / "quickstart.db", list(suite_records("quickstart")))
    new = _store(tmp_path / "results" / "kernels.db", list(suite_records("kernels")))
    os.utime(old, (FINISHED, FINISHED))
    os.utime(new, (FINISHED + 60, FINISHED + 60))
    assert main(["show"]) == 0
    captured = capsys.readouterr()
    assert "reading results/kernels.db (the newest results file in results/)" in " ".join(captured.err.split())
    assert "results/kernels.db · method" in captured.out and "quickstart" not in captured.out


def test_a_bare_show_with_no_results_file_is_one_line_exit_2(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["show"]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "no results files (*.db) in 'results'" in err


def test_a_file_without_records_says_so_in_one_line_exit_1(tmp_path, capsys):
    db = _store(tmp_path / "empty.db", [])
    for argv in (["show", db], ["export", db, "--format", "md"], ["export", db, "--format", "csv"]):
        assert main(argv) == 1, argv
        captured = capsys.readouterr()
        assert captured.out == "" and captured.err.strip() == f"{db} holds no records", argv


def test_show_of_a_suite_the_file_lacks_names_the_suites_it_has(tmp_path, capsys):
    db = _store(tmp_path / "r.db", list(suite_records("quickstart")))
    assert main(["show", db, "--suite", "kernels"]) == 1
    err = " ".join(capsys.readouterr().err.split())
    assert f"no records of suite 'kernels' in {db} (its suites: quickstart)" in err


def test_show_folds_to_the_consoles_width(tmp_path):
    """What ``show`` prints is :func:`results_tables` at the console's width: at 100 columns, parts."""
    records = list(suite_records("power_attention"))
    wide, narrow = results_tables(records, "p", width=400), results_tables(records, "p", width=NARROW)
    assert len(narrow) > len(wide)


def test_brackets_in_titles_headers_and_cells_are_text_not_styles():
    """``ring[sdpa]`` (a strategy and its local method) survives rich and Markdown alike."""
    runs = [Run.make(workload="attention_layer", strategy="ring", method="sdpa", world_size=2, seqlen=s,
                     phase="prefill", params={"flavor": "tiny"}) for s in (256, 512)]
    records = [{**fake_record(r, 0, "cp"), "status": "ok"} for r in runs]
    (sheet,) = results_sheets(records, title="cp")
    assert "attention=ring[sdpa]" in sheet.title
    assert "attention=ring[sdpa]" in to_markdown(sheet)
    assert "attention=ring[sdpa]" in " ".join(rendered([sheet], 400).split())
