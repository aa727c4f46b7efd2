"""Signal or noise, and the answer view: the one verdict rule (``harness.results.verdict.judge``) that both
``compare`` and ``recommend`` use, the recommendations it yields per configuration, and both commands' output.

Records are built by hand, shaped like the executor's, with the figures each case needs.
"""

from __future__ import annotations

import pytest
from rich.console import Console

from harness.cli import main
from harness.errors import UserError
from harness.results.recommend import identity, parse_memory, recommend, recommendation_table, recommendation_tables
from harness.results.report import compare_table
from harness.results.store import ResultStore
from harness.results.verdict import CONTENDED, VERDICTS, Figure, judge


def _record(method: str, median: float, spread: tuple[float, float], cpu: float | None = None, **extra) -> dict:
    """An ok CPU method run: median and p20-p80 as given, CPU time per call (default: the median, uncontended)."""
    record = {
        "key": "-".join(str(v) for v in (method, extra.get("mask", "causal"), extra.get("seqlen", 1024),
                                         extra.get("direction", "fwd"), extra.get("dtype", "float32"),
                                         extra.get("strategy"), extra.get("world_size", 1))),
        "kind": "strategy" if extra.get("strategy") else "method", "method": method, "strategy": None,
        "mask": "causal", "mask_params": {}, "seqlen": 1024, "batch": 1, "heads_q": 4, "heads_kv": 2,
        "head_dim": 16, "dtype": "float32", "direction": "fwd", "world_size": 1, "device": "cpu", "options": {},
        "status": "ok", "reason": None, "time_ms_median": median, "time_ms_p20": spread[0],
        "time_ms_p80": spread[1], "cpu_ms": median if cpu is None else cpu, "samples": 9, "peak_mem_bytes": 1 << 20,
    }
    record.update(extra)
    return record


# ----- the rule ------------------------------------------------------------------------------------------------
# (name, base, new, better, expected verdict): the quickstart case, tight spreads, the 3% rule, contention.
JUDGE_CASES = [
    # identical code, noisy runs: 79.8 [57.7-82.7] vs 137.5 [75.8-1073.8] is not "worse"
    ("quickstart noise", Figure(79.8, 57.7, 82.7), Figure(137.5, 75.8, 1073.8), "lower", "inconclusive"),
    ("overlap, each median in the other", Figure(10.0, 8.0, 13.0), Figure(11.5, 9.0, 14.0), "lower", "tie"),
    ("clear 2x, tight spreads (slower)", Figure(10.0, 9.9, 10.1), Figure(20.0, 19.8, 20.2), "lower", "worse"),
    ("clear 2x, tight spreads (faster)", Figure(20.0, 19.8, 20.2), Figure(10.0, 9.9, 10.1), "lower", "better"),
    ("tight but within 3%", Figure(100.0, 99.9, 100.1), Figure(102.0, 101.9, 102.1), "lower", "tie"),
    ("higher is better", Figure(100.0, 99.0, 101.0), Figure(150.0, 149.0, 151.0), "higher", "better"),
    ("no spread stored: 3% rule", Figure(100.0), Figure(110.0), "lower", "worse"),
    ("no spread, within 3%", Figure(100.0), Figure(101.0), "lower", "tie"),
    # contended wall clock (wall 3x the CPU time): a verdict needs the CPU time to agree
    ("contended, CPU equal", Figure(30.0, 29.0, 31.0, cpu=10.0), Figure(60.0, 59.0, 61.0, cpu=10.1), "lower",
     "inconclusive"),
    ("contended, CPU agrees", Figure(30.0, 29.0, 31.0, cpu=10.0), Figure(60.0, 59.0, 61.0, cpu=20.0), "lower",
     "worse"),
    ("contended, CPU the other way", Figure(30.0, 29.0, 31.0, cpu=10.0), Figure(60.0, 59.0, 61.0, cpu=5.0),
     "lower", "inconclusive"),
    ("contended, wall ties, CPU differs", Figure(30.0, 29.0, 31.0, cpu=10.0), Figure(30.3, 29.0, 31.5, cpu=5.0),
     "lower", "inconclusive"),
    ("contended, both tie", Figure(30.0, 29.0, 31.0, cpu=10.0), Figure(30.5, 29.5, 31.5, cpu=10.1), "lower", "tie"),
    # identical code on a loaded machine: CPU time +5% is inside the runs' own 18% spread, not a regression
    ("contended, CPU within the spread", Figure(46.2, 45.0, 53.3, cpu=30.0), Figure(70.0, 69.0, 72.8, cpu=31.5),
     "lower", "inconclusive"),
    ("contended, wide spreads, CPU within them", Figure(30.0, 10.0, 90.0, cpu=10.0),
     Figure(45.0, 12.0, 95.0, cpu=5.0), "lower", "tie"),
    ("contended, no CPU time for the base", Figure(30.0, 29.0, 31.0), Figure(60.0, 59.0, 61.0, cpu=10.0),
     "lower", "inconclusive"),
    ("contended, no CPU time, wall ties", Figure(30.0, 29.0, 31.0), Figure(30.2, 29.0, 31.0, cpu=10.0), "lower",
     "tie"),
    # two threads that ran all the time (CPU = 2 x wall): not contended, the wall clock stands alone
    ("two busy threads", Figure(10.0, 9.9, 10.1, cpu=20.0, threads=2), Figure(20.0, 19.8, 20.2, cpu=40.0, threads=2),
     "lower", "worse"),
    # two threads that got one core between them (CPU = wall): contended although wall = CPU time
    ("two threads on one core", Figure(10.0, 9.9, 10.1, cpu=20.0, threads=2),
     Figure(20.0, 19.8, 20.2, cpu=20.0, threads=2), "lower", "inconclusive"),
]


