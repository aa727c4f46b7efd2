"""Windows with special tokens: streaming (attention sinks) and global + sliding window (Longformer-style).

Both keep a window's cost while a few tokens stay visible to everyone; neither is varlen-expressible.
Windows use the convention of ``sliding_window``: ``left``/``window`` keys before the query, inclusive.
"""

from __future__ import annotations

import torch

from harness.masks.core import Mask
from harness.masks.patterns.common import arbitrary_mask, merge_intervals
from harness.masks.registry import register_mask, require


@register_mask(
    "streaming",
    "StreamingLLM: the first n_sink tokens plus a causal window q - window <= k <= q",
    examples=({"n_sink": 5, "window": 100},),
    n_sink=4,
    window=256,
)
def streaming(seqlen: int, num_heads: int, n_sink: int, window: int) -> Mask:
    require(n_sink >= 0, "streaming", "n_sink", n_sink, "expected an integer >= 0")
    require(window >= 0, "streaming", "window", window, "expected an integer >= 0")
    q = torch.arange(seqlen)
    lo = torch.stack([torch.zeros_like(q), (q - window).clamp_min(0)], dim=-1)
    hi = torch.stack([torch.clamp_max(q + 1, n_sink), q + 1], dim=-1)

    def definition(b, h, q_idx, k_idx):
        return (k_idx <= q_idx) & ((k_idx < n_sink) | (q_idx - k_idx <= window))

    return arbitrary_mask("streaming", seqlen, merge_intervals(lo, hi), definition)


@register_mask(
    "global_sliding_window",
    "global_tokens first tokens attend to and are attended by all; others see |q - k| within (left, right)",
    examples=({"global_tokens": 40, "left": 100, "right": 37},),
    global_tokens=64,
    left=256,
    right=256,
)
def global_sliding_window(seqlen: int, num_heads: int, global_tokens: int, left: int, right: int) -> Mask:
    name = "global_sliding_window"
    allowed = f"expected 0 <= global_tokens <= seqlen ({seqlen})"
    require(0 <= global_tokens <= seqlen, name, "global_tokens", global_tokens, allowed)
    require(left >= 0, name, "left", left, "expected an integer >= 0")
    require(right >= 0, name, "right", right, "expected an integer >= 0")
    q = torch.arange(seqlen)
    is_global = q < global_tokens
    lo = torch.stack([torch.zeros_like(q), torch.where(is_global, 0, (q - left).clamp_min(0))], dim=-1)
    hi = torch.stack(
        [torch.full_like(q, global_tokens), torch.where(is_global, seqlen, (q + right + 1).clamp_max(seqlen))], dim=-1
    )

    def definition(b, h, q_idx, k_idx):
        window = (q_idx - k_idx <= left) & (k_idx - q_idx <= right)
        return (q_idx < global_tokens) | (k_idx < global_tokens) | window

    return arbitrary_mask(name, seqlen, merge_intervals(lo, hi), definition)
