"""The receptive field of a mask through stacked layers, computed exactly on its block graph (REFERENCE.md §5b).

PowerAttention's claim (arXiv 2503.03588, Appendix A) is about depth: with key blocks at power-of-two block
distances, every earlier block is reachable from the last one within ``log2(blocks)`` layers, while a sliding
window of the same budget grows its reach linearly. This module answers that question for any mask:

* the **block graph**: block ``i`` -> block ``j`` when some query of block ``i`` may attend some key of block
  ``j`` (for any head: a multi-head layer mixes its heads' outputs). Built from the row intervals in
  O(S·R) — never an S×S matrix — so 128K tokens cost a fraction of a second;
* ``B_L``, the blocks the LAST query block reaches through ``L`` stacked layers: ``B_0 = {last}`` and
  ``B_L = B_{L-1} ∪ N(B_{L-1})`` (reachability within ``L`` hops, i.e. boolean powers of the block map; the
  residual stream of a transformer keeps what an earlier layer reached, so "within" is the right notion);
* per ``L``: coverage ``|B_L| / blocks``, holes (blocks before the last that are not reached), and the layers
  needed for complete coverage — ``None`` when the fixpoint still has holes (LongNet).

Token level: for block-aligned patterns (every pattern of :mod:`harness.masks.patterns.sparse`: the diagonal
block is causal, the others all-or-nothing) the LAST token depends on exactly the tokens of the reached blocks,
because it attends to every token of the blocks it reaches — the last token of each among them, which sees
everything its block sees. :func:`reached_tokens` expands the block set; the ``power_reach`` workload and the
tests check it against the gradient of real stacked attention layers, token for token. For masks that are not
block-aligned the block graph over-approximates the token graph.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Optional

import torch

from harness.errors import UserError
from harness.masks.core import Mask
from harness.masks.registry import build_mask

DEFAULT_BLOCK = 256  # the paper's block, for patterns without a ``block`` parameter of their own
EXTRA_LAYERS = 2  # the analysis goes to log2(blocks) + 2 layers by default (REFERENCE.md §5b)


def pattern_block(mask: Mask, default: int = DEFAULT_BLOCK) -> int:
    """The block the pattern is defined on (its ``block`` parameter), else ``default``."""
    block = mask.params.get("block", default)
    return int(block) if isinstance(block, int) and block >= 1 else default


def default_layers(blocks: int) -> int:
    """``ceil(log2(blocks)) + 2``: the depth PowerAttention needs for full coverage, plus two."""
    return max(1, math.ceil(math.log2(max(blocks, 1)))) + EXTRA_LAYERS


def block_graph(mask: Mask, block: int) -> torch.Tensor:
    """``[nb, nb]`` bool: query block ``i`` may attend some key of block ``j`` (any head of the mask).

    Each row interval ``lo, lo+step, ... < hi`` with ``step <= block`` touches every key block from its first
    to its last member (members are closer than a block apart), so the edges are runs of key blocks, marked
    with a difference array per query block. Dilated intervals with ``step > block`` may skip blocks: then the
    exact per-block counts of :meth:`Mask.block_counts` are used instead.
    """
    if block < 1:
        raise UserError(f"block={block} is not allowed; expected an integer >= 1")
    iv = mask.intervals
    nb = math.ceil(mask.seqlen / block)
    live = iv.hi > iv.lo
    if bool((iv.step[live] > block).any()):
        return mask.block_counts(block, block).gt(0).any(0)
    last = iv.lo + torch.div(iv.hi - 1 - iv.lo, iv.step, rounding_mode="floor") * iv.step
    first_b = torch.div(iv.lo, block, rounding_mode="floor")[live]
    last_b = torch.div(last, block, rounding_mode="floor")[live]
    q_block = torch.div(torch.arange(mask.seqlen), block, rounding_mode="floor").view(1, -1, 1).expand_as(iv.lo)[live]
    diff = torch.zeros(nb * (nb + 1), dtype=torch.int64)
    diff.index_add_(0, q_block * (nb + 1) + first_b, torch.ones_like(first_b))
    diff.index_add_(0, q_block * (nb + 1) + last_b + 1, -torch.ones_like(last_b))
    return diff.view(nb, nb + 1).cumsum(-1)[:, :nb] > 0


@dataclass(frozen=True)
class ReceptiveField:
    """The blocks the last query block reaches through 1..``layers`` stacked layers, and the fixpoint."""

    mask: str
    seqlen: int
    block: int
    reached: torch.Tensor  # [layers, nb] bool: row L-1 = the blocks reached within L layers
    layers_to_full: Optional[int]  # the first depth with no hole; None when the fixpoint has holes
    holes_limit: int  # holes left however deep the stack (0 when some depth covers everything)
    steps: int = 0  # boolean vector-matrix products computed (``layers``, or more to reach the fixpoint)

    @property
    def blocks(self) -> int:
        return self.reached.shape[1]

    @property
    def layers(self) -> int:
        return self.reached.shape[0]

    @property
    def flops(self) -> float:
        """The arithmetic of the analysis: one ``[nb] x [nb, nb]`` product (2·nb² FLOPs) per step."""
        return 2.0 * self.blocks * self.blocks * self.steps

    def count(self, layers: int) -> int:
        """Blocks reached within ``layers`` layers (the last block included)."""
        return int(self.reached[self._row(layers)].sum())

    def coverage(self, layers: int) -> float:
        return self.count(layers) / self.blocks

    def holes(self, layers: int) -> int:
        """Blocks before the last that ``layers`` layers do not reach."""
        return self.blocks - self.count(layers)

    def counts(self) -> list[int]:
        return [int(c) for c in self.reached.sum(-1)]

    def rows(self) -> list[dict[str, Any]]:
        """One plain-data row per depth: layers, blocks reached, coverage, holes."""
        return [{"layers": L, "reached": self.count(L), "coverage": self.coverage(L), "holes": self.holes(L)}
                for L in range(1, self.layers + 1)]

    def _row(self, layers: int) -> int:
        if not 1 <= layers <= self.layers:
            raise UserError(f"layers={layers} is not allowed; expected 1..{self.layers} (the depths analysed)")
        return layers - 1


def receptive_field(mask: Mask, block: Optional[int] = None, layers: Optional[int] = None) -> ReceptiveField:
    """The exact receptive field of ``mask``'s last query block (see the module docstring).

    ``block`` defaults to the pattern's own (:func:`pattern_block`), ``layers`` to :func:`default_layers`. The
    iteration continues past ``layers`` to the fixpoint (at most ``nb`` steps, each a boolean vector-matrix
    product) so that ``layers_to_full`` and ``holes_limit`` are exact whatever depth is tabulated."""
    block = pattern_block(mask) if block is None else block
    graph = block_graph(mask, block)
    nb = graph.shape[0]
    layers = default_layers(nb) if layers is None else layers
    if layers < 1:
        raise UserError(f"layers={layers} is not allowed; expected an integer >= 1")
    adjacency = graph.to(torch.float32)
    current = torch.zeros(nb, dtype=torch.bool)
    current[-1] = True
    history: list[torch.Tensor] = []
    layers_to_full: Optional[int] = None
    depth = 0
    while True:
        depth += 1
        nxt = current | ((current.to(torch.float32) @ adjacency) > 0)
        history.append(nxt)
        if layers_to_full is None and bool(nxt.all()):
            layers_to_full = depth
        if depth >= layers and (torch.equal(nxt, current) or layers_to_full is not None):
            break
        current = nxt
    return ReceptiveField(
        mask=mask.name, seqlen=mask.seqlen, block=block, reached=torch.stack(history[:layers]),
        layers_to_full=layers_to_full, holes_limit=int((~history[-1]).sum()), steps=len(history),
    )


def pattern_receptive_field(name: str, seqlen: int, params: Optional[dict] = None, block: Optional[int] = None,
                            layers: Optional[int] = None, num_heads: int = 1) -> ReceptiveField:
    """:func:`receptive_field` of the registered pattern ``name`` at ``seqlen`` with ``num_heads`` heads (a
    per-head pattern's layer reaches the union of its heads' graphs)."""
    return receptive_field(build_mask(name, seqlen, num_heads, **(params or {})), block, layers)


def reached_tokens(field: ReceptiveField, layers: int) -> torch.Tensor:
    """``[seqlen]`` bool: the tokens of the blocks reached within ``layers`` layers — for a block-aligned
    pattern, exactly the input positions the last token's output depends on."""
    per_token = field.reached[field._row(layers)].repeat_interleave(field.block)
    return per_token[: field.seqlen]


def token_reach(mask: Mask, layers: int) -> torch.Tensor:
    """``[layers, S]`` bool, the token-level twin of :func:`receptive_field` by brute force (an S×S matrix:
    small S only): row ``L-1`` = the positions the last token reaches within ``L`` layers of ``mask``."""
    graph = mask.dense().any(0).to(torch.float32)
    current = torch.zeros(mask.seqlen, dtype=torch.bool)
    current[-1] = True
    rows = []
    for _ in range(layers):
        current = current | ((current.to(torch.float32) @ graph) > 0)
        rows.append(current)
    return torch.stack(rows)
