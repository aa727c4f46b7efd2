"""The test-time-training suite: qTTT on HF Qwen3 (checks, FLOP model vs FlopCounterMode), the score-dilution
sandbox, and the ttt_linear method (dual form vs primal form in float64, vs fla-core's reference)."""

from __future__ import annotations

import math
import warnings

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from harness.catalog import get_method, get_strategy, get_workload
from harness.errors import UserError
from harness.interfaces import Problem, WorkloadProblem
from harness.masks import build_mask
from harness.run import Run
from methods import _ttt_linear as ttt
from methods.ttt_linear import FLA_PEER, METHOD, fla_probe

transformers = pytest.importorskip("transformers")

from workloads import qttt  # noqa: E402  (after the importorskip)
from workloads.models import qwen3  # noqa: E402


def problem(workload: str, phase: str, seqlen: int, dtype: str = "float32", decode_tokens: int = 1,
            **params) -> WorkloadProblem:
    w = get_workload(workload)
    run = Run.make(workload=workload, params=params, seqlen=seqlen, dtype=dtype, phase=phase, device="cpu",
                   decode_tokens=decode_tokens)
    return WorkloadProblem(run=run, params=w.resolve_params(params), dtype=getattr(torch, dtype),
                           device=torch.device("cpu"), method=get_method, strategy=get_strategy)


def executed_attention(shape: qwen3.ModelShape):
    """What ``naive`` executes per layer: the full (rows x keys) score rectangle, forward 4*rows*keys*d per q head;
    with a frozen cache autograd computes only dP and dQ (K and V need no gradient): the same again."""
    return lambda rows, start, keys, direction: 4.0 * shape.head_dim * shape.heads_q * rows * keys


# ----- qTTT ------------------------------------------------------------------------------------------------

def test_step_changes_only_wq_keeps_cache_and_restores() -> None:
    state = qttt.QTTT.build(problem("qttt", "ttt_step", 320, steps=3, span=64), 320)
    state.session.prefill(320)
    state.start_training()
    result = qttt.check_only_wq(state, steps=3)
    assert result.ok, result.detail
    assert result.errors["wq_changed"] == state.shape.layers


@pytest.mark.parametrize("method", ["sdpa", "naive"])
def test_step_gradient_equals_float64_autograd(method: str) -> None:
    state = qttt.QTTT.build(problem("qttt", "ttt_step", 300, method=method, steps=2, span=64), 300)
    result = qttt.check_gradient(state)
    assert result.ok, result.detail
    assert result.errors["dwq"] < 1e-5 and result.errors["dwq"] > 0


def test_gradient_check_fails_on_a_wrong_gradient() -> None:
    """The check can fail: a model whose W_Q differs from its twins' is caught."""
    state = qttt.QTTT.build(problem("qttt", "ttt_step", 300, steps=2, span=64), 300)
    twin = qttt._sessions

    def tampered(st, capacity):
        sessions = twin(st, capacity)
        with torch.no_grad():
            qwen3.q_weights(sessions["got"].model)[0].mul_(1.01)
        return sessions

    qttt._sessions = tampered
    try:
        result = qttt.check_gradient(state)
    finally:
        qttt._sessions = twin
        with torch.no_grad():
            qwen3.q_weights(state.model)[0].div_(1.01)
    assert not result.ok


@pytest.mark.parametrize("phase", ["prefill", "decode"])
def test_logits_equal_float64_twin(phase: str) -> None:
    wp = problem("qttt", phase, 256, decode_tokens=3, method="sdpa")
    step = get_workload("qttt").build(wp)
    assert step.check().ok


def test_total_restores_every_parameter() -> None:
    wp = problem("qttt", "qttt_total", 200, steps=2, span=32, answer_tokens=2)
    step = get_workload("qttt").build(wp)
    result = step.check()
    assert result.ok, result.detail


@pytest.mark.parametrize("seqlen", [384, 1024])
def test_flop_model_matches_flop_counter(seqlen: int) -> None:
    """Step, decode step and prefill FLOPs modelled vs FlopCounterMode (naive attention: sdpa's CPU flash op
    is not counted), within 5% (they agree exactly)."""
    state = qttt.QTTT.build(problem("qttt", "ttt_step", seqlen, method="naive", steps=2, span=64), seqlen)
    att = executed_attention(state.shape)
    state.session.prefill(seqlen)
    state.start_training()
    cases = [
        (state.step, qwen3.step_flops(state.shape, state.starts[0], 64, att).total),
        (lambda: state.session.decode(seqlen - 1, 1), qwen3.decode_flops(state.shape, seqlen - 1, att)),
        (lambda: state.session.prefill(seqlen), qwen3.prefill_flops(state.shape, seqlen, att)),
    ]
    for call, model in cases:
        with FlopCounterMode(display=False) as counter:
            call()
        assert counter.get_total_flops() == pytest.approx(model, rel=0.05)


