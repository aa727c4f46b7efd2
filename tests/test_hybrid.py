"""The MiniMax-style hybrid LM (``hybrid_lm``): prefill == token-by-token decode in float64, the registered
lightning method's chunked prefill == its recurrence, a training step's gradients == float64 autograd of the
naive model (the workload's own check, which must also catch a wrong kernel), the Hugging Face
``MiniMaxForCausalLM`` peer agrees on the same weights, the FLOP model matches torch's counter, the cache
model matches the measured cache, and the context-parallel hybrid is exact at W = 2 (4: slow)."""

from __future__ import annotations

import json

import pytest
import torch

from harness import catalog
from harness.execution.cases.workload import WorkloadCase
from harness.execution.single import SingleDevice, execute
from harness.interfaces import WorkloadProblem
from harness.interfaces.linear_kernel import LinearKernel
from harness.run import Run, Timing
from workloads import hybrid_lm
from workloads.models import hybrid_problem as hp
from workloads.models import hybrid as hm
from methods import _decay as decay

QUICK = Timing(warmup=1, min_samples=2, min_run_time=0.0)
SMALL = {"vocab": 256, "hidden": 128, "heads": 4, "heads_kv": 2, "head_dim": 32, "intermediate": 256,
         "rope_dim": 16, "check_tokens": 64}


def run_of(phase: str, seqlen: int = 96, dtype: str = "float32", workload: str = "hybrid_lm", **params) -> Run:
    return Run.make(workload=workload, mask="causal", seqlen=seqlen, phase=phase, dtype=dtype, timing=QUICK,
                    params={**SMALL, **params})


def problem_of(run: Run) -> WorkloadProblem:
    w = catalog.get_workload(run.workload)
    return WorkloadProblem(run=run, params=w.resolve_params(run.param_kwargs), dtype=getattr(torch, run.dtype),
                           device=torch.device("cpu"), method=catalog.get_method, strategy=catalog.get_strategy)


def test_prefill_logits_equal_token_by_token_decode_float64():
    """Prefill all T tokens vs prefill of 1 token then T-1 single-token decode steps through the cache."""
    problem = problem_of(run_of("decode", seqlen=40, dtype="float64"))
    shape, weights, tokens = hp.setup(problem)
    t = 40
    with torch.no_grad():
        full = hm.logits(weights, hm.forward(weights, shape, tokens[:, :t], torch.arange(t),
                                             hp.attends(problem, shape, t, "fwd")))
    kernel = hp.linear_kernel(problem)
    kv = {i: tuple(torch.zeros(1, t, shape.heads_kv, shape.head_dim, dtype=torch.float64) for _ in range(2))
          for i, k in enumerate(shape.pattern) if k == hm.SOFTMAX}
    states = {i: torch.zeros(1, shape.heads, shape.head_dim, shape.head_dim, dtype=torch.float64)
              for i, k in enumerate(shape.pattern) if k == hm.LIGHTNING}
    assert isinstance(kernel, LinearKernel)
    steps = []
    with torch.no_grad():
        for p in range(t):
            nxt = {i: torch.empty_like(s) for i, s in states.items()}
            views = {i: (a[:, :p + 1], b[:, :p + 1]) for i, (a, b) in kv.items()}
            fns = hybrid_lm.decode_attends(problem, shape, p + 1, 1, views, states, nxt)
            steps.append(hm.logits(weights, hm.forward(weights, shape, tokens[:, p:p + 1], torch.tensor([p]), fns)))
            states = nxt
    stepped = torch.cat(steps, dim=1)
    assert (stepped - full).abs().max() < 1e-9 * full.abs().max()


def test_chunked_lightning_prefill_equals_its_recurrence_and_minimax_decay():
    """The registered method (blocked, S not a multiple of the block) against the token-by-token recurrence
    written here, for a layer deep in the model (the decay depends on the layer)."""
    method = catalog.get_method("lightning")
    problem = problem_of(run_of("prefill", seqlen=300, dtype="float64"))
    shape = hp.model_shape(problem.params)
    layer = 5
    attn = hp.attention_problem(problem, shape, hm.LIGHTNING, 300, "fwd", layer=layer)
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(1, 300, shape.heads, shape.head_dim, generator=g, dtype=torch.float64).sigmoid()
               for _ in range(3))
    got = method.build(attn)(q, k, v)
    rates = decay.minimax(shape.heads, layer, shape.layers)
    assert torch.allclose(method.linear_kernel.rates(shape.heads, attn.options), rates, rtol=1e-12, atol=0)
    state = torch.zeros(1, shape.heads, shape.head_dim, shape.head_dim, dtype=torch.float64)
    outs = []
    for p in range(300):
        state = torch.exp(-rates).view(1, -1, 1, 1) * state + torch.einsum("bhd,bhe->bhde", k[:, p], v[:, p])
        outs.append(torch.einsum("bhd,bhde->bhe", q[:, p], state))
    recurrence = torch.stack(outs, dim=1)
    assert (got - recurrence).abs().max() < 1e-10 * recurrence.abs().max()
    assert (hm.lightning_quadratic(rates)(q, k, v) - recurrence).abs().max() < 1e-10 * recurrence.abs().max()


def _pattern_phases():
    for pattern in ("LLLLLLLS", "SSSSSSSS", "LLLLLLLL"):
        for phase in ("train_step", "prefill", "decode"):
            quick = pattern == "LLLLLLLS" or phase == "prefill"
            yield pytest.param(phase, pattern, marks=() if quick else pytest.mark.slow)


