"""One execution sequence for every kind: what a method declares (FLOPs, reference, local kernel) is what a
context-parallel run of it uses; results files and plugins of lcbench 0.1.0 keep working."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from harness import catalog
from harness.cli import main
from harness.cluster.launch import run_local
from harness.execution.single import execute
from harness.results.store import ResultStore
from harness.run import Run, Timing

ROOT = Path(__file__).resolve().parent.parent
QUICK = Timing(warmup=1, min_samples=3, min_run_time=0.01)
FIXTURE_DB = "tests/fixtures/results_v0_1_0.db"
FIXTURE_SUITE = "tests/fixtures/legacy_suite.yaml"


def run_local_with_plugins(run: Run) -> dict:
    """``run_local(run)`` in a fresh process that starts with ``LCBENCH_PLUGINS=tests.plugin_methods`` (ranks in
    other processes import the module too). A fresh process: in a long test session, ranks did not always see a
    plugin variable set mid-process (see the closing note of 2026-11-26)."""
    script = ("import json, sys; from harness.cluster.launch import run_local; from harness.run import Run; "
              "print(json.dumps(run_local(Run.from_dict(json.loads(sys.argv[1]))), default=str))")
    env = {**os.environ, "LCBENCH_PLUGINS": "tests.plugin_methods"}
    proc = subprocess.run([sys.executable, "-c", script, json.dumps(run.to_dict())], capture_output=True, text=True,
                          env=env, timeout=300, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def cp_run(method: str, direction: str = "fwd+bwd", **kw) -> Run:
    base = dict(method=method, strategy="ring_zigzag", mask="causal", seqlen=256, heads_q=4, heads_kv=2,
                head_dim=16, world_size=2, direction=direction, timing=QUICK, options={"block_q": 64, "block_k": 64})
    return Run.make(**{**base, **kw})


@pytest.mark.integration
def test_a_strategy_counts_its_local_methods_own_flops():
    """A non-softmax FLOP model (here: a made-up one) is honoured under context parallelism."""
    record = run_local_with_plugins(cp_run("bs_own_flops"))
    assert record["status"] == "ok", record["reason"]
    assert record["flops"] == 1e6 * len("fwd+bwd") * 4
    assert record["kernel"] == "bs_own_flops" and record["flop_convention"].startswith("test:")


@pytest.mark.integration
def test_a_strategy_is_gated_against_its_local_methods_reference():
    """A local method whose float64 reference disagrees with what the strategy computes fails the gate under
    CP: the reference used is the method's, not a hard-coded softmax one."""
    record = run_local_with_plugins(cp_run("bs_other_reference", direction="fwd"))
    assert record["status"] == "invalid", record["reason"]


@pytest.mark.integration
def test_peers_record_the_kernel_that_really_ran():
    assert catalog.get_strategy("torch_ring").kernel  # torch's own CPU flash op per ring step
    ours = run_local(cp_run("blocksparse", strategy="ulysses", direction="fwd"))
    assert ours["status"] == "ok" and ours["kernel"] == "blocksparse"
    peer = run_local(cp_run("blocksparse", strategy="torch_ring", direction="fwd"))
    assert peer["status"] == "ok", peer["reason"]
    assert peer["kernel"] == catalog.get_strategy("torch_ring").kernel != "blocksparse"


@pytest.mark.integration
def test_resume_on_a_results_file_of_lcbench_0_1_0_reruns_nothing(tmp_path, capsys):
    db = tmp_path / "old.db"
    shutil.copy(FIXTURE_DB, db)
    before = {r["key"]: r["finished_at"] for r in ResultStore(db).records()}
    assert len(before) == 24
    assert main(["run", FIXTURE_SUITE, "--results", str(db), "--resume", "--scheduler", "inline", "--quiet"]) == 0
    assert "24 of 24 runs already stored" in capsys.readouterr().err
    after = {r["key"]: r["finished_at"] for r in ResultStore(db).records()}
    assert after == before
    assert main(["show", str(db)]) == 0  # old records (no kind, no metrics) still show


