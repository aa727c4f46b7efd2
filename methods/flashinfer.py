"""FlashInfer prefill and decode kernels (forward only): full, causal, causal sliding windows, packed documents.

One sequence of batch 1: ``flashinfer.single_prefill_with_kv_cache`` (``[S, H, d]``, NHD layout). Documents, or
a batch of several sequences: ``BatchPrefillWithRaggedKVCacheWrapper`` planned once in ``build`` with
``qo_indptr = kv_indptr = cu_seqlens`` over ``B`` copies of the documents; ``run`` is the timed call.
FlashInfer's window is one-sided (``window_left``, keys ``q - left .. q``), so windows must be causal.
GQA native. CUDA only, fp16/bf16.

Decode: the ``[B, S, Hkv, d]`` cache viewed as ``B * S`` pages of one token (a view, no copy); each sequence's
page list is the keys of its last document, so the mask's causal flag and ``window_left`` apply unchanged (see
:mod:`methods._decode`). One token per sequence runs ``BatchDecodeWithPagedKVCacheWrapper``: for the last row a
window's right side and a document's later keys do not exist, so every varlen mask decodes. Several tokens run
the append kernel, ``BatchPrefillWithPagedKVCacheWrapper`` (its causal mask is aligned bottom-right), and, as
for prefill, need a causal window.
"""

from __future__ import annotations

from typing import Optional

import torch

from harness.masks.core import CAUSAL, VARLEN, WINDOW
from harness.interfaces import AttentionFn, Method, Problem
from methods._common import needs, packed_cu_seqlens
from methods._decode import decode_limits, last_document_start

WORKSPACE_BYTES = 128 << 20  # the size FlashInfer's documentation recommends
HEAD_DIMS = (64, 128, 256)


def build(problem: Problem) -> AttentionFn:
    if problem.is_decode:
        return build_decode(problem)
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


def decode_page_table(problem: Problem) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(indptr, indices, last_page_len)`` (int32, CPU) of one-token pages over the ``[B * S]`` token rows:
    sequence ``b`` holds the tokens of its last document, ``b * S + start ... b * S + S - 1``."""
    b, s = problem.batch, problem.seqlen
    start = last_document_start(problem)
    indptr = torch.arange(b + 1, dtype=torch.int32) * (s - start)
    indices = (torch.arange(b).unsqueeze(1) * s + torch.arange(start, s)).flatten().to(torch.int32)
    return indptr, indices, torch.ones(b, dtype=torch.int32)


def build_decode(problem: Problem) -> AttentionFn:
    """A decode step over the paged view of the cache: the wrapper is planned here, its ``run`` is timed."""
    import flashinfer

    b, s, n = problem.batch, problem.seqlen, problem.decode_tokens
    hq, hk, d = problem.heads_q, problem.heads_kv, problem.head_dim
    varlen = problem.mask.varlen
    indptr, indices, last_page_len = (t.to(problem.device) for t in decode_page_table(problem))
    workspace = torch.zeros(WORKSPACE_BYTES, dtype=torch.uint8, device=problem.device)
    common = dict(
        window_left=varlen.window[0], q_data_type=problem.dtype, kv_data_type=problem.dtype, sm_scale=problem.scale
    )
    if n == 1:
        wrapper = flashinfer.BatchDecodeWithPagedKVCacheWrapper(workspace, kv_layout="NHD")
        wrapper.plan(indptr, indices, last_page_len, hq, hk, d, 1, **common)
    else:
        qo_indptr = (torch.arange(b + 1, dtype=torch.int32) * n).to(problem.device)
        wrapper = flashinfer.BatchPrefillWithPagedKVCacheWrapper(workspace, kv_layout="NHD")
        wrapper.plan(qo_indptr, indptr, indices, last_page_len, hq, hk, d, 1, causal=varlen.causal, **common)

    def flashinfer_decode(q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor) -> torch.Tensor:
        pages = (k_cache.view(b * s, 1, hk, d), v_cache.view(b * s, 1, hk, d))  # [pages, page_size 1, Hkv, d]
        return wrapper.run(q.reshape(b * n, hq, d), pages).view(b, n, hq, d)

    return flashinfer_decode


def limits(problem: Problem) -> Optional[str]:
    varlen = problem.mask.varlen
    one_token = problem.is_decode and problem.decode_tokens == 1  # the last row sees no later key anyway
    if varlen.window != (-1, -1) and not varlen.causal and not one_token:
        return f"non-causal window {varlen.window} (FlashInfer has window_left only)"
    if problem.head_dim not in HEAD_DIMS:
        return f"head_dim {problem.head_dim} (FlashInfer supports {', '.join(map(str, HEAD_DIMS))})"
    return decode_limits(problem)


METHOD = Method(
    name="flashinfer",
    summary="FlashInfer prefill (single / ragged batch wrapper) and paged batch decode; forward only",
    build=build,
    mask_features=frozenset({CAUSAL, WINDOW, VARLEN}),
    dtypes=frozenset({"bfloat16", "float16"}),
    devices=frozenset({"cuda"}),
    backward=False,
    decode=True,
    gqa=True,
    probe=needs("flashinfer"),
    limits=limits,
    homepage="https://docs.flashinfer.ai/api/prefill.html",
)