def test_equal_flop_thinking_tokens_and_attention_shares() -> None:
    wp = problem("qttt", "ttt_step", 2048, steps=32, span=128, span_at="end")
    state = qttt.QTTT.build(wp, 2048)
    shares = state.share_metrics()
    per_step = state.step_flops(state.starts[0]).total
    assert shares["thinking_tokens"] == pytest.approx(32 * per_step / state.decode_flops(2048, 1))
    # softmax convention: attention backward = 2.5x forward, of which dK/dV = 1.0x forward
    f = state.fields()
    assert f["step_attention_bwd_flops"] == pytest.approx(2.5 * f["step_attention_fwd_flops"])
    assert shares["attention_kv_grad_share"] == pytest.approx(f["step_attention_fwd_flops"] / f["step_flops"])


def test_flex_rejected_for_steps_and_bad_params() -> None:
    w = get_workload("qttt")
    assert w.unsupported_reason(problem("qttt", "ttt_step", 512, method="flex"))  # no CPU backward (or no compiler)
    # a span_at outside its choices is the user's mistake, refused when the parameters resolve (issue 25)
    with pytest.raises(UserError, match="span_at='middle' is not allowed; expected one of 'random', 'end'"):
        w.unsupported_reason(problem("qttt", "ttt_step", 512, span_at="middle"))
    assert "shorter" in w.unsupported_reason(problem("qttt", "ttt_step", 100, span=128))


# ----- score dilution -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("seqlen", [1024, 8192])
def test_mass_matches_the_analytic_dilution(seqlen: int) -> None:
    step = get_workload("score_dilution").build(problem("score_dilution", "mass", seqlen))
    assert step.check().ok
    m = step.metrics(1e-3)
    assert m["mass"] == pytest.approx(1 / (1 + (seqlen - 1) * math.exp(-4.0)), rel=1e-4)


def test_restoring_steps_grow_with_context() -> None:
    steps = []
    for seqlen in (256, 4096):
        m = get_workload("score_dilution").build(problem("score_dilution", "restore", seqlen)).metrics(1.0)
        assert m["restored"] == 1.0 and m["margin_reached"] >= m["margin_needed"] - 0.1
        steps.append(m["steps"])
    assert steps[1] > steps[0]


# ----- ttt_linear -------------------------------------------------------------------------------------------

def _qkv(b=1, s=53, h=2, f=16, dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(b, s, h, f, generator=g, dtype=dtype) for _ in range(3)]


def test_dual_form_equals_primal_form_forward_and_backward() -> None:
    q, k, v = (t.requires_grad_(True) for t in _qkv())
    w0 = ttt.initial_weights(2, 16, 0, torch.float64, q.device).requires_grad_(True)  # trainable, as in a TTT layer
    dout = torch.randn(1, 53, 2, 16, dtype=torch.float64)
    a = ttt.dual(q, k, v, w0, 0.03)
    b = ttt.primal(q, k, v, w0, 0.03)
    assert torch.allclose(a, b, atol=1e-12)
    ga = torch.autograd.grad(a, (q, k, v, w0), dout)
    gb = torch.autograd.grad(b, (q, k, v, w0), dout)
    for x, y in zip(ga, gb):
        assert torch.allclose(x, y, atol=1e-11)


def test_the_written_out_vjp_of_the_inner_gradient_equals_autograd() -> None:
    """The dual form's backward differentiates ``ln_l2_grad`` in closed form: check it against float64 autograd
    (rows with large and tiny variance; the target is differentiated too)."""
    g = torch.Generator().manual_seed(1)
    z = torch.randn(3, 16, 24, generator=g, dtype=torch.float64) * torch.tensor([1e-2, 1.0, 30.0]).view(3, 1, 1)
    z.requires_grad_(True)
    target = torch.randn(3, 16, 24, generator=g, dtype=torch.float64, requires_grad=True)
    c = torch.randn(3, 16, 24, generator=g, dtype=torch.float64)
    out, z_hat, std = ttt._ln_l2_grad(z, target)
    want = torch.autograd.grad(out, (z, target), c)
    got = ttt.ln_l2_grad_vjp(c, out.detach(), z_hat.detach(), std.detach(), target.detach())
    for x, y in zip(got, want):
        assert torch.allclose(x, y, rtol=1e-10, atol=1e-12)


