"""``hybrid_lm``: a MiniMax-style lightning/softmax hybrid language model, end to end — a training step, a
prefill and a decode step — so that "at what context length does the hybrid pay off, in time and memory, for
training and serving" is measured, not guessed.

The model (:mod:`harness.workloads.hybrid_model`): token embedding, decoder layers from a ``pattern`` of
``L`` (lightning attention block) and ``S`` (softmax GQA attention with partial RoPE) letters repeated to
``layers`` layers (MiniMax-01/M1: ``LLLLLLLS``), each followed by a dense SwiGLU MLP, RMSNorms, LM head and
cross-entropy. ``SSSSSSSS`` and ``LLLLLLLL`` are the same-size all-softmax and all-lightning baselines.
Softmax layers run the registered method ``softmax_method`` (any), lightning layers ``linear_method``
(``lightning``: MiniMax's decay, which depends on the layer's index in the model).

Phases:
- ``train_step``: forward, backward and AdamW over ``seqlen`` tokens (tokens/s); ``recompute`` checkpoints
  every layer;
- ``prefill``: the forward a server runs over a prompt of ``seqlen`` tokens, producing the decode cache
  (KV of the S layers, d x d state of the L layers) and the next token's logits (ms, tokens/s);
- ``decode``: ``decode_tokens`` new tokens at context ``seqlen`` through every layer: S layers read their
  KV cache through the method's decode path, L layers read and advance their state through the linear
  method's kernel (``Method.linear_kernel``: ``attend`` with the incoming state, ``state`` of the new rows).
  The timed cache holds random values of the real shapes and dtypes (decode time does not depend on the
  values; a real prefill of 128K tokens is not needed to time one step); the check runs the same decode code
  after a real prefill.

Memory: the executor's measured peak, plus the decode cache per sequence — measured (the bytes of the
cache tensors a prefill produced / a decode step holds) and modelled (KV: ``2 Hkv d e`` bytes per token per
S layer; state: ``H d^2 4`` bytes per L layer) — and ``cache_crossover_tokens``, the context length at which one
softmax layer's KV cache equals one lightning layer's state (M1's widths: 4 MiB / 4 KiB = 1024 tokens).

Checks (the field's rule against float64, :func:`~harness.interfaces.check_against_eager`): the same code at
``min(seqlen, check_tokens)`` tokens — the final hidden states (prefill), the loss and every weight's
gradient (train_step), the decoded tokens' hidden states after a real prefill (decode) — against the model
in float64 with the workload's own reference attentions (eager softmax; the quadratic form of lightning
attention) and against the same eager attentions in the run's dtype. Where float64 weights would not fit
(the GPU flavors), the reference runs in float32 (recorded as ``reference_dtype``).

On a rank group (``world_size > 1``) the train step and the prefill run context-parallel
(:mod:`harness.workloads.hybrid_cp`): softmax layers through ``softmax_strategy``, lightning layers through
``linear_strategy``.
"""

from __future__ import annotations

import math
import os
from dataclasses import replace
from typing import Callable, Optional

import torch

from harness.errors import UserError
from harness.interfaces import (
    CheckResult, Metric, Problem, Workload, WorkloadProblem, WorkloadStep, check_against_eager,
)
from harness.interfaces.linear_kernel import LinearKernel, attend_and_state, state_dtype
from harness.interfaces.params import divides, flag, integer, letters, number, one_of, registered, seed
from harness.interfaces.workload import STEP_METRICS
from harness.masks import build_mask
from harness.spec import DECODE
from harness.workloads import hybrid_model as hm
from harness.workloads.model_blocks import RESIDUALS, linear_cross_entropy

PHASES = ("train_step", "prefill", DECODE)
ATTENTION_DIRECTION = {"train_step": "fwd+bwd", "prefill": "fwd", DECODE: DECODE}
M1_ALPHA = (2 * 80) ** 0.25  # MiniMax-M1's layernorm_*_alpha (DeepNorm-style residual scale)
M1 = {"vocab": 200064, "hidden": 6144, "heads": 64, "heads_kv": 8, "head_dim": 128,
      "intermediate": 2 * 9216,  # dense MLP with the active width of M1's top-2 of 32 experts (ffn 9216)
      "rope_dim": 64, "rope_base": 1e7, "residual_alpha": M1_ALPHA, "eps": 1e-5}
