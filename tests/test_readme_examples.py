"""The README's "Adding a method, a strategy or a workload" examples are complete plugins: each is cut out of
the README, loaded through ``LCBENCH_PLUGINS`` and held to the checks every built-in entry meets — the method to
its float64 gate on every mask, dtype and direction it claims, the workload to its own check on every phase,
the strategy to its float64 gate on two ranks."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from harness import catalog
from harness.execution.single import execute
from harness.execution.validate import validate_method
from harness.run import Run, Timing

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = re.compile(r"```python\n# my_plugins/(\w+)\.py\n(.*?)```", re.DOTALL)
QUICK = Timing(warmup=1, min_samples=2, min_run_time=0.0)


def examples() -> dict[str, str]:
    return {name: code for name, code in EXAMPLE.findall((ROOT / "README.md").read_text())}


@pytest.fixture
def plugins(tmp_path, monkeypatch) -> Path:
    package = tmp_path / "my_plugins"
    package.mkdir()
    (package / "__init__.py").write_text("")
    for name, code in examples().items():
        (package / f"{name}.py").write_text(code)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv(catalog.PLUGINS_ENV, ",".join(f"my_plugins.{name}" for name in examples()))
    yield tmp_path
    monkeypatch.delenv(catalog.PLUGINS_ENV)
    for registry in (catalog.methods, catalog.strategies, catalog.workloads):
        registry.cache_clear()


def test_the_readme_shows_one_example_of_each_kind():
    assert set(examples()) == {"dense_sdpa", "gather_kv", "one_call"}


def test_the_method_example_passes_its_gate(plugins):
    checks = list(validate_method(catalog.get_method("dense_sdpa")))
    assert not [c for c in checks if c.status == "invalid"], [c.detail for c in checks if c.status == "invalid"]
    assert sum(c.status == "ok" for c in checks) >= 50


def test_the_workload_example_runs_checked_and_measured(plugins):
    record = execute(Run.make(workload="one_call", mask="causal_document", seqlen=256, phase="prefill",
                              timing=QUICK))
    assert record["status"] == "ok", record["reason"]
    assert record["metrics"]["tokens_per_s"] > 0 and record["flops"] > 0


@pytest.mark.integration
def test_the_strategy_example_passes_its_gate_on_two_ranks(plugins):
    run = Run.make(method="blocksparse", strategy="gather_kv", mask="causal_document", seqlen=256, heads_q=4,
                   heads_kv=2, head_dim=16, world_size=2, direction="fwd", timing=QUICK)
    script = ("import json, sys; from harness.cluster.launch import run_local; from harness.run import Run; "
              "print(json.dumps(run_local(Run.from_dict(json.loads(sys.argv[1])), measure_memory=False), default=str))")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(plugins)])}
    proc = subprocess.run([sys.executable, "-c", script, json.dumps(run.to_dict())], capture_output=True, text=True,
                          env=env, timeout=300, cwd=plugins)
    assert proc.returncode == 0, proc.stderr[-2000:]
    record = json.loads(proc.stdout.strip().splitlines()[-1])
    assert record["status"] == "ok", record["reason"]
    assert json.loads(record["comm_bytes"]) and record["strategy"] == "gather_kv"
