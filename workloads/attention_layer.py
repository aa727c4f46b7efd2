"""``attention_layer``: one transformer attention layer — fused QKV projection, a registered attention method
under the run's mask, output projection — as a training step, a prefill and a decode step.

The smallest real model-level workload: it proves the workload seam (weights, caches and optimizer state built
outside the timed region; a FLOP model per phase; its own float64 check; metrics with units) and answers a
practical question — how much of a layer's time is attention, per method, mask and length.

Phases:
- ``train_step``: forward, backward and an AdamW step over ``seqlen`` tokens (tokens/s);
- ``prefill``: forward over ``seqlen`` tokens, filling the KV cache (ms, tokens/s);
- ``decode``: ``decode_tokens`` new tokens against a KV cache of ``seqlen`` (ms per token).

Checks (against float64, by the field's rule — at most 2x the error of eager attention in the run's dtype):
the layer output on the kernel gate's rows (prefill; ``gate_rows``: every row where affordable, else every
tile and document), output and weight gradients (train_step, with an upstream gradient on those rows only,
which keeps them exact), and a decode step against the float64 prefill of
the same tokens (decode == the last rows of prefill).
"""

from __future__ import annotations

from typing import Optional

import torch

from harness.interfaces import (
    CheckResult, Problem, Workload, WorkloadProblem, WorkloadStep, check_against_eager,
)
from harness.interfaces.method import dense_cache_bytes
from harness.interfaces.params import divides, integer, number, registered, seed
from harness.interfaces.reference import gate_rows, run_seed
from harness.interfaces.workload import STEP_METRICS
from harness.masks import build_mask
from harness.run import DECODE
from workloads.models.attention_block import (
    AttentionShape, AttentionWeights, attention_block, eager_attend, output_projection, project_qkv,
    reference_attend, rows_gradient, seeded_tokens,
)

PHASES = ("train_step", "prefill", DECODE)
ATTENTION_DIRECTION = {"train_step": "fwd+bwd", "prefill": "fwd", DECODE: DECODE}
FLAVORS = {
    "tiny": {"heads_q": 4, "heads_kv": 2, "head_dim": 32},  # CPU
    "llama3-8b": {"heads_q": 32, "heads_kv": 8, "head_dim": 128},  # Llama-3-8B / Qwen3-8B attention widths
    "llama3-70b": {"heads_q": 64, "heads_kv": 8, "head_dim": 128},
}


SPECS = {
    "heads_q": integer(ge=1), "heads_kv": integer(ge=1), "head_dim": integer(ge=1),
    "method": registered("method"), "lr": number(gt=0), "seed": seed(),
}


def constraints(params: dict):
    """Grouped-query attention: the query heads are a multiple of the kv heads."""
    yield from divides(params, "heads_kv", "heads_q")


def _shape(params: dict) -> AttentionShape:
    return AttentionShape(params["heads_q"], params["heads_kv"], params["head_dim"])


def attention_problem(problem: WorkloadProblem) -> Problem:
    """The attention call of this phase as a method sees it."""
    run, shape = problem.run, _shape(problem.params)
    return Problem(
        mask=build_mask(run.mask, run.seqlen, shape.heads_q, **run.mask_kwargs), batch=run.batch,
        seqlen=run.seqlen, heads_q=shape.heads_q, heads_kv=shape.heads_kv, head_dim=shape.head_dim,
        dtype=problem.dtype, device=problem.device, direction=ATTENTION_DIRECTION[problem.phase],
        decode_tokens=run.decode_tokens,
    )


def limits(problem: WorkloadProblem) -> Optional[str]:
    method = problem.method(problem.params["method"])
    why = method.unavailable_reason()
    if why:
        return f"method {method.name} unavailable: {why}"
    why = method.unsupported_reason(attention_problem(problem))
    return f"method {method.name}: {why}" if why else None


def build(problem: WorkloadProblem) -> WorkloadStep:
    return PHASE_BUILDERS[problem.phase](problem)


# ----- the phases ------------------------------------------------------------------------------------------
def _setup(problem: WorkloadProblem):
    run, params = problem.run, problem.params
    shape = _shape(params)
    attn = attention_problem(problem)
    method = problem.method(params["method"])
    fn = method.build(attn)
    weights = AttentionWeights.seeded(shape, params["seed"], problem.dtype, problem.device)
    x = seeded_tokens(run.batch, run.seqlen, shape.hidden, params["seed"] + 1, problem.dtype, problem.device)
    return shape, attn, method, fn, weights, x


def _fields(shape: AttentionShape, attn: Problem, method) -> dict:
    return {"parameters": shape.parameters(), "kv_cache_bytes": dense_cache_bytes(attn), "area": attn.area,
            "attention_flops": method.executed_call(attn, attn.direction)}


def _checked_rows(problem: WorkloadProblem, attn: Problem) -> torch.Tensor:
    """The rows the kernel gate would check for this attention problem (every row where affordable, else every
    tile and document, drawn afresh per run from its key)."""
    return gate_rows(attn.seqlen, attn.mask, run_seed(problem.run.key), batch=attn.batch, heads_q=attn.heads_q,
                     head_dim=attn.head_dim, device=attn.device.type)


