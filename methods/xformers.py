"""xFormers ``memory_efficient_attention`` with its structured attention biases (no dense mask).

The mask becomes one ``xformers.ops.fmha.attn_bias`` object, built once in ``build``:

* full: no bias; causal: ``LowerTriangularMask``;
* one sequence with a window ``(left, right)``: ``LocalAttentionFromBottomRightMask`` (square, so bottom-right
  equals top-left alignment);
* packed documents: ``BlockDiagonalMask.from_seqlens`` over ``B`` copies of the documents (inputs viewed as
  one sequence of ``B * S`` tokens), ``.make_causal()`` when causal, ``.make_local_attention(left + 1)`` for a
  causal window (xFormers' window counts the query itself).

Non-causal windows inside documents have no bias class here and are reported unsupported. GQA uses the
documented 5-D ``[B, M, G, H, K]`` layout with K/V expanded (a stride-0 view, no copy). CUDA only.
"""

from __future__ import annotations

from typing import Optional

import torch

from harness.masks.core import CAUSAL, VARLEN, WINDOW
from harness.interfaces import AttentionFn, Method, Problem
from methods._common import doc_lengths, needs


def attn_bias(problem: Problem):
    """The xFormers bias object of the problem's (varlen-expressible) mask."""
    from xformers.ops import fmha

    varlen = problem.mask.varlen
    left, right = varlen.window
    if varlen.num_docs > 1:
        lengths = doc_lengths(varlen, problem.batch)
        bias = fmha.attn_bias.BlockDiagonalMask.from_seqlens(lengths, device=problem.device)
        if varlen.causal and left >= 0:
            return bias.make_local_attention(left + 1)
        return bias.make_causal() if varlen.causal else bias
    if (left, right) != (-1, -1):
        unbounded = problem.seqlen
        return fmha.attn_bias.LocalAttentionFromBottomRightMask(
            window_left=left if left >= 0 else unbounded, window_right=right if right >= 0 else unbounded,
        )
    return fmha.attn_bias.LowerTriangularMask() if varlen.causal else None


def build(problem: Problem) -> AttentionFn:
    from xformers.ops import memory_efficient_attention

    bias = attn_bias(problem)
    b, s, hq, hk, d = problem.batch, problem.seqlen, problem.heads_q, problem.heads_kv, problem.head_dim
    packed = problem.mask.varlen.num_docs > 1
    rows = (1, b * s) if packed else (b, s)  # block-diagonal biases want one sequence of all tokens
    group = hq // hk
    scale = problem.scale

    def xformers_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        q = q.reshape(*rows, hk, group, d)
        k = k.reshape(*rows, hk, 1, d).expand(-1, -1, -1, group, -1)
        v = v.reshape(*rows, hk, 1, d).expand(-1, -1, -1, group, -1)
        out = memory_efficient_attention(q, k, v, attn_bias=bias, scale=scale)
        return out.reshape(b, s, hq, d)

    return xformers_attention


def limits(problem: Problem) -> Optional[str]:
    varlen = problem.mask.varlen
    if varlen.num_docs > 1 and varlen.window != (-1, -1) and not varlen.causal:
        return "non-causal window inside documents (no xFormers bias class for it)"
    return None


METHOD = Method(
    name="xformers",
    summary="xFormers memory_efficient_attention with structured attn_bias (causal, local, block-diagonal)",
    build=build,
    mask_features=frozenset({CAUSAL, WINDOW, VARLEN}),
    dtypes=frozenset({"float32", "bfloat16", "float16"}),
    devices=frozenset({"cuda"}),
    backward=True,
    gqa=True,
    probe=needs("xformers"),
    limits=limits,
    homepage="https://facebookresearch.github.io/xformers/components/ops.html",
)
