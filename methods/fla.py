"""Peers of lightning attention: flash-linear-attention (``fla-core``) and OpenNLPLab's ``lightning-attn``.

Every adapter computes the same function as our linear methods (:mod:`methods.lightning`): causal linear
attention with the per-head decay of the run's ``decay`` option (``minimax`` by default; ``layer``/``layers``
as there), no scaling (``scale=1``), GQA by repeating the kv heads. fla takes the decay as a log-gate
``g = -s_h`` per token (or ``g_gamma = -s_h`` per head), which is exactly our rate.

CPU (pure torch, fla's own references in ``fla/ops/simple_gla/naive.py``):

* ``fla_naive_recurrent`` — ``naive_recurrent_simple_gla``: the token-by-token recurrence;
* ``fla_chunk_naive`` — ``naive_chunk_simple_gla``: the chunked form (fla's chunk 64, option ``chunk``).

GPU (Triton kernels, behind probes):

* ``fla_chunk_simple_gla`` — ``chunk_simple_gla(g_gamma=-s_h)``, fwd/bwd;
* ``fla_chunk_lightning`` — ``chunk_lightning_attn(layer_idx, num_layers)``: TransNormerLLM's schedule only
  (the decay fla's lightning wrapper hard-codes; head 0 undecayed);
* ``fla_fused_recurrent`` — ``fused_recurrent_simple_gla``: fwd/bwd and decode (the prefix state from
  ``chunk_simple_gla(output_final_state=True)``, computed once per cache, then the step's rows from it);
* ``lightning_attn2`` — ``lightning_attn.ops.lightning_attn_func(q, k, v, s)`` (Lightning Attention-2).

Pinned here (CPU, torch 2.13): fla-core 0.5.2 with triton 3.6.0 (imports; fla's Triton kernels need a GPU),
lightning-attn 0.0.5 (``pip install --no-deps``; the ``linear`` extra of pyproject.toml).

FLOPs: the recurrences count ``4 d^2`` per token and head forward (``k^T v`` and ``q S``), 2x backward; the
chunked ones the blocked matmul count at their chunk size (:func:`methods._linear.block_flops`, autograd
backward: two matmuls per forward matmul).
"""

from __future__ import annotations

import importlib
import importlib.util
import warnings
from typing import Callable, Optional

import torch

from harness.interfaces import AttentionFn, Method, Problem
from harness.masks.core import CAUSAL
from methods import _linear
from methods._common import all_of, needs
from methods._decay import decay_rates
from methods._linear_reference import make_reference
from methods.lightning import causal_only, linear_state_bytes

FLA_CHUNK = 64  # fla's chunk size (its naive chunk default and its Triton kernels' BT)
MAX_SAVED_BYTES = 4 << 30  # autograd through a token loop keeps ~2 states per token


def fla_imports(module: str) -> Callable[[], Optional[str]]:
    """A probe: fla installed, and ``module`` imports (newer triton versions break fla 0.5's import)."""

    def probe() -> Optional[str]:
        if importlib.util.find_spec("fla") is None:
            return "fla not installed (pip install --no-deps fla-core==0.5.2 einops triton==3.6.0)"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                importlib.import_module(module)
            except Exception as e:  # noqa: BLE001 — report why, never crash a sweep
                return f"{module} does not import: {type(e).__name__}: {e}"
        return None

    return probe


def _naive(name: str):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return getattr(importlib.import_module("fla.ops.simple_gla.naive"), name)


def _expand(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor):
    group = q.shape[2] // k.shape[2]
    if group > 1:
        k, v = k.repeat_interleave(group, dim=2), v.repeat_interleave(group, dim=2)
    return q, k, v


