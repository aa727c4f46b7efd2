"""Sequence sharding for context parallelism: which global tokens each rank holds, and the work it gets.

A layout maps ``(seqlen, world_size, doc_lengths)`` to one sorted int64 tensor of global positions per rank;
together they are a permutation of ``arange(seqlen)`` and every rank holds ``seqlen / world_size`` tokens.

* ``contiguous`` — rank r holds the r-th contiguous chunk (causal masks: the last rank does most work);
* ``zigzag``     — head-tail: 2W chunks, rank i holds chunks i and 2W-1-i (balances a causal square);
* ``striped``    — token t goes to rank t mod W;
* ``doc_zigzag`` — head-tail inside every document: each document is cut into 2W chunks and rank i holds
  chunks i and 2W-1-i of each. Documents rarely divide by 2W: chunk sizes differ by at most one token and the
  spare tokens are dealt round-robin over the ranks across documents, so shards stay equal-sized whenever
  ``seqlen % W == 0``.

:func:`shard_areas` gives the mask area each rank computes (its query rows against all keys) and the
imbalance max/mean, the quantity that bounds a ring step (the slowest rank sets the pace).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional, Sequence

import numpy as np
import torch

from harness.errors import UserError, unknown
from harness.masks.core import Mask

LayoutFn = Callable[[int, int, Optional[Sequence[int]]], list[torch.Tensor]]
LAYOUTS: dict[str, LayoutFn] = {}
# A layout's own exact rank-pair areas (mask, world_size) -> [W, W], or None where its closed form does not apply
# to the mask (then :func:`pair_areas` computes them from runs). Only layouts whose runs are many need one.
PairAreasFn = Callable[[Mask, int], Optional[np.ndarray]]
LAYOUT_PAIR_AREAS: dict[str, PairAreasFn] = {}


def register_layout(name: str, pair_areas: Optional[PairAreasFn] = None) -> Callable[[LayoutFn], LayoutFn]:
    def wrap(fn: LayoutFn) -> LayoutFn:
        LAYOUTS[name] = fn
        if pair_areas is not None:
            LAYOUT_PAIR_AREAS[name] = pair_areas
        return fn

    return wrap


def _divisible(layout: str, seqlen: int, world_size: int, multiple: int, what: str) -> None:
    if seqlen % multiple:
        raise UserError(
            f"sharding {layout}: seqlen={seqlen} is not allowed with world_size={world_size}; "
            f"expected a multiple of {what} ({multiple})"
        )


@register_layout("contiguous")
def contiguous(seqlen: int, world_size: int, doc_lengths: Optional[Sequence[int]] = None) -> list[torch.Tensor]:
    _divisible("contiguous", seqlen, world_size, world_size, "world_size")
    return list(torch.arange(seqlen).chunk(world_size))


@register_layout("zigzag")
def zigzag(seqlen: int, world_size: int, doc_lengths: Optional[Sequence[int]] = None) -> list[torch.Tensor]:
    _divisible("zigzag", seqlen, world_size, 2 * world_size, "2 * world_size")
    chunks = torch.arange(seqlen).chunk(2 * world_size)
    return [torch.cat([chunks[r], chunks[2 * world_size - 1 - r]]) for r in range(world_size)]


def _striped_pair_areas(mask: Mask, world_size: int) -> Optional[np.ndarray]:
    """Striped (token t on rank t mod W) for masks of contiguous key intervals: the keys of rank o in ``[lo, hi)``
    are ``hi // W - lo // W + [hi % W > o] - [lo % W > o]``, so rank r's row sum is a count plus two histograms."""
    iv = mask.intervals
    w, s = world_size, mask.seqlen
    if s % w or bool(((iv.step != 1) & (iv.hi > iv.lo)).any()):
        return None
    out = np.zeros((w, w), dtype=np.int64)
    for lo, hi in zip(iv.lo.numpy().reshape(-1, s, iv.lo.shape[-1]), iv.hi.numpy().reshape(-1, s, iv.hi.shape[-1])):
        for r_lo, r_hi in zip(lo.T, hi.T):  # one interval slot of every row
            keep = r_hi > r_lo
            rank = np.arange(s) % w
            base = np.bincount(rank[keep], weights=(r_hi // w - r_lo // w)[keep], minlength=w)
            out += np.rint(base).astype(np.int64)[:, None]
            for sign, edge in ((1, r_hi), (-1, r_lo)):
                hist = np.bincount(rank[keep] * w + edge[keep] % w, minlength=w * w).reshape(w, w)
                above = np.cumsum(hist[:, ::-1], axis=1)[:, ::-1]  # above[r, m] = #rows with edge % W >= m
                out += sign * np.c_[above[:, 1:], np.zeros((w, 1), dtype=np.int64)]  # > o
    return out


def _doc_zigzag_pair_areas(mask: Mask, world_size: int) -> Optional[np.ndarray]:
    """Per-document head-tail on a mask of whole documents (causal or full, no window): rank r holds head chunk
    r and tail chunk 2W-1-r of every document, so with H, T the [docs, W] head and tail sizes the causal areas are
    ``tril(H'H, -1) + T'H + triu(T'T, 1)`` plus each chunk's own triangle (full documents: ``(H+T)'(H+T)``)."""
    v = mask.varlen
    if v is None or v.window != (-1, -1) or mask.per_head or mask.doc_lengths is None:
        return None
    if list(np.diff(v.cu_seqlens.numpy())) != list(mask.doc_lengths):
        return None
    _, sizes, _ = _doc_zigzag_chunks(mask.seqlen, world_size, mask.doc_lengths)
    sizes = sizes.reshape(-1, 2 * world_size).astype(np.float64)
    head, tail = sizes[:, :world_size], sizes[:, world_size:][:, ::-1]  # tail[:, r] = slot 2W-1-r
    if not v.causal:
        return np.rint((head + tail).T @ (head + tail)).astype(np.int64)
    areas = np.tril(head.T @ head, -1) + tail.T @ head + np.triu(tail.T @ tail, 1)
    areas += np.diag((head * (head + 1) / 2 + tail * (tail + 1) / 2).sum(0))
    return np.rint(areas).astype(np.int64)


@register_layout("striped", pair_areas=_striped_pair_areas)
def striped(seqlen: int, world_size: int, doc_lengths: Optional[Sequence[int]] = None) -> list[torch.Tensor]:
    _divisible("striped", seqlen, world_size, world_size, "world_size")
    return [torch.arange(r, seqlen, world_size) for r in range(world_size)]


@register_layout("doc_zigzag", pair_areas=_doc_zigzag_pair_areas)
def doc_zigzag(seqlen: int, world_size: int, doc_lengths: Optional[Sequence[int]] = None) -> list[torch.Tensor]:
    _divisible("doc_zigzag", seqlen, world_size, world_size, "world_size")
    starts, sizes, owner = _doc_zigzag_chunks(seqlen, world_size, doc_lengths)
    order = np.argsort(owner, kind="stable")  # each rank's chunks in sequence order
    positions = _concat_ranges(starts[order], starts[order] + sizes[order])
    per_rank = np.bincount(owner, weights=sizes, minlength=world_size).astype(np.int64)
    return list(torch.from_numpy(positions).split(per_rank.tolist()))


def _doc_zigzag_chunks(seqlen: int, world_size: int, doc_lengths: Optional[Sequence[int]]):
    """(start, size, owner rank) of every document's 2W chunks, documents in order (``[D * 2W]`` each).

    Slot s of a document (its s-th of 2W chunks) belongs to rank min(s, 2W-1-s). Spare tokens (length % 2W)
    go to slots in the order rank 0..W-1 heads, then tails, continuing where the previous document stopped."""
    w2 = 2 * world_size
    lengths = np.asarray(doc_lengths or [seqlen], dtype=np.int64)
    spare = lengths % w2
    cursor = np.r_[0, np.cumsum(spare)[:-1]] % w2  # where each document's spare tokens start dealing
    slot_order = np.r_[np.arange(world_size), w2 - 1 - np.arange(world_size)]
    rank_of_slot = np.empty(w2, dtype=np.int64)
    rank_of_slot[slot_order] = np.arange(w2)  # position of each slot in the dealing order
    # slot s gets a spare token iff its place in the dealing order, counted from the cursor, is < spare
    place = (rank_of_slot[None, :] - cursor[:, None]) % w2
    sizes = lengths[:, None] // w2 + (place < spare[:, None])
    starts = np.cumsum(sizes.ravel()) - sizes.ravel()
    owner = np.tile(np.minimum(np.arange(w2), w2 - 1 - np.arange(w2)), len(lengths))
    return starts, sizes.ravel(), owner


def shard_positions(mask: Mask, layout: str, world_size: int) -> list[torch.Tensor]:
    """Global token positions (sorted int64) each of ``world_size`` ranks holds under ``layout``."""
    if layout not in LAYOUTS:
        raise unknown("sharding layout", layout, LAYOUTS)
    if not isinstance(world_size, int) or world_size < 1:
        raise UserError(f"sharding {layout}: world_size={world_size!r} is not allowed; expected an integer >= 1")
    return [p.sort().values for p in LAYOUTS[layout](mask.seqlen, world_size, mask.doc_lengths)]


@dataclass(frozen=True)
class ShardAreas:
    layout: str
    world_size: int
    areas: list[int]  # allowed (q, k) pairs of each rank's query rows, summed over the mask's head patterns

    @property
    def imbalance(self) -> float:
        """max / mean of the per-rank areas (1.0 = perfectly balanced)."""
        mean = sum(self.areas) / len(self.areas)
        return max(self.areas) / mean if mean > 0 else 1.0


def shard_areas(mask: Mask, layout: str, world_size: int) -> ShardAreas:
    """The area each rank computes under ``layout`` (exact, from the row intervals) and its imbalance."""
    per_row = mask.intervals.counts().sum(0)  # [S]: keys per query row, summed over head patterns
    areas = [int(per_row[pos].sum()) for pos in shard_positions(mask, layout, world_size)]
    return ShardAreas(layout, world_size, areas)


# ----- exact pair areas between position sets (for the schedules of `lcbench predict`) -----------------------
def _runs(sets: Sequence[torch.Tensor]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Maximal runs of consecutive positions of every set: (starts, ends, set index), sorted by start."""
    starts, ends, owner = [], [], []
    for idx, positions in enumerate(sets):
        p = np.sort(np.asarray(positions, dtype=np.int64))
        if p.size == 0:
            continue
        cut = np.flatnonzero(np.diff(p) != 1)
        starts.append(p[np.r_[0, cut + 1]])
        ends.append(p[np.r_[cut, p.size - 1]] + 1)
        owner.append(np.full(len(cut) + 1, idx, dtype=np.int64))
    s, e, o = (np.concatenate(x) if x else np.zeros(0, np.int64) for x in (starts, ends, owner))
    order = np.argsort(s, kind="stable")
    return s[order], e[order], o[order]


def pair_areas(mask: Mask, q_sets: Sequence[torch.Tensor], k_sets: Sequence[torch.Tensor],
               chunk_pairs: int = 1 << 22) -> np.ndarray:
    """Exact allowed (q, k) pairs of every (q set, k set): ``[len(q_sets), len(k_sets)]`` int64, summed over the
    mask's head patterns (as :func:`shard_areas`).

    What a rank computes against each block of keys it meets: the per-step work of a ring, computed from the
    row intervals without an S x S matrix. Sets are cut into runs of consecutive positions; for a run of query
    rows ``[a, b)`` the allowed keys below ``c`` are ``F(c) = sum_rows sum_intervals clamp(min(c, hi) - lo, 0)``,
    a piecewise-linear function of ``c`` evaluated with sorted interval ends and their prefix sums, so a (q run,
    k run) pair costs ``F(end) - F(start)`` and only key runs inside the q run's reach are visited. Dilated
    intervals (step > 1) take the exact counting path of :meth:`RowIntervals.count_in_ranges`.
    """
    iv = mask.intervals
    qs, qe, qo = _runs(q_sets)
    ks, ke, ko = _runs(k_sets)
    out = np.zeros((len(q_sets), len(k_sets)), dtype=np.float64)
    if qs.size == 0 or ks.size == 0:
        return out.astype(np.int64)
    lo_all, hi_all, st_all = (t.numpy() for t in (iv.lo, iv.hi, iv.step))
    for h in range(iv.num_heads):
        lo, hi, step = lo_all[h], hi_all[h], st_all[h]
        if np.any((step != 1) & (hi > lo)):
            out += _pair_areas_counting(mask, h, qs, qe, qo, ks, ke, ko, out.shape)
            continue
        rows_of_run = qe - qs
        row_run = np.repeat(np.arange(qs.size), rows_of_run)  # q run of every row, rows in run order
        rows = _concat_ranges(qs, qe)
        lo_r, hi_r = lo[rows], hi[rows]  # [n, R]
        keep = hi_r > lo_r
        seg = np.broadcast_to(row_run[:, None], lo_r.shape)[keep]
        lo_v, hi_v = lo_r[keep], hi_r[keep]
        if seg.size == 0:
            continue
        big = np.int64(mask.seqlen + 1)
        lo_key, lo_cum = _sorted_keys(seg, lo_v, big)
        hi_key, hi_cum = _sorted_keys(seg, hi_v, big)
        reach_lo = np.full(qs.size, mask.seqlen, dtype=np.int64)
        reach_hi = np.zeros(qs.size, dtype=np.int64)
        np.minimum.at(reach_lo, seg, lo_v)
        np.maximum.at(reach_hi, seg, hi_v)
        # key runs [j0, j1) of each q run that intersect its reach [reach_lo, reach_hi)
        j0 = np.searchsorted(ke, reach_lo, side="right")
        j1 = np.searchsorted(ks, reach_hi, side="left")
        j1 = np.maximum(j1, j0)
        counts = j1 - j0
        for i_idx, j_idx in _pair_chunks(j0, counts, chunk_pairs):
            f_end = _ramp(lo_key, lo_cum, hi_key, hi_cum, i_idx, ke[j_idx], big)
            f_start = _ramp(lo_key, lo_cum, hi_key, hi_cum, i_idx, ks[j_idx], big)
            cell = qo[i_idx] * len(k_sets) + ko[j_idx]
            out += np.bincount(cell, weights=f_end - f_start, minlength=out.size).reshape(out.shape)
    return np.rint(out).astype(np.int64)


def layout_pair_areas(mask: Mask, layout: str, world_size: int) -> np.ndarray:
    """Exact ``[W, W]`` areas of rank r's query rows against rank o's keys under library layout ``layout``."""
    fast = LAYOUT_PAIR_AREAS.get(layout)
    areas = fast(mask, world_size) if fast is not None else None
    if areas is None:
        positions = LAYOUTS[layout](mask.seqlen, world_size, mask.doc_lengths)
        areas = pair_areas(mask, positions, positions)
    return areas


def _concat_ranges(starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """``concatenate([arange(a, b) for a, b in zip(starts, ends)])`` without a Python loop."""
    lengths = ends - starts
    offsets = np.repeat(starts - np.r_[0, np.cumsum(lengths)[:-1]], lengths)
    return np.arange(int(lengths.sum()), dtype=np.int64) + offsets


def _sorted_keys(seg: np.ndarray, value: np.ndarray, big: np.int64) -> tuple[np.ndarray, np.ndarray]:
    """Keys ``seg * big + value`` sorted, and the prefix sums of ``value`` in that order (a leading 0)."""
    key = seg.astype(np.int64) * big + value
    if key.size and np.all(key[1:] >= key[:-1]):  # causal, window and document rows come sorted
        return key, np.r_[0.0, np.cumsum(value, dtype=np.float64)]
    order = np.argsort(key, kind="stable")
    return key[order], np.r_[0.0, np.cumsum(value[order], dtype=np.float64)]


def _ramp(lo_key, lo_cum, hi_key, hi_cum, i_idx: np.ndarray, c: np.ndarray, big: np.int64) -> np.ndarray:
    """``F_i(c) = sum_{lo < c} (c - lo) - sum_{hi < c} (c - hi)`` over the intervals of q run ``i``."""
    base = i_idx.astype(np.int64) * big

    def part(key: np.ndarray, cum: np.ndarray) -> np.ndarray:
        first = np.searchsorted(key, base, side="left")
        below = np.searchsorted(key, base + c, side="left")
        return c * (below - first) - (cum[below] - cum[first])

    return part(lo_key, lo_cum) - part(hi_key, hi_cum)


def _pair_chunks(j0: np.ndarray, counts: np.ndarray, chunk_pairs: int):
    """(q run index, key run index) arrays of all candidate pairs, ``chunk_pairs`` at a time."""
    ends = np.cumsum(counts)
    start = 0
    while start < len(counts):
        stop = int(np.searchsorted(ends, (ends[start - 1] if start else 0) + chunk_pairs, side="right"))
        stop = max(stop, start + 1)
        c = counts[start:stop]
        i_idx = np.repeat(np.arange(start, stop), c)
        first = np.repeat(j0[start:stop] - np.r_[0, np.cumsum(c)[:-1]], c)
        j_idx = np.arange(int(c.sum()), dtype=np.int64) + first
        if i_idx.size:
            yield i_idx, j_idx
        start = stop


def _pair_areas_counting(mask: Mask, head: int, qs, qe, qo, ks, ke, ko, shape) -> np.ndarray:
    """The exact counting path for dilated intervals: every q run's rows against every key run."""
    iv = mask.intervals
    sub = type(iv)(iv.lo[head:head + 1], iv.hi[head:head + 1], iv.step[head:head + 1])
    out = np.zeros(shape, dtype=np.float64)
    a, b = torch.from_numpy(ks), torch.from_numpy(ke)
    for i in range(qs.size):
        per_row = sub.count_in_ranges(torch.arange(int(qs[i]), int(qe[i])), a, b)  # [1, n, runs]
        np.add.at(out, (np.full(ks.size, qo[i]), ko), per_row.sum(1)[0].double().numpy())
    return out
