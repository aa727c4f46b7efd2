"""Lightning attention (MiniMax-01/M1's linear attention) and its relatives, our blocked torch implementation.

Three registered methods share one implementation (:mod:`methods._linear`) and differ in their default
decay schedule (:mod:`methods._decay`; the option ``decay`` overrides it, ``layer``/``layers`` place the
layer, ``block`` sets the block length, default 256 as in MiniMax):

* ``lightning`` — MiniMax's schedule ``s_h = m_h (1 - l / (L-1) + 1e-5)``, ``m_h`` ALiBi's slopes
  (``2^(-8 (h+1) / H)`` for a power of two H, MiniMax's interleaving otherwise);
* ``lightning_tnl`` — TransNormerLLM's ``s_h = (8/H)(1 - l/L) h`` (flash-linear-attention's
  ``chunk_lightning_attn``; head 0 undecayed);
* ``linear_attn`` — plain causal linear attention (no decay).

No 1/sqrt(d) scaling (MiniMax applies none). Causal only. GQA: a kv head is shared by its group of q heads,
each q head with its own decay (so the state is per q head). The decode direction treats the ``d x d`` state
as the cache: a decode step reads the state of the prefix and advances it token by token over the step's
rows (``KV <- exp(-s) KV + k^T v``, ``o = q KV``). The prefix state is computed once per (k, v) — on the
first call, which the harness makes before timing (warm-up and gate) — so the timed step is what a server
runs per token: read the state, update it, one ``q KV``.

FLOPs are the implementation's matmuls (:func:`methods._linear.block_flops`), checked against
``torch.utils.flop_counter`` in the tests; the reference is the float64 quadratic form
(:mod:`methods._linear_reference`).
"""

from __future__ import annotations

from typing import Optional

import torch

from harness.interfaces import AttentionFn, Method, Problem
from harness.interfaces.linear_kernel import LinearKernel, state_bytes
from harness.masks.core import CAUSAL
from methods import _linear
from methods._decay import block_option, decay_rates
from methods._linear_reference import make_reference


def causal_only(problem: Problem) -> Optional[str]:
    """Causal linear attention is defined on the plain causal mask only."""
    if not problem.mask.is_plain_causal:
        return f"mask {problem.mask.name}: causal linear attention runs the plain causal mask only"
    return None


def _prefix_state_cache(rates: torch.Tensor, heads_q: int, block: int, prefix: int):
    """``state(k, v)``: the prefix rows' state, computed once per (k, v) tensors (the decode cache)."""
    cache: dict[tuple, torch.Tensor] = {}

    def state(k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        key = (k.data_ptr(), v.data_ptr(), k._version, v._version, tuple(k.shape), tuple(v.shape), k.dtype)
        if key not in cache:
            cache.clear()
            with torch.no_grad():
                cache[key] = _linear.chunk_state(k[:, :prefix], v[:, :prefix], rates, heads_q, block)
        return cache[key]

    return state


def make_build(default_decay: str):
    def build(problem: Problem) -> AttentionFn:
        rates = decay_rates(problem.heads_q, problem.options, default_decay)
        block = block_option(problem.options, _linear.DEFAULT_BLOCK)
        if not problem.is_decode:
            def lightning(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
                return _linear.chunked(q, k, v, rates, block)
            return lightning
        prefix = problem.q_offset
        state_of = _prefix_state_cache(rates, problem.heads_q, block, prefix)

        def decode(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
            return _linear.recurrent_steps(q, k[:, prefix:], v[:, prefix:], rates, state_of(k, v))
        return decode

    return build


def linear_flops(problem: Problem, direction: str) -> float:
    """The implementation's matmul FLOPs: blocked ``4 L^2 d + 4 L d^2`` per block forward (see
    :func:`methods._linear.block_flops`), ``4 d^2`` per decode row; per q head and batch element."""
    per_head = problem.batch * problem.heads_q
    if direction == "decode":
        return per_head * _linear.decode_flops(problem.head_dim, problem.decode_tokens)
    block = block_option(problem.options, _linear.DEFAULT_BLOCK)
    return per_head * _linear.block_flops(problem.seqlen, block, problem.head_dim, direction)


def linear_state_bytes(problem: Problem) -> int:
    """The decode cache of a linear method: one ``d x d`` state per q head (float32 for 16-bit inputs)."""
    return state_bytes(problem.batch, problem.heads_q, problem.head_dim, problem.dtype)


def make_kernel(name: str, default_decay: str) -> LinearKernel:
    """The method's local math for the linear CP strategies (``lasp2``, ``lasp``, ``linear_all_gather``)."""

    def rates(heads_q: int, options: dict) -> torch.Tensor:
        return decay_rates(heads_q, options, default_decay)

    def state(k, v, rates_, heads_q: int, options: dict) -> torch.Tensor:
        return _linear.chunk_state(k, v, rates_, heads_q, block_option(options, _linear.DEFAULT_BLOCK))

    def attend(q, k, v, rates_, options: dict, state_in=None) -> torch.Tensor:
        return _linear.chunked(q, k, v, rates_, block_option(options, _linear.DEFAULT_BLOCK), state_in)

    def attend_state(q, k, v, rates_, options: dict, state_in=None):
        return _linear.chunked_and_state(q, k, v, rates_, block_option(options, _linear.DEFAULT_BLOCK), state_in)

    return LinearKernel(name=f"{name} (blocked torch, state passed between ranks)", rates=rates, state=state,
                        attend=attend, attend_state=attend_state)


FLOP_CONVENTION = ("linear: matmuls of the blocked algorithm, per block of L rows fwd 4L^2d+4Ld^2, bwd "
                   "10L^2d+8Ld^2 (recomputed scores), per q head x batch; decode 4d^2 per row")
VARIANTS = {
    "lightning": ("minimax", "MiniMax lightning attention: blocked causal linear attention, decay "
                             "m_h(1-l/(L-1)+1e-5) with ALiBi's slopes m_h (2^(-8(h+1)/H) for "
                             "power-of-two H), fp32 state, B=256"),
    "lightning_tnl": ("transnormer", "lightning attention with TransNormerLLM decay (8/H)(1-l/L)h "
                                     "(fla chunk_lightning_attn's schedule), blocked torch"),
    "linear_attn": ("none", "plain causal linear attention (no decay), blocked torch"),
}


def make_method(name: str, decay: str, summary: str) -> Method:
    return Method(
        name=name,
        summary=summary,
        build=make_build(decay),
        mask_features=frozenset({CAUSAL}),
        dtypes=frozenset({"float32", "bfloat16", "float64"}),
        decode=True,
        limits=causal_only,
        flops=linear_flops,
        reference=make_reference(decay),
        flop_convention=f"{FLOP_CONVENTION}; decay {decay}",
        decode_bytes=linear_state_bytes,
        cache_bytes=linear_state_bytes,
        options={"decay": decay, "layer": 0, "layers": 1, "block": _linear.DEFAULT_BLOCK},
        linear_kernel=make_kernel(name, decay),
        homepage="https://github.com/MiniMax-AI/MiniMax-M1",
    )


METHODS = [make_method(name, decay, summary) for name, (decay, summary) in VARIANTS.items()]
METHOD = METHODS[0]
