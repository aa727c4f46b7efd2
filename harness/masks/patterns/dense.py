"""Single-sequence patterns: full, causal and sliding windows."""

from __future__ import annotations

from harness.masks.core import Mask
from harness.masks.patterns.common import banded_documents
from harness.masks.registry import register_mask, require


@register_mask("full", "every query attends to every key")
def full(seqlen: int, num_heads: int) -> Mask:
    return banded_documents("full", seqlen)


@register_mask("causal", "query q attends to keys k <= q")
def causal(seqlen: int, num_heads: int) -> Mask:
    return banded_documents("causal", seqlen, causal=True)


@register_mask("sliding_window", "|q - k| within (left, right)", left=1024, right=1024)
def sliding_window(seqlen: int, num_heads: int, left: int, right: int) -> Mask:
    require(left >= 0, "sliding_window", "left", left, "expected an integer >= 0")
    require(right >= 0, "sliding_window", "right", right, "expected an integer >= 0")
    return banded_documents("sliding_window", seqlen, left=left, right=right)


@register_mask("sliding_window_causal", "q - window <= k <= q", window=1024)
def sliding_window_causal(seqlen: int, num_heads: int, window: int) -> Mask:
    require(window >= 0, "sliding_window_causal", "window", window, "expected an integer >= 0")
    return banded_documents("sliding_window_causal", seqlen, causal=True, left=window)
