"""Sequence layouts: which global token positions each rank holds (``Layout`` functions of the interface).

* ``contiguous`` — rank r holds ``[r*S/W, (r+1)*S/W)``: simple, badly balanced for causal masks.
* ``zigzag`` (head-tail) — the sequence cut into 2W chunks, rank r holds chunks r and 2W-1-r, so every rank
  gets one early and one late chunk and the same causal area (Llama 3, ring-flash-attention's zigzag).
* ``striped`` — token t on rank t mod W (Striped Attention): balanced at token granularity.
* ``doc_zigzag`` — head-tail applied inside every packed document (each cut into 2W chunks as evenly as
  possible), so document masks are balanced too; shard sizes may then differ by a few tokens.

Every function returns ``[positions of rank 0, ..., rank W-1]`` (int64, local row order) or raises
:class:`Unsupported` when the sequence cannot be cut exactly (no padding: a layout is exact or refused).
"""

from __future__ import annotations

from typing import Optional, Sequence

import torch

from context_parallel.base import CPProblem, Unsupported


def split_contiguous(seqlen: int, parts: int) -> list[torch.Tensor]:
    if seqlen % parts:
        raise Unsupported(f"seqlen {seqlen} is not divisible by {parts} (contiguous shards)")
    return list(torch.arange(seqlen).chunk(parts))


def split_head_tail(positions: torch.Tensor, parts: int, exact: bool = True) -> list[torch.Tensor]:
    """Cut ``positions`` into 2*parts chunks; part r gets chunks r and 2*parts-1-r (uneven cuts if not exact)."""
    n = len(positions)
    if exact and n % (2 * parts):
        raise Unsupported(f"seqlen {n} is not divisible by 2 x {parts} = {2 * parts} (head-tail / zigzag shards)")
    chunks = torch.tensor_split(positions, 2 * parts)
    return [torch.cat([chunks[r], chunks[2 * parts - 1 - r]]) for r in range(parts)]


def split_striped(seqlen: int, parts: int) -> list[torch.Tensor]:
    if seqlen % parts:
        raise Unsupported(f"seqlen {seqlen} is not divisible by {parts} (striped shards)")
    return [torch.arange(r, seqlen, parts) for r in range(parts)]


def split_doc_head_tail(seqlen: int, parts: int, doc_lengths: Optional[Sequence[int]]) -> list[torch.Tensor]:
    """Head-tail inside every document (one document = the whole sequence when there are none)."""
    lengths = list(doc_lengths) if doc_lengths else [seqlen]
    per_rank: list[list[torch.Tensor]] = [[] for _ in range(parts)]
    start = 0
    for n in lengths:
        for r, piece in enumerate(split_head_tail(torch.arange(start, start + n), parts, exact=False)):
            per_rank[r].append(piece)
        start += n
    out = [torch.cat(p) for p in per_rank]
    if any(len(p) == 0 for p in out):
        raise Unsupported(f"seqlen {seqlen} leaves a rank without tokens at world size {parts}")
    return out


# ----- Layout functions (the interface's ``layout`` field) --------------------------------------------------

def contiguous(problem: CPProblem) -> list[torch.Tensor]:
    return split_contiguous(problem.seqlen, problem.world_size)


def zigzag(problem: CPProblem) -> list[torch.Tensor]:
    return split_head_tail(torch.arange(problem.seqlen), problem.world_size)


def striped(problem: CPProblem) -> list[torch.Tensor]:
    return split_striped(problem.seqlen, problem.world_size)


def doc_zigzag(problem: CPProblem) -> list[torch.Tensor]:
    return split_doc_head_tail(problem.seqlen, problem.world_size, problem.mask.doc_lengths)


LAYOUTS = {"contiguous": contiguous, "zigzag": zigzag, "striped": striped, "doc_zigzag": doc_zigzag}
