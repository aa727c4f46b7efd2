"""Sequence layouts of the strategies: which global token positions each rank holds (``Layout`` functions).

The layouts themselves are the mask library's (:mod:`harness.masks.sharding`: ``contiguous``, ``zigzag``
head-tail, ``striped``, ``doc_zigzag`` per-document head-tail with equal shard sizes), so strategies and
the mask report's per-rank areas use one definition. This module adapts them to the interface — a
function of the :class:`CPProblem` that raises :class:`Unsupported` (not a user error) when the sequence
cannot be cut exactly — and adds the building blocks of layouts that are not plain ones (USP's head-tail
over ring groups, then contiguous over each group's members).

Every function returns ``[positions of rank 0, ..., rank W-1]`` (int64, local row order).
"""

from __future__ import annotations

import functools
from typing import Optional

import numpy as np
import torch

from harness.interfaces.strategy import CPProblem, Unsupported
from harness.errors import UserError
from harness.masks import sharding


def split_head_tail(positions: torch.Tensor, parts: int) -> list[torch.Tensor]:
    """Cut ``positions`` into 2*parts equal chunks; part r gets chunks r and 2*parts-1-r."""
    n = len(positions)
    if n % (2 * parts):
        raise Unsupported(f"seqlen {n} is not divisible by 2 x {parts} = {2 * parts} (head-tail shards)")
    chunks = positions.chunk(2 * parts)
    return [torch.cat([chunks[r], chunks[2 * parts - 1 - r]]) for r in range(parts)]


def library_layout(name: str):
    """The mask library's layout ``name`` as a ``Layout`` (its user errors become ``Unsupported``)."""
    fn = sharding.LAYOUTS[name]

    @functools.lru_cache(maxsize=8)  # support check, schedule and comm model of one point ask for the same cut
    def cut(seqlen: int, world_size: int, doc_lengths: Optional[tuple[int, ...]]) -> list[torch.Tensor]:
        return fn(seqlen, world_size, list(doc_lengths) if doc_lengths is not None else None)

    def layout(problem: CPProblem) -> list[torch.Tensor]:
        docs = problem.mask.doc_lengths
        try:
            return list(cut(problem.seqlen, problem.world_size, tuple(docs) if docs is not None else None))
        except UserError as e:
            raise Unsupported(str(e)) from None

    layout.__name__ = layout.__qualname__ = name
    layout.library_name = name  # type: ignore[attr-defined]  (its closed-form pair areas: rank_pair_areas)
    layout.__doc__ = f"``{name}`` of :mod:`harness.masks.sharding` on the problem's mask and world size."
    return layout


def rank_pair_areas(problem: CPProblem, layout, positions: list[torch.Tensor]) -> np.ndarray:
    """Exact ``[W, W]`` areas of rank r's query rows against rank o's keys (summed over the mask's head
    patterns): a library layout's closed form where it has one, else counted from ``positions``' runs."""
    name = getattr(layout, "library_name", None)
    key = (id(problem.mask), name or id(layout), problem.world_size)
    if key not in _AREAS or _AREAS[key][0] is not problem.mask:
        if len(_AREAS) >= 8:
            _AREAS.pop(next(iter(_AREAS)))
        areas = (sharding.layout_pair_areas(problem.mask, name, problem.world_size) if name is not None
                 else sharding.pair_areas(problem.mask, positions, positions))
        _AREAS[key] = (problem.mask, areas)
    return _AREAS[key][1]


_AREAS: dict[tuple, tuple] = {}  # the last few (mask, layout, W) areas: fwd and bwd of one point share them


contiguous = library_layout("contiguous")
zigzag = library_layout("zigzag")
striped = library_layout("striped")
doc_zigzag = library_layout("doc_zigzag")

LAYOUTS = {"contiguous": contiguous, "zigzag": zigzag, "striped": striped, "doc_zigzag": doc_zigzag}
