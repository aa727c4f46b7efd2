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

    def layout(problem: CPProblem) -> list[torch.Tensor]:
        try:
            return fn(problem.seqlen, problem.world_size, problem.mask.doc_lengths)
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
    if name is not None:
        return sharding.layout_pair_areas(problem.mask, name, problem.world_size)
    return sharding.pair_areas(problem.mask, positions, positions)


contiguous = library_layout("contiguous")
zigzag = library_layout("zigzag")
striped = library_layout("striped")
doc_zigzag = library_layout("doc_zigzag")

LAYOUTS = {"contiguous": contiguous, "zigzag": zigzag, "striped": striped, "doc_zigzag": doc_zigzag}
