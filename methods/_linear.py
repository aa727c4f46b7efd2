"""Causal linear attention with a per-head decay, computed in blocks (lightning attention's algorithm).

For q head h with decay rate ``s_h >= 0`` (``methods._decay``), row p attends::

    o_p = sum_{j <= p} exp(-s_h (p - j)) (q_p . k_j) v_j          (no 1/sqrt(d) scaling, as in MiniMax)

Blocks of ``L`` rows (lightning attention's ``B = 256``): per block, intra ``O = ((Q K^T) * D) V`` with
``D[i, j] = exp(-s (i - j))`` for ``i >= j``; inter ``O += (Q * exp(-s (i + 1))) KV``; then
``KV <- exp(-s L) KV + (K * exp(-s (L - 1 - j)))^T V``. One pass along the sequence, a group of blocks at a
time (:func:`_spans`): the group's matmuls run batched, the state recurrence (elementwise ``d x d`` updates)
walks its blocks. A sequence that is not a multiple of ``L`` ends with one shorter block. Everything computes in at least float32 (the state in float32 for 16-bit
inputs) and the output is cast back to the inputs' dtype.

The backward is written out (:class:`_ChunkedLinear`): it recomputes the block scores instead of keeping
them and walks the state gradient backwards (``dS_j = (Q_j a)^T dO_j + exp(-s L) dS_{j+1}``), which
measured faster on CPU than autograd through the forward (see ``BACKWARD`` and the issue's report).

:func:`block_flops` counts the matmul FLOPs of these algorithms (what ``torch.utils.flop_counter`` counts).
"""

from __future__ import annotations

from typing import Optional

import torch

from harness.interfaces.linear_kernel import carry, state_dtype

DEFAULT_BLOCK = 256


# ----- layout helpers -------------------------------------------------------------------------------------

def heads_first(x: torch.Tensor, heads_q: int, dtype: torch.dtype) -> torch.Tensor:
    """``[B, S, H, d]`` -> ``[B, Hq, S, d]`` in ``dtype`` (kv heads repeated for GQA: q head h uses h // group)."""
    x = x.transpose(1, 2).to(dtype)
    group = heads_q // x.shape[1]
    return x.repeat_interleave(group, dim=1) if group > 1 else x.contiguous()


def block_sizes(seqlen: int, block: int) -> list[tuple[int, int]]:
    """``[(block length, number of blocks)]``: the full blocks, then the shorter tail block if any."""
    full, tail = divmod(seqlen, block)
    return [(block, full)] * (full > 0) + [(tail, 1)] * (tail > 0)


_FACTORS: dict[tuple, tuple] = {}
_FACTORS_KEPT = 64  # distinct (rates, length, dtype, device): a model's layers x block lengths


def _factors(rates: torch.Tensor, length: int, dtype: torch.dtype, device: torch.device):
    """Decays of one block length: D ``[H, L, L]``, query decay a ``[H, L, 1]``, key decay c ``[H, L, 1]``
    and the state's decay over the block ``exp(-s L)`` ``[1, H, 1, 1]``.
    Computed once per (rates, length, dtype, device) and kept (read-only): rebuilding them in float64 on every
    call cost ~20% of a lightning layer's forward at 2K tokens."""
    key = (tuple(rates.tolist()), length, dtype, device)
    if key not in _FACTORS:
        if len(_FACTORS) >= _FACTORS_KEPT:
            _FACTORS.clear()
        _FACTORS[key] = _decay_tables(rates, length, dtype, device)
    return _FACTORS[key]


def _decay_tables(rates: torch.Tensor, length: int, dtype: torch.dtype, device: torch.device):
    s = rates.double().view(-1, 1, 1)
    i = torch.arange(length, dtype=torch.float64)
    diff = i.view(-1, 1) - i.view(1, -1)
    d = torch.exp(-s * diff.clamp_min(0)) * (diff >= 0)
    a = torch.exp(-s * (i + 1).view(-1, 1))
    c = torch.exp(-s * (length - 1 - i).view(-1, 1))
    return tuple(t.to(dtype=dtype, device=device) for t in (d, a, c, carry(rates, length, torch.float64)))


