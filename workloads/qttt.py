"""``qttt``: query-only test-time training (qTTT, arXiv 2512.13898; REFERENCE.md section 5) on a real model class —
Hugging Face ``Qwen3ForCausalLM``, randomly initialised (flavors ``tiny`` for CPU, ``qwen3-1.7b`` / ``qwen3-4b``
shapes for GPU) — with its attention running through a registered lcbench method (param ``method``).

qTTT prefills the long context once and keeps the K/V cache frozen (K and V do not depend on W_Q), then takes
N AdamW steps that update only the query projections W_Q of every layer, each on the next-token loss of a
random span of k tokens attending to the cached prefix; it decodes the answer with the updated W_Q and
restores W_Q afterwards. It competes with spending the same FLOPs on thinking tokens.

Phases (``seqlen`` = the context T):
- ``prefill``: the context into the KV cache (ms, tokens/s);
- ``ttt_step``: one AdamW step on W_Q (span ``span`` tokens, ``lr``, ``weight_decay``, grad-norm ``clip``); the
  timed calls cycle through the ``steps`` seeded spans (``span_at: end`` puts every span at the context's end);
- ``decode``: ``decode_tokens`` teacher-forced tokens after T cached ones (ms per token);
- ``qttt_total``: prefill + ``steps`` steps + ``answer_tokens`` decoded + W_Q restored.
Every phase reports the equal-FLOP thinking-token counts: tokens decoded at context T with the FLOPs the
``steps`` steps spent (``thinking_tokens``: as the method executes them) and with the FLOPs they need
(``thinking_tokens_dq_only``: a frozen cache needs only dQ from the attention backward); ``decode`` also reports
the spent tokens' measured time (thinking_ms), ``ttt_step`` the steps' time.

FLOPs: matmuls (:mod:`workloads.models.qwen3`), attention as the method executes it (``Method.executed`` with K
and V frozen, what torch.utils.flop_counter counts: sdpa's fused backward computes dK and dV anyway, 2.5x its
forward; eager autograd skips them, 1x); ``attention_kv_grad_share`` reports what a dQ-only backward would save
of a step. The dQ-only budget takes the forward by the method's own ``flops`` (exact mask area) and 1.5x that
for the backward. Checks (outside timing, at a context of at most ``CHECK_CONTEXT`` tokens, the same code
path): logits of prefill/decode and a step's loss and W_Q gradient against a float64 twin of the model with
exact attention, by the field's rule (2x / 3x an eager same-dtype twin's error); after steps only W_Q changed
(every other parameter and the KV cache bit-identical), and W_Q is restored bit-identically.
"""

from __future__ import annotations

import functools
import itertools
from dataclasses import dataclass, field
from typing import Callable, Optional

import torch

from harness.interfaces import (
    CheckResult, Metric, Problem, Workload, WorkloadProblem, WorkloadStep, check_against_eager,
)
from harness.interfaces.params import divides, flag, integer, number, one_of, registered, seed
from harness.masks import build_mask
from harness.run import DECODE
from workloads.models import qwen3
from workloads.models.attention_block import eager_attend, reference_attend
from workloads.models.hf_attention import AttentionAdapter, register

PREFILL, STEP, TOTAL = "prefill", "ttt_step", "qttt_total"
PHASES = (PREFILL, STEP, DECODE, TOTAL)
CHECK_CONTEXT = 256  # context of the float64 checks (at least span + 2)
FLOAT64_TWIN_BYTES = 4 << 30  # larger models skip the float64 twin (they run on GPU; the tiny flavor covers it)
DQ_ONLY_BWD_FACTOR = 1.5  # a flash-style backward for dQ only: recompute S, dP = dO V^T, dQ = dS K (3 of 5 matmuls)
_names = itertools.count()

PARAMS = {"flavor": "tiny", **qwen3.FLAVORS["tiny"], "method": "sdpa", "steps": 32, "span": 128, "lr": 1e-5,
          "weight_decay": 0.01, "clip": 1.0, "answer_tokens": 16, "span_at": "random", "seed": 0}
