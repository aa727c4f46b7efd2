"""The results layer reads every kind of record, drops no field, and never shows a non-ok run's numbers.

Records are built by hand (fake but shaped like the executor's: a method, a strategy, a workload, an invalid
run of each sort that still carries its timing, a not-run record and a record written by lcbench 0.1.0
without ``kind``/``metrics``/``flop_convention``), stored in a real SQLite store and read back through the CLI.
"""

from __future__ import annotations

import csv
import io
import json

import pytest
from rich.console import Console

from harness.cli import main
from harness.errors import UserError
from harness.results.plot import plot_records
from harness.results.records import FLOP_CONVENTION, public_view
from harness.results.report import ratios, results_tables
from harness.results.store import FIELDS, SESSION_FIELDS, ResultStore

SOFTMAX = "softmax: fwd 4*area*Hq*d (exact mask area), bwd 2.5x, fwd+bwd 3.5x, decode 4*area(rows)*Hq*d"
LM_FLOPS = "model: 6*params*tokens train, 2*params*tokens inference, + attention 4*area*Hq*d per layer"
INVALID_TIME = 987.654  # the invalid runs' median: must appear in no table and no result column
INVALID_TOKENS = 4242.42


def _attention(method: str, seqlen: int, time_ms: float, **extra) -> dict:
    record = {
        "key": f"{method}-{extra.get('strategy')}-{seqlen}-{extra.get('direction', 'fwd')}", "kind": "method",
        "method": method, "strategy": None, "workload": None, "params": {}, "mask": "causal", "mask_params": {},
        "seqlen": seqlen, "batch": 1, "heads_q": 4, "heads_kv": 2, "head_dim": 16, "dtype": "float32",
        "direction": "fwd", "world_size": 1, "device": "cpu", "options": {}, "decode_tokens": 1,
        "timing": {"warmup": 1, "min_samples": 3, "min_run_time": 0.01, "max_samples": 50},
        "status": "ok", "reason": None, "kernel": method, "flop_convention": SOFTMAX,
        "time_ms_median": time_ms, "time_ms_p20": time_ms * 0.95, "time_ms_p80": time_ms * 1.05, "samples": 7,
        "cpu_ms": time_ms * 2, "flops": 4.0 * seqlen * seqlen / 2 * 4 * 16, "area": seqlen * (seqlen + 1) // 2,
        "tflops": 4.0 * seqlen * seqlen / 2 * 4 * 16 / (time_ms * 1e9), "peak_tflops": None, "frac_peak": None,
        "peak_mem_bytes": 1 << 20, "mem_method": "tracemalloc", "max_abs_err": 1.5e-7, "gate_errors": "{}",
        "threads": 2, "mask_info": "{}", "wall_s": 0.4, "timed_s": 0.2,
    }
    record.update(extra)
    return record


def _workload(phase: str, seqlen: int, time_ms: float, tokens_per_s: float, **extra) -> dict:
    record = _attention("sdpa", seqlen, time_ms, kind="workload", workload="llama", phase=phase, direction=None,
                        params={"flavor": "tiny", "layers": 2}, heads_q=None, heads_kv=None, head_dim=None,
                        flop_convention=LM_FLOPS, key=f"llama-{phase}-{seqlen}")
    record["metrics"] = {"tokens_per_s": tokens_per_s, "ms_per_token": 1000 / tokens_per_s,
                         "kv_cache_bytes": 2 * 2 * seqlen * 64 * 4}
    record["metric_units"] = {"tokens_per_s": "tokens/s", "ms_per_token": "ms", "kv_cache_bytes": "B"}
    record["metric_better"] = {"tokens_per_s": "higher", "ms_per_token": "lower", "kv_cache_bytes": "lower"}
    record.update(extra)
    return record


def _old(method: str, seqlen: int, time_ms: float) -> dict:
    """A record as lcbench 0.1.0 wrote it: no kind, kernel, flop_convention, metrics, workload, params."""
    record = _attention(method, seqlen, time_ms)
    for field in ("kind", "kernel", "flop_convention", "workload", "params", "decode_tokens"):
        record.pop(field)
    record["key"] = f"old-{method}-{seqlen}"
    return record