FLAVORS = {
    "tiny": {"vocab": 4096, "hidden": 512, "heads": 8, "heads_kv": 2, "head_dim": 64, "intermediate": 1536,
             "layers": 8, "rope_dim": 32, "rope_base": 1e7, "residual_alpha": 1.0, "eps": 1e-5},
    "minimax-m1-slice": {**M1, "layers": 8},  # one 8-layer period at the real widths (GPU)
    "minimax-m1": {**M1, "layers": 80},  # the whole depth (GPU; unsupported where weights do not fit)
}
PARAMS = {
    "flavor": "tiny", "pattern": "LLLLLLLS", **FLAVORS["tiny"], "residual": "minimax",
    "softmax_method": "sdpa", "linear_method": "lightning",
    "softmax_strategy": "ring_zigzag", "linear_strategy": "lasp2",
    "recompute": False, "check_tokens": 128, "lr": 1e-4, "seed": 0,
}
LINEAR_OPTIONS = ("layer", "layers")  # what a lightning layer tells its method (MiniMax's decay depends on them)
SPECS = {
    "pattern": letters(hm.LIGHTNING + hm.SOFTMAX, doc="L: lightning layer, S: softmax layer; repeated to `layers`"),
    "vocab": integer(ge=2), "hidden": integer(ge=1), "heads": integer(ge=1), "heads_kv": integer(ge=1),
    "head_dim": integer(ge=2), "intermediate": integer(ge=1), "layers": integer(ge=1),
    "rope_dim": integer(ge=2, doc="even, at most head_dim"), "rope_base": number(gt=0),
    "residual_alpha": number(gt=0), "eps": number(gt=0), "residual": one_of(*RESIDUALS),
    "softmax_method": registered("method"), "linear_method": registered("method", needs="linear_kernel"),
    "softmax_strategy": registered("strategy"), "linear_strategy": registered("strategy"),
    "recompute": flag(), "check_tokens": integer(ge=2, doc="tokens of the float64 check"), "lr": number(gt=0),
    "seed": seed(),
}


def constraints(params: dict):
    """GQA in the softmax layers (heads a multiple of heads_kv); partial RoPE on an even part of the head."""
    yield from divides(params, "heads_kv", "heads")
    if params["rope_dim"] % 2 or params["rope_dim"] > params["head_dim"]:
        yield "rope_dim", f"an even integer in [2, head_dim={params['head_dim']}]"


# ----- parameters -> shape, problems, attends ----------------------------------------------------------

def model_shape(params: dict) -> hm.HybridShape:
    """The model of the resolved parameters (checked against :data:`SPECS` and :func:`constraints`)."""
    pattern, layers = params["pattern"], params["layers"]
    full = (pattern * math.ceil(layers / len(pattern)))[:layers]
    return hm.HybridShape(
        vocab=params["vocab"], hidden=params["hidden"], heads=params["heads"], heads_kv=params["heads_kv"],
        head_dim=params["head_dim"], intermediate=params["intermediate"], pattern=full,
        rope_dim=params["rope_dim"], rope_base=float(params["rope_base"]), eps=float(params["eps"]),
        residual=params["residual"], alpha=float(params["residual_alpha"]),
    )


def attention_problem(problem: WorkloadProblem, shape: hm.HybridShape, kind: str, length: int, direction: str,
                      layer: int = 0, decode_tokens: int = 1) -> Problem:
    """The attention call of one layer as its method sees it (lightning: H kv heads and its layer options)."""
    lightning = kind == hm.LIGHTNING
    return Problem(
        mask=build_mask("causal", length, shape.heads), batch=problem.batch, seqlen=length, heads_q=shape.heads,
        heads_kv=shape.heads if lightning else shape.heads_kv, head_dim=shape.head_dim, dtype=problem.dtype,
        device=problem.device, direction=direction, decode_tokens=decode_tokens,
        options={"layer": layer, "layers": shape.layers} if lightning else {},
    )