def test_dual_form_is_causal_and_learns() -> None:
    q, k, v = _qkv(s=64)
    w0 = ttt.initial_weights(2, 16, 0, torch.float64, q.device)
    out = ttt.dual(q, k, v, w0, 0.03)
    k2 = k.clone()
    k2[:, 40:] += 1.0
    out2 = ttt.dual(q, k2, v, w0, 0.03)
    assert torch.equal(out[:, :40], out2[:, :40]) and not torch.allclose(out[:, 40:], out2[:, 40:])
    assert not torch.allclose(out, ttt.dual(q, k, v, w0, 0.0))  # eta matters: the inner model trains


def test_ttt_linear_method_flops_match_flop_counter() -> None:
    prob = Problem(mask=build_mask("causal", 256, 2), batch=1, seqlen=256, heads_q=2, heads_kv=2, head_dim=16,
                   dtype=torch.float32, device=torch.device("cpu"), direction="fwd+bwd")
    fn = METHOD.build(prob)
    q, k, v = (t.float().requires_grad_(True) for t in _qkv(s=256))
    with FlopCounterMode(display=False) as counter:
        out = fn(q, k, v)
    assert counter.get_total_flops() == pytest.approx(METHOD.flops(prob, "fwd"), rel=0.05)
    with FlopCounterMode(display=False) as counter:
        out.sum().backward()
    assert counter.get_total_flops() == pytest.approx(METHOD.flops(prob, "bwd"), rel=0.05)


def test_ttt_linear_rejects_non_causal_masks() -> None:
    prob = Problem(mask=build_mask("full", 64, 2), batch=1, seqlen=64, heads_q=2, heads_kv=2, head_dim=16,
                   dtype=torch.float32, device=torch.device("cpu"))
    assert METHOD.unsupported_reason(prob)


@pytest.mark.skipif(fla_probe() is not None, reason="fla-core not installed")
def test_fla_reference_equals_our_primal_form_with_its_conventions() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        prob = Problem(mask=build_mask("causal", 53, 2), batch=1, seqlen=53, heads_q=2, heads_kv=2, head_dim=16,
                       dtype=torch.float32, device=torch.device("cpu"))
        q, k, v = (t.float() for t in _qkv())
        got = FLA_PEER.build(prob)(q, k, v)
    ref = FLA_PEER.reference(q, k, v, prob.mask, prob.scale, torch.arange(53), None)["out"]
    assert torch.allclose(got.double(), ref, atol=1e-5)
    ours = METHOD.reference(q, k, v, prob.mask, prob.scale, torch.arange(53), None)["out"]
    assert not torch.allclose(ours, ref, atol=1e-3)  # the conventions differ (q scale, output residual)


def _executed_methods():
    """The methods qTTT runs here that state what they execute (``Method.executed_flops``)."""
    for name, method in catalog_methods().items():
        if method.executed_flops is None or "cpu" not in method.devices or not method.backward:
            continue
        yield name


def catalog_methods():
    from harness.catalog import methods

    return methods()


@pytest.mark.parametrize("method", list(_executed_methods()))
def test_thinking_tokens_are_stated_for_the_flops_spent_and_the_flops_needed(method: str) -> None:
    """Spent: the steps as executed over a decode step as executed. Needed: dQ-only steps (1.5x the exact-area
    forward) over a decode step by the method's convention. A fused backward (sdpa) spends more than needed."""
    wp = problem("qttt", "ttt_step", 1024, method=method, steps=4, span=64, span_at="end")
    state = qttt.QTTT.build(wp, 1024)
    shares = state.share_metrics()
    T, start = 1024, state.starts[0]
    spent = qwen3.step_flops(state.shape, start, 64, qttt.attention_flops(wp)).total * 4
    assert shares["thinking_tokens"] == pytest.approx(spent / qwen3.decode_flops(state.shape, T, state.attention))
    needed = state.step_flops(start, needed=True)
    assert needed.attention_backward == pytest.approx(qttt.DQ_ONLY_BWD_FACTOR * needed.attention_forward)
    assert shares["thinking_tokens_dq_only"] == pytest.approx(
        4 * needed.total / qwen3.decode_flops(state.shape, T, state.needed))
    executed = state.step_flops(start)
    if executed.attention_backward > qttt.DQ_ONLY_BWD_FACTOR * executed.attention_forward:
        assert state.steps_flops() > state.steps_flops(needed=True)
    for phase in qttt.PHASES:  # every phase states both counts
        step = get_workload("qttt").build(problem("qttt", phase, 256, method=method, steps=2, span=64))
        metrics = step.metrics(1e-3)
        assert metrics["thinking_tokens"] > 0 and metrics["thinking_tokens_dq_only"] > 0, phase