def records() -> list[dict]:
    return [
        _attention("sdpa", 128, 1.25, novel_field="only-here"),
        _attention("sdpa", 256, 3.5),
        _attention("blocksparse", 128, INVALID_TIME, status="invalid", reason="failed correctness gate: err 0.3",
                   tflops=12.5, frac_peak=0.4),
        _attention("sdpa", 512, 2.0, strategy="ring", kind="strategy", world_size=2, rank_area=[100, 200],
                   comm_bytes_model=[4096, 4096], cp_info={"shards": "zigzag"}, comm_bytes="[4096, 4096]",
                   time_imbalance=1.1, area_imbalance=1.3, key="ring-512"),
        _workload("prefill", 128, 10.0, 12800.0),
        _workload("prefill", 256, 18.0, 14222.0),
        _workload("decode", 256, INVALID_TIME, INVALID_TOKENS, status="invalid",
                  reason="failed correctness check: logits differ"),
        _attention("flex", 128, 1.0, status="unsupported", reason="dtype float32 (supports bfloat16)",
                   time_ms_median=None, time_ms_p20=None, time_ms_p80=None, tflops=None, key="flex-unsup"),
        _old("sdpa", 1024, 7.5),
    ]


def _store(path, recs: list[dict]):
    store = ResultStore(path)
    sid = store.start_session("handmade", {"hostname": "box", "cpu": "x86", "gpu": None, "commit": "abc123"})
    for r in recs:
        store.put(r, sid, "handmade")
    store.close()
    return path


@pytest.fixture()
def db(tmp_path):
    return _store(tmp_path / "r.db", records())


def _export(db, fmt: str, capsys) -> str:
    assert main(["export", str(db), "--format", fmt]) == 0
    return capsys.readouterr().out


# ----- the one rule --------------------------------------------------------------------------------------------
def test_public_view_keeps_ok_records_and_strips_every_figure_of_the_others():
    ok, invalid = records()[4], records()[6]
    assert public_view(ok) == ok
    view = public_view(invalid)
    for field in ("time_ms_median", "time_ms_p20", "time_ms_p80", "samples", "cpu_ms", "tflops", "peak_mem_bytes",
                  "metrics", "timed_s"):
        assert field not in view, field
    assert view["reason"] and view["flops"] == invalid["flops"]  # the problem's size and the reason stay
    assert "diagnostics" not in view
    diag = public_view(invalid, diagnostics=True)["diagnostics"]
    assert diag["not_valid"] is True and diag["time_ms_median"] == INVALID_TIME
    assert diag["metrics"]["tokens_per_s"] == INVALID_TOKENS


# ----- export --------------------------------------------------------------------------------------------------
def test_csv_export_has_the_union_of_fields_and_one_column_per_metric(db, capsys):
    rows = list(csv.DictReader(io.StringIO(_export(db, "csv", capsys))))
    columns = list(rows[0])
    assert len(rows) == len(records())
    for field in ("novel_field", "rank_area", "comm_bytes_model", "cp_info", "kernel", "flop_convention", "params"):
        assert field in columns, field
    assert {"metric.tokens_per_s", "metric.ms_per_token", "metric.kv_cache_bytes"} <= set(columns)
    # stable order: known fields first (in FIELDS order), then metrics, then the rest, session metadata last
    known = [c for c in columns if c in FIELDS]
    assert known == [f for f in FIELDS if f in columns] and columns[: len(known)] == known
    assert columns[-len(SESSION_FIELDS):] == list(SESSION_FIELDS)
    assert columns.index("metric.tokens_per_s") < columns.index("novel_field")
    prefill = next(r for r in rows if r["key"] == "llama-prefill-128")
    assert float(prefill["metric.tokens_per_s"]) == 12800.0 and prefill["hostname"] == "box"
    assert json.loads(prefill["params"]) == {"flavor": "tiny", "layers": 2}
    ring = next(r for r in rows if r["key"] == "ring-512")
    assert json.loads(ring["cp_info"]) == {"shards": "zigzag"} and json.loads(ring["rank_area"]) == [100, 200]