def method_of(problem: WorkloadProblem, kind: str):
    return problem.method(problem.params["linear_method" if kind == hm.LIGHTNING else "softmax_method"])


def linear_kernel(problem: WorkloadProblem) -> LinearKernel:
    kernel = problem.method(problem.params["linear_method"]).linear_kernel
    if not isinstance(kernel, LinearKernel):
        raise UserError(f"workload 'hybrid_lm': linear_method={problem.params['linear_method']!r} has no linear "
                        f"kernel (Method.linear_kernel); use a causal linear method such as lightning")
    return kernel


def attends(problem: WorkloadProblem, shape: hm.HybridShape, length: int, direction: str) -> list[hm.Attend]:
    """Every layer's registered attention for ``length`` tokens and ``direction`` (fwd / fwd+bwd)."""
    softmax_fn = None
    out = []
    for i, kind in enumerate(shape.pattern):
        attn = attention_problem(problem, shape, kind, length, direction, layer=i)
        if kind == hm.SOFTMAX:
            softmax_fn = softmax_fn or method_of(problem, kind).build(attn)
            out.append(softmax_fn)
        else:
            out.append(method_of(problem, kind).build(attn))
    return out


def reference_attends(problem: WorkloadProblem, shape: hm.HybridShape, q_offset: int = 0,
                      states: Optional[list] = None) -> list[hm.Attend]:
    """The workload's own attentions (eager softmax; lightning's quadratic form with the decay rates the
    linear method declares for each layer), in whatever dtype they are called with."""
    kernel = linear_kernel(problem)
    out = []
    for i, kind in enumerate(shape.pattern):
        if kind == hm.SOFTMAX:
            out.append(hm.softmax_causal(q_offset))
        else:
            rates = kernel.rates(shape.heads, {"layer": i, "layers": shape.layers})
            out.append(hm.lightning_quadratic(rates, None if states is None else states[i]))
    return out


# ----- memory: the decode cache per sequence -------------------------------------------------------------

def cache_model(shape: hm.HybridShape, seqlen: int, dtype: torch.dtype) -> dict[str, float]:
    """Modelled decode-cache bytes per sequence at ``seqlen`` tokens and the KV/state crossover length."""
    elem = torch.empty((), dtype=dtype).element_size()
    state_elem = torch.empty((), dtype=state_dtype(dtype)).element_size()
    kv_per_token_layer = 2 * shape.heads_kv * shape.head_dim * elem
    state_per_layer = shape.heads * shape.head_dim * shape.head_dim * state_elem
    kv = shape.count(hm.SOFTMAX) * kv_per_token_layer * seqlen
    state = shape.count(hm.LIGHTNING) * state_per_layer
    return {"kv_cache_bytes_model": kv, "state_bytes_model": state, "cache_bytes_model": kv + state,
            "kv_bytes_per_token_per_layer": kv_per_token_layer, "state_bytes_per_layer": state_per_layer,
            "cache_crossover_tokens": state_per_layer / kv_per_token_layer}


def _nbytes(tensors) -> int:
    return sum(t.numel() * t.element_size() for t in tensors)


# ----- limits -------------------------------------------------------------------------------------------