# ----- forward / backward on [B, S, H, d] tensors, a group of blocks at a time --------------------------------

GROUP_BYTES = 1 << 20  # the block scores computed at once: a few blocks' [L, L] tiles, so they stay in cache


def _spans(batch: int, heads: int, seqlen: int, block: int, element: int) -> list[tuple[int, int, int]]:
    """``(first row, block length, blocks)`` of each group of equal blocks, in sequence order:
    as many blocks as keep ``GROUP_BYTES`` of ``[L, L]`` scores (one multiply of all blocks' scores at once
    measured 1.6x slower at 32K tokens on CPU: memory-bound); the shorter tail block is a group of its own."""
    spans, row = [], 0
    for length, n in block_sizes(seqlen, block):
        step = max(1, GROUP_BYTES // (batch * heads * length * length * element))
        for first in range(0, n, step):
            count = min(step, n - first)
            spans.append((row, length, count))
            row += length * count
    return spans


def _load(x: torch.Tensor, rows: slice, heads_q: int, dtype: torch.dtype, length: int) -> torch.Tensor:
    """Rows of ``[B, S, H, d]`` x as ``[B, Hq, blocks, L, d]`` in ``dtype`` (kv heads repeated for GQA: q head h
    uses h // group): one copy of the group's rows, which stay in cache for everything done with them."""
    part = x[:, rows].transpose(1, 2)
    group = heads_q // x.shape[2]
    if group > 1:
        part = part.repeat_interleave(group, dim=1)
    out = torch.empty(part.shape, dtype=dtype, device=x.device).copy_(part)
    return out.view(*out.shape[:2], -1, length, out.shape[-1])


def _store(dst: torch.Tensor, rows: slice, value: torch.Tensor) -> None:
    """``[B, Hq, blocks, L, d]`` ``value`` into rows of ``[B, S, H, d]`` ``dst`` (cast to its dtype; a GQA
    group's q heads summed into their kv head)."""
    value = value.flatten(2, 3)
    b, h, r, d = value.shape
    if h != dst.shape[2]:
        value = value.view(b, dst.shape[2], h // dst.shape[2], r, d).sum(2)
    dst[:, rows] = value.transpose(1, 2)


def _forward(q, k, v, rates, block, state_in):
    """Blocked forward on ``[B, S, H, d]`` tensors: (out in q's dtype, per group of :func:`_spans` the states
    before its blocks ``[B, Hq, blocks, d, d]``, the final state), computing in the state dtype.

    One pass along the sequence, a group of blocks at a time: the group's rows are loaded once (heads first,
    in the compute dtype), then its block states, the recurrence through them, its intra-block scores and its
    inter-block term, and its output rows stored, while they are in cache. (Whole-sequence passes — a heads-first
    copy, then intra, states, inter — measured t(2S)/t(S) = 2.2 from 8K to 64K on CPU: once the tensors no
    longer fit the last-level cache every pass reads them from memory again.)"""
    acc = state_dtype(q.dtype)
    batch, seqlen, heads_q, dim = q.shape
    kv = state_in if state_in is not None else q.new_zeros(batch, heads_q, dim, v.shape[-1], dtype=acc)
    out = q.new_empty(batch, seqlen, heads_q, v.shape[-1])
    befores = []
    for row, length, count in _spans(batch, heads_q, seqlen, block, kv.element_size()):
        rows = slice(row, row + length * count)
        d, a, c, decay = _factors(rates, length, acc, q.device)
        d, a, c = d.unsqueeze(1), a.unsqueeze(1), c.unsqueeze(1)
        q_, k_, v_ = (_load(t, rows, heads_q, acc, length) for t in (q, k, v))
        m = (k_ * c).transpose(-1, -2) @ v_  # the blocks' own states [B, H, blocks, d, d]
        states = []
        for j in range(count):  # KV_{j+1} = exp(-s L) KV_j + m_j
            states.append(kv)
            kv = decay * kv + m[:, :, j]
        befores.append(torch.stack(states, dim=2))
        o = (q_ @ k_.transpose(-1, -2)).mul_(d) @ v_
        _store(out, rows, o.add_((q_ * a) @ befores[-1]))
    return out, befores, kv


def _backward(dout, q, k, v, rates, block, befores):
    """Gradients (dq, dk, dv in the inputs' dtypes and head counts, d state_in) of :func:`_forward` for the
    upstream gradient ``dout``: one pass backwards along the sequence, a group of blocks at a time, walking the
    state gradient ``dS_j = (Q_j a)^T dO_j + exp(-s L) dS_{j+1}`` (block j's own state gets ``dS_{j+1}``)."""
    acc = befores[0].dtype
    batch, seqlen, heads_q, dim = q.shape
    dq, dk, dv = torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)
    ds = q.new_zeros(batch, heads_q, dim, v.shape[-1], dtype=acc)  # nothing flows back from after the rows
    spans = _spans(batch, heads_q, seqlen, block, befores[0].element_size())  # the forward's: same shapes, dtype
    for (row, length, count), before in zip(reversed(spans), reversed(befores), strict=True):
        rows = slice(row, row + length * count)
        d, a, c, decay = _factors(rates, length, acc, q.device)
        d, a, c = d.unsqueeze(1), a.unsqueeze(1), c.unsqueeze(1)
        q_, k_, v_, do = (_load(t, rows, heads_q, acc, length) for t in (q, k, v, dout))
        local = (q_ * a).transpose(-1, -2) @ do  # dL/d KV_before, this block's own part
        dm = torch.empty_like(local)
        for j in reversed(range(count)):
            dm[:, :, j] = ds
            ds = local[:, :, j] + decay * ds
        dp = (do @ v_.transpose(-1, -2)).mul_(d)
        p = (q_ @ k_.transpose(-1, -2)).mul_(d)
        _store(dq, rows, (dp @ k_).add_(a * (do @ before.transpose(-1, -2))))
        _store(dk, rows, (dp.transpose(-1, -2) @ q_).add_(c * (v_ @ dm.transpose(-1, -2))))
        _store(dv, rows, (p.transpose(-1, -2) @ do).add_((k_ * c) @ dm))
    return dq, dk, dv, ds


class _ChunkedLinear(torch.autograd.Function):
    """The blocked forward with the written-out backward (on ``[B, S, H, d]`` tensors)."""

    @staticmethod
    def forward(fctx, q, k, v, state_in, rates, block):
        out, befores, _ = _forward(q, k, v, rates, block, state_in)
        fctx.save_for_backward(q, k, v, *befores)
        fctx.rates, fctx.block, fctx.has_state = rates, block, state_in is not None
        return out

    @staticmethod
    def backward(fctx, dout):
        q, k, v, *befores = fctx.saved_tensors
        dq, dk, dv, ds = _backward(dout, q, k, v, fctx.rates, fctx.block, befores)
        return dq, dk, dv, (ds if fctx.has_state else None), None, None


BACKWARD = "own"
"""Which backward :func:`chunked` uses: ``"own"`` (the written-out one) or ``"autograd"`` (through the
forward). Both are exact; ``tests/test_linear_attention.py`` checks they agree."""


def chunked(q, k, v, rates, block: int = DEFAULT_BLOCK, state_in: Optional[torch.Tensor] = None,
            backward: Optional[str] = None) -> torch.Tensor:
    """Blocked causal linear attention on ``[B, S, H, d]`` tensors (k/v may have fewer heads), output in q's
    dtype. ``state_in`` ``[B, Hq, d, d]``: the state of earlier rows (the incoming state of a CP rank)."""
    s = state_in.to(state_dtype(q.dtype)) if state_in is not None else None
    if (backward or BACKWARD) == "own":
        return _ChunkedLinear.apply(q, k, v, s, rates, block)
    return _forward(q, k, v, rates, block, s)[0]


def chunked_and_state(q, k, v, rates, block: int = DEFAULT_BLOCK,
                      state_in: Optional[torch.Tensor] = None) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`chunked`'s output and, from the same pass, the state the rows leave behind (``state_in`` carried
    through them included): what prefill keeps for decode. For inference: differentiable only through
    autograd of the forward."""
    out, _, state = _forward(q, k, v, rates, block, state_in.to(state_dtype(q.dtype)) if state_in is not None else None)
    return out, state


def chunk_state(k, v, rates, heads_q: int, block: int = DEFAULT_BLOCK) -> torch.Tensor:
    """The decayed state ``sum_j exp(-s (S - 1 - j)) k_j^T v_j`` of ``[B, S, Hkv, d]`` rows: ``[B, Hq, d, d]``
    in the state dtype, differentiable (blocked: one ``d x d`` matmul per block, then the recurrence)."""
    acc = state_dtype(k.dtype)
    kv = k.new_zeros(k.shape[0], heads_q, k.shape[-1], v.shape[-1], dtype=acc)
    for row, length, count in _spans(k.shape[0], heads_q, k.shape[1], block, kv.element_size()):
        rows = slice(row, row + length * count)
        _, _, c, decay = _factors(rates, length, acc, k.device)
        k_, v_ = (_load(t, rows, heads_q, acc, length) for t in (k, v))
        m = (k_ * c.unsqueeze(1)).transpose(-1, -2) @ v_
        for j in range(count):
            kv = decay * kv + m[:, :, j]
    return kv


def recurrent_steps(q, k, v, rates, state: torch.Tensor) -> torch.Tensor:
    """Token-by-token decode from ``state``: ``KV <- exp(-s) KV + k^T v``, ``o = q KV`` for each row of q
    (``[B, T, Hq, d]``; k/v the same T rows). Returns ``[B, T, Hq, d]`` in q's dtype."""
    acc = state.dtype
    heads_q = q.shape[2]
    qh, kh, vh = (heads_first(t, heads_q, acc) for t in (q, k, v))
    decay = carry(rates, 1, acc).to(q.device)
    outs = []
    for t in range(qh.shape[2]):
        state = decay * state + kh[:, :, t].unsqueeze(-1) @ vh[:, :, t].unsqueeze(-2)
        outs.append(qh[:, :, t].unsqueeze(-2) @ state)
    return torch.cat(outs, dim=2).transpose(1, 2).to(q.dtype)