@pytest.mark.parametrize("name,base,new,better,expected", JUDGE_CASES, ids=[c[0] for c in JUDGE_CASES])
def test_judge(name, base, new, better, expected):
    v = judge(base, new, better)
    assert v.verdict == expected, v.reason
    assert v.verdict in VERDICTS and v.reason and v.ratio == pytest.approx(new.median / base.median)


def test_a_base_of_zero_has_no_ratio():
    with pytest.raises(ValueError, match="base median must be > 0"):
        judge(Figure(0.0), Figure(1.0))


@pytest.mark.parametrize("factor,expected", [(CONTENDED * 0.99, "worse"), (CONTENDED * 1.01, "inconclusive")])
def test_contention_threshold_is_where_the_cpu_time_starts_to_count(factor, expected):
    """Twice the wall time for the same CPU time: a regression only while the wall clock is not contended."""
    base = Figure(10.0, 9.9, 10.1, cpu=10.0 * 2 / factor)
    assert judge(base, Figure(20.0, 19.8, 20.2, cpu=base.cpu)).verdict == expected


# ----- recommend -----------------------------------------------------------------------------------------------
def _sweep() -> list[dict]:
    """Two lengths x two directions; at 1024 fwd sdpa wins clearly, at 1024 bwd the two tie (overlapping
    spreads), at 4096 flex wins but needs more memory; an invalid run faster than all is never a winner."""
    return [
        _record("sdpa", 10.0, (9.9, 10.1)), _record("flex", 20.0, (19.8, 20.2)),
        _record("sdpa", 30.0, (25.0, 36.0), direction="bwd"), _record("flex", 31.0, (26.0, 37.0), direction="bwd"),
        _record("sdpa", 80.0, (79.0, 81.0), seqlen=4096, peak_mem_bytes=1 << 30),
        _record("flex", 40.0, (39.5, 40.5), seqlen=4096, peak_mem_bytes=3 << 30),
        _record("blocksparse", 1.0, (0.9, 1.1), seqlen=4096, status="invalid", reason="failed the gate"),
    ]


def _by_config(recs) -> dict:
    return {tuple(v for _, v in r.configuration): r for r in recs}


def test_recommend_names_the_winner_its_margin_and_ties():
    recs = recommend(_sweep())
    assert [dict(r.configuration) for r in recs] == [  # lengths numerically, directions in their natural order
        {"seqlen": "1024", "direction": "fwd"}, {"seqlen": "1024", "direction": "bwd"},
        {"seqlen": "4096", "direction": "fwd"}]
    got = {c: (r.winner.label, r.runner_up.label, round(r.margin, 3), r.verdict.verdict)
           for c, r in _by_config(recs).items()}
    assert got == {
        ("1024", "fwd"): ("sdpa", "flex", 1.0, "better"),
        ("1024", "bwd"): ("sdpa", "flex", round(31 / 30 - 1, 3), "tie"),
        ("4096", "fwd"): ("flex", "sdpa", 1.0, "better"),  # the invalid blocksparse is no option
    }
    assert all(not r.predicted and r.options == 2 for r in recs)


