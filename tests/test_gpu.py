"""GPU tests (marked ``gpu``; they skip without CUDA) and the CPU-side checks of ``python -m harness.gpu_check``.

``make gpu-check`` runs the ``gpu``-marked tests of this file on a CUDA machine: each CUDA kernel against the
float64 reference through the executor's gate (:func:`harness.execution.gate.check_method`), bf16, fwd+bwd,
at S=1024 and 4096; decode steps on CUDA; and one run through the whole single-device executor.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from harness import gpu_check
from harness.catalog import get_method, methods
from harness.masks import build_mask
from harness.run import Run

ROOT = Path(__file__).resolve().parent.parent
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
CUDA = torch.device("cuda")
SHAPE = dict(heads_q=8, heads_kv=4, head_dim=64, dtype="bfloat16", device="cuda")
DECODE_METHODS = sorted(m.name for m in methods().values() if m.decode and "cuda" in m.devices)


def _available(name: str) -> None:
    """Skip a library method whose probe fails here (sdpa is part of torch: never skipped)."""
    why = get_method(name).unavailable_reason()
    if why and name != "sdpa":
        pytest.skip(f"{name}: {why}")
    assert why is None, why


def _gate(run: Run):
    from harness.execution.gate import check_method, run_seed
    from harness.execution.inputs import make_inputs, problem_for

    method = get_method(run.method)
    problem = problem_for(run, CUDA)
    why = method.unsupported_reason(problem)
    assert why is None, f"{run.method} claims it cannot run {run.label}: {why}"
    fn = method.build(problem)
    q, k, v = make_inputs(run, CUDA)
    if problem.is_decode:
        q = q[:, problem.q_offset:].contiguous()
    return check_method(fn, q, k, v, problem.mask, problem.scale, with_grad=problem.needs_grad,
                        reference=method.reference, q_offset=problem.q_offset, seed=run_seed(run.key))


@pytest.mark.gpu
@needs_cuda
@pytest.mark.parametrize("seqlen", [1024, 4096])
@pytest.mark.parametrize("mask,params", [("causal", {}), ("sliding_window_causal", {"window": 256})])
@pytest.mark.parametrize("method", ["sdpa", "cudnn_sdpa", "flex_cuda"])
def test_cuda_kernel_matches_float64_fwd_bwd(method: str, mask: str, params: dict, seqlen: int) -> None:
    _available(method)
    missing = build_mask(mask, seqlen, SHAPE["heads_q"], **params).features - get_method(method).mask_features
    if missing:
        pytest.skip(f"{method} does not claim the mask feature {', '.join(sorted(missing))}")
    run = Run.make(method=method, mask=mask, mask_params=params, seqlen=seqlen, direction="fwd+bwd", **SHAPE)
    result = _gate(run)
    assert result.ok, result.failure
    assert set(result.errors) == {"out", "dq", "dk", "dv"}


@pytest.mark.gpu
@needs_cuda
@pytest.mark.parametrize("method", DECODE_METHODS)
def test_decode_on_cuda_matches_float64(method: str) -> None:
    _available(method)
    run = Run.make(method=method, mask="causal", seqlen=4096, direction="decode", decode_tokens=4, **SHAPE)
    result = _gate(run)
    assert result.ok, result.failure


@pytest.mark.gpu
@needs_cuda
def test_executor_times_sdpa_on_cuda() -> None:
    from harness.execution.single import execute

    record = execute(Run.make(method="sdpa", mask="causal", seqlen=4096, direction="fwd", **SHAPE))
    assert record["status"] == "ok", record["reason"]
    assert record["time_ms_median"] > 0 and record["tflops"] > 0 and record["peak_mem_bytes"] > 0


# ----- the check itself, on any machine -----------------------------------------------------------------
@pytest.mark.integration
def test_gpu_check_without_cuda_has_nothing_to_check(tmp_path: Path) -> None:
    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA device")
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}
    proc = subprocess.run([sys.executable, "-m", "harness.gpu_check", "--results", str(tmp_path / "g.db"),
                           "--summary", str(tmp_path / "g.txt")], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == gpu_check.NO_DEVICE
    assert not (tmp_path / "g.db").exists() and not (tmp_path / "g.txt").exists()


@pytest.mark.integration
def test_gpu_check_path_needs_no_ray() -> None:
    """With ``ray`` unimportable, everything the check runs imports and the catalog loads."""
    code = (
        "import sys; sys.modules['ray'] = None\n"
        "import harness.gpu_check, harness.cluster.sweep, harness.cluster.inline_scheduler, harness.execution.single, harness.results.store\n"
        "from harness.catalog import methods; methods()\n"
        "from harness.cluster.inline_scheduler import InlineScheduler; InlineScheduler()\n"
        "print(harness.gpu_check.gpu_methods() if harness.gpu_check.cuda_available() else 'cpu')\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]


def test_gpu_tests_are_found_by_marker() -> None:
    files = [Path(f).name for f in gpu_check.gpu_test_files()]
    assert "test_gpu.py" in files and "test_bench.py" not in files


def test_suite_covers_each_method_with_decode_when_it_has_one() -> None:
    runs = gpu_check.suite_runs("sdpa", decode=True)
    combos = len(gpu_check.SUITE_MASKS) * len(gpu_check.SUITE_SEQLENS) * len(gpu_check.SUITE_DIRECTIONS)
    assert len(runs) == combos + 1 and runs[-1].direction == "decode"
    assert all(r.device == "cuda" and r.dtype == "bfloat16" for r in runs)
    assert len({r.key for r in runs}) == len(runs)
    assert len(gpu_check.suite_runs("flex_cuda", decode=False)) == combos


def test_summary_reports_failures_and_verdict(tmp_path: Path) -> None:
    def rec(method, status, ms=None, tflops=None, direction="fwd", seqlen=gpu_check.SUITE_SEQLENS[-1]):
        return dict(method=method, mask="causal", seqlen=seqlen, direction=direction, status=status,
                    reason=None if status == "ok" else "boom", time_ms_median=ms, tflops=tflops)

    suite = gpu_check.SuiteOutcome(records=[rec("sdpa", "ok", 1.25, 300.0), rec("sdpa", "unsupported"),
                                            rec("flex_cuda", "error")], not_run=["natten"], seconds=3)
    tests = gpu_check.TestOutcome(0, "12 passed", ["tests/test_gpu.py"], 5)
    text = gpu_check.summary_text(tests, suite, "Fake GPU", tmp_path / "g.db")
    assert "12 passed" in text and "1.250" in text and "300.0" in text
    assert "FAILED flex_cuda causal" in text and "not run (time share spent): natten" in text
    assert text.splitlines()[-1] == "verdict: FAIL"
    suite.records.pop()
    assert gpu_check.summary_text(tests, suite, "Fake GPU", tmp_path / "g.db").endswith("verdict: PASS")


@pytest.mark.integration
def test_a_method_starts_no_run_once_its_share_of_the_time_is_spent() -> None:
    import time

    runs = [Run.make(method="sdpa", mask="causal", seqlen=s, direction="fwd", heads_q=2, heads_kv=2, head_dim=16,
                     timing=gpu_check.Timing(warmup=1, min_samples=2, min_run_time=0.0, max_samples=2))
            for s in (32, 64)]
    spent = gpu_check.UntilScheduler(deadline=time.perf_counter() - 1)
    assert list(spent.run(runs)) == [] and spent.left == 2
    ample = gpu_check.UntilScheduler(deadline=time.perf_counter() + 600)
    records = list(ample.run(runs))
    assert [r["status"] for r in records] == ["ok", "ok"] and ample.left == 0


def test_an_unknown_method_is_a_clear_error() -> None:
    proc = subprocess.run([sys.executable, "-m", "harness.gpu_check", "--methods", "sdpa,fla_chunk_simple_gal"],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "unknown method 'fla_chunk_simple_gal'; did you mean 'fla_chunk_simple_gla'" in proc.stderr


def test_a_named_method_that_cannot_run_here_is_reported(tmp_path: Path) -> None:
    import time

    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA device")
    suite = gpu_check.run_suite(tmp_path / "g.db", time.perf_counter() + 60, ["naive"])
    assert suite.records == [] and suite.not_run == ["naive (not runnable here)"]


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_sdpa_refuses_dtypes_its_cuda_kernels_do_not_take(dtype: str) -> None:
    from harness.interfaces import Problem
    from harness.masks import build_mask

    problem = Problem(mask=build_mask("causal", 256, 2), seqlen=256, dtype=getattr(torch, dtype),
                      device=torch.device("cuda"), direction="fwd", batch=1, heads_q=2, heads_kv=2, head_dim=16)
    assert "on CUDA" in get_method("sdpa").unsupported_reason(problem)
    cpu = Problem(mask=build_mask("causal", 256, 2), seqlen=256, dtype=getattr(torch, dtype),
                  device=torch.device("cpu"), direction="fwd", batch=1, heads_q=2, heads_kv=2, head_dim=16)
    assert get_method("sdpa").unsupported_reason(cpu) is None
