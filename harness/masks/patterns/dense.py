"""Single-sequence patterns: full, causal, sliding windows and the prefix LM."""

from __future__ import annotations

from typing import Optional

import torch

from harness.masks.core import Mask
from harness.masks.patterns.common import arbitrary_mask, banded_documents, merge_intervals
from harness.masks.registry import register_mask, require


@register_mask("full", "every query attends to every key")
def full(seqlen: int, num_heads: int) -> Mask:
    return banded_documents("full", seqlen)


@register_mask("causal", "query q attends to keys k <= q")
def causal(seqlen: int, num_heads: int) -> Mask:
    return banded_documents("causal", seqlen, causal=True)


@register_mask(
    "sliding_window", "|q - k| within (left, right)", examples=({"left": 100, "right": 37},), left=1024, right=1024
)
def sliding_window(seqlen: int, num_heads: int, left: int, right: int) -> Mask:
    require(left >= 0, "sliding_window", "left", left, "expected an integer >= 0")
    require(right >= 0, "sliding_window", "right", right, "expected an integer >= 0")
    return banded_documents("sliding_window", seqlen, left=left, right=right)


@register_mask("sliding_window_causal", "q - window <= k <= q", examples=({"window": 100},), window=1024)
def sliding_window_causal(seqlen: int, num_heads: int, window: int) -> Mask:
    require(window >= 0, "sliding_window_causal", "window", window, "expected an integer >= 0")
    return banded_documents("sliding_window_causal", seqlen, causal=True, left=window)


@register_mask(
    "prefix_lm_causal",
    "a prefix [0, prefix) attends bidirectionally within itself, later tokens causally (prefix=None: seqlen // 4)",
    examples=({"prefix": 301},),
    prefix=None,
)
def prefix_lm_causal(seqlen: int, num_heads: int, prefix: Optional[int]) -> Mask:
    name = "prefix_lm_causal"
    prefix = seqlen // 4 if prefix is None else prefix
    require(isinstance(prefix, int) and not isinstance(prefix, bool), name, "prefix", prefix, "expected an integer")
    require(0 <= prefix <= seqlen, name, "prefix", prefix, f"expected 0 <= prefix <= seqlen ({seqlen})")
    q = torch.arange(seqlen)
    hi = torch.clamp_min(q + 1, prefix)  # q < prefix: the whole prefix; q >= prefix: keys <= q

    def definition(b, h, q_idx, k_idx):
        return (k_idx <= q_idx) | (k_idx < prefix)

    return arbitrary_mask(name, seqlen, merge_intervals(torch.zeros_like(q)[:, None], hi[:, None]), definition)