@pytest.mark.parametrize("limit,expected", [
    (None, None),  # no limit: nothing to fit
    ("2GiB", "sdpa"),  # flex (3 GiB) is faster but does not fit
    ("4GiB", "flex"),
    ("0.5", None),  # half a GiB: neither fits
])
def test_the_fastest_option_within_a_memory_limit(limit, expected):
    rec = _by_config(recommend(_sweep(), memory_limit=None if limit is None else parse_memory(limit)))["4096", "fwd"]
    assert rec.memory == 3 << 30  # the winner's
    assert (rec.fits.label if rec.fits else None) == expected


def test_by_folds_the_fields_it_does_not_name_into_the_option():
    recs = recommend(_sweep(), by=["seqlen"])
    got = {c: (r.winner.label, r.options) for c, r in _by_config(recs).items()}
    assert got == {("1024",): ("sdpa direction=fwd", 4), ("4096",): ("flex direction=fwd", 2)}


def test_an_unknown_by_field_is_a_user_error():
    with pytest.raises(UserError, match="--by colour: not an identity field"):
        recommend(_sweep(), by=["colour"])


def test_predicted_records_are_recommended_apart_and_marked():
    measured = [_record("sdpa", 10.0, (9.9, 10.1), strategy="ring", world_size=8),
                _record("sdpa", 12.0, (11.9, 12.1), strategy="ulysses", world_size=8)]
    predicted = [{**_record("sdpa", 5.0, (5.0, 5.0), strategy="ring", world_size=8), "status": "predicted",
                  "key": "p-ring", "cluster": "dgx-h100", "model_version": "3"},
                 {**_record("sdpa", 4.0, (4.0, 4.0), strategy="ulysses", world_size=8), "status": "predicted",
                  "key": "p-ulysses", "cluster": "dgx-h100", "model_version": "3"}]
    recs = recommend(measured + predicted)
    assert [(r.predicted, r.winner.label) for r in recs] == [(False, "ring[sdpa]"), (True, "ulysses[sdpa]")]
    assert recs[1].source == "predicted on dgx-h100 (model v3)"
    tables = recommendation_tables(recs)
    assert len(tables) == 2 and "PREDICTED" in str(tables[1].title) and "PREDICTED" not in str(tables[0].title)


def test_a_single_option_is_said_so():
    rec, = recommend([_record("sdpa", 10.0, (9.0, 11.0))])
    assert rec.runner_up is None and rec.verdict is None and rec.answer == "only sdpa ran"


def _workload(phase: str, seqlen: int, median: float, **params) -> dict:
    r = _record(params.get("method", "sdpa"), median, (median * 0.99, median * 1.01), kind="workload",
                workload="hybrid_lm", phase=phase, direction=None, seqlen=seqlen, heads_q=None, params=params)
    r["key"] = f"{phase}-{seqlen}-{sorted(params.items())}"
    return r


def test_a_workloads_named_choices_are_options_and_its_sizes_configuration():
    r = _workload("prefill", 1024, 1.0, flavor="tiny", layers=2, pattern="LLLLLLLS", method="sdpa")
    assert identity(r)["params.flavor"] == "tiny" and identity(r)["params.layers"] == 2
    assert "params.pattern" not in identity(r) and "shape" not in identity(r)
    recs = recommend([_workload(phase, s, t * s / 1024, flavor="tiny", pattern=pattern, method="sdpa")
                      for phase in ("prefill", "train_step") for s in (1024, 4096)
                      for pattern, t in (("LLLLLLLS", 1.0), ("SSSSSSSS", 2.0))])
    assert {(tuple(v for _, v in r.configuration), r.winner.label, r.runner_up.label) for r in recs} == {
        (("1024", "prefill"), "hybrid_lm(pattern=LLLLLLLS)[sdpa]", "hybrid_lm(pattern=SSSSSSSS)[sdpa]"),
        (("1024", "train_step"), "hybrid_lm(pattern=LLLLLLLS)[sdpa]", "hybrid_lm(pattern=SSSSSSSS)[sdpa]"),
        (("4096", "prefill"), "hybrid_lm(pattern=LLLLLLLS)[sdpa]", "hybrid_lm(pattern=SSSSSSSS)[sdpa]"),
        (("4096", "train_step"), "hybrid_lm(pattern=LLLLLLLS)[sdpa]", "hybrid_lm(pattern=SSSSSSSS)[sdpa]"),
    }


