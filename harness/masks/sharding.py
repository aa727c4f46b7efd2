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

import torch

from harness.errors import UserError, unknown
from harness.masks.core import Mask

LayoutFn = Callable[[int, int, Optional[Sequence[int]]], list[torch.Tensor]]
LAYOUTS: dict[str, LayoutFn] = {}


def register_layout(name: str) -> Callable[[LayoutFn], LayoutFn]:
    def wrap(fn: LayoutFn) -> LayoutFn:
        LAYOUTS[name] = fn
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


@register_layout("striped")
def striped(seqlen: int, world_size: int, doc_lengths: Optional[Sequence[int]] = None) -> list[torch.Tensor]:
    _divisible("striped", seqlen, world_size, world_size, "world_size")
    return [torch.arange(r, seqlen, world_size) for r in range(world_size)]


@register_layout("doc_zigzag")
def doc_zigzag(seqlen: int, world_size: int, doc_lengths: Optional[Sequence[int]] = None) -> list[torch.Tensor]:
    _divisible("doc_zigzag", seqlen, world_size, world_size, "world_size")
    w2 = 2 * world_size
    # Slot s of a document (its s-th of 2W chunks) belongs to rank min(s, 2W-1-s). Spare tokens (length % 2W)
    # go to slots in the order rank 0..W-1 heads, then tails, continuing where the previous document stopped.
    slot_order = list(range(world_size)) + [w2 - 1 - r for r in range(world_size)]
    owner = [min(s, w2 - 1 - s) for s in range(w2)]
    parts: list[list[torch.Tensor]] = [[] for _ in range(world_size)]
    cursor, start = 0, 0
    for length in doc_lengths or [seqlen]:
        sizes = [length // w2] * w2
        for k in range(length % w2):
            sizes[slot_order[(cursor + k) % w2]] += 1
        cursor = (cursor + length % w2) % w2
        for s, size in enumerate(sizes):
            parts[owner[s]].append(torch.arange(start, start + size))
            start += size
    return [torch.cat(p) for p in parts]


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