def build_prefill(problem: WorkloadProblem) -> WorkloadStep:
    shape, attn, method, fn, weights, x = _setup(problem)
    tokens = attn.batch * attn.seqlen

    def call():
        with torch.no_grad():
            return attention_block(x, weights, fn)

    def check() -> CheckResult:
        rows = _checked_rows(problem, attn)
        with torch.no_grad():
            got = attention_block(x, weights, fn)[:, rows]
            exact = attention_block(x.double(), weights.to(torch.float64), reference_attend(attn.mask, attn.scale, rows))
            eager = attention_block(x, weights, eager_attend(attn.mask, attn.scale, rows))
        return check_against_eager({"out": got}, {"out": exact}, {"out": eager})

    return WorkloadStep(
        call=call, flops=shape.projection_flops(tokens) + method.executed_call(attn, "fwd"), check=check,
        metrics=lambda s: {"tokens_per_s": tokens / s, "ms": s * 1e3}, fields=_fields(shape, attn, method),
        inputs=(x, weights.wqkv, weights.wo),
    )


def build_train_step(problem: WorkloadProblem) -> WorkloadStep:
    shape, attn, method, fn, weights, x = _setup(problem)
    tokens = attn.batch * attn.seqlen
    trained = weights.to(problem.dtype, requires_grad=True)
    optimizer = torch.optim.AdamW([trained.wqkv, trained.wo], lr=problem.params["lr"], weight_decay=0.01)
    dout = seeded_tokens(attn.batch, attn.seqlen, shape.hidden, problem.params["seed"] + 2, problem.dtype,
                         problem.device)

    def call():
        optimizer.zero_grad(set_to_none=True)
        attention_block(x, trained, fn).backward(dout)
        optimizer.step()

    def check() -> CheckResult:
        rows = _checked_rows(problem, attn)
        g_rows = rows_gradient(x.shape, rows, problem.params["seed"] + 3, problem.dtype, problem.device)[:, rows]

        def grads(w: AttentionWeights, x_: torch.Tensor, out_rows: torch.Tensor) -> dict:
            wqkv, wo = torch.autograd.grad((out_rows * g_rows.to(out_rows.dtype)).sum(), [w.wqkv, w.wo])
            return {"out": out_rows.detach(), "dwqkv": wqkv, "dwo": wo}

        w = weights.to(problem.dtype, requires_grad=True)
        got = grads(w, x, attention_block(x, w, fn)[:, rows])
        w64 = weights.to(torch.float64, requires_grad=True)
        exact = grads(w64, x, attention_block(x.double(), w64, reference_attend(attn.mask, attn.scale, rows)))
        we = weights.to(problem.dtype, requires_grad=True)
        eager = grads(we, x, attention_block(x, we, eager_attend(attn.mask, attn.scale, rows)))
        return check_against_eager(got, exact, eager)

    flops = shape.train_projection_flops(tokens) + method.executed_call(attn, "fwd+bwd")
    return WorkloadStep(
        call=call, flops=flops, check=check, metrics=lambda s: {"tokens_per_s": tokens / s, "ms": s * 1e3},
        fields=_fields(shape, attn, method), inputs=(x, dout, trained.wqkv, trained.wo),
    )


def build_decode(problem: WorkloadProblem) -> WorkloadStep:
    shape, attn, method, fn, weights, x = _setup(problem)
    n, past = attn.decode_tokens, attn.q_offset
    with torch.no_grad():
        _, k_cache, v_cache = project_qkv(x, weights)  # the cache of the whole context (new rows overwritten)
    x_new = x[:, past:]

    def call():
        with torch.no_grad():
            q, k, v = project_qkv(x_new, weights)
            k_cache[:, past:] = k
            v_cache[:, past:] = v
            return output_projection(fn(q, k_cache, v_cache), weights)

    def check() -> CheckResult:
        rows = torch.arange(past, attn.seqlen)
        got = call()
        with torch.no_grad():
            exact = attention_block(x.double(), weights.to(torch.float64), reference_attend(attn.mask, attn.scale, rows))
            eager = attention_block(x, weights, eager_attend(attn.mask, attn.scale, rows))
        return check_against_eager({"out": got}, {"out": exact}, {"out": eager})

    read = method.decode_bytes(attn)
    fields = {**_fields(shape, attn, method), "kv_bytes_read": read}
    return WorkloadStep(
        call=call, flops=shape.projection_flops(n * attn.batch) + method.executed_call(attn, DECODE), check=check,
        metrics=lambda s: {"ms_per_token": s * 1e3 / n, "tokens_per_s": n * attn.batch / s},
        fields=fields, inputs=(x, k_cache, v_cache, weights.wqkv, weights.wo),
    )


PHASE_BUILDERS = {"train_step": build_train_step, "prefill": build_prefill, DECODE: build_decode}

WORKLOAD = Workload(
    name="attention_layer",
    summary="one attention layer: fused QKV projection -> a registered method under the mask -> output projection",
    phases=PHASES,
    params={"flavor": "tiny", "heads_q": 4, "heads_kv": 2, "head_dim": 32, "method": "sdpa", "lr": 1e-3, "seed": 0},
    flavors=FLAVORS,
    build=build,
    specs=SPECS,
    constraints=constraints,
    metrics=STEP_METRICS,
    flop_convention="projections 2*T*hidden*((Hq+2Hkv)d + Hq d) fwd (train_step: x2 for QKV, whose input needs no "
                    "gradient, x3 for the output projection) + the FLOPs the attention method executes "
                    "(Method.executed: naive and sdpa the whole score rectangle, as torch.utils.flop_counter counts; "
                    "others their softmax convention, 4*area*Hq*d fwd, 3.5x fwd+bwd); AdamW's element-wise work not "
                    "counted",
    limits=limits,
)
