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


# ----- building blocks for patterns that are not varlen-expressible -----------------------------------------

_NONE = torch.iinfo(torch.int64).max  # sort key of an empty slot: after every real interval
_CHUNK_ELEMENTS = 1 << 21  # rows x slots handled at once when expanding block runs


def merge_intervals(lo: torch.Tensor, hi: torch.Tensor) -> RowIntervals:
    """Disjoint, sorted, non-adjacent step-1 intervals per row from possibly overlapping ones.

    ``lo``/``hi`` are ``[S, R]`` or ``[Hm, S, R]`` (empty slots have ``lo >= hi``). Overlapping or touching
    intervals of a row are merged, so the kernel's tile plans and the area counts see each key once.
    Vectorised: a sort, a running max and two scatters, O(S·R·log R) with no S×S matrix.
    """
    ri = RowIntervals.build(lo, hi)  # [Hm, S, R], canonical empties lo == hi
    lo, hi = ri.lo, ri.hi
    empty = lo >= hi
    lo = lo.masked_fill(empty, _NONE)
    hi = hi.masked_fill(empty, _NONE)
    lo, order = lo.sort(dim=-1, stable=True)
    hi = hi.gather(-1, order)
    valid = lo != _NONE
    reach = hi.cummax(dim=-1).values
    before = torch.cat([torch.full_like(reach[..., :1], torch.iinfo(torch.int64).min), reach[..., :-1]], dim=-1)
    starts = (lo > before) & valid  # the interval opens a new group (a gap before it)
    group = starts.cumsum(-1) - 1
    width = max(1, int(starts.sum(-1).max()) if starts.numel() else 1)
    group = torch.where(valid, group, torch.full_like(group, width))  # empties go to a spare slot
    shape = (*lo.shape[:-1], width + 1)
    out_lo = torch.zeros(shape, dtype=torch.int64).scatter_reduce(-1, group, lo, "amin", include_self=False)
    out_hi = torch.zeros(shape, dtype=torch.int64).scatter_reduce(-1, group, hi, "amax", include_self=False)
    return RowIntervals.build(out_lo[..., :width], out_hi[..., :width])


def block_runs_to_intervals(seqlen: int, block: int, run_lo: torch.Tensor, run_hi: torch.Tensor) -> RowIntervals:
    """Token intervals of a block-level causal pattern.

    ``run_lo``/``run_hi`` (``[nb, R]`` or ``[Hm, nb, R]``) give, for every query block, runs of key blocks
    ``[j0, j1)``. Each run becomes the key tokens ``[j0*block, j1*block)``, cut at the query (keys ``<= q``:
    diagonal blocks are causal at token level) and at ``seqlen``; the runs of a row are then merged.
    Rows are processed in chunks so that the temporaries stay small next to the result (``[Hm, S, R']``).
    """
    if run_lo.dim() == 2:
        run_lo, run_hi = run_lo[None], run_hi[None]
    run_lo, run_hi = torch.broadcast_tensors(run_lo, run_hi)
    hm, _, r = run_lo.shape
    chunk = max(1, _CHUNK_ELEMENTS // max(1, hm * r))
    parts = []
    for first in range(0, seqlen, chunk):
        q = torch.arange(first, min(first + chunk, seqlen))
        qb = q // block
        blo, bhi = run_lo[:, qb], run_hi[:, qb]  # [Hm, n, R]
        lo = (blo * block).clamp(0, seqlen)
        hi = torch.minimum(bhi * block, (q + 1).view(1, -1, 1)).clamp(0, seqlen)
        parts.append(merge_intervals(lo, torch.where(bhi <= blo, lo, hi)))
    return concat_rows(parts)


def concat_rows(parts: Sequence[RowIntervals]) -> RowIntervals:
    """Row-wise concatenation of interval sets, padding every part to the widest one with empty slots."""
    width = max(p.lo.shape[-1] for p in parts)

    def pad(t: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.pad(t, (0, width - t.shape[-1]))

    return RowIntervals(
        torch.cat([pad(p.lo) for p in parts], dim=1),
        torch.cat([pad(p.hi) for p in parts], dim=1),
        torch.cat([torch.nn.functional.pad(p.step, (0, width - p.step.shape[-1]), value=1) for p in parts], dim=1),
    )


def single_blocks(blocks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Runs ``[j, j+1)`` for block indices ``j`` (negative indices become empty runs)."""
    ok = blocks >= 0
    lo = torch.where(ok, blocks, torch.zeros_like(blocks))
    return lo, torch.where(ok, blocks + 1, lo)


def arbitrary_mask(
    name: str,
    seqlen: int,
    intervals: RowIntervals,
    definition,
    doc_lengths: Optional[Sequence[int]] = None,
) -> Mask:
    """A mask that no varlen description can express (features: arbitrary, per_head when Hm > 1)."""
    docs = list(doc_lengths) if doc_lengths is not None and len(doc_lengths) > 1 else None
    return Mask(name=name, seqlen=seqlen, intervals=intervals, definition=definition, doc_lengths=docs)
