"""``hybrid_lm``: a MiniMax-style lightning/softmax hybrid language model, end to end — a training step, a
prefill and a decode step — so that "at what context length does the hybrid pay off, in time and memory, for
training and serving" is measured, not guessed.

The model (:mod:`workloads.models.hybrid`): token embedding, decoder layers from a ``pattern`` of
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
(:mod:`workloads.models.hybrid_cp`): softmax layers through ``softmax_strategy``, lightning layers through
``linear_strategy``.
"""

from __future__ import annotations

from typing import Callable, Optional

import torch

from harness.interfaces import CheckResult, Workload, WorkloadProblem, WorkloadStep, check_against_eager
from harness.interfaces.linear_kernel import LinearKernel, attend_and_state, state_dtype
from harness.run import DECODE
from workloads.models import hybrid as hm
from workloads.models import hybrid_problem as hp
from workloads.models.decoder_layers import linear_cross_entropy

def _hidden_check(got: torch.Tensor, exact: torch.Tensor, eager: torch.Tensor) -> CheckResult:
    return check_against_eager({"hidden": got}, {"hidden": exact}, {"hidden": eager})


def build_prefill(problem: WorkloadProblem) -> WorkloadStep:
    shape, weights, tokens = hp.setup(problem)
    s, kernel = problem.seqlen, hp.linear_kernel(problem)
    fns = hp.attends(problem, shape, s, "fwd")
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
        produced[:] = [hp.nbytes(t for entry in cache for t in entry) // problem.batch]
        return next_logits

    def check() -> CheckResult:
        c = hp.check_length(problem)
        ref = hp.reference_dtype(problem, shape)
        pos = positions[:c]
        with torch.no_grad():
            got = hm.forward(weights, shape, tokens[:, :c], pos, hp.attends(problem, shape, c, "fwd"))
            exact = hm.forward(hm.cast(weights, ref), shape, tokens[:, :c], pos, hp.reference_attends(problem, shape))
            eager = hm.forward(weights, shape, tokens[:, :c], pos, hp.reference_attends(problem, shape))
        return _hidden_check(got, exact, eager)

    tokens_n = problem.batch * s
    flops = shape.dense_flops(tokens_n) + shape.head_flops(problem.batch) + hp.attention_flops(problem, shape, "fwd", s)

    def metrics(seconds: float) -> dict:
        return {"tokens_per_s": tokens_n / seconds, "ms": seconds * 1e3, "cache_bytes": produced[0] if produced else 0,
                **{k: hp.cache_model(shape, s, problem.dtype)[k] for k in ("cache_bytes_model",)}}

    return WorkloadStep(call=call, flops=flops, check=check, metrics=metrics, fields=hp.fields(problem, shape),
                        inputs=(tokens, *weights.values()))


def build_train_step(problem: WorkloadProblem) -> WorkloadStep:
    if problem.world_size > 1:
        from workloads.models.hybrid_cp import build_cp_train_step

        return build_cp_train_step(problem)
    shape, weights, tokens = hp.setup(problem)
    s, params = problem.seqlen, problem.params
    trained = hm.cast(weights, problem.dtype, requires_grad=True)
    optimizer = torch.optim.AdamW(list(trained.values()), lr=params["lr"], weight_decay=0.01)
    fns = hp.attends(problem, shape, s, "fwd+bwd")
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
        c = hp.check_length(problem)
        results = []
        for dtype, fns_ in ((problem.dtype, hp.attends(problem, shape, c, "fwd+bwd")),
                            (hp.reference_dtype(problem, shape), hp.reference_attends(problem, shape)),
                            (problem.dtype, hp.reference_attends(problem, shape))):
            w = hm.cast(weights, dtype, requires_grad=True)
            loss = loss_of(w, fns_, c)
            grads = torch.autograd.grad(loss, list(w.values()))
            results.append({"loss": loss.detach().reshape(1), **{f"d{k}": g for k, g in zip(w, grads)}})
        return check_against_eager(*results)

    tokens_n = problem.batch * s
    flops = shape.train_flops(tokens_n, params["recompute"]) + hp.attention_flops(problem, shape, "fwd+bwd", s)
    if params["recompute"]:
        flops += hp.attention_flops(problem, shape, "fwd", s)
    return WorkloadStep(call=call, flops=flops, check=check,
                        metrics=lambda sec: {"tokens_per_s": tokens_n / sec, "ms": sec * 1e3},
                        fields=hp.fields(problem, shape), inputs=(tokens, *trained.values()))


def decode_attends(problem: WorkloadProblem, shape: hm.HybridShape, seqlen: int, n: int,
                   kv: dict[int, tuple], states: dict[int, torch.Tensor],
                   next_states: dict[int, torch.Tensor]) -> list[hm.Attend]:
    """Layer steps of ``n`` new tokens at positions ``seqlen - n ...``: S layers write their rows into the KV
    cache ``kv[i]`` (``seqlen`` rows) and attend through the softmax method's decode path; L layers attend
    from ``states[i]`` through the linear kernel and write the advanced state into ``next_states[i]``."""
    past = seqlen - n
    kernel = hp.linear_kernel(problem)
    softmax_fn = None
    out: list[hm.Attend] = []
    for i, kind in enumerate(shape.pattern):
        if kind == hm.SOFTMAX:
            attn = hp.attention_problem(problem, shape, kind, seqlen, DECODE, layer=i, decode_tokens=n)
            softmax_fn = softmax_fn or hp.method_of(problem, kind).build(attn)
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
    shape, weights, tokens = hp.setup(problem)
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
        c = max(hp.check_length(problem), n + 1)
        past = c - n
        kernel = hp.linear_kernel(problem)
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
            pre = [keep(i, fn) for i, fn in enumerate(hp.attends(problem, shape, past, "fwd"))]
            hm.forward(weights, shape, tokens[:, :past], torch.arange(past, device=problem.device), pre)
            nxt = {i: torch.empty_like(t) for i, t in real_states.items()}
            steps = decode_attends(problem, shape, c, n, real_kv, real_states, nxt)
            pos_new = torch.arange(past, c, device=problem.device)
            got = hm.forward(weights, shape, tokens[:, past:c], pos_new, steps)
            pos = torch.arange(c, device=problem.device)
            ref = hp.reference_dtype(problem, shape)
            exact = hm.forward(hm.cast(weights, ref), shape, tokens[:, :c], pos, hp.reference_attends(problem, shape))
            eager = hm.forward(weights, shape, tokens[:, :c], pos, hp.reference_attends(problem, shape))
        return _hidden_check(got, exact[:, past:], eager[:, past:])

    rows = problem.batch * n
    flops = shape.dense_flops(rows) + shape.head_flops(rows) + hp.attention_flops(problem, shape, DECODE, s, n)
    measured = hp.nbytes(cache_tensors) // problem.batch

    def metrics(seconds: float) -> dict:
        return {"ms_per_token": seconds * 1e3 / n, "tokens_per_s": rows / seconds, "cache_bytes": measured,
                "cache_bytes_model": hp.cache_model(shape, s, problem.dtype)["cache_bytes_model"]}

    return WorkloadStep(call=call, flops=flops, check=check, metrics=metrics, fields=hp.fields(problem, shape),
                        inputs=(tokens, *weights.values(), *cache_tensors, *next_states.values()))


def limits(problem: WorkloadProblem) -> Optional[str]:
    """One device's limits (:func:`workloads.models.hybrid_problem.limits`), then those of the CP layouts."""
    why = hp.limits(problem)
    if why is None and problem.world_size > 1:
        from workloads.models.hybrid_cp import cp_limits

        return cp_limits(problem, hp.model_shape(problem.params))
    return why


def build(problem: WorkloadProblem) -> WorkloadStep:
    if problem.world_size > 1 and problem.phase == "prefill":
        from workloads.models.hybrid_cp import build_cp_prefill

        return build_cp_prefill(problem)
    return PHASE_BUILDERS[problem.phase](problem)


PHASE_BUILDERS: dict[str, Callable[[WorkloadProblem], WorkloadStep]] = {
    "train_step": build_train_step, "prefill": build_prefill, DECODE: build_decode,
}

WORKLOAD = Workload(
    name="hybrid_lm",
    summary="MiniMax-style lightning/softmax hybrid LM (pattern of L/S layers): train step, prefill, decode",
    phases=hp.PHASES,
    params=hp.PARAMS,
    flavors=hp.FLAVORS,
    build=build,
    specs=hp.SPECS,
    constraints=hp.constraints,
    metrics=hp.METRICS,
    flop_convention=hp.FLOP_CONVENTION,
    dtypes=frozenset({"float32", "bfloat16", "float64"}),
    distributed=True,
    limits=limits,
    homepage="https://github.com/MiniMax-AI/MiniMax-M1",
)
