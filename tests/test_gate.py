"""The correctness gate, parametrised over the method registry: a new method is checked for free.

Every available method must pass on every mask pattern example, dtype and direction it claims; the gate
itself must catch wrong kernels.
"""

import re

import pytest
import torch

from harness.execution.gate import check_method, gate_rows, run_seed
from harness.masks import build_mask
from harness.catalog import methods
from harness.interfaces import Method, Problem
from harness.execution.validate import validate_method

# Methods whose compile step makes a full sweep slow on 2 cores get the full matrix only with -m slow.
QUICK_MASKS = ["causal", "sliding_window", "causal_document"]
COMPILED = {"flex"}


def method_params():
    for name in methods():
        marks = [pytest.mark.slow] if name in COMPILED else []
        yield pytest.param(name, marks=marks, id=name)


@pytest.mark.parametrize("name", method_params())
def test_method_passes_gate_on_every_claimed_mask(name):
    method = methods()[name]
    checks = list(validate_method(method))
    if method.unavailable_reason():
        assert all(c.status == "unavailable" for c in checks)
        pytest.skip(f"unavailable here: {method.unavailable_reason()}")
    bad = [(c.mask, c.params, c.dtype, c.direction, c.detail) for c in checks if c.status == "invalid"]
    assert not bad, bad
    assert any(c.status == "ok" for c in checks)


@pytest.mark.parametrize("name", [n for n in methods() if n in COMPILED])
def test_compiled_methods_pass_gate_on_core_masks(name):
    method = methods()[name]
    if method.unavailable_reason():
        pytest.skip(method.unavailable_reason())
    checks = list(validate_method(method, QUICK_MASKS))
    assert not [c for c in checks if c.status == "invalid"]


def _ignores_mask(problem: Problem):
    def fn(q, k, v):
        out = torch.nn.functional.scaled_dot_product_attention(
            q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), enable_gqa=True
        )
        return out.transpose(1, 2)

    return fn


def _wrong_gradient(problem: Problem):
    class Bad(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            return x.clone()

        @staticmethod
        def backward(ctx, g):
            return g * 1.01

    base = methods()["naive"].build(problem)
    return lambda q, k, v: Bad.apply(base(q, k, v))


@pytest.mark.parametrize("builder,with_grad", [(_ignores_mask, False), (_wrong_gradient, True)])
def test_gate_catches_wrong_kernels(builder, with_grad):
    mask = build_mask("causal", 256)
    problem = Problem(mask, 1, 256, 4, 2, 16, torch.float32, torch.device("cpu"))
    q, k, v = (torch.randn(1, 256, h, 16) for h in (4, 2, 2))
    result = check_method(builder(problem), q, k, v, mask, problem.scale, with_grad)
    assert not result.ok and "failed correctness gate" in result.reason


def test_broken_probe_reports_instead_of_raising():
    def probe():
        raise RuntimeError("driver mismatch")

    m = Method(name="broken", summary="x", build=lambda p: None, probe=probe)
    assert m.unavailable_reason() == "probe failed: RuntimeError: driver mismatch"


def test_a_run_failing_the_gate_is_stored_as_invalid_without_a_valid_number(monkeypatch):
    from rich.console import Console

    from harness.execution.single import execute
    from harness.results.report import results_table
    from harness.run import Run

    monkeypatch.setenv("LCBENCH_PLUGINS", "tests.fault_injection")
    methods.cache_clear()
    try:
        run = Run.make(method="fault_wrong", mask="causal", seqlen=128, heads_q=2, heads_kv=1, head_dim=16,
                       timing={"warmup": 1, "min_samples": 3, "min_run_time": 0.0})
        record = execute(run)
    finally:
        monkeypatch.delenv("LCBENCH_PLUGINS")
        methods.cache_clear()
    assert record["status"] == "invalid" and "failed correctness gate" in record["reason"]
    # the stored reason names the tensor, the place and the ratio to eager PyTorch in the same dtype
    assert re.search(r"out error \S+ at row \d+, head \d+ is \S+x the eager float32 error", record["reason"])
    console = Console(width=250, record=True)
    console.print(results_table([record]))
    text = console.export_text()
    assert "invalid" in text and f"{record['time_ms_median']:.2f}" not in text  # measured, never shown as valid


def test_checked_rows_are_drawn_afresh_per_run_and_reproducibly_from_its_key():
    from harness.run import Run

    mask = build_mask("causal_document", 1 << 16, 1)  # long enough that rows are sampled, not all checked
    runs = [Run.make(method="sdpa", mask="causal_document", seqlen=1 << 16, heads_q=1, heads_kv=1, head_dim=16,
                     dtype=dtype) for dtype in ("float32", "bfloat16")]
    first, second = (gate_rows(mask.seqlen, mask, run_seed(run.key)) for run in runs)
    assert not first.equal(second)
    assert gate_rows(mask.seqlen, mask, run_seed(runs[0].key)).equal(first)