SPAN_AT = ("random", "end")
SPECS = {
    "layers": integer(ge=1), "hidden": integer(ge=1), "intermediate": integer(ge=1), "heads_q": integer(ge=1),
    "heads_kv": integer(ge=1), "head_dim": integer(ge=2), "vocab": integer(ge=2), "tie_embeddings": flag(),
    "method": registered("method"), "steps": integer(ge=1), "span": integer(ge=1, doc="at most the context - 2"),
    "lr": number(gt=0), "weight_decay": number(ge=0), "clip": number(gt=0, doc="the grad-norm clip"),
    "answer_tokens": integer(ge=1), "span_at": one_of(*SPAN_AT), "seed": seed(),
}


def constraints(params: dict):
    """Grouped-query attention (query heads a multiple of kv heads); RoPE rotates pairs (an even head dim)."""
    yield from divides(params, "heads_kv", "heads_q")
    if params["head_dim"] % 2:
        yield "head_dim", "an even integer (RoPE rotates pairs of dimensions)"


# ----- attention as the model sees it ----------------------------------------------------------------------

def _attention_problem(problem: WorkloadProblem, rows: int, keys: int, grad: bool = False) -> Problem:
    run, p = problem.run, problem.params
    decode = rows < keys
    return Problem(
        mask=build_mask(run.mask, keys, p["heads_q"], **run.mask_kwargs), batch=run.batch, seqlen=keys,
        heads_q=p["heads_q"], heads_kv=p["heads_kv"], head_dim=p["head_dim"], dtype=problem.dtype,
        device=problem.device, options=run.option_kwargs,
        direction=DECODE if decode else ("fwd+bwd" if grad else "fwd"), decode_tokens=rows if decode else 1,
    )


def attention_flops(problem: WorkloadProblem, executed: bool = True) -> qwen3.AttentionFlops:
    """Per-layer attention FLOPs (batch 1; the model multiplies by batch), ``(rows, start, keys, part)``.

    ``executed``: what the method really executes (``Method.executed`` with K and V frozen: a fused backward
    still computes dK/dV, eager autograd skips them) — what a run spends. Otherwise what a step needs: the
    forward by the method's own ``flops`` (the field's exact-area convention) and a dQ-only backward
    (``DQ_ONLY_BWD_FACTOR`` x forward: recompute S, dP = dO V^T, dQ = dS K)."""
    method = problem.method(problem.params["method"])
    single = WorkloadProblem(run=_batch_one(problem), params=problem.params, dtype=problem.dtype,
                             device=problem.device, method=problem.method, strategy=problem.strategy)

    @functools.lru_cache(maxsize=4096)
    def flops(rows: int, start: int, keys: int, direction: str) -> float:
        p = _attention_problem(single, rows, keys)
        part = "bwd" if direction == "bwd" else "fwd"
        if executed:
            return method.executed(p, part, kv_grad=False)
        fwd = method.flops(p, DECODE if p.is_decode else "fwd")
        return fwd * DQ_ONLY_BWD_FACTOR if part == "bwd" else fwd

    return flops


def _batch_one(problem: WorkloadProblem):
    from dataclasses import replace
    return replace(problem.run, batch=1)


# ----- limits ------------------------------------------------------------------------------------------------

def limits(problem: WorkloadProblem) -> Optional[str]:
    p, run = problem.params, problem.run
    if problem.phase in (STEP, TOTAL) and run.seqlen < p["span"] + 2:
        return f"context {run.seqlen} shorter than span {p['span']} + 2"
    method = problem.method(p["method"])
    why = method.unavailable_reason()
    if why:
        return f"method {method.name} unavailable: {why}"
    keys = run.seqlen
    needs = {PREFILL: [(keys, "fwd")], DECODE: [(1, DECODE)], STEP: [(p["span"], "step")],
             TOTAL: [(keys, "fwd"), (p["span"], "step"), (1, DECODE)]}[problem.phase]
    for rows, what in needs:
        attn = _attention_problem(problem, min(rows, keys - 1) if what != "fwd" else keys, keys)
        why = method.unsupported_reason(attn)
        if not why and what == "step" and not method.backward:
            why = "backward (forward only): a ttt_step needs dQ"
        if why:
            return f"method {method.name} ({what}): {why}"
    return None


# ----- the built state of a run --------------------------------------------------------------------------------

def _adapter(problem: WorkloadProblem, builder: Callable, label: str) -> AttentionAdapter:
    run = problem.run
    return AttentionAdapter(builder, run.mask, run.mask_kwargs, run.option_kwargs, label)