@pytest.mark.parametrize("phase,pattern", list(_pattern_phases()))
def test_every_pattern_and_phase_passes_its_float64_check(phase, pattern):
    """train_step's check is the gradient of every weight against float64 autograd of the naive model."""
    record = execute(run_of(phase, pattern=pattern), measure_memory=False)
    assert record["status"] == "ok", record["reason"]
    errors = json.loads(record["gate_errors"])
    if phase == "train_step":
        assert {"d0.wqkv", "dembed", "dlm_head"} <= set(errors)
    assert record["facts"]["layers_softmax"] == pattern.count("S") and record["facts"]["parameters"] > 0
    metrics = record["metrics"]
    assert metrics["cache_bytes"] == metrics["cache_bytes_model"] if "cache_bytes" in metrics else True


def test_a_wrong_lightning_kernel_fails_the_check(monkeypatch):
    """A linear method whose decay is not MiniMax's but claims MiniMax's rates is caught by the check."""
    real = catalog.get_method("lightning")
    wrong = catalog.get_method("lightning_tnl")
    fake = type(real)(**{**real.__dict__, "build": wrong.build})
    from harness.execution.cases import workload as case_module

    monkeypatch.setattr(case_module, "get_method", lambda name: fake if name == "lightning" else catalog.methods()[name])
    case = WorkloadCase(run_of("prefill"))
    executor = SingleDevice(measure_memory=False)
    problem = case.problem(executor)
    assert case.unsupported(problem) is None
    assert not case.build(problem, executor).check().ok


def test_cache_model_at_m1_widths_and_crossover():
    shape = hp.model_shape({**hp.PARAMS, **hp.FLAVORS["minimax-m1"]})
    model = hp.cache_model(shape, 131072, torch.bfloat16)
    assert model["state_bytes_per_layer"] == 64 * 128 * 128 * 4 and model["kv_bytes_per_token_per_layer"] == 2 * 8 * 128 * 2
    assert model["cache_crossover_tokens"] == 1024
    assert shape.count(hm.SOFTMAX) == 10 and shape.count(hm.LIGHTNING) == 70


def test_hf_minimax_peer_agrees_on_the_same_weights_float64():
    pytest.importorskip("transformers")
    from workloads import hybrid_lm_hf

    problem = problem_of(run_of("prefill", seqlen=300, dtype="float64", workload="hybrid_lm_hf", rope_dim=32))
    shape, weights, tokens = hp.setup(problem)
    model = hybrid_lm_hf.hf_model(shape, weights, torch.float64, torch.device("cpu"))
    with torch.no_grad():
        theirs = model(tokens[:, :300]).logits
        ours = hm.logits(weights, hm.forward(weights, shape, tokens[:, :300], torch.arange(300),
                                             hp.attends(problem, shape, 300, "fwd")))
    # HF computes its RoPE frequencies and decay buffers in float32 even in a float64 model, and its layer
    # factor differs by ~1e-5 / L^2: agreement to ~1e-6 relative is what a correct mapping gives (a wrong
    # one — partial vs full RoPE, or q/k/v not interleaved — is off by O(1)).
    assert (theirs - ours).abs().max() < 1e-5 * ours.abs().max()
    record = execute(run_of("decode", workload="hybrid_lm_hf", rope_dim=32), measure_memory=False)
    assert record["status"] == "ok", record["reason"]


def test_hf_peer_reports_what_it_cannot_express():
    record = execute(run_of("prefill", workload="hybrid_lm_hf", rope_dim=16), measure_memory=False)
    assert record["status"] in ("unsupported", "unavailable") and ("rope_dim" in record["reason"] or "transformers" in record["reason"])


def _cp(world_size: int, phase: str, **params):
    from harness.cluster.launch import run_local

    run = Run.make(workload="hybrid_lm", mask="causal", seqlen=128, phase=phase, timing=QUICK,
                   world_size=world_size, params={**SMALL, "softmax_method": "blocksparse", **params})
    return run_local(run, timeout_s=300, measure_memory=False)


@pytest.mark.parametrize("world_size", [2, pytest.param(4, marks=pytest.mark.slow)])
def test_context_parallel_hybrid_is_exact_and_lasp2_bytes_are_states(world_size):
    record = _cp(world_size, "train_step")
    assert record["status"] == "ok", record["reason"]
    shape = hp.model_shape({**hp.PARAMS, **SMALL})
    state = shape.heads * shape.head_dim**2 * 4
    for facts in record["rank_facts"]:  # one all-gather of W states per lightning layer, fwd and bwd
        assert facts["comm_bytes_linear"] == 2 * shape.count(hm.LIGHTNING) * (world_size - 1) * state
        assert facts["comm_bytes_softmax"] > 0


@pytest.mark.slow
@pytest.mark.parametrize("strategy", ["ulysses", "all_gather"])
def test_context_parallel_prefill_with_other_softmax_strategies(strategy):
    record = _cp(2, "prefill", softmax_strategy=strategy)
    assert record["status"] == "ok", record["reason"]


def test_suite_loads_every_profile():
    from suites.loader import load_suite, suite_profiles

    for profile in suite_profiles("hybrid_minimax"):
        suite = load_suite("hybrid_minimax", profile=profile)
        assert suite.runs and all(r.workload in ("hybrid_lm", "hybrid_lm_hf") for r in suite.runs)