# ----- FLOPs (matmuls, what torch.utils.flop_counter counts) -------------------------------------------------

def block_flops(seqlen: int, block: int, head_dim: int, direction: str, backward: Optional[str] = None) -> float:
    """Matmul FLOPs of one (batch, q head) for ``direction`` (fwd, bwd, fwd+bwd) of :func:`chunked`.

    Per block of L rows: forward ``Q K^T``, ``(.) V``, the block state ``K^T V``, the inter term ``Q KV``:
    ``4 L^2 d + 4 L d^2``. The written-out backward: ``dO V^T``, the recomputed ``Q K^T``, ``dP K``,
    ``dP^T Q``, ``P^T dO`` (``10 L^2 d``) and ``dO KV^T``, ``(Q a)^T dO``, ``V dm^T``, ``(K c) dm``
    (``8 L d^2``); autograd's backward (``backward="autograd"``) is two matmuls per forward matmul
    (``8 L^2 d + 8 L d^2``)."""
    d = head_dim
    fwd = bwd = 0.0
    for length, n in block_sizes(seqlen, block):
        fwd += n * (4 * length * length * d + 4 * length * d * d)
        if (backward or BACKWARD) == "own":
            bwd += n * (10 * length * length * d + 8 * length * d * d)
        else:
            bwd += n * (8 * length * length * d + 8 * length * d * d)
    return {"fwd": fwd, "bwd": bwd, "fwd+bwd": fwd + bwd}[direction]


def decode_flops(head_dim: int, rows: int) -> float:
    """Matmul FLOPs of one (batch, q head) of a decode step of ``rows`` rows: ``k^T v`` and ``q KV``."""
    return rows * 4.0 * head_dim * head_dim