def test_a_workloads_attention_parameter_is_its_kernel_in_the_label():
    recs = recommend([_workload("prefill", 256, t, flavor="tiny", method=m) for m, t in (("sdpa", 1.0),
                                                                                        ("blocksparse", 3.0))])
    assert [(r.winner.label, r.runner_up.label) for r in recs] == [("hybrid_lm[sdpa]", "hybrid_lm[blocksparse]")]


@pytest.mark.parametrize("text,expected", [("16GiB", 16 << 30), ("512MiB", 512 << 20), ("2.5GB", 2_500_000_000),
                                           ("1073741824B", 1 << 30), ("16", 16 << 30), ("1e3 mb", 10**9)])
def test_memory_limits_read_as_bytes(text, expected):
    assert parse_memory(text) == expected


@pytest.mark.parametrize("text", ["", "lots", "-1GiB", "0", "16 parsecs", "GiB"])
def test_bad_memory_limits_are_user_errors(text):
    with pytest.raises(UserError, match="--memory-limit"):
        parse_memory(text)


def test_recommendation_table_reads_without_collapsing():
    console = Console(width=240, record=True)
    console.print(recommendation_table(recommend(_sweep(), memory_limit=2 << 30)))
    text = console.export_text()
    for needed in ("seqlen", "direction", "fastest", "runner-up", "margin", "verdict", "tie", "better",
                   "+100.0%", "fastest within 2.0 GiB", "3.0 GiB", "p20-p80"):
        assert needed in text, needed


# ----- the CLI ---------------------------------------------------------------------------------------------------
def _store(path, records) -> str:
    store = ResultStore(path)
    session = store.start_session("s", {"hostname": "h"})
    for r in records:
        store.put(r, session, "s")
    return str(path)


def test_recommend_command(tmp_path, capsys):
    db = _store(tmp_path / "r.db", _sweep())
    assert main(["recommend", db, "--memory-limit", "2GiB"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "3 configurations: 2 better, 1 tie" in out and "blocksparse" not in out


@pytest.mark.parametrize("argv,message", [
    (["--by", "colour"], "not an identity field"),
    (["--memory-limit", "lots"], "--memory-limit 'lots'"),
])
def test_recommend_bad_input_is_one_line_and_exit_2(tmp_path, capsys, argv, message):
    db = _store(tmp_path / "r.db", _sweep())
    assert main(["recommend", db, *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1


def test_recommend_on_a_file_without_ok_runs_says_so(tmp_path, capsys):
    db = _store(tmp_path / "r.db", [_record("sdpa", 1.0, (1.0, 1.0), status="error", reason="boom")])
    assert main(["recommend", db]) == 2
    assert "no ok results" in capsys.readouterr().err


# ----- compare uses the same rule ----------------------------------------------------------------------------------
def test_compare_of_noisy_identical_code_is_not_worse():
    base = [_record("sdpa", 79.8, (57.7, 82.7), seqlen=s) for s in (128, 256)]
    new = [_record("sdpa", 137.5, (75.8, 1073.8), seqlen=128), _record("sdpa", 80.5, (58.0, 83.0), seqlen=256)]
    _, tally = compare_table(base, new)
    assert (tally["worse"], tally["inconclusive"], tally["tie"]) == (0, 1, 1)


def test_compare_of_a_clear_gap_is_a_verdict_with_its_reason(tmp_path, capsys):
    base = _store(tmp_path / "a.db", [_record("sdpa", 10.0, (9.9, 10.1)), _record("flex", 20.0, (19.8, 20.2))])
    new = _store(tmp_path / "b.db", [_record("sdpa", 20.0, (19.8, 20.2)), _record("flex", 10.0, (9.9, 10.1))])
    assert main(["compare", base, new]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "1 better, 1 worse, 0 tie, 0 inconclusive" in out and "spreads disjoint" in out


def test_an_option_measured_twice_counts_with_its_latest_record():
    old = _record("sdpa", 5.0, (4.9, 5.1), finished_at=100.0)
    new = {**_record("sdpa", 15.0, (14.9, 15.1), finished_at=200.0), "key": "sdpa-again"}
    rec, = recommend([new, old, _record("flex", 10.0, (9.9, 10.1), finished_at=150.0)])
    assert (rec.winner.label, rec.winner.median_ms, rec.runner_up.label) == ("flex", 10.0, "sdpa")


def test_two_options_of_zero_ms_tie():
    rec, = recommend([_record("sdpa", 0.0, (0.0, 0.0)), _record("flex", 0.0, (0.0, 0.0))])
    assert rec.verdict.verdict == "tie" and rec.margin is None