def _gates(rates: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """fla's per-token log-gate ``g = -s_h``: ``[B, T, H]`` float32."""
    return (-rates).float().to(q.device).expand(q.shape[0], q.shape[1], -1).contiguous()


def _rates(problem: Problem) -> torch.Tensor:
    return decay_rates(problem.heads_q, problem.options, "minimax")


# ----- CPU: fla's pure-torch references ------------------------------------------------------------------

def build_naive_recurrent(problem: Problem) -> AttentionFn:
    fn, rates = _naive("naive_recurrent_simple_gla"), _rates(problem)

    def fla_naive_recurrent(q, k, v):
        q, k, v = _expand(q, k, v)
        return fn(q, k, v, _gates(rates, q), scale=1.0, output_final_state=False)[0].to(q.dtype)

    return fla_naive_recurrent


def build_chunk_naive(problem: Problem) -> AttentionFn:
    fn, rates = _naive("naive_chunk_simple_gla"), _rates(problem)
    chunk = problem.options.get("chunk", FLA_CHUNK)

    def fla_chunk_naive(q, k, v):
        q, k, v = _expand(q, k, v)
        return fn(q, k, v, _gates(rates, q), chunk_size=chunk, scale=1.0)[0].to(q.dtype)

    return fla_chunk_naive


def recurrent_flops(problem: Problem, direction: str) -> float:
    """``4 d^2`` per token and q head forward (``k^T v`` and ``q S``), twice that backward."""
    rows = problem.decode_tokens if problem.is_decode else problem.seqlen
    fwd = 4.0 * problem.batch * problem.heads_q * rows * problem.head_dim**2
    return {"fwd": fwd, "decode": fwd, "bwd": 2 * fwd, "fwd+bwd": 3 * fwd}[direction]


def chunk_flops(problem: Problem, direction: str) -> float:
    """The blocked matmul count at fla's chunk (padded to whole chunks, as fla pads), autograd backward."""
    chunk = problem.options.get("chunk", FLA_CHUNK)
    padded = -(-problem.seqlen // chunk) * chunk
    per_head = _linear.block_flops(padded, chunk, problem.head_dim, direction, backward="autograd")
    return problem.batch * problem.heads_q * per_head


def recurrent_limits(problem: Problem) -> Optional[str]:
    why = causal_only(problem)
    if why or not problem.needs_grad:
        return why
    saved = 2 * problem.batch * problem.heads_q * problem.seqlen * problem.head_dim**2 * 4
    if saved > MAX_SAVED_BYTES:
        return f"autograd through the token loop keeps {saved / 2**30:.1f} GiB of states (limit 4 GiB)"
    return None


# ----- GPU: fla's Triton kernels and lightning-attn ---------------------------------------------------------

def _fla(module: str, name: str):
    return getattr(importlib.import_module(module), name)


def build_chunk_simple_gla(problem: Problem) -> AttentionFn:
    fn, rates = _fla("fla.ops.simple_gla", "chunk_simple_gla"), _rates(problem)
    g_gamma = (-rates).float().to(problem.device)

    def fla_chunk_simple_gla(q, k, v):
        q, k, v = _expand(q, k, v)
        return fn(q, k, v, g_gamma=g_gamma, scale=1.0)[0]

    return fla_chunk_simple_gla


def build_chunk_lightning(problem: Problem) -> AttentionFn:
    fn = _fla("fla.ops.lightning_attn", "chunk_lightning_attn")
    layer, layers = problem.options.get("layer", 0), problem.options.get("layers", 1)

    def fla_chunk_lightning(q, k, v):
        q, k, v = _expand(q, k, v)
        return fn(q, k, v, layer_idx=layer, num_layers=layers, scale=1.0)[0]

    return fla_chunk_lightning


def lightning_limits(problem: Problem) -> Optional[str]:
    if problem.options.get("decay", "transnormer") != "transnormer":
        return f"option decay={problem.options['decay']!r}: chunk_lightning_attn computes the transnormer decay"
    return causal_only(problem)


def build_fused_recurrent(problem: Problem) -> AttentionFn:
    recurrent = _fla("fla.ops.simple_gla", "fused_recurrent_simple_gla")
    rates = _rates(problem)
    g_gamma = (-rates).float().to(problem.device)
    if not problem.is_decode:
        def fla_fused_recurrent(q, k, v):
            q, k, v = _expand(q, k, v)
            return recurrent(q, k, v, g_gamma=g_gamma, scale=1.0)[0]
        return fla_fused_recurrent
    chunk = _fla("fla.ops.simple_gla", "chunk_simple_gla")
    prefix, cache = problem.q_offset, {}

    def fla_fused_recurrent_decode(q, k, v):
        q, k, v = _expand(q, k, v)
        key = (k.data_ptr(), v.data_ptr(), k._version, v._version)
        if key not in cache:  # the cache of a linear method is its state: computed once, as a server would
            cache.clear()
            with torch.no_grad():
                cache[key] = chunk(q.new_zeros(k[:, :prefix].shape), k[:, :prefix], v[:, :prefix], g_gamma=g_gamma,
                                   scale=1.0, output_final_state=True)[1]
        return recurrent(q, k[:, prefix:], v[:, prefix:], g_gamma=g_gamma, scale=1.0,
                         initial_state=cache[key])[0]

    return fla_fused_recurrent_decode


def build_lightning_attn2(problem: Problem) -> AttentionFn:
    fn = _fla("lightning_attn.ops", "lightning_attn_func")
    slopes = _rates(problem).float().to(problem.device).view(-1, 1, 1)

    def lightning_attn2(q, k, v):
        q, k, v = (t.transpose(1, 2).contiguous() for t in _expand(q, k, v))
        return fn(q, k, v, slopes).transpose(1, 2)

    return lightning_attn2


# ----- registration ----------------------------------------------------------------------------------------

def _method(name: str, summary: str, build, probe, *, decay: str = "minimax", devices=frozenset({"cpu"}),
            dtypes=frozenset({"float32", "bfloat16"}), decode: bool = False, flops=chunk_flops,
            limits=causal_only, homepage: str = "https://github.com/fla-org/flash-linear-attention",
            convention: str = "") -> Method:
    return Method(
        name=name, summary=summary, build=build, mask_features=frozenset({CAUSAL}), dtypes=dtypes,
        devices=devices, decode=decode, probe=probe, limits=limits, flops=flops,
        reference=make_reference(decay), flop_convention=f"{convention}; decay {decay}",
        decode_bytes=linear_state_bytes, cache_bytes=linear_state_bytes,
        options={"decay": decay, "layer": 0, "layers": 1}, homepage=homepage,
    )


RECURRENT = "linear recurrence: fwd 4d^2 per token x q head x batch, bwd 2x"
CHUNK = f"linear blocked matmuls at chunk {FLA_CHUNK}: fwd 4L^2d+4Ld^2 per chunk, bwd 2x (autograd)"
GPU = frozenset({"cuda"})
GPU_DTYPES = frozenset({"float32", "bfloat16", "float16"})

METHODS = [
    _method("fla_naive_recurrent", "fla naive_recurrent_simple_gla (pure torch token loop), g = -s_h",
            build_naive_recurrent, fla_imports("fla.ops.simple_gla.naive"), flops=recurrent_flops,
            limits=recurrent_limits, convention=RECURRENT),
    _method("fla_chunk_naive", "fla naive_chunk_simple_gla (pure torch, chunk 64), g = -s_h",
            build_chunk_naive, fla_imports("fla.ops.simple_gla.naive"), convention=CHUNK),
    _method("fla_chunk_simple_gla", "fla chunk_simple_gla Triton kernel, g_gamma = -s_h",
            build_chunk_simple_gla, all_of(needs("fla", "triton"), fla_imports("fla.ops.simple_gla")),
            devices=GPU, dtypes=GPU_DTYPES, convention=CHUNK),
    _method("fla_chunk_lightning", "fla chunk_lightning_attn Triton kernel (TransNormerLLM decay only)",
            build_chunk_lightning, all_of(needs("fla", "triton"), fla_imports("fla.ops.lightning_attn")),
            decay="transnormer", devices=GPU, dtypes=GPU_DTYPES, limits=lightning_limits, convention=CHUNK),
    _method("fla_fused_recurrent", "fla fused_recurrent_simple_gla Triton kernel (decode from the state)",
            build_fused_recurrent, all_of(needs("fla", "triton"), fla_imports("fla.ops.simple_gla")),
            devices=GPU, dtypes=GPU_DTYPES, decode=True, flops=recurrent_flops, convention=RECURRENT),
    _method("lightning_attn2", "OpenNLPLab lightning-attn lightning_attn_func (Lightning Attention-2 Triton)",
            build_lightning_attn2, needs("lightning_attn", "triton"), devices=GPU, dtypes=GPU_DTYPES,
            homepage="https://github.com/OpenNLPLab/lightning-attention", convention=CHUNK),
]