def _memory_bytes(device: torch.device) -> int:
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).total_memory
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def limits(problem: WorkloadProblem) -> Optional[str]:
    shape = model_shape(problem.params)
    if problem.run.mask != "causal":
        return f"mask {problem.run.mask} (a language model is causal)"
    elem = torch.empty((), dtype=problem.dtype).element_size()
    copies = 4 if problem.phase == "train_step" else 1  # weights, gradients, AdamW's two moments
    need = shape.parameters()["parameters"] * elem * copies
    have = _memory_bytes(problem.device)
    if need > 0.8 * have:
        return (f"weights{' + gradients + AdamW state' if copies > 1 else ''} need {need / 2**30:.0f} GiB, more "
                f"than 80% of this {problem.device.type} device's {have / 2**30:.0f} GiB")
    for kind in sorted(set(shape.pattern)):
        method = method_of(problem, kind)
        why = method.unavailable_reason()
        if why:
            return f"method {method.name} unavailable: {why}"
        direction = ATTENTION_DIRECTION[problem.phase]
        attn = attention_problem(problem, shape, kind, problem.seqlen, direction, layer=0,
                                 decode_tokens=problem.run.decode_tokens)
        if kind == hm.LIGHTNING:
            linear_kernel(problem)
            if not set(LINEAR_OPTIONS) <= set(method.options):
                return f"linear_method {method.name} takes no layer/layers options (MiniMax's per-layer decay)"
            if problem.phase == DECODE:
                attn = replace(attn, direction="fwd")  # L layers decode through the kernel, not build(decode)
        why = method.unsupported_reason(attn)
        if why:
            return f"method {method.name}: {why}"
    if problem.world_size > 1:
        from harness.workloads.hybrid_cp import cp_limits

        return cp_limits(problem, shape)
    return None


# ----- the phases ------------------------------------------------------------------------------------------

def _setup(problem: WorkloadProblem):
    params = problem.params
    shape = model_shape(params)
    weights = hm.seeded_weights(shape, params["seed"], problem.dtype, problem.device)
    g = torch.Generator().manual_seed(params["seed"] + 1)
    tokens = torch.randint(0, shape.vocab, (problem.batch, problem.seqlen + 1), generator=g).to(problem.device)
    return shape, weights, tokens


def reference_dtype(problem: WorkloadProblem, shape: hm.HybridShape) -> torch.dtype:
    """float64 when a float64 copy of the weights (and gradients) fits comfortably, else float32."""
    need = shape.parameters()["parameters"] * 8 * 3
    return torch.float64 if need < 0.25 * _memory_bytes(problem.device) else torch.float32


def _check_length(problem: WorkloadProblem) -> int:
    return max(2, min(problem.seqlen, problem.params["check_tokens"]))


def _fields(problem: WorkloadProblem, shape: hm.HybridShape) -> dict:
    cache = cache_model(shape, problem.seqlen, problem.dtype)
    return {**shape.parameters(), "pattern_full": shape.pattern, "layers_lightning": shape.count(hm.LIGHTNING),
            "layers_softmax": shape.count(hm.SOFTMAX), **cache,
            "reference_dtype": str(reference_dtype(problem, shape)).removeprefix("torch.")}


def _attention_flops(problem: WorkloadProblem, shape: hm.HybridShape, direction: str, length: int,
                     decode_tokens: int = 1) -> float:
    total = 0.0
    for i, kind in enumerate(shape.pattern):
        attn = attention_problem(problem, shape, kind, length, direction, layer=i, decode_tokens=decode_tokens)
        total += method_of(problem, kind).flops(attn, direction)
    return total


def _hidden_check(got: torch.Tensor, exact: torch.Tensor, eager: torch.Tensor) -> CheckResult:
    return check_against_eager({"hidden": got}, {"hidden": exact}, {"hidden": eager})


