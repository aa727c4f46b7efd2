"""FlashInfer prefill kernels (forward only): full, causal, causal sliding windows and packed documents.

One sequence of batch 1: ``flashinfer.single_prefill_with_kv_cache`` (``[S, H, d]``, NHD layout). Documents, or
a batch of several sequences: ``BatchPrefillWithRaggedKVCacheWrapper`` planned once in ``build`` with
``qo_indptr = kv_indptr = cu_seqlens`` over ``B`` copies of the documents; ``run`` is the timed call.
FlashInfer's window is one-sided (``window_left``, keys ``q - left .. q``), so windows must be causal.
GQA native. CUDA only, fp16/bf16.
"""

from __future__ import annotations

from typing import Optional

import torch

from harness.masks.core import CAUSAL, VARLEN, WINDOW
from harness.interfaces import AttentionFn, Method, Problem
from methods._common import needs, packed_cu_seqlens

WORKSPACE_BYTES = 128 << 20  # the size FlashInfer's documentation recommends
HEAD_DIMS = (64, 128, 256)


def build(problem: Problem) -> AttentionFn:
    import flashinfer

    varlen = problem.mask.varlen
    window_left = varlen.window[0]
    b, s, hq, hk, d = problem.batch, problem.seqlen, problem.heads_q, problem.heads_kv, problem.head_dim
    kwargs = dict(causal=varlen.causal, sm_scale=problem.scale, window_left=window_left)
    if varlen.num_docs == 1 and b == 1:

        def flashinfer_single(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
            out = flashinfer.single_prefill_with_kv_cache(q[0], k[0], v[0], kv_layout="NHD", **kwargs)
            return out.unsqueeze(0)

        return flashinfer_single

    indptr, _ = packed_cu_seqlens(varlen, b, s, problem.device)
    workspace = torch.zeros(WORKSPACE_BYTES, dtype=torch.uint8, device=problem.device)
    wrapper = flashinfer.BatchPrefillWithRaggedKVCacheWrapper(workspace, kv_layout="NHD")
    wrapper.plan(indptr, indptr, hq, hk, d, q_data_type=problem.dtype, kv_data_type=problem.dtype, **kwargs)

    def flashinfer_ragged(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        out = wrapper.run(q.reshape(b * s, hq, d), k.reshape(b * s, hk, d), v.reshape(b * s, hk, d))
        return out.view(b, s, hq, d)

    return flashinfer_ragged


def limits(problem: Problem) -> Optional[str]:
    varlen = problem.mask.varlen
    if varlen.window != (-1, -1) and not varlen.causal:
        return f"non-causal window {varlen.window} (FlashInfer has window_left only)"
    if problem.head_dim not in HEAD_DIMS:
        return f"head_dim {problem.head_dim} (FlashInfer prefill supports {', '.join(map(str, HEAD_DIMS))})"
    return None


METHOD = Method(
    name="flashinfer",
    summary="FlashInfer prefill: single_prefill_with_kv_cache, ragged batch wrapper for documents; forward only",
    build=build,
    mask_features=frozenset({CAUSAL, WINDOW, VARLEN}),
    dtypes=frozenset({"bfloat16", "float16"}),
    devices=frozenset({"cuda"}),
    backward=False,
    gqa=True,
    probe=needs("flashinfer"),
    limits=limits,
    homepage="https://docs.flashinfer.ai/api/prefill.html",
)
