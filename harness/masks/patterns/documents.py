"""Packed documents (varlen): attention only inside a document, lengths from real corpora."""

from __future__ import annotations

from harness.masks.core import Mask
from harness.masks.documents import sample_pack
from harness.masks.patterns.common import banded_documents
from harness.masks.registry import register_mask, require

DOC_DEFAULTS = dict(distribution="pile", seed=0, max_doc_fraction=0.25)


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