def test_no_export_carries_an_invalid_runs_numbers_outside_diagnostics(db, capsys):
    rows = list(csv.DictReader(io.StringIO(_export(db, "csv", capsys))))
    invalid = [r for r in rows if r["status"] == "invalid"]
    assert len(invalid) == 2
    for row in invalid:
        figures = {k: v for k, v in row.items() if k != "diagnostics"}
        assert str(INVALID_TIME) not in json.dumps(figures) and str(INVALID_TOKENS) not in json.dumps(figures)
        assert row["time_ms_median"] == "" and row["tflops"] == "" and row["metric.tokens_per_s"] == ""
        assert json.loads(row["diagnostics"])["not_valid"] is True
    assert all(r["diagnostics"] == "" for r in rows if r["status"] == "ok")

    rows = json.loads(_export(db, "json", capsys))
    for row in (r for r in rows if r["status"] == "invalid"):
        assert row["time_ms_median"] is None and row["samples"] is None
        assert row["diagnostics"]["not_valid"] is True and row["diagnostics"]["time_ms_median"] == INVALID_TIME

    md = _export(db, "md", capsys)  # the tables of show: an invalid run's status and reason, no figure
    assert "diagnostics" not in md and "| tokens_per_s (tokens/s) |" in md and "| 12800 |" in md
    assert "987.65" not in md and "4242" not in md and "invalid: failed correctness check: logits differ" in md


# ----- show ----------------------------------------------------------------------------------------------------
def _render(table) -> str:
    console = Console(width=400, record=True, file=io.StringIO())
    console.print(table)
    return " ".join(console.export_text().split())


def test_show_prints_one_table_per_kind_with_its_flop_convention(db, capsys):
    """One table per kind; a workload's phases get a table each, with the metrics that phase reports."""
    tables = results_tables(records(), title="r")
    assert [t.title.split(" · ")[1:4] for t in tables] == [
        ["method", "mask=causal", "shape=B1 H4:2 d16"], ["strategy", "mask=causal", "shape=B1 H4:2 d16"],
        ["workload", "llama", "decode"], ["workload", "llama", "prefill"]]
    assert all("dtype=float32" in t.title for t in tables)  # what every run of a table shares: in its title
    method, strategy, decode, prefill = tables
    # the 0.1.0 record reads as a method under the softmax convention it was measured with
    assert SOFTMAX in method.caption and FLOP_CONVENTION in method.caption
    assert strategy.caption.splitlines()[0] == SOFTMAX  # the convention first, then the legend
    assert decode.caption.splitlines()[0] == prefill.caption.splitlines()[0] == LM_FLOPS
    text = _render(decode) + " " + _render(prefill)
    for expected in ("flavor=tiny · layers=2", "prefill", "decode", "tokens_per_s (tokens/s)", "ms_per_token (ms)",
                     "kv_cache_bytes (B)", "12800", "10.00", "128.0 KiB", "256.0 KiB"):
        assert expected in text, expected
    text = _render(decode)
    assert "invalid" in text and "logits differ" in text
    strategy_text = _render(strategy)
    assert "ring[sdpa]" in strategy_text and "MiB sent/rank" in strategy_text

    assert main(["show", str(db)]) == 0
    out = " ".join(capsys.readouterr().out.split())
    for title in ("· method", "· strategy", "· workload", "not run: 1 runs"):
        assert title in out, title
    assert "dtype float32 (supports bfloat16)" in out and LM_FLOPS in out
    assert "987.65" not in out and "987.7" not in out and "4242" not in out  # invalid runs: status and reason only
    assert "failed correctness gate" in out


