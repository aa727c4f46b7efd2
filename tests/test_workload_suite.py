"""The workload seam end to end: a suite with the shipped workload runs through the embedded Ray, lands in the
store, resumes without repeating anything, and is exported, compared and plotted with its metrics."""

import csv
import io

import pytest

from harness.cli import main
from harness.results.store import ResultStore
from suites.loader import load_suite

pytestmark = pytest.mark.integration  # real Ray / process groups / the CLI end to end


@pytest.fixture(scope="module")
def swept(tmp_path_factory):
    db = tmp_path_factory.mktemp("workloads") / "w.db"
    assert main(["run", "attention_layer", "--profile", "smoke", "--results", str(db), "--quiet"]) == 0
    return db


def test_every_run_of_the_smoke_profile_is_stored_ok_with_metrics(swept):
    suite = load_suite("attention_layer", "smoke")
    records = ResultStore(swept).records()
    assert {r["key"] for r in records} == {r.key for r in suite.runs}
    for r in records:
        assert r["status"] == "ok", (r["phase"], r["reason"])
        assert r["kind"] == "workload" and r["scheduler"] == "ray"
        assert r["metrics"]["tokens_per_s"] > 0 and r["flops"] > 0
        assert r["kernel"] == r["resolved_params"]["method"]  # the attention method the layer really ran
    decode = [r for r in records if r["phase"] == "decode"]
    assert decode and all(r["metrics"]["ms_per_token"] > 0 and r["facts"]["kv_cache_bytes"] > 0 for r in decode)


def test_resume_runs_nothing_again(swept, capsys):
    before = {r["key"]: r["finished_at"] for r in ResultStore(swept).records()}
    assert main(["run", "attention_layer", "--profile", "smoke", "--results", str(swept), "--resume", "--quiet"]) == 0
    after = {r["key"]: r["finished_at"] for r in ResultStore(swept).records()}
    assert after == before


def test_export_compare_and_plot_carry_the_workload_metrics(swept, tmp_path, capsys):
    out = tmp_path / "w.csv"
    assert main(["export", str(swept), "--format", "csv", "-o", str(out)]) == 0
    rows = list(csv.DictReader(io.StringIO(out.read_text())))
    assert rows and {"metric.tokens_per_s", "metric.ms_per_token", "fact.kv_cache_bytes", "fact.parameters"} <= set(rows[0])
    capsys.readouterr()
    assert main(["compare", str(swept), str(swept)]) == 0
    text = capsys.readouterr().out
    assert "tokens_per_s" in text and "1.000" in text
    plots = tmp_path / "plots"
    assert main(["plot", str(swept), "-o", str(plots)]) == 0
    assert any(p.suffix == ".png" for p in plots.iterdir())
