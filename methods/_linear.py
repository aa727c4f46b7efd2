"""Causal linear attention with a per-head decay, computed in blocks (lightning attention's algorithm).

For q head h with decay rate ``s_h >= 0`` (``methods._decay``), row p attends::

    o_p = sum_{j <= p} exp(-s_h (p - j)) (q_p . k_j) v_j          (no 1/sqrt(d) scaling, as in MiniMax)

Blocks of ``L`` rows (lightning attention's ``B = 256``): per block, intra ``O = ((Q K^T) * D) V`` with
``D[i, j] = exp(-s (i - j))`` for ``i >= j``; inter ``O += (Q * exp(-s (i + 1))) KV``; then
``KV <- exp(-s L) KV + (K * exp(-s (L - 1 - j)))^T V``. All blocks' matmuls run batched; only the state
recurrence (elementwise ``d x d`` updates) walks the blocks. A sequence that is not a multiple of ``L``
ends with one shorter block. Everything computes in at least float32 (the state in float32 for 16-bit
inputs) and the output is cast back to the inputs' dtype.

The backward is written out (:class:`_ChunkedLinear`): it recomputes the block scores instead of keeping
them and walks the state gradient backwards (``dS_j = (Q_j a)^T dO_j + exp(-s L) dS_{j+1}``), which
measured faster on CPU than autograd through the batched forward (see ``BACKWARD`` and the issue's report).

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


def kv_heads(x: torch.Tensor, heads_kv: int) -> torch.Tensor:
    """``[B, Hq, S, d]`` gradients -> ``[B, S, Hkv, d]``, summed over each GQA group's q heads."""
    b, h, s, d = x.shape
    if h != heads_kv:
        x = x.view(b, heads_kv, h // heads_kv, s, d).sum(2)
    return x.transpose(1, 2)


def block_sizes(seqlen: int, block: int) -> list[tuple[int, int]]:
    """``[(block length, number of blocks)]``: the full blocks, then the shorter tail block if any."""
    full, tail = divmod(seqlen, block)
    return [(block, full)] * (full > 0) + [(tail, 1)] * (tail > 0)


_FACTORS: dict[tuple, tuple] = {}
_FACTORS_KEPT = 64  # distinct (rates, length, dtype, device): a model's layers x block lengths


def _factors(rates: torch.Tensor, length: int, dtype: torch.dtype, device: torch.device):
    """Decays of one block length: D ``[H, L, L]``, query decay a ``[H, L, 1]``, key decay c ``[H, L, 1]``.
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
    return tuple(t.to(dtype=dtype, device=device) for t in (d, a, c))


class _Blocks:
    """Views of a ``[B, H, S, d]`` tensor as its groups of equal blocks ``[B, H, n, L, d]``."""

    def __init__(self, seqlen: int, block: int):
        self.groups = block_sizes(seqlen, block)

    def split(self, x: torch.Tensor) -> list[torch.Tensor]:
        parts, start = [], 0
        for length, n in self.groups:
            part = x.narrow(2, start, length * n)
            parts.append(part.reshape(*x.shape[:2], n, length, x.shape[-1]))
            start += length * n
        return parts

    @staticmethod
    def join(parts: list[torch.Tensor]) -> torch.Tensor:
        if len(parts) == 1:  # a multiple of the block: a view, no copy
            return parts[0].flatten(2, 3)
        return torch.cat([p.flatten(2, 3) for p in parts], dim=2)


# ----- forward / backward on heads-first tensors -----------------------------------------------------------

GROUP_BYTES = 1 << 20  # the block scores computed at once: a few blocks' [L, L] tiles, so they stay in cache


def _groups(x: torch.Tensor) -> list[slice]:
    """Slices of the block dimension of ``x`` ``[B, H, n, L, d]`` holding ~``GROUP_BYTES`` of ``[L, L]`` scores
    (one multiply of all blocks' scores at once measured 1.6x slower at 32K tokens on CPU: memory-bound)."""
    b, h, n, length = x.shape[:4]
    step = max(1, GROUP_BYTES // (b * h * length * length * x.element_size()))
    return [slice(g, g + step) for g in range(0, n, step)]


def _intra(qb: torch.Tensor, kb: torch.Tensor, vb: torch.Tensor, decay: torch.Tensor) -> torch.Tensor:
    """``((Q K^T) * D) V`` of every block ``[B, H, n, L, d]``, a group of blocks at a time."""
    out = qb.new_empty(*qb.shape[:-1], vb.shape[-1])
    for g in _groups(qb):
        scores = qb[:, :, g] @ kb[:, :, g].transpose(-1, -2)
        out[:, :, g] = scores.mul_(decay) @ vb[:, :, g]
    return out

def _forward(q, k, v, rates, block, state_in):
    """Blocked forward on ``[B, H, S, d]`` tensors of one dtype: (out, states before every block, final state)."""
    dtype, device = q.dtype, q.device
    blocks = _Blocks(q.shape[2], block)
    outs, mstates, facts = [], [], []
    for qb, kb, vb, (length, _) in zip(blocks.split(q), blocks.split(k), blocks.split(v), blocks.groups):
        d, a, c = _factors(rates, length, dtype, device)
        facts.append((d, a, c, length))
        outs.append(_intra(qb, kb, vb, d.unsqueeze(1)))
        mstates.append((kb * c.unsqueeze(1)).transpose(-1, -2) @ vb)  # [B, H, n, d, d]
    # The state recurrence: KV_{j+1} = exp(-s L_j) KV_j + m_j, one d x d update per block.
    kv = state_in if state_in is not None else q.new_zeros(*q.shape[:2], q.shape[-1], v.shape[-1])
    befores = []
    for m, (_, _, _, length) in zip(mstates, facts):
        decay = carry(rates, length, dtype).to(device)
        group = []
        for j in range(m.shape[2]):
            group.append(kv)
            kv = decay * kv + m[:, :, j]
        befores.append(torch.stack(group, dim=2))
    for i, (qb, before, (_, a, _, _)) in enumerate(zip(blocks.split(q), befores, facts)):
        outs[i].add_((qb * a.unsqueeze(1)) @ before)
    return blocks.join(outs), befores, kv


def _backward(dout, q, k, v, rates, block, befores, dstate_out=None):
    """Gradients (dq, dk, dv, d state_in) of :func:`_forward` for the upstream gradient ``dout``."""
    dtype, device = q.dtype, q.device
    blocks = _Blocks(q.shape[2], block)
    parts = list(zip(blocks.split(q), blocks.split(k), blocks.split(v), blocks.split(dout), blocks.groups))
    dq, dk, dv, grads_state = [], [], [], []
    facts = []
    for (qb, kb, vb, db, (length, _)), before in zip(parts, befores):
        d, a, c = _factors(rates, length, dtype, device)
        facts.append((a, c, length))
        decay, a = d.unsqueeze(1), a.unsqueeze(1)
        dq_, dk_, dv_ = torch.empty_like(qb), torch.empty_like(kb), torch.empty_like(vb)
        for g in _groups(qb):  # a group of blocks at a time: their [L, L] scores stay in cache
            q_, k_, v_, d_ = qb[:, :, g], kb[:, :, g], vb[:, :, g], db[:, :, g]
            dp = (d_ @ v_.transpose(-1, -2)).mul_(decay)
            p = (q_ @ k_.transpose(-1, -2)).mul_(decay)
            dq_[:, :, g] = dp @ k_ + a * (d_ @ before[:, :, g].transpose(-1, -2))
            dk_[:, :, g] = dp.transpose(-1, -2) @ q_
            dv_[:, :, g] = p.transpose(-1, -2) @ d_
        dq.append(dq_)
        dk.append(dk_)
        dv.append(dv_)
        grads_state.append((qb * a).transpose(-1, -2) @ db)  # dL/d KV_before, local part
    # Walk the state gradient backwards: dS_j = G_j + exp(-s L_j) dS_{j+1}; dm_j = dS_{j+1}.
    ds = dstate_out if dstate_out is not None else q.new_zeros(*q.shape[:2], q.shape[-1], v.shape[-1])
    dms = [None] * len(parts)
    for g_idx in reversed(range(len(parts))):
        g = grads_state[g_idx]
        decay = carry(rates, facts[g_idx][2], dtype).to(device)
        group = [None] * g.shape[2]
        for j in reversed(range(g.shape[2])):
            group[j] = ds
            ds = g[:, :, j] + decay * ds
        dms[g_idx] = torch.stack(group, dim=2)
    for i, ((_, kb, vb, _, _), dm, (_, c, _)) in enumerate(zip(parts, dms, facts)):
        dk[i] = dk[i] + c.unsqueeze(1) * (vb @ dm.transpose(-1, -2))
        dv[i] = dv[i] + (kb * c.unsqueeze(1)) @ dm
    return blocks.join(dq), blocks.join(dk), blocks.join(dv), ds


class _ChunkedLinear(torch.autograd.Function):
    """The blocked forward with the written-out backward (on heads-first tensors in the compute dtype)."""

    @staticmethod
    def forward(fctx, q, k, v, state_in, rates, block):
        out, befores, _ = _forward(q, k, v, rates, block, state_in)
        fctx.save_for_backward(q, k, v, *befores)
        fctx.rates, fctx.block, fctx.has_state = rates, block, state_in is not None
        return out

    @staticmethod
    def backward(fctx, dout):
        q, k, v, *befores = fctx.saved_tensors
        dq, dk, dv, ds = _backward(dout.contiguous(), q, k, v, fctx.rates, fctx.block, befores)
        return dq, dk, dv, (ds if fctx.has_state else None), None, None


BACKWARD = "own"
"""Which backward :func:`chunked` uses: ``"own"`` (the written-out one) or ``"autograd"`` (through the
batched forward). Both are exact; ``tests/test_linear_attention.py`` checks they agree."""


def chunked(q, k, v, rates, block: int = DEFAULT_BLOCK, state_in: Optional[torch.Tensor] = None,
            backward: Optional[str] = None) -> torch.Tensor:
    """Blocked causal linear attention on ``[B, S, H, d]`` tensors (k/v may have fewer heads), output in q's
    dtype. ``state_in`` ``[B, Hq, d, d]``: the state of earlier rows (the incoming state of a CP rank)."""
    acc = state_dtype(q.dtype)
    heads_q = q.shape[2]
    qh, kh, vh = (heads_first(t, heads_q, acc) for t in (q, k, v))
    s = state_in.to(acc) if state_in is not None else None
    if (backward or BACKWARD) == "own":
        out = _ChunkedLinear.apply(qh, kh, vh, s, rates, block)
    else:
        out = _forward(qh, kh, vh, rates, block, s)[0]
    return out.transpose(1, 2).to(q.dtype)


def chunked_and_state(q, k, v, rates, block: int = DEFAULT_BLOCK,
                      state_in: Optional[torch.Tensor] = None) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`chunked`'s output and, from the same pass, the state the rows leave behind (``state_in`` carried
    through them included): what prefill keeps for decode. For inference: differentiable only through
    autograd of the batched forward."""
    acc = state_dtype(q.dtype)
    heads_q = q.shape[2]
    qh, kh, vh = (heads_first(t, heads_q, acc) for t in (q, k, v))
    out, _, state = _forward(qh, kh, vh, rates, block, state_in.to(acc) if state_in is not None else None)
    return out.transpose(1, 2).to(q.dtype), state


def chunk_state(k, v, rates, heads_q: int, block: int = DEFAULT_BLOCK) -> torch.Tensor:
    """The decayed state ``sum_j exp(-s (S - 1 - j)) k_j^T v_j`` of ``[B, S, Hkv, d]`` rows: ``[B, Hq, d, d]``
    in the state dtype, differentiable (blocked: one ``d x d`` matmul per block, then the recurrence)."""
    acc = state_dtype(k.dtype)
    kh, vh = heads_first(k, heads_q, acc), heads_first(v, heads_q, acc)
    blocks = _Blocks(k.shape[1], block)
    kv = kh.new_zeros(kh.shape[0], heads_q, kh.shape[-1], vh.shape[-1])
    for kb, vb, (length, _) in zip(blocks.split(kh), blocks.split(vh), blocks.groups):
        _, _, c = _factors(rates, length, acc, k.device)
        m = (kb * c.unsqueeze(1)).transpose(-1, -2) @ vb
        decay = carry(rates, length, acc).to(k.device)
        for j in range(m.shape[2]):
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
