"""Eager attention with materialised scores: the readable reference implementation, any mask."""

from __future__ import annotations

from typing import Optional

import torch

from harness.masks.core import ALL_FEATURES
from harness.interfaces import Method, Problem

MAX_SCORE_BYTES = 4 << 30


def build(problem: Problem):
    allowed = problem.mask.dense().to(problem.device)  # [Hm, S, S]
    group = problem.heads_q // problem.heads_kv
    scale = problem.scale

    def naive(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        q, k, v = (x.transpose(1, 2) for x in (q, k, v))  # [B, H, S, d]
        k = k.repeat_interleave(group, dim=1)
        v = v.repeat_interleave(group, dim=1)
        scores = (q @ k.transpose(-1, -2)).float() * scale
        scores = scores.masked_fill(~allowed, float("-inf"))
        probs = torch.softmax(scores, dim=-1).nan_to_num(0.0).to(q.dtype)
        return (probs @ v).transpose(1, 2)

    return naive


def limits(problem: Problem) -> Optional[str]:
    need = problem.batch * problem.heads_q * problem.seqlen**2 * 4 * 3  # scores, probs, grad
    if need > MAX_SCORE_BYTES:
        return f"materialised scores need {need / 2**30:.1f} GiB (limit {MAX_SCORE_BYTES / 2**30:.0f} GiB)"
    return None


METHOD = Method(
    name="naive",
    summary="eager PyTorch, materialised S x S scores; the readable reference",
    build=build,
    mask_features=ALL_FEATURES,
    limits=limits,
)
