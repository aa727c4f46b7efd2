"""FlashAttention-2 (``flash_attn`` 2.x, Dao-AILab): full, causal, sliding-window and document (varlen) masks.

``flash_attn_func`` for single-sequence masks, ``flash_attn_varlen_func`` with ``cu_seqlens``/``max_seqlen``
for packed documents; windows via ``window_size=(left, right)``; GQA native. CUDA only, fp16/bf16.
Decode: ``flash_attn_with_kvcache`` on the last document's cache (``methods._flash``).
"""

from __future__ import annotations

from harness.masks.core import CAUSAL, VARLEN, WINDOW
from harness.interfaces import AttentionFn, Method, Problem
from methods._common import needs
from methods._flash import build_flash, limits


def build(problem: Problem) -> AttentionFn:
    from flash_attn import flash_attn_func, flash_attn_varlen_func, flash_attn_with_kvcache

    return build_flash(problem, flash_attn_func, flash_attn_varlen_func, flash_attn_with_kvcache)


METHOD = Method(
    name="flash_attn2",
    summary="FlashAttention-2 (flash_attn): causal/window via window_size, documents via the varlen API",
    build=build,
    mask_features=frozenset({CAUSAL, WINDOW, VARLEN}),
    dtypes=frozenset({"bfloat16", "float16"}),
    devices=frozenset({"cuda"}),
    backward=True,
    decode=True,
    gqa=True,
    probe=needs("flash_attn"),
    limits=limits,
    homepage="https://github.com/Dao-AILab/flash-attention",
)