# ----- compare -------------------------------------------------------------------------------------------------
def _scaled(recs: list[dict], time: float, tokens: float, kv: float) -> list[dict]:
    out = []
    for r in recs:
        r = json.loads(json.dumps(r))
        if r["status"] == "ok":  # the whole run is that much faster or slower: its spread and CPU time too
            for field in ("time_ms_median", "time_ms_p20", "time_ms_p80", "cpu_ms"):
                r[field] *= time
            if "metrics" in r:
                r["metrics"]["tokens_per_s"] *= tokens
                r["metrics"]["ms_per_token"] /= tokens
                r["metrics"]["kv_cache_bytes"] *= kv
        out.append(r)
    return out


def test_ratios_use_each_metrics_better_direction_and_the_tie():
    base = records()[4]
    new = _scaled([base], time=1.20, tokens=1.25, kv=1.01)[0]
    got = {name: (round(v.ratio, 4), v.verdict) for name, _, _, v in ratios(base, new)}
    assert got == {
        "time_ms_median": (1.2, "worse"),  # 20% slower, spreads of +-5% disjoint
        "tokens_per_s": (1.25, "better"),  # higher is better
        "ms_per_token": (round(1 / 1.25, 4), "better"),  # lower is better
        "kv_cache_bytes": (1.01, "tie"),  # within 3%
    }
    noisy = _scaled([base], time=1.20, tokens=1.0, kv=1.0)[0]
    noisy["time_ms_p20"] *= 0.8  # the same 20% with a spread reaching the base's: not a result
    assert {name: v.verdict for name, _, _, v in ratios(base, noisy)}["time_ms_median"] == "inconclusive"


def test_compare_matches_by_key_and_reports_every_shared_metric(tmp_path, capsys):
    base = records()
    new = _scaled(base, time=0.8, tokens=1.25, kv=1.0)
    # a run that was ok in base and is invalid now: broken, and its number is not shown
    new[1] = {**new[1], "status": "invalid", "reason": "failed correctness gate: nan", "time_ms_median": INVALID_TIME}
    new.append(_attention("sdpa", 4096, 1.0, key="only-in-new"))
    a, b = _store(tmp_path / "a.db", base), _store(tmp_path / "b.db", new)
    assert main(["compare", str(a), str(b)]) == 0
    out = " ".join(capsys.readouterr().out.split())
    # ok in both: sdpa-128, ring, old record (time only: 3 better) + 2 prefills x (time, tokens/s, ms/token: better;
    # kv bytes: tie)
    assert "9 better, 0 worse, 2 tie, 0 inconclusive, 1 broken" in out and "1 unmatched" in out
    assert "tokens_per_s" in out and "kv_cache_bytes" in out and "0.800" in out and "1.250" in out
    assert "broken" in out and "987.7" not in out and "987.65" not in out


# ----- plot ----------------------------------------------------------------------------------------------------
def _pngs(directory) -> set[str]:
    names = {p.name for p in directory.iterdir()}
    assert all((directory / n).read_bytes()[:4] == b"\x89PNG" for n in names)
    return names


def test_plot_defaults_per_kind(db, tmp_path):
    out = tmp_path / "plots"
    assert main(["plot", str(db), "-o", str(out)]) == 0
    assert _pngs(out) == {"tflops.png", "time.png", "roofline.png", "workload_ms_per_token.png",
                          "workload_peak_mem.png"}


def test_plot_any_metric_against_any_parameter(db, tmp_path):
    out = tmp_path / "plots"
    assert main(["plot", str(db), "-o", str(out), "--x", "params.layers", "--y", "metrics.tokens_per_s",
                 "--by", "direction"]) == 0
    assert _pngs(out) == {"workload_metrics.tokens_per_s_vs_params.layers_by_direction.png"}
    written = plot_records(records(), out, x="method", y="cpu_ms")  # text x axis, a plain field as y
    assert {p.name for p in written} == {"cpu_ms_vs_method.png", "workload_cpu_ms_vs_method.png"}


def test_plot_several_metrics_share_one_figure_with_phases_merged(db, tmp_path):
    """--y a,b: one figure, one panel per subject, one line per label and metric (with its phase)."""
    out = tmp_path / "plots"
    assert main(["plot", str(db), "-o", str(out), "--y", "metrics.tokens_per_s,metrics.ms_per_token"]) == 0
    assert _pngs(out) == {"workload_metrics.tokens_per_s_and_metrics.ms_per_token.png"}
    with pytest.raises(UserError, match="metrics.nope"):
        plot_records(records(), out, y="metrics.ms_per_token,metrics.nope")


