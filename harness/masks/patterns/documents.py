"""Packed documents: attention inside documents (varlen) and LongCA-bench's document variants.

Lengths come from real corpora (:mod:`harness.masks.documents`), so every pattern here has the parameters
``distribution`` (a built-in name or a JSON/CSV file), ``seed`` and ``max_doc_fraction``, and sets
``Mask.doc_lengths`` so that runs report the document count and spread. Only ``full_document``,
``causal_document`` and their ``_long`` variants are varlen-expressible; the others are ``arbitrary``.
"""

from __future__ import annotations

from typing import Optional

import numpy as np
import torch

from harness.masks.core import Mask
from harness.masks.documents import LONG_DOC_RANGE, LONG_REFERENCE_SEQLEN, sample_long_pack, sample_pack
from harness.masks.patterns.common import arbitrary_mask, banded_documents, doc_bounds, merge_intervals
from harness.masks.registry import register_mask, require

DOC_DEFAULTS = dict(distribution="pile", seed=0, max_doc_fraction=0.25)
LONG_DEFAULTS = dict(
    DOC_DEFAULTS,
    long_fraction=0.6,
    long_min=LONG_DOC_RANGE[0],
    long_max=LONG_DOC_RANGE[1],
    reference_seqlen=LONG_REFERENCE_SEQLEN,
)


def _pack(name: str, seqlen: int, distribution: str, seed: int, max_doc_fraction: float) -> list[int]:
    require(0 < max_doc_fraction <= 1, name, "max_doc_fraction", max_doc_fraction, "expected a value in (0, 1]")
    return sample_pack(seqlen, distribution, seed, max_doc_fraction)


@register_mask("full_document", "bidirectional attention inside each packed document", **DOC_DEFAULTS)
def full_document(seqlen: int, num_heads: int, distribution: str, seed: int, max_doc_fraction: float) -> Mask:
    docs = _pack("full_document", seqlen, distribution, seed, max_doc_fraction)
    return banded_documents("full_document", seqlen, docs)


@register_mask("causal_document", "causal attention inside each packed document", **DOC_DEFAULTS)
def causal_document(seqlen: int, num_heads: int, distribution: str, seed: int, max_doc_fraction: float) -> Mask:
    docs = _pack("causal_document", seqlen, distribution, seed, max_doc_fraction)
    return banded_documents("causal_document", seqlen, docs, causal=True)


@register_mask(
    "share_question",
    "document 0 is a question (causal); every later document is causal in itself and sees all of document 0",
    **DOC_DEFAULTS,
)
def share_question(seqlen: int, num_heads: int, distribution: str, seed: int, max_doc_fraction: float) -> Mask:
    docs = _pack("share_question", seqlen, distribution, seed, max_doc_fraction)
    doc_id, start, _ = doc_bounds(seqlen, docs)
    q = torch.arange(seqlen)
    question = docs[0]
    lo = torch.stack([torch.zeros_like(q), start], dim=-1)
    hi = torch.stack([torch.where(doc_id > 0, question, 0), q + 1], dim=-1)

    def definition(b, h, q_idx, k_idx):
        same_or_question = (doc_id[q_idx] == doc_id[k_idx]) | (doc_id[k_idx] == 0)
        return (k_idx <= q_idx) & same_or_question

    return arbitrary_mask("share_question", seqlen, merge_intervals(lo, hi), definition, docs)


@register_mask(
    "causal_blockwise",
    "each document causal in itself; the last document attends causally to all keys",
    **DOC_DEFAULTS,
)
def causal_blockwise(seqlen: int, num_heads: int, distribution: str, seed: int, max_doc_fraction: float) -> Mask:
    docs = _pack("causal_blockwise", seqlen, distribution, seed, max_doc_fraction)
    doc_id, start, _ = doc_bounds(seqlen, docs)
    q = torch.arange(seqlen)
    last = len(docs) - 1
    lo = torch.where(doc_id == last, 0, start)

    def definition(b, h, q_idx, k_idx):
        return (k_idx <= q_idx) & ((doc_id[q_idx] == doc_id[k_idx]) | (doc_id[q_idx] == last))

    return arbitrary_mask("causal_blockwise", seqlen, merge_intervals(lo[:, None], (q + 1)[:, None]), definition, docs)


