"""The hybrid language model as a ``hybrid_lm`` workload problem sets it up — shared by the workload
(:mod:`workloads.hybrid_lm`), its context-parallel phases (:mod:`workloads.models.hybrid_cp`) and its Hugging
Face peer (:mod:`workloads.hybrid_lm_hf`): the parameters, specs and flavors; the parameters -> the model's
shape; each layer's attention problem, registered attention and float64 reference; the decode-cache model; one
device's limits; the seeded setup; the record's fields and the attention FLOPs.
"""

from __future__ import annotations

import math
import os
from dataclasses import replace
from typing import Optional

import torch

from harness.errors import UserError
from harness.interfaces import Metric, Problem, WorkloadProblem
from harness.interfaces.linear_kernel import LinearKernel, state_dtype
from harness.interfaces.params import divides, flag, integer, letters, number, one_of, registered, seed
from harness.interfaces.workload import STEP_METRICS
from harness.masks import build_mask
from harness.run import DECODE
from workloads.models import hybrid as hm
from workloads.models.decoder_layers import RESIDUALS

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


def nbytes(tensors) -> int:
    return sum(t.numel() * t.element_size() for t in tensors)


# ----- limits -------------------------------------------------------------------------------------------

def memory_bytes(device: torch.device) -> int:
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).total_memory
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def limits(problem: WorkloadProblem) -> Optional[str]:
    """Why one device cannot run this problem (mask, memory, each layer kind's method), or None."""
    shape = model_shape(problem.params)
    if problem.run.mask != "causal":
        return f"mask {problem.run.mask} (a language model is causal)"
    elem = torch.empty((), dtype=problem.dtype).element_size()
    copies = 4 if problem.phase == "train_step" else 1  # weights, gradients, AdamW's two moments
    need = shape.parameters()["parameters"] * elem * copies
    have = memory_bytes(problem.device)
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
    return None


# ----- the phases ------------------------------------------------------------------------------------------

def setup(problem: WorkloadProblem):
    params = problem.params
    shape = model_shape(params)
    weights = hm.seeded_weights(shape, params["seed"], problem.dtype, problem.device)
    g = torch.Generator().manual_seed(params["seed"] + 1)
    tokens = torch.randint(0, shape.vocab, (problem.batch, problem.seqlen + 1), generator=g).to(problem.device)
    return shape, weights, tokens


def reference_dtype(problem: WorkloadProblem, shape: hm.HybridShape) -> torch.dtype:
    """float64 when a float64 copy of the weights (and gradients) fits comfortably, else float32."""
    need = shape.parameters()["parameters"] * 8 * 3
    return torch.float64 if need < 0.25 * memory_bytes(problem.device) else torch.float32


def check_length(problem: WorkloadProblem) -> int:
    return max(2, min(problem.seqlen, problem.params["check_tokens"]))


def fields(problem: WorkloadProblem, shape: hm.HybridShape) -> dict:
    cache = cache_model(shape, problem.seqlen, problem.dtype)
    return {**shape.parameters(), "pattern_full": shape.pattern, "layers_lightning": shape.count(hm.LIGHTNING),
            "layers_softmax": shape.count(hm.SOFTMAX), **cache,
            "reference_dtype": str(reference_dtype(problem, shape)).removeprefix("torch.")}


def attention_flops(problem: WorkloadProblem, shape: hm.HybridShape, direction: str, length: int,
                     decode_tokens: int = 1) -> float:
    """Every layer's attention FLOPs for ``length`` tokens in ``direction``, as its method executes them (a
    lightning layer decodes its ``decode_tokens`` rows through its kernel: a forward of that many rows)."""
    total = 0.0
    for i, kind in enumerate(shape.pattern):
        if kind == hm.LIGHTNING and direction == DECODE:
            attn = attention_problem(problem, shape, kind, decode_tokens, "fwd", layer=i)
            total += method_of(problem, kind).executed_call(attn, "fwd")
            continue
        attn = attention_problem(problem, shape, kind, length, direction, layer=i, decode_tokens=decode_tokens)
        total += method_of(problem, kind).executed_call(attn, direction)
    return total


METRICS = (
    *STEP_METRICS,
    Metric("cache_bytes", "B", "lower", "decode cache per sequence, measured (bytes of the cache tensors)"),
    Metric("cache_bytes_model", "B", "lower", "decode cache per sequence, modelled (KV of S layers + L states)"),
)

FLOP_CONVENTION = ("matmuls: projections + SwiGLU MLP 2*T*(in*out) per matmul fwd, x3 train (x4 with recompute), "
                   "LM head 2*T*h*V (prefill: last token only; train: fused CE 6*T*h*V) + each layer's attention "
                   "as its method executes it (Method.executed: naive/sdpa the score rectangle, lightning its "
                   "blocked matmuls, a decode step through the kernel); norms, RoPE, gates and AdamW not counted")