def test_crossings_are_where_the_order_of_two_lines_flips():
    from harness.results.plot import crossings

    hybrid = [(1024, 2.0), (2048, 3.0), (4096, 4.0), (8192, 6.0)]
    softmax = [(1024, 1.0), (2048, 2.5), (4096, 5.0), (8192, 12.0)]
    (at, lower, other), = crossings({"hybrid": hybrid, "softmax": softmax})
    assert (lower, other) == ("hybrid", "softmax") and 2048 < at < 4096
    assert crossings({"a": [(1, 1.0), (2, 2.0)], "b": [(1, 2.0), (2, 3.0)]}) == []  # never cross
    (at, _, _), = crossings({"a": [(0, 0.0), (10, 10.0)], "b": [(0, 1.0), (10, 9.0)]}, log_x=False)
    assert at == pytest.approx(0.5 * 10)  # linear x: the middle
    (at, lower, _), = crossings({"a": [(1, 1.0), (2, 2.0), (3, 3.0)], "b": [(1, 2.0), (2, 2.0), (3, 1.0)]})
    assert (at, lower) == (2, "b")  # a tie at a measured point with the order flipped across it: that point
    (at, _, _), = crossings({"a": [(0, 0.0), (10, 10.0)], "b": [(0, 1.0), (10, 9.0)]})  # x reaches 0: linear
    assert at == pytest.approx(5.0)


def test_plot_by_a_parameter_puts_its_values_in_one_panel_and_marks_where_they_cross(tmp_path, monkeypatch):
    from harness.results import plot as plot_mod

    seen = []
    monkeypatch.setattr(plot_mod, "crossings", lambda lines, log_x=True: seen.append(sorted(lines)) or [])
    recs = []
    for pattern, times in (("LLLS", (2.0, 3.0, 4.0)), ("SSSS", (1.0, 2.5, 5.0))):
        for s, t in zip((1024, 2048, 4096), times):
            r = json.loads(json.dumps(records()[4]))
            r.update(key=f"{pattern}-{s}", seqlen=s, params={**r["params"], "pattern": pattern})
            r["metrics"]["ms_per_token"] = t
            recs.append(r)
    plot_records(recs, tmp_path, y="metrics.ms_per_token", by="params.pattern", mark_crossings=True)
    assert seen == [["params.pattern=LLLS", "params.pattern=SSSS"]]  # one panel holds both lines


def test_plot_rejects_an_empty_y_and_crossings_on_a_text_axis(tmp_path):
    with pytest.raises(UserError, match="--y ','"):
        plot_records(records(), tmp_path, y=",")
    with pytest.raises(UserError, match="--crossings: needs a numeric --x"):
        plot_records(records(), tmp_path, x="method", y="cpu_ms", mark_crossings=True)


def test_plot_marks_crossings_on_request(db, tmp_path):
    out = tmp_path / "plots"
    assert main(["plot", str(db), "-o", str(out), "--y", "metrics.ms_per_token", "--crossings"]) == 0
    assert _pngs(out) == {"workload_metrics.ms_per_token.png"}


@pytest.mark.parametrize("option,name", [("x", "seqlenn"), ("y", "metrics.tokens_per_sec"), ("by", "params.flavour")])
def test_plot_rejects_unknown_names_listing_the_available(option, name, tmp_path):
    with pytest.raises(UserError) as e:
        plot_records(records(), tmp_path, **{option: name})
    message = str(e.value)
    assert name in message and "\n" not in message
    assert "metrics.tokens_per_s" in message and "params.flavor" in message and "seqlen" in message


def test_plot_cli_reports_a_non_numeric_y_as_a_user_mistake(db, tmp_path, capsys):
    assert main(["plot", str(db), "-o", str(tmp_path), "--y", "mask"]) == 2
    assert "no ok run has a number" in capsys.readouterr().err
