"""The shared adapter of FlashAttention 2 and 3: both take ``[B, S, H, d]`` tensors, ``causal`` and a
``window_size=(left, right)`` (-1 = unbounded), GQA natively, and a varlen entry point over packed tokens with
``cu_seqlens`` — exactly :class:`harness.masks.core.Varlen`. Single-document masks use the dense entry
point; document masks reshape ``[B, S, H, d]`` to ``[B * S, H, d]`` (a view) and pass ``B`` copies of the
document boundaries.
"""

from __future__ import annotations

from typing import Callable, Optional

import torch

from harness.interfaces import AttentionFn, Problem
from methods._common import first, packed_cu_seqlens

MAX_HEAD_DIM = 256


def build_flash(problem: Problem, dense_fn: Callable, varlen_fn: Callable) -> AttentionFn:
    """``dense_fn``/``varlen_fn``: the library's ``flash_attn_func``/``flash_attn_varlen_func``."""
    varlen = problem.mask.varlen
    kwargs = dict(softmax_scale=problem.scale, causal=varlen.causal, window_size=varlen.window)
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


def limits(problem: Problem) -> Optional[str]:
    if problem.head_dim > MAX_HEAD_DIM:
        return f"head_dim {problem.head_dim} > {MAX_HEAD_DIM}"
    return None
