"""FlashAttention-3 (Hopper, ``flash_attn_interface`` from flash-attention's ``hopper/`` build).

Same calls and mask coverage as FlashAttention-2 (``flash_attn_func`` / ``flash_attn_varlen_func`` with
``window_size`` and ``cu_seqlens``), on sm90+ GPUs. Depending on the release the functions return ``out`` or
``(out, lse)``; the adapter takes the output either way. Decode: ``flash_attn_with_kvcache``, as for FA2.
"""

from __future__ import annotations

from harness.masks.core import CAUSAL, VARLEN, WINDOW
from harness.interfaces import AttentionFn, Method, Problem
from methods._common import needs
from methods._flash import build_flash, limits


def build(problem: Problem) -> AttentionFn:
    from flash_attn_interface import flash_attn_func, flash_attn_varlen_func, flash_attn_with_kvcache

    return build_flash(problem, flash_attn_func, flash_attn_varlen_func, flash_attn_with_kvcache)


METHOD = Method(
    name="flash_attn3",
    summary="FlashAttention-3 (Hopper): causal/window via window_size, documents via the varlen API",
    build=build,
    mask_features=frozenset({CAUSAL, WINDOW, VARLEN}),
    dtypes=frozenset({"bfloat16", "float16"}),
    devices=frozenset({"cuda"}),
    backward=True,
    decode=True,
    gqa=True,
    probe=needs("flash_attn_interface", min_capability=(9, 0)),
    limits=limits,
    homepage="https://github.com/Dao-AILab/flash-attention/tree/main/hopper",
)