def _reference_builder(p: Problem):
    return reference_attend(p.mask, p.scale, torch.arange(p.q_rows), p.q_offset)


def _eager_builder(p: Problem):
    return eager_attend(p.mask, p.scale, torch.arange(p.q_rows), p.q_offset)


def _model(problem: WorkloadProblem, builder: Callable, label: str, dtype: torch.dtype, positions: int):
    name = register(f"lcbench-{label}-{next(_names)}", _adapter(problem, builder, label))
    shape = qwen3.ModelShape.of(problem.params)
    return qwen3.build_model(shape, name, positions, problem.params["seed"], dtype, problem.device)


def _twin(problem: WorkloadProblem, model, builder: Callable, label: str, dtype: torch.dtype):
    name = register(f"lcbench-{label}-{next(_names)}", _adapter(problem, builder, label))
    return qwen3.twin(model, name, dtype)


def _tokens(problem: WorkloadProblem, length: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(problem.params["seed"] + 1)
    return torch.randint(0, problem.params["vocab"], (problem.batch, length), generator=g).to(problem.device)


@dataclass
class QTTT:
    """The model, its session (cache + tokens), the W_Q optimizer and the span starts of one run."""

    problem: WorkloadProblem
    shape: qwen3.ModelShape
    model: torch.nn.Module
    session: qwen3.Session
    starts: list[int]
    attention: qwen3.AttentionFlops  # what the method executes (the phases' stated FLOPs)
    needed: qwen3.AttentionFlops  # what a step needs: a dQ-only attention backward (attention_flops)
    optimizer: Optional[torch.optim.Optimizer] = None
    original_wq: list[torch.Tensor] = field(default_factory=list)
    step_index: int = 0

    @staticmethod
    def build(problem: WorkloadProblem, capacity: int) -> "QTTT":
        p, run = problem.params, problem.run
        shape = qwen3.ModelShape.of(p)
        method = problem.method(p["method"])
        model = _model(problem, method.build, method.name, problem.dtype, capacity + 1)
        session = qwen3.Session(model, shape, _tokens(problem, capacity + 1), capacity)
        T, k = run.seqlen, p["span"]
        if p["span_at"] == "end" or T < k + 2:
            starts = [max(T - k - 1, 0)] * p["steps"]
        else:
            g = torch.Generator().manual_seed(p["seed"] + 2)
            starts = torch.randint(0, T - k, (p["steps"],), generator=g).tolist()
        return QTTT(problem, shape, model, session, starts, attention_flops(problem),
                    attention_flops(problem, executed=False))

    # ----- the TTT loop --------------------------------------------------------------------------------------
    def start_training(self) -> None:
        p = self.problem.params
        wq = qwen3.q_weights(self.model)
        self.original_wq = [w.detach().clone() for w in wq]
        for w in wq:
            w.requires_grad_(True)
        self.optimizer = torch.optim.AdamW(wq, lr=p["lr"], weight_decay=p["weight_decay"])

    def step(self) -> torch.Tensor:
        """One AdamW step on W_Q over the next span (cycling through ``starts``)."""
        start = self.starts[self.step_index % len(self.starts)]
        self.step_index += 1
        loss = self.session.span_loss(start, self.problem.params["span"])
        loss.backward()
        wq = qwen3.q_weights(self.model)
        torch.nn.utils.clip_grad_norm_(wq, self.problem.params["clip"])
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return loss.detach()

    def restore(self) -> None:
        """W_Q back to its pre-training values; the optimizer forgets its state."""
        with torch.no_grad():
            for w, w0 in zip(qwen3.q_weights(self.model), self.original_wq):
                w.copy_(w0)
        self.optimizer.state.clear()
        self.step_index = 0

    # ----- FLOPs ---------------------------------------------------------------------------------------------
    def step_flops(self, start: int, needed: bool = False) -> qwen3.StepFlops:
        """One step's FLOPs as executed (or, ``needed``, with the dQ-only attention backward a step needs)."""
        attention = self.needed if needed else self.attention
        return qwen3.step_flops(self.shape, start, self.problem.params["span"], attention, self.problem.batch)

    def steps_flops(self, needed: bool = False) -> float:
        return sum(self.step_flops(s, needed).total for s in self.starts)

    def thinking_tokens(self, needed: bool = False) -> float:
        """Tokens decoded at context T with the FLOPs of the ``steps`` steps: as executed (decode steps as the
        method executes them), or as needed (dQ-only steps, decode steps by the method's convention)."""
        T = self.problem.run.seqlen
        attention = self.needed if needed else self.attention
        return qwen3.equal_flop_tokens(self.shape, T, self.steps_flops(needed), attention, self.problem.batch)

    def decode_flops(self, position: int, count: int) -> float:
        return sum(qwen3.decode_flops(self.shape, position + i, self.attention, self.problem.batch)
                   for i in range(count))

    def fields(self) -> dict:
        parts = [self.step_flops(s) for s in self.starts]
        mean = lambda attr: sum(getattr(x, attr) for x in parts) / len(parts)  # noqa: E731
        att_f, att_b, total = mean("attention_forward"), mean("attention_backward"), mean("total")
        return {
            "parameters": self.shape.parameters(),
            "kv_cache_bytes": self.shape.kv_bytes(self.problem.run.seqlen, self.session.cache.keys[0].element_size(),
                                                  self.problem.batch),
            "step_flops": total, "step_attention_fwd_flops": att_f, "step_attention_bwd_flops": att_b,
            "steps_flops": self.steps_flops(), "steps_flops_dq_only": self.steps_flops(needed=True),
            "decode_flops_at_T": self.decode_flops(self.problem.run.seqlen, 1),
            "span_starts": self.starts,
        }

    def share_metrics(self) -> dict[str, float]:
        f = self.fields()
        total, att_f, att_b = f["step_flops"], f["step_attention_fwd_flops"], f["step_attention_bwd_flops"]
        kv_part = max(att_b - DQ_ONLY_BWD_FACTOR * att_f, 0.0)
        return {"thinking_tokens": self.thinking_tokens(), "thinking_tokens_dq_only": self.thinking_tokens(True),
                "attention_bwd_share": att_b / total, "attention_kv_grad_share": kv_part / total}


# ----- checks ------------------------------------------------------------------------------------------------

def _check_context(problem: WorkloadProblem) -> int:
    return min(problem.run.seqlen, max(CHECK_CONTEXT, problem.params["span"] + 2))


def _twins_fit(state: QTTT) -> Optional[str]:
    need = state.shape.parameters() * 8
    if need > FLOAT64_TWIN_BYTES:
        return f"float64 twin skipped ({need / 2**30:.1f} GiB > {FLOAT64_TWIN_BYTES / 2**30:.0f} GiB)"
    return None


def _sessions(state: QTTT, capacity: int) -> dict[str, qwen3.Session]:
    """Sessions for the check: the run's model (a fresh cache), a float64 twin with exact attention, an eager
    twin in the run's dtype — all on the same weights and tokens."""
    pr = state.problem
    tokens = state.session.tokens[:, :capacity + 1]
    models = {"got": state.model,
              "exact": _twin(pr, state.model, _reference_builder, "reference", torch.float64),
              "eager": _twin(pr, state.model, _eager_builder, "eager", pr.dtype)}
    return {k: qwen3.Session(m, state.shape, tokens, capacity) for k, m in models.items()}


def check_gradient(state: QTTT) -> CheckResult:
    """A step's loss and W_Q gradient (all layers) against the float64 twin, by the field's rule."""
    skip = _twins_fit(state)
    if skip:
        return CheckResult(True, {}, skip)
    span = state.problem.params["span"]
    T = _check_context(state.problem)
    start = min(state.starts[0], T - span - 1)
    results = {}
    for name, s in _sessions(state, T).items():
        s.prefill(T)
        wq = qwen3.q_weights(s.model)
        flags = [w.requires_grad for w in wq]
        for w in wq:
            w.requires_grad_(True)
        loss = s.span_loss(start, span)
        grads = torch.autograd.grad(loss, wq)
        for w, flag in zip(wq, flags):
            w.requires_grad_(flag)
        results[name] = {"loss": loss.detach().reshape(1), "dwq": torch.cat([g.flatten() for g in grads])}
    return check_against_eager(results["got"], results["exact"], results["eager"])


def check_logits(state: QTTT, decode_count: int = 0) -> CheckResult:
    """Prefill logits (and ``decode_count`` decoded tokens' logits) against the float64 twin."""
    skip = _twins_fit(state)
    if skip:
        return CheckResult(True, {}, skip)
    T = _check_context(state.problem)
    context = T - decode_count
    results = {}
    for name, s in _sessions(state, T).items():
        out = {"logits": s.prefill(context)}
        if decode_count:
            out["decode_logits"] = s.decode(context, decode_count)
        results[name] = out
    return check_against_eager(results["got"], results["exact"], results["eager"])


def check_only_wq(state: QTTT, steps: int = 2) -> CheckResult:
    """After ``steps`` steps only W_Q changed (every other parameter and the KV cache bit-identical); after
    :meth:`QTTT.restore` W_Q is bit-identical to before."""
    named = dict(state.model.named_parameters())
    wq_names = {n for n, p in named.items() if any(p is w for w in qwen3.q_weights(state.model))}
    before = {n: p.detach().clone() for n, p in named.items()}
    cache_before = [t.clone() for t in state.session.cache.tensors()]
    for _ in range(steps):
        state.step()
    changed = {n for n, p in named.items() if not torch.equal(p.detach(), before[n])}
    cache_same = all(torch.equal(a, b) for a, b in zip(cache_before, state.session.cache.tensors()))
    state.restore()
    restored = all(torch.equal(named[n].detach(), before[n]) for n in named)
    problems = []
    if changed - wq_names:
        problems.append(f"parameters other than W_Q changed: {sorted(changed - wq_names)[:3]}")
    if wq_names - changed:
        problems.append(f"W_Q unchanged after {steps} steps: {sorted(wq_names - changed)[:3]}")
    if not cache_same:
        problems.append("the frozen KV cache changed")
    if not restored:
        problems.append("W_Q not restored bit-identically")
    return CheckResult(not problems, {"wq_changed": float(len(changed & wq_names)),
                                      "other_changed": float(len(changed - wq_names))}, "; ".join(problems))


def _both(*checks: CheckResult) -> CheckResult:
    errors = {k: v for c in checks for k, v in c.errors.items()}
    bad = [c.detail for c in checks if not c.ok]
    notes = [c.detail for c in checks if c.ok and c.detail]
    return CheckResult(not bad, errors, "; ".join(bad or notes))


# ----- the phases --------------------------------------------------------------------------------------------

def build_prefill(problem: WorkloadProblem) -> WorkloadStep:
    T = problem.run.seqlen
    state = QTTT.build(problem, T)
    flops = qwen3.prefill_flops(state.shape, T, state.attention, problem.batch)
    tokens = problem.batch * T
    shares = state.share_metrics()
    return WorkloadStep(
        call=lambda: state.session.prefill(T), flops=flops, check=lambda: check_logits(state),
        metrics=lambda s: {"ms": s * 1e3, "tokens_per_s": tokens / s, "thinking_tokens": shares["thinking_tokens"],
                           "thinking_tokens_dq_only": shares["thinking_tokens_dq_only"]},
        fields=state.fields(), inputs=tuple(state.session.cache.tensors()),
    )


def build_step(problem: WorkloadProblem) -> WorkloadStep:
    T, n = problem.run.seqlen, problem.params["steps"]
    state = QTTT.build(problem, T)
    state.session.prefill(T)
    state.start_training()
    shares = state.share_metrics()
    per_step = state.steps_flops() / n

    def check() -> CheckResult:
        return _both(check_gradient(state), check_only_wq(state))

    return WorkloadStep(
        call=state.step, flops=per_step, check=check,
        metrics=lambda s: {"ms_per_step": s * 1e3, "n_steps_ms": n * s * 1e3,
                           "span_tokens_per_s": problem.batch * problem.params["span"] / s, **shares},
        fields=state.fields(), inputs=tuple(state.session.cache.tensors()) + tuple(qwen3.q_weights(state.model)),
    )


def build_decode(problem: WorkloadProblem) -> WorkloadStep:
    T, n = problem.run.seqlen, problem.run.decode_tokens
    state = QTTT.build(problem, T + n)
    state.session.prefill(T)
    shares = state.share_metrics()

    def metrics(s: float) -> dict[str, float]:
        ms_token = s * 1e3 / n
        return {"ms_per_token": ms_token, "tokens_per_s": problem.batch * n / s,
                "thinking_ms": shares["thinking_tokens"] * ms_token, "thinking_tokens": shares["thinking_tokens"],
                "thinking_tokens_dq_only": shares["thinking_tokens_dq_only"]}

    return WorkloadStep(
        call=lambda: state.session.decode(T, n), flops=state.decode_flops(T, n),
        check=lambda: check_logits(state, decode_count=min(n, 4)), metrics=metrics, fields=state.fields(),
        inputs=tuple(state.session.cache.tensors()),
    )


def build_total(problem: WorkloadProblem) -> WorkloadStep:
    T, p = problem.run.seqlen, problem.params
    answer = p["answer_tokens"]
    state = QTTT.build(problem, T + answer)
    state.start_training()
    shares = state.share_metrics()

    def call():
        state.session.prefill(T)
        for _ in range(p["steps"]):
            state.step()
        out = state.session.decode(T, answer)
        state.restore()
        return out

    def check() -> CheckResult:
        named = dict(state.model.named_parameters())
        before = {n: t.detach().clone() for n, t in named.items()}
        call()
        same = all(torch.equal(named[n].detach(), before[n]) for n in named)
        state.session.prefill(T)
        return _both(check_gradient(state), check_only_wq(state),
                     CheckResult(same, {}, "" if same else "parameters differ after a qTTT run (W_Q not restored)"))

    flops = (qwen3.prefill_flops(state.shape, T, state.attention, problem.batch) + state.steps_flops()
             + state.decode_flops(T, answer))
    return WorkloadStep(
        call=call, flops=flops, check=check,
        metrics=lambda s: {"ms": s * 1e3, **shares},
        fields=state.fields(), inputs=tuple(state.session.cache.tensors()),
    )


BUILDERS = {PREFILL: build_prefill, STEP: build_step, DECODE: build_decode, TOTAL: build_total}


def build(problem: WorkloadProblem) -> WorkloadStep:
    return BUILDERS[problem.phase](problem)


WORKLOAD = Workload(
    name="qttt",
    summary="qTTT on HF Qwen3ForCausalLM (random init): prefill, W_Q-only AdamW steps on a frozen KV cache, "
            "decode; vs equal-FLOP thinking tokens",
    phases=PHASES,
    params=dict(PARAMS),
    flavors={name: dict(shape) for name, shape in qwen3.FLAVORS.items()},
    build=build,
    specs=SPECS,
    constraints=constraints,
    metrics=(
        Metric("ms", "ms", "lower", "time of the phase"),
        Metric("tokens_per_s", "tokens/s", "higher", "prefill / decode throughput"),
        Metric("ms_per_step", "ms", "lower", "one qTTT step (AdamW on W_Q over one span)"),
        Metric("n_steps_ms", "ms", "lower", "the `steps` qTTT steps"),
        Metric("span_tokens_per_s", "tokens/s", "higher", "span tokens trained per second"),
        Metric("ms_per_token", "ms", "lower", "decode time per generated token at context T"),
        Metric("thinking_tokens", "tokens", "higher",
               "tokens decoded at context T with the FLOPs the `steps` steps spent (as the method executes them)"),
        Metric("thinking_tokens_dq_only", "tokens", "higher",
               "tokens decoded at context T with the FLOPs `steps` steps need (dQ-only attention backward)"),
        Metric("thinking_ms", "ms", "lower", "measured decode time of the equal-FLOP thinking tokens"),
        Metric("attention_bwd_share", "fraction", "lower", "share of a step's FLOPs in the attention backward"),
        Metric("attention_kv_grad_share", "fraction", "lower",
               "share of a step's FLOPs spent on dK/dV, which a frozen cache does not need"),
    ),
    flop_convention="matmuls: per token and layer q,k,v,o projections + SwiGLU MLP, LM head on the needed logits; "
                    "attention as the method executes it (Method.executed, K/V frozen: sdpa's fused backward "
                    "computes dK/dV anyway, eager autograd does not); a step's backward: input grads to layer 0's "
                    "q_proj + W_Q weight grads; thinking_tokens_dq_only: steps with a dQ-only attention backward "
                    "(1.5x the exact-area forward)",
    dtypes=frozenset({"float32", "bfloat16", "float64"}),
    limits=limits,
    probe=qwen3.optional_import_error,
    homepage="https://arxiv.org/abs/2512.13898",
)
