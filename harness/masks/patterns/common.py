"""Building blocks shared by the pattern files: documents with a causal flag and a window."""

from __future__ import annotations

from typing import Optional, Sequence

import torch

from harness.masks.core import Mask, RowIntervals, Varlen


def doc_bounds(seqlen: int, doc_lengths: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per token: document id, document start, document end (exclusive)."""
    lengths = torch.as_tensor(list(doc_lengths), dtype=torch.int64)
    assert int(lengths.sum()) == seqlen, (int(lengths.sum()), seqlen)
    doc_id = torch.repeat_interleave(torch.arange(len(lengths)), lengths)
    ends = torch.cumsum(lengths, 0)
    starts = ends - lengths
    return doc_id, starts[doc_id], ends[doc_id]


def banded_documents(
    name: str,
    seqlen: int,
    doc_lengths: Optional[Sequence[int]] = None,
    causal: bool = False,
    left: int = -1,
    right: int = -1,
) -> Mask:
    """Attention inside each document, optionally causal and/or within a window ``(left, right)``.

    ``-1`` means unbounded (flash-attn's convention). Covers full, causal, sliding windows and documents.
    """
    doc_lengths = [seqlen] if doc_lengths is None else list(doc_lengths)
    doc_id, start, end = doc_bounds(seqlen, doc_lengths)
    q = torch.arange(seqlen)
    right = 0 if causal else right
    lo = start if left < 0 else torch.maximum(start, q - left)
    hi = end if right < 0 else torch.minimum(end, q + right + 1)

    def definition(b, h, q_idx, k_idx):
        ok = doc_id[q_idx] == doc_id[k_idx]
        if left >= 0:
            ok = ok & (q_idx - k_idx <= left)
        if right >= 0:
            ok = ok & (k_idx - q_idx <= right)
        return ok

    cu = torch.zeros(len(doc_lengths) + 1, dtype=torch.int32)
    cu[1:] = torch.cumsum(torch.as_tensor(doc_lengths, dtype=torch.int32), 0)
    # A window wider than every document is no window at all.
    longest = max(doc_lengths)
    window = (
        -1 if left < 0 or left >= longest - 1 else left,
        -1 if right < 0 or right >= longest - 1 else (0 if causal else right),
    )
    if causal:
        window = (window[0], -1) if window[0] < 0 else (window[0], 0)
    return Mask(
        name=name,
        seqlen=seqlen,
        intervals=RowIntervals.build(lo, hi),
        definition=definition,
        varlen=Varlen(cu_seqlens=cu, causal=causal, window=window),
        doc_lengths=doc_lengths if len(doc_lengths) > 1 else None,
    )
