"""The float64 reference every method and strategy is checked against.

It computes exact masked softmax attention for a chosen subset of query rows, so the check stays cheap at
any sequence length: with an upstream gradient that is zero outside those rows, the gradients of the whole
problem (dq on the rows, dk and dv everywhere) are exactly the gradients of the rows alone.
"""

from __future__ import annotations

import torch

from typing import Optional

from harness.masks.core import Mask


def reference_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: Mask, rows: torch.Tensor, scale: float,
    q_offset: int = 0,
) -> torch.Tensor:
    """Output rows ``[B, len(rows), Hq, d]`` in float64; q is ``[B, Sq, Hq, d]``, k/v ``[B, S, Hkv, d]``.

    Row ``i`` of q is query position ``q_offset + i`` of the mask (a decode step's q holds the last rows only).
    Rows with no keys give 0."""
    heads_q, heads_kv = q.shape[2], k.shape[2]
    group = heads_q // heads_kv
    qr = q[:, rows].double().transpose(1, 2)  # [B, Hq, n, d]
    kd = k.double().transpose(1, 2).repeat_interleave(group, dim=1)  # [B, Hq, S, d]
    vd = v.double().transpose(1, 2).repeat_interleave(group, dim=1)
    allowed = mask.dense(q_pos=rows + q_offset)  # [Hm, n, S]
    scores = (qr @ kd.transpose(-1, -2)) * scale
    scores = scores.masked_fill(~allowed.unsqueeze(0), float("-inf"))
    probs = torch.softmax(scores, dim=-1).nan_to_num(0.0)  # fully masked rows -> 0
    return (probs @ vd).transpose(1, 2)


def sample_rows(seqlen: int, count: int = 64, seed: int = 0) -> torch.Tensor:
    """Sorted query rows to check: first and last rows plus a seeded random sample."""
    if seqlen <= count:
        return torch.arange(seqlen)
    g = torch.Generator().manual_seed(seed)
    picked = torch.randperm(seqlen - 2, generator=g)[: count - 2] + 1
    return torch.cat([torch.tensor([0, seqlen - 1]), picked]).sort().values


def reference_outputs(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    mask: Mask,
    scale: float,
    rows: torch.Tensor,
    dout_rows: Optional[torch.Tensor],
    q_offset: int = 0,
) -> dict[str, torch.Tensor]:
    """Masked softmax attention in float64: out on ``rows`` and, given the upstream gradient of those rows,
    full dq/dk/dv. The default ``Method.reference``; other methods (linear attention, TTT) bring their own
    with this signature."""
    leaves = [t.detach().double().requires_grad_(dout_rows is not None) for t in (q, k, v)]
    out = reference_attention(*leaves, mask=mask, rows=rows, scale=scale, q_offset=q_offset)
    refs = {"out": out.detach()}
    if dout_rows is not None:
        grads = torch.autograd.grad(out, leaves, dout_rows.double())
        refs.update(dq=grads[0], dk=grads[1], dv=grads[2])
    return refs
