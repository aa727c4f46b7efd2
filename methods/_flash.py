"""The shared adapter of FlashAttention 2 and 3: both take ``[B, S, H, d]`` tensors, ``causal`` and a
``window_size=(left, right)`` (-1 = unbounded), GQA natively, and a varlen entry point over packed tokens with
``cu_seqlens`` — exactly :class:`harness.masks.core.Varlen`. Single-document masks use the dense entry
point; document masks reshape ``[B, S, H, d]`` to ``[B * S, H, d]`` (a view) and pass ``B`` copies of the
document boundaries.

Decode uses ``flash_attn_with_kvcache(q [B, n, Hq, d], k_cache, v_cache [B, S, Hkv, d], cache_seqlens=...)``,
whose ``causal`` and ``window_size`` are aligned bottom-right (query ``i`` of ``n`` sits at cache position
``cache_len - n + i``). The cache passed is the last document's keys (``k_cache[:, start:]``, a view: the
kernel needs only the last dimension contiguous), so the mask's per-document causal flag and window apply
unchanged (see :mod:`methods._decode`).
"""

from __future__ import annotations

from typing import Callable, Optional

import torch

from harness.interfaces import AttentionFn, Problem
from methods._common import first, packed_cu_seqlens
from methods._decode import decode_limits, last_document_start

MAX_HEAD_DIM = 256


def build_flash(
    problem: Problem, dense_fn: Callable, varlen_fn: Callable, kvcache_fn: Optional[Callable] = None
) -> AttentionFn:
    """``dense_fn``/``varlen_fn``/``kvcache_fn``: the library's ``flash_attn_func``/``flash_attn_varlen_func``/
    ``flash_attn_with_kvcache`` (the last one for decode problems)."""
    varlen = problem.mask.varlen
    kwargs = dict(softmax_scale=problem.scale, causal=varlen.causal, window_size=varlen.window)
    if problem.is_decode:
        return build_flash_decode(problem, kvcache_fn)
    if varlen.num_docs == 1:

        def flash(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
            return first(dense_fn(q, k, v, **kwargs))

        return flash

    cu, max_len = packed_cu_seqlens(varlen, problem.batch, problem.seqlen, problem.device)
    tokens = problem.batch * problem.seqlen
    out_shape = (problem.batch, problem.seqlen, problem.heads_q, problem.head_dim)

    def flash_varlen(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        q, k, v = (x.reshape(tokens, x.shape[2], x.shape[3]) for x in (q, k, v))
        return first(varlen_fn(q, k, v, cu, cu, max_len, max_len, **kwargs)).view(out_shape)

    return flash_varlen


def build_flash_decode(problem: Problem, kvcache_fn: Callable) -> AttentionFn:
    """A decode step: q ``[B, n, Hq, d]`` (the last rows) against the last document of the cache."""
    varlen = problem.mask.varlen
    start = last_document_start(problem)
    cache_seqlens = torch.full((problem.batch,), problem.seqlen - start, dtype=torch.int32, device=problem.device)
    kwargs = dict(
        cache_seqlens=cache_seqlens, softmax_scale=problem.scale, causal=varlen.causal, window_size=varlen.window
    )

    def flash_decode(q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor) -> torch.Tensor:
        return first(kvcache_fn(q, k_cache[:, start:], v_cache[:, start:], **kwargs))

    return flash_decode


def limits(problem: Problem) -> Optional[str]:
    if problem.head_dim > MAX_HEAD_DIM:
        return f"head_dim {problem.head_dim} > {MAX_HEAD_DIM}"
    return decode_limits(problem)
