"""Linear attention: lightning (and its variants) against float64, the recurrence against the quadratic form,
flash-linear-attention's CPU references against ours, the FLOP count against torch's counter, and the linear
CP strategies (lasp2, lasp, linear_all_gather) exact at W = 2 and 4 with measured bytes = the model."""

from __future__ import annotations

import json
import math

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from harness.catalog import get_method, get_strategy, linear_kernels, local_kernels, methods
from harness.errors import UserError
from harness.execution.gate import check_method
from harness.interfaces import CPProblem, Problem
from harness.masks import build_mask
from harness.run import Run, Timing
from methods import _linear
from methods._decay import decay_rates
from methods._linear_reference import quadratic_outputs, recurrence

LINEAR = ("lightning", "lightning_tnl", "linear_attn")


def inputs(batch=2, seqlen=200, hq=4, hkv=2, d=16, dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(batch, seqlen, hq, d, generator=g)
    k = torch.randn(batch, seqlen, hkv, d, generator=g)
    v = torch.randn(batch, seqlen, hkv, d, generator=g)
    return tuple(t.to(dtype) for t in (q, k, v))


def problem(seqlen=200, direction="fwd+bwd", dtype=torch.float32, mask="causal", options=None, **kw):
    shape = dict(batch=2, heads_q=4, heads_kv=2, head_dim=16) | kw
    return Problem(mask=build_mask(mask, seqlen, shape["heads_q"]), seqlen=seqlen, dtype=dtype,
                   device=torch.device("cpu"), direction=direction, options=options or {}, **shape)


# ----- the math ----------------------------------------------------------------------------------------------

def test_schedules():
    h = 8
    assert torch.allclose(decay_rates(h, {}, "minimax"), 2.0 ** (-8.0 * torch.arange(1, 9, dtype=torch.float64) / 8) * (1 + 1e-5))
    layered = decay_rates(h, {"layer": 3, "layers": 7}, "minimax")
    assert torch.allclose(layered, 2.0 ** (-8.0 * torch.arange(1, 9, dtype=torch.float64) / 8) * (1 - 3 / 6 + 1e-5))
    tnl = decay_rates(h, {"layer": 1, "layers": 4}, "transnormer")
    assert tnl[0] == 0 and torch.allclose(tnl, (8 / h) * (1 - 1 / 4) * torch.arange(8.0, dtype=torch.float64))
    assert not decay_rates(h, {"decay": "none"}, "minimax").any()
    with pytest.raises(UserError, match="decay"):
        decay_rates(h, {"decay": "minmax"}, "minimax")
    with pytest.raises(UserError, match="layer"):
        decay_rates(h, {"layer": 4, "layers": 4}, "minimax")


def _alibi_get_slopes(n: int) -> list[float]:
    """ALiBi's reference ``get_slopes`` (Press et al., as copied into MiniMax's modeling code), verbatim."""
    def get_slopes_power_of_2(n):
        start = 2 ** (-2 ** -(math.log2(n) - 3))
        ratio = start
        return [start * ratio ** i for i in range(n)]

    if math.log2(n).is_integer():
        return get_slopes_power_of_2(n)
    closest_power_of_2 = 2 ** math.floor(math.log2(n))
    return (get_slopes_power_of_2(closest_power_of_2)
            + _alibi_get_slopes(2 * closest_power_of_2)[0::2][: n - closest_power_of_2])


@pytest.mark.parametrize("heads", range(1, 17))
def test_minimax_slopes_follow_alibis_rule_for_every_head_count(heads):
    """MiniMax builds its decay from ALiBi's slopes, interleaved for a head count that is not a power of two,
    times the layer factor ``1 - l / (L - 1) + 1e-5``."""
    reference = torch.tensor(_alibi_get_slopes(heads), dtype=torch.float64)
    assert torch.allclose(decay_rates(heads, {}, "minimax"), reference * (1 + 1e-5), rtol=1e-14, atol=0)
    layered = decay_rates(heads, {"layer": 2, "layers": 5}, "minimax")
    assert torch.allclose(layered, reference * (1 - 2 / 4 + 1e-5), rtol=1e-14, atol=0)


@pytest.mark.parametrize("schedule", ["minimax", "transnormer", "none"])
def test_recurrence_equals_quadratic_form(schedule):
    q, k, v = inputs(dtype=torch.float64, seqlen=90)
    rates = decay_rates(4, {}, schedule)
    quad = quadratic_outputs(q, k, v, rates, torch.arange(90), None)["out"]
    torch.testing.assert_close(recurrence(q, k, v, rates), quad, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("group_bytes", [_linear.GROUP_BYTES, 1], ids=["one group", "a group per block"])
@pytest.mark.parametrize("schedule", ["minimax", "none"])
def test_blocked_forward_and_both_backwards_are_exact(schedule, group_bytes, monkeypatch):
    """S = 200 with blocks of 64: three full blocks and a tail; GQA 4:2, batch 2; own backward == autograd;
    all blocks in one group, or each in its own (the state then crosses groups forwards and backwards)."""
    monkeypatch.setattr(_linear, "GROUP_BYTES", group_bytes)
    q, k, v = inputs(dtype=torch.float64)
    rates = decay_rates(4, {}, schedule)
    dout = torch.randn(q.shape, dtype=torch.float64)
    ref = quadratic_outputs(q, k, v, rates, torch.arange(200), dout)
    for backward in ("own", "autograd"):
        leaves = [t.clone().requires_grad_(True) for t in (q, k, v)]
        out = _linear.chunked(*leaves, rates, block=64, backward=backward)
        grads = torch.autograd.grad(out, leaves, dout)
        torch.testing.assert_close(out, ref["out"], rtol=1e-10, atol=1e-10)
        for name, g in zip(("dq", "dk", "dv"), grads):
            torch.testing.assert_close(g, ref[name], rtol=1e-10, atol=1e-10, msg=f"{backward} {name}")


def test_incoming_state_gradient():
    q, k, v = inputs(batch=1, seqlen=40, dtype=torch.float64)
    rates = decay_rates(4, {}, "minimax")
    state = torch.randn(1, 4, 16, 16, dtype=torch.float64, requires_grad=True)
    dout = torch.randn(q.shape, dtype=torch.float64)
    # the written-out gradient of the incoming state == autograd through the forward == the definition:
    # d/dKV of sum(dout * exp(-s (p + 1)) q_p KV) = sum_p exp(-s (p + 1)) q_p^T dout_p
    own = torch.autograd.grad(_linear.chunked(q, k, v, rates, 16, state), state, dout)[0]
    auto = torch.autograd.grad(_linear.chunked(q, k, v, rates, 16, state, backward="autograd"), state, dout)[0]
    decay = torch.exp(-rates.view(1, 1, 4, 1) * torch.arange(1, 41, dtype=torch.float64).view(1, 40, 1, 1))
    direct = torch.einsum("bphd,bphe->bhde", q * decay, dout)
    torch.testing.assert_close(own, direct)
    torch.testing.assert_close(auto, direct)
    # the state of the first rows, carried in, gives the rest of the sequence exactly
    whole = _linear.chunked(q, k, v, rates, 16)
    first = _linear.chunk_state(k[:, :24], v[:, :24], rates, 4, 16)
    torch.testing.assert_close(_linear.chunked(q[:, 24:], k[:, 24:], v[:, 24:], rates, 16, first), whole[:, 24:])


@pytest.mark.parametrize("name", LINEAR)
@pytest.mark.parametrize("with_state_in", [False, True])
def test_one_pass_output_and_state_equal_attend_then_state(name, with_state_in):
    """A kernel's fused ``attend_state`` (prefill keeping the state for decode) == ``attend`` + ``state`` carried
    from ``state_in`` (the fallback of :func:`attend_and_state`), rows not a multiple of the block."""
    from dataclasses import replace

    from harness.interfaces.linear_kernel import attend_and_state

    kernel = linear_kernels()[name]
    assert kernel.attend_state is not None
    q, k, v = inputs(batch=2, seqlen=45, dtype=torch.float64)
    opts = {"layer": 1, "layers": 4, "block": 16}
    rates = kernel.rates(4, opts)
    state_in = torch.randn(2, 4, 16, 16, dtype=torch.float64) if with_state_in else None
    fused = attend_and_state(kernel, q, k, v, rates, opts, state_in)
    unfused = attend_and_state(replace(kernel, attend_state=None), q, k, v, rates, opts, state_in)
    for got, want in zip(fused, unfused):
        torch.testing.assert_close(got, want)


# ----- the methods through the gate --------------------------------------------------------------------------

@pytest.mark.parametrize("name", LINEAR)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("direction", ["fwd+bwd", "decode"])
def test_method_passes_gate(name, dtype, direction):
    method = get_method(name)
    p = problem(direction=direction, dtype=dtype, options={"block": 64}, decode_tokens=3)
    q, k, v = inputs(dtype=dtype)
    q = q[:, p.q_offset:]
    gate = check_method(method.build(p), q, k, v, p.mask, p.scale, p.needs_grad, method.reference,
                        q_offset=p.q_offset, options=p.options)
    assert gate.ok, gate.reason


def test_gate_uses_the_runs_decay_options():
    """A layer option changes the function; the reference follows it through the run's options."""
    method = get_method("lightning")
    opts = {"layer": 2, "layers": 4, "block": 32}
    p = problem(direction="fwd", options=opts)
    q, k, v = inputs()
    assert check_method(method.build(p), q, k, v, p.mask, p.scale, False, method.reference, options=opts).ok
    wrong = check_method(method.build(p), q, k, v, p.mask, p.scale, False, method.reference, options={})
    assert not wrong.ok


def test_causal_only_and_capabilities():
    m = get_method("lightning")
    assert m.unsupported_reason(problem(mask="full")) is not None
    assert "causal" in m.unsupported_reason(problem(mask="causal_document"))
    assert m.unsupported_reason(problem()) is None
    p = problem(direction="decode", decode_tokens=1)
    assert m.cache_bytes(p) == m.decode_bytes(p) == 2 * 4 * 16 * 16 * 4
    assert m.cache_bytes(problem(direction="decode", dtype=torch.bfloat16)) == 2 * 4 * 16 * 16 * 4  # fp32 state
    assert "decay minimax" in m.flop_convention
    assert set(linear_kernels()) >= set(LINEAR) and not set(LINEAR) & set(local_kernels())


# ----- flash-linear-attention's CPU references -----------------------------------------------------------------

@pytest.mark.parametrize("peer", ["fla_naive_recurrent", "fla_chunk_naive"])
def test_fla_references_match_ours(peer):
    method = get_method(peer)
    if method.unavailable_reason():
        pytest.skip(method.unavailable_reason())
    p = problem(seqlen=150, direction="fwd", options={"layer": 1, "layers": 3})
    q, k, v = inputs(seqlen=150)
    ours = get_method("lightning").build(p)(q, k, v)
    torch.testing.assert_close(method.build(p)(q, k, v), ours, rtol=1e-4, atol=1e-4)


def test_gpu_peers_report_why_here():
    for name in ("fla_chunk_simple_gla", "fla_chunk_lightning", "fla_fused_recurrent", "lightning_attn2"):
        why = get_method(name).unavailable_reason()
        assert why is None or why  # a reason, never an exception
        if not torch.cuda.is_available():
            assert why


# ----- FLOPs against torch's counter --------------------------------------------------------------------------

@pytest.mark.parametrize("direction", ["fwd", "fwd+bwd", "decode"])
def test_flops_match_flop_counter(direction):
    p = problem(seqlen=600, direction=direction, options={"block": 128}, head_dim=32, decode_tokens=4)
    q, k, v = inputs(seqlen=600, d=32)
    fn = get_method("lightning").build(p)
    if direction == "decode":
        q = q[:, p.q_offset:]
        fn(q, k, v)  # the prefix state: computed once per cache, outside the step
    leaves = [t.requires_grad_(direction != "decode" and direction != "fwd") for t in (q, k, v)]
    with FlopCounterMode(display=False) as counter:
        out = fn(*leaves)
        if direction == "fwd+bwd":
            torch.autograd.grad(out, leaves, torch.randn_like(out))
    counted = counter.get_total_flops()
    stated = get_method("lightning").flops(p, direction)
    assert abs(counted - stated) <= 0.05 * stated, (counted, stated)


# ----- the linear CP strategies --------------------------------------------------------------------------------

def cp_problem(strategy: str, method: str = "lightning", mask: str = "causal", world: int = 2) -> CPProblem:
    run = Run.make(method=method, strategy=strategy, mask=mask, seqlen=256, heads_q=4, heads_kv=2, head_dim=16,
                   world_size=world, direction="fwd+bwd")
    return CPProblem.of(run, build_mask(mask, 256, 4), torch.device("cpu"), methods())


def test_strategies_pair_with_their_kind_of_method():
    assert get_strategy("lasp2").unsupported_reason(cp_problem("lasp2")) is None
    assert "not causal linear attention" in get_strategy("lasp2").unsupported_reason(cp_problem("lasp2", "sdpa"))
    assert "no local kernel" in get_strategy("ring").unsupported_reason(cp_problem("ring", "lightning"))
    assert get_strategy("lasp").unsupported_reason(cp_problem("lasp", mask="causal_document"))


def _strategy_runs(world: int, seqlen: int, strategies=("lasp2", "lasp", "linear_all_gather")) -> list[Run]:
    timing = Timing(warmup=1, min_samples=1, min_run_time=0.0, max_samples=1)
    return [Run.make(method="lightning", strategy=s, mask="causal", seqlen=seqlen, heads_q=4, heads_kv=2,
                     head_dim=16, world_size=world, direction=direction, dtype="float64", timing=timing,
                     options={"block": 32, "layer": 1, "layers": 4})
            for s in strategies for direction in ("fwd", "bwd", "fwd+bwd")]  # bwd: backward timed repeatedly


def _check_records(records: list[dict]) -> None:
    for r in records:
        where = f"{r['strategy']} W={r['world_size']} {r['direction']}"
        assert r["status"] == "ok", (where, r.get("reason"))
        assert json.loads(r["comm_bytes"]) == json.loads(r["comm_bytes_model"]), where


def test_strategies_exact_at_two_ranks():
    """float64 (the gate's float64 tolerance: exact), decay on, every direction; bytes measured = model."""
    from harness.cluster.launch import run_local_many

    _check_records(run_local_many(_strategy_runs(2, 192), measure_memory=False))


@pytest.mark.integration  # a process group of its own
def test_strategies_exact_at_a_length_padded_for_the_layout():
    """195 tokens at two ranks: padded at the end to 196 (causal: the padding reaches no real token), checked on
    the real tokens; bytes are the padded layout's, as the model gives them."""
    from harness.cluster.launch import run_local_many

    records = run_local_many(_strategy_runs(2, 195), measure_memory=False)
    _check_records(records)
    assert {r["padded_seqlen"] for r in records} == {196}


@pytest.mark.slow
def test_strategies_exact_at_four_ranks_and_lasp2_bytes_constant_in_s():
    from harness.cluster.launch import run_local_many

    records = run_local_many(_strategy_runs(4, 256) + _strategy_runs(4, 512, ("lasp2",)), measure_memory=False)
    _check_records(records)
    lasp2 = [json.loads(r["comm_bytes"]) for r in records if r["strategy"] == "lasp2" and r["direction"] == "fwd"]
    assert lasp2[0] == lasp2[1]  # 256 -> 512 tokens: the same bytes


def test_comm_models():
    p = cp_problem("lasp2", world=4)
    one = 4 * 16 * 16 * 4  # B (1) x Hq x d x d float32
    assert get_strategy("lasp2").comm_model(p, "fwd") == [3 * one] * 4
    assert get_strategy("lasp").comm_model(p, "fwd+bwd") == [one, 2 * one, 2 * one, one]
    grows = get_strategy("linear_all_gather").comm_model
    assert grows(p, "fwd")[0] > 0 and not math.isnan(grows(p, "bwd")[0])