@register_mask(
    "prefix_lm_document",
    "prefix-LM inside each document: its first `prefix` tokens attend bidirectionally, the rest causally "
    "(prefix=None: seeded draw in [1, length of document 0], as LongCA-bench)",
    prefix=None,
    **DOC_DEFAULTS,
)
def prefix_lm_document(
    seqlen: int, num_heads: int, prefix: Optional[int], distribution: str, seed: int, max_doc_fraction: float
) -> Mask:
    name = "prefix_lm_document"
    docs = _pack(name, seqlen, distribution, seed, max_doc_fraction)
    if prefix is None:
        prefix = int(np.random.Generator(np.random.PCG64([seed, 2])).integers(1, docs[0] + 1))
    require(isinstance(prefix, int) and not isinstance(prefix, bool), name, "prefix", prefix, "expected an integer")
    require(0 <= prefix <= seqlen, name, "prefix", prefix, f"expected 0 <= prefix <= seqlen ({seqlen})")
    doc_id, start, end = doc_bounds(seqlen, docs)
    q = torch.arange(seqlen)
    in_prefix = q - start < prefix
    hi = torch.where(in_prefix, torch.minimum(start + prefix, end), q + 1)

    def definition(b, h, q_idx, k_idx):
        bidirectional = k_idx - start[k_idx] < prefix
        return (doc_id[q_idx] == doc_id[k_idx]) & ((k_idx <= q_idx) | bidirectional)

    return arbitrary_mask(name, seqlen, merge_intervals(start[:, None], hi[:, None]), definition, docs)


@register_mask(
    "block_causal_document",
    "documents of 1..max_doc_blocks fixed blocks; block i of a document sees blocks 0..i of it",
    examples=({"block": 32},),
    block=128,
    max_doc_blocks=8,
    seed=0,
)
def block_causal_document(seqlen: int, num_heads: int, block: int, max_doc_blocks: int, seed: int) -> Mask:
    name = "block_causal_document"
    require(block >= 1, name, "block", block, "expected an integer >= 1")
    require(seqlen % block == 0, name, "block", block, f"expected a divisor of seqlen ({seqlen})")
    require(max_doc_blocks >= 1, name, "max_doc_blocks", max_doc_blocks, "expected an integer >= 1")
    rng = np.random.Generator(np.random.PCG64(seed))
    docs, left = [], seqlen // block
    while left > 0:
        n = min(left, int(rng.integers(1, max_doc_blocks + 1)))
        docs.append(n * block)
        left -= n
    doc_id, start, end = doc_bounds(seqlen, docs)
    q = torch.arange(seqlen)
    hi = torch.minimum((q // block + 1) * block, end)

    def definition(b, h, q_idx, k_idx):
        return (doc_id[q_idx] == doc_id[k_idx]) & (k_idx // block <= q_idx // block)

    return arbitrary_mask(name, seqlen, merge_intervals(start[:, None], hi[:, None]), definition, docs)


def _long_pack(
    name: str,
    seqlen: int,
    distribution: str,
    seed: int,
    max_doc_fraction: float,
    long_fraction: float,
    long_min: int,
    long_max: int,
    reference_seqlen: int,
) -> list[int]:
    require(0 <= long_fraction <= 1, name, "long_fraction", long_fraction, "expected a value in [0, 1]")
    require(long_min >= 1, name, "long_min", long_min, "expected an integer >= 1")
    require(long_max >= long_min, name, "long_max", long_max, f"expected an integer >= long_min ({long_min})")
    require(reference_seqlen >= 1, name, "reference_seqlen", reference_seqlen, "expected an integer >= 1")
    require(0 < max_doc_fraction <= 1, name, "max_doc_fraction", max_doc_fraction, "expected a value in (0, 1]")
    return sample_long_pack(
        seqlen, distribution, seed, max_doc_fraction, long_fraction, (long_min, long_max), reference_seqlen
    )


@register_mask(
    "full_document_long",
    "bidirectional documents: 40% of tokens from the corpus, 60% from documents uniform in 8K-30K "
    "(range scaled by seqlen/reference_seqlen below 128K)",
    **LONG_DEFAULTS,
)
def full_document_long(seqlen: int, num_heads: int, **params) -> Mask:
    return banded_documents("full_document_long", seqlen, _long_pack("full_document_long", seqlen, **params))


@register_mask(
    "causal_document_long",
    "causal documents: 40% of tokens from the corpus, 60% from documents uniform in 8K-30K "
    "(range scaled by seqlen/reference_seqlen below 128K)",
    **LONG_DEFAULTS,
)
def causal_document_long(seqlen: int, num_heads: int, **params) -> Mask:
    docs = _long_pack("causal_document_long", seqlen, **params)
    return banded_documents("causal_document_long", seqlen, docs, causal=True)