def build_prefill(problem: WorkloadProblem) -> WorkloadStep:
    shape, weights, tokens = _setup(problem)
    s, kernel = problem.seqlen, linear_kernel(problem)
    fns = attends(problem, shape, s, "fwd")
    produced: list[int] = []

    def keeping(i: int, fn: hm.Attend) -> hm.Attend:
        """Layer i's attention, also leaving what decode needs: the KV (S) or the final state (L)."""
        kind = shape.pattern[i]
        opts = {"layer": i, "layers": shape.layers}
        rates = kernel.rates(shape.heads, opts) if kind == hm.LIGHTNING else None

        def attend(q, k, v):
            if kind == hm.SOFTMAX:
                cache.append((k, v))
                return fn(q, k, v)
            out, state = attend_and_state(kernel, q, k, v, rates, opts)  # the method's kernel, one pass
            cache.append((state,))
            return out
        return attend

    cache: list[tuple] = []
    serving = [keeping(i, fn) for i, fn in enumerate(fns)]
    positions = torch.arange(s, device=problem.device)

    def call():
        cache.clear()
        with torch.no_grad():
            hidden = hm.forward(weights, shape, tokens[:, :s], positions, serving)
            next_logits = hm.logits(weights, hidden[:, -1:])
        produced[:] = [_nbytes(t for entry in cache for t in entry) // problem.batch]
        return next_logits

    def check() -> CheckResult:
        c = _check_length(problem)
        ref = reference_dtype(problem, shape)
        pos = positions[:c]
        with torch.no_grad():
            got = hm.forward(weights, shape, tokens[:, :c], pos, attends(problem, shape, c, "fwd"))
            exact = hm.forward(hm.cast(weights, ref), shape, tokens[:, :c], pos, reference_attends(problem, shape))
            eager = hm.forward(weights, shape, tokens[:, :c], pos, reference_attends(problem, shape))
        return _hidden_check(got, exact, eager)

    tokens_n = problem.batch * s
    flops = shape.dense_flops(tokens_n) + shape.head_flops(problem.batch) + _attention_flops(problem, shape, "fwd", s)

    def metrics(seconds: float) -> dict:
        return {"tokens_per_s": tokens_n / seconds, "ms": seconds * 1e3, "cache_bytes": produced[0] if produced else 0,
                **{k: cache_model(shape, s, problem.dtype)[k] for k in ("cache_bytes_model",)}}

    return WorkloadStep(call=call, flops=flops, check=check, metrics=metrics, fields=_fields(problem, shape),
                        inputs=(tokens, *weights.values()))


def build_train_step(problem: WorkloadProblem) -> WorkloadStep:
    if problem.world_size > 1:
        from harness.workloads.hybrid_cp import build_cp_train_step

        return build_cp_train_step(problem)
    shape, weights, tokens = _setup(problem)
    s, params = problem.seqlen, problem.params
    trained = hm.cast(weights, problem.dtype, requires_grad=True)
    optimizer = torch.optim.AdamW(list(trained.values()), lr=params["lr"], weight_decay=0.01)
    fns = attends(problem, shape, s, "fwd+bwd")
    positions = torch.arange(s, device=problem.device)
    def loss_of(w: dict, fns_, length: int) -> torch.Tensor:
        hidden = hm.forward(w, shape, tokens[:, :length], positions[:length], fns_, recompute=params["recompute"])
        return linear_cross_entropy(hidden, w["lm_head"], tokens[:, 1:length + 1], 1.0 / (problem.batch * length))

    def call():
        optimizer.zero_grad(set_to_none=True)
        loss = loss_of(trained, fns, s)
        loss.backward()
        optimizer.step()
        return loss

    def check() -> CheckResult:
        c = _check_length(problem)
        results = []
        for dtype, fns_ in ((problem.dtype, attends(problem, shape, c, "fwd+bwd")),
                            (reference_dtype(problem, shape), reference_attends(problem, shape)),
                            (problem.dtype, reference_attends(problem, shape))):
            w = hm.cast(weights, dtype, requires_grad=True)
            loss = loss_of(w, fns_, c)
            grads = torch.autograd.grad(loss, list(w.values()))
            results.append({"loss": loss.detach().reshape(1), **{f"d{k}": g for k, g in zip(w, grads)}})
        return check_against_eager(*results)

    tokens_n = problem.batch * s
    flops = shape.train_flops(tokens_n, params["recompute"]) + _attention_flops(problem, shape, "fwd+bwd", s)
    if params["recompute"]:
        flops += _attention_flops(problem, shape, "fwd", s)
    return WorkloadStep(call=call, flops=flops, check=check,
                        metrics=lambda sec: {"tokens_per_s": tokens_n / sec, "ms": sec * 1e3},
                        fields=_fields(problem, shape), inputs=(tokens, *trained.values()))


def decode_attends(problem: WorkloadProblem, shape: hm.HybridShape, seqlen: int, n: int,
                   kv: dict[int, tuple], states: dict[int, torch.Tensor],
                   next_states: dict[int, torch.Tensor]) -> list[hm.Attend]:
    """Layer steps of ``n`` new tokens at positions ``seqlen - n ...``: S layers write their rows into the KV
    cache ``kv[i]`` (``seqlen`` rows) and attend through the softmax method's decode path; L layers attend
    from ``states[i]`` through the linear kernel and write the advanced state into ``next_states[i]``."""
    past = seqlen - n
    kernel = linear_kernel(problem)
    softmax_fn = None
    out: list[hm.Attend] = []
    for i, kind in enumerate(shape.pattern):
        if kind == hm.SOFTMAX:
            attn = attention_problem(problem, shape, kind, seqlen, DECODE, layer=i, decode_tokens=n)
            softmax_fn = softmax_fn or method_of(problem, kind).build(attn)
            out.append(_softmax_step(softmax_fn, *kv[i], past))
        else:
            opts = {"layer": i, "layers": shape.layers}
            out.append(_lightning_step(kernel, kernel.rates(shape.heads, opts), opts, states[i],
                                       next_states[i]))
    return out


def _softmax_step(fn: hm.Attend, k_cache: torch.Tensor, v_cache: torch.Tensor, past: int) -> hm.Attend:
    def attend(q, k, v):
        k_cache[:, past:] = k
        v_cache[:, past:] = v
        return fn(q, k_cache, v_cache)
    return attend


def _lightning_step(kernel: LinearKernel, rates: torch.Tensor, opts: dict, state: torch.Tensor,
                    next_state: torch.Tensor) -> hm.Attend:
    def attend(q, k, v):
        out, after = attend_and_state(kernel, q, k, v, rates, opts, state)
        next_state.copy_(after)
        return out
    return attend


def _random_cache(problem: WorkloadProblem, shape: hm.HybridShape, seqlen: int, seed: int):
    """A decode cache of the real shapes and dtypes with random contents (KV ~ N(0, 1); states ~ N(0, 1/d))."""
    g = torch.Generator().manual_seed(seed)
    b, d = problem.batch, shape.head_dim
    sd = state_dtype(problem.dtype)
    kv, states, next_states = {}, {}, {}
    for i, kind in enumerate(shape.pattern):
        if kind == hm.SOFTMAX:
            kv[i] = tuple(torch.randn(b, seqlen, shape.heads_kv, d, generator=g).to(problem.dtype).to(problem.device)
                          for _ in range(2))
        else:
            states[i] = (torch.randn(b, shape.heads, d, d, generator=g) * d**-0.5).to(sd).to(problem.device)
            next_states[i] = torch.empty_like(states[i])
    return kv, states, next_states


def build_decode(problem: WorkloadProblem) -> WorkloadStep:
    shape, weights, tokens = _setup(problem)
    s, n = problem.seqlen, problem.run.decode_tokens
    kv, states, next_states = _random_cache(problem, shape, s, problem.params["seed"] + 2)
    fns = decode_attends(problem, shape, s, n, kv, states, next_states)
    new_tokens, positions = tokens[:, s - n:s], torch.arange(s - n, s, device=problem.device)
    cache_tensors = [t for pair in kv.values() for t in pair] + list(states.values())

    def call():
        with torch.no_grad():
            return hm.logits(weights, hm.forward(weights, shape, new_tokens, positions, fns))

    def check() -> CheckResult:
        """A real prefill of ``c - n`` tokens through the registered methods, then this decode code on the
        last ``n`` tokens, against the float64 forward of all ``c`` tokens (its last ``n`` rows)."""
        c = max(_check_length(problem), n + 1)
        past = c - n
        kernel = linear_kernel(problem)
        real_kv, real_states = {}, {}

        def keep(i, fn):
            def attend(q, k, v):
                if shape.pattern[i] == hm.SOFTMAX:
                    full = lambda t: torch.cat([t, t.new_zeros(t.shape[0], n, *t.shape[2:])], dim=1)  # noqa: E731
                    real_kv[i] = (full(k), full(v))
                else:
                    opts = {"layer": i, "layers": shape.layers}
                    real_states[i] = kernel.state(k, v, kernel.rates(shape.heads, opts), shape.heads, opts)
                return fn(q, k, v)
            return attend

        with torch.no_grad():
            pre = [keep(i, fn) for i, fn in enumerate(attends(problem, shape, past, "fwd"))]
            hm.forward(weights, shape, tokens[:, :past], torch.arange(past, device=problem.device), pre)
            nxt = {i: torch.empty_like(t) for i, t in real_states.items()}
            steps = decode_attends(problem, shape, c, n, real_kv, real_states, nxt)
            pos_new = torch.arange(past, c, device=problem.device)
            got = hm.forward(weights, shape, tokens[:, past:c], pos_new, steps)
            pos = torch.arange(c, device=problem.device)
            ref = reference_dtype(problem, shape)
            exact = hm.forward(hm.cast(weights, ref), shape, tokens[:, :c], pos, reference_attends(problem, shape))
            eager = hm.forward(weights, shape, tokens[:, :c], pos, reference_attends(problem, shape))
        return _hidden_check(got, exact[:, past:], eager[:, past:])

    rows = problem.batch * n
    flops = shape.dense_flops(rows) + shape.head_flops(rows) + _attention_flops(problem, shape, DECODE, s, n)
    measured = _nbytes(cache_tensors) // problem.batch

    def metrics(seconds: float) -> dict:
        return {"ms_per_token": seconds * 1e3 / n, "tokens_per_s": rows / seconds, "cache_bytes": measured,
                "cache_bytes_model": cache_model(shape, s, problem.dtype)["cache_bytes_model"]}

    return WorkloadStep(call=call, flops=flops, check=check, metrics=metrics, fields=_fields(problem, shape),
                        inputs=(tokens, *weights.values(), *cache_tensors, *next_states.values()))


def build(problem: WorkloadProblem) -> WorkloadStep:
    if problem.world_size > 1 and problem.phase == "prefill":
        from harness.workloads.hybrid_cp import build_cp_prefill

        return build_cp_prefill(problem)
    return PHASE_BUILDERS[problem.phase](problem)


PHASE_BUILDERS: dict[str, Callable[[WorkloadProblem], WorkloadStep]] = {
    "train_step": build_train_step, "prefill": build_prefill, DECODE: build_decode,
}

METRICS = (
    *STEP_METRICS,
    Metric("cache_bytes", "B", "lower", "decode cache per sequence, measured (bytes of the cache tensors)"),
    Metric("cache_bytes_model", "B", "lower", "decode cache per sequence, modelled (KV of S layers + L states)"),
)

FLOP_CONVENTION = ("matmuls: projections + SwiGLU MLP 2*T*(in*out) per matmul fwd, x3 train (x4 with recompute), "
                   "LM head 2*T*h*V (prefill: last token only; train: fused CE 6*T*h*V) + each layer's attention "
                   "method's own FLOPs (softmax 4*area*d per head, lightning blocked matmuls); norms, RoPE, "
                   "gates and AdamW not counted")

WORKLOAD = Workload(
    name="hybrid_lm",
    summary="MiniMax-style lightning/softmax hybrid LM (pattern of L/S layers): train step, prefill, decode",
    phases=PHASES,
    params=PARAMS,
    flavors=FLAVORS,
    build=build,
    specs=SPECS,
    constraints=constraints,
    metrics=METRICS,
    flop_convention=FLOP_CONVENTION,
    dtypes=frozenset({"float32", "bfloat16", "float64"}),
    distributed=True,
    limits=limits,
    homepage="https://github.com/MiniMax-AI/MiniMax-M1",
)
