"""The allocator policy (``lcbench --malloc``): what it sets, that it takes effect, and that it is recorded."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from harness.execution import allocator
from harness.execution.machine import machine_info

# minor page faults per call of lightning's forward at S = 32K (a 64 MiB output, above glibc's 32 MiB mmap ceiling), after
# a warm-up call; printed by a child process started with the policy's environment
FAULTS = """
import resource
from harness.bench.build import build_run
from harness.run import Run
call = build_run(Run.make(method="lightning", mask="causal", seqlen=32768, heads_q=4, heads_kv=4, head_dim=128,
                          direction="fwd"))[0].call
call()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(3):
    call()
print((resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) // 3)
"""


def _env_without_tunables() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k != "GLIBC_TUNABLES"}


def _faults_per_call(env: dict[str, str]) -> int:
    out = subprocess.run([sys.executable, "-c", FAULTS], env=env, capture_output=True, text=True, check=True)
    return int(out.stdout)


def test_keep_adds_its_tunables_to_the_ones_already_set():
    env = allocator.environment("keep", {"GLIBC_TUNABLES": "glibc.malloc.arena_max=2"})
    assert env["GLIBC_TUNABLES"] == "glibc.malloc.arena_max=2:" + allocator.KEEP_TUNABLES
    assert allocator.applied("keep", env) and allocator.environment("keep", env) == env
    assert not allocator.applied("keep", {}) and allocator.applied("default", {})


def test_the_record_says_which_allocator_ran():
    assert allocator.describe({}) == "glibc default"
    assert allocator.describe(allocator.environment("keep", {})).startswith("keep: GLIBC_TUNABLES=")
    assert allocator.describe({"LD_PRELOAD": "libjemalloc.so.2"}) == "LD_PRELOAD=libjemalloc.so.2"
    assert machine_info()["allocator"] == allocator.describe()


@pytest.mark.integration
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc tunables")
def test_keep_reuses_freed_memory_of_a_kernel_output_above_glibcs_mmap_ceiling():
    """A kernel whose output is 64 MiB: under ``keep`` the freed memory is reused call after call (almost no
    page faults). glibc's default maps such an output afresh and faults its pages in again — on most calls:
    this machine showed 0 and ~16K faults per call in different processes, so the default side is reported
    here, not asserted."""
    keep = _faults_per_call(allocator.environment("keep", _env_without_tunables()))
    pages = (64 << 20) // os.sysconf("SC_PAGE_SIZE")
    assert keep < pages // 100, f"{keep} faults per call under keep; by default: " \
                                f"{_faults_per_call(_env_without_tunables())}"


@pytest.mark.integration
def test_the_cli_restarts_itself_once_under_keep(tmp_path):
    """Every Python start appends its GLIBC_TUNABLES to a log (a ``sitecustomize`` on the path): the command
    starts without them, re-executes once with them, and runs."""
    log = tmp_path / "starts.log"
    (tmp_path / "sitecustomize.py").write_text(
        f"import os\nwith open({str(log)!r}, 'a') as f:\n    f.write(os.environ.get('GLIBC_TUNABLES', '-') + '\\n')\n")
    env = _env_without_tunables()
    env["PYTHONPATH"] = os.pathsep.join([str(tmp_path), *filter(None, [env.get("PYTHONPATH")])])
    code = "from harness.cli import main; raise SystemExit(main(['--malloc', 'keep', 'list', 'strategies']))"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "ring" in out.stdout
    assert log.read_text().splitlines() == ["-", allocator.KEEP_TUNABLES]


def test_restart_is_a_no_op_where_the_policy_already_holds(monkeypatch):
    monkeypatch.setattr(os, "execve", lambda *a: pytest.fail("re-executed under a policy already in force"))
    allocator.restart_with("default", ["list", "methods"])
    monkeypatch.setenv("GLIBC_TUNABLES", allocator.KEEP_TUNABLES)
    allocator.restart_with("keep", ["list", "methods"])