def test_a_plugin_written_for_lcbench_0_1_0_loads_and_runs(monkeypatch):
    monkeypatch.setenv("LCBENCH_PLUGINS", "tests.legacy_plugin")
    catalog.methods.cache_clear()
    try:
        for direction in ("fwd", "fwd+bwd"):
            record = execute(Run.make(method="legacy_dense_sdpa", mask="causal_document", seqlen=256, heads_q=4,
                                      heads_kv=2, head_dim=16, direction=direction, timing=QUICK))
            assert record["status"] == "ok", record["reason"]
            assert record["flops"] > 0 and record["kind"] == "method"
    finally:
        catalog.methods.cache_clear()


def test_decode_runs_record_flops_of_their_rows_and_kv_bytes_read():
    run = Run.make(method="blocksparse", mask="sliding_window_causal", mask_params={"window": 64}, seqlen=1024,
                   heads_q=4, heads_kv=2, head_dim=16, direction="decode", decode_tokens=2, timing=QUICK)
    record = execute(run)
    assert record["status"] == "ok", record["reason"]
    assert record["area"] == (65 + 65) * 4  # two rows of a 64-token causal window, 4 heads
    assert record["flops"] == 4 * record["area"] * 16
    dense = execute(Run.make(**{**run.to_dict(), "method": "sdpa"}))
    assert dense["status"] == "ok"
    assert record["metrics"]["kv_bytes_read"] < dense["metrics"]["kv_bytes_read"] == 2 * 1024 * 2 * 16 * 4


# ----- plugins from outside the repository run on ranks as built-ins do -----------------------------------------

PLUGIN_STRATEGY = '''"""A context-parallel strategy plugin outside the repository: ulysses under its own name, looked up while
this module is imported (the catalog is re-entered mid-import)."""
from dataclasses import replace

from harness.catalog import get_method, get_strategy

_KERNEL = get_method("blocksparse")  # a method lookup first: the rank processes' forkserver builds methods() first
STRATEGIES = [replace(get_strategy("ulysses"), name="{name}", summary="ulysses, registered by a plugin")]
'''


def write_plugin(tmp_path: Path, module: str, strategy: str) -> Path:
    (tmp_path / f"{module}.py").write_text(PLUGIN_STRATEGY.format(name=strategy))
    return tmp_path


def test_a_plugin_imported_by_one_registry_is_in_every_registry(tmp_path, monkeypatch):
    """Whichever registry imports a plugin module first (here methods(), whose build imports the module, which
    itself asks for a strategy), the strategies registry still has the plugin's strategies."""
    monkeypatch.syspath_prepend(str(write_plugin(tmp_path, "lcbench_reentrant_plugin", "reentrant_ulysses")))
    monkeypatch.setenv(catalog.PLUGINS_ENV, "lcbench_reentrant_plugin")
    assert "blocksparse" in catalog.methods()
    assert catalog.get_strategy("reentrant_ulysses").summary == "ulysses, registered by a plugin"


@pytest.mark.integration
@pytest.mark.parametrize("world_size", [2, pytest.param(4, marks=pytest.mark.slow)])
def test_a_plugin_strategy_from_outside_the_repository_passes_its_gate_on_ranks(tmp_path, world_size):
    """``LCBENCH_PLUGINS`` naming a module on ``PYTHONPATH`` outside the repository: the ranks (forked from a
    forkserver that warmed the catalog) resolve its strategy, and the run passes its float64 gate."""
    plugin_dir = write_plugin(tmp_path, "lcbench_outside_plugin", "outside_ulysses")
    run = cp_run("blocksparse", strategy="outside_ulysses", world_size=world_size, options={})
    script = ("import json, sys; from harness.cluster.launch import run_local; from harness.run import Run; "
              "print(json.dumps(run_local(Run.from_dict(json.loads(sys.argv[1])), measure_memory=False), default=str))")
    env = {**os.environ, "LCBENCH_PLUGINS": "lcbench_outside_plugin",
           "PYTHONPATH": os.pathsep.join([str(ROOT), str(plugin_dir)])}
    proc = subprocess.run([sys.executable, "-c", script, json.dumps(run.to_dict())], capture_output=True, text=True,
                          env=env, timeout=300, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    record = json.loads(proc.stdout.strip().splitlines()[-1])
    assert record["status"] == "ok", record["reason"]
    assert record["strategy"] == "outside_ulysses" and record["world_size"] == world_size
