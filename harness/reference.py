"""The float64 reference every method and strategy is checked against.

It computes exact masked softmax attention for a chosen subset of query rows, so the check stays cheap at
any sequence length: with an upstream gradient that is zero outside those rows, the gradients of the whole
problem (dq on the rows, dk and dv everywhere) are exactly the gradients of the rows alone.
"""

from __future__ import annotations

import torch

from harness.masks.core import Mask


def reference_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: Mask, rows: torch.Tensor, scale: float
) -> torch.Tensor:
    """Output rows ``[B, len(rows), Hq, d]`` in float64; q/k/v are ``[B, S, H, d]``; rows with no keys give 0."""
    heads_q, heads_kv = q.shape[2], k.shape[2]
    group = heads_q // heads_kv
    qr = q[:, rows].double().transpose(1, 2)  # [B, Hq, n, d]
    kd = k.double().transpose(1, 2).repeat_interleave(group, dim=1)  # [B, Hq, S, d]
    vd = v.double().transpose(1, 2).repeat_interleave(group, dim=1)
    allowed = mask.dense(q_pos=rows)  # [Hm, n, S]
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
