"""The one mask type of lcbench.

A mask is held in two independent forms that tests compare against each other:

* ``definition`` — a FlexAttention-style ``mask_mod(b, h, q_idx, k_idx) -> bool``, a direct transcription of
  the pattern's definition (REFERENCE.md). It is the dense reference and what FlexAttention consumes.
* ``intervals`` — for every head and query row, up to R disjoint key intervals ``[lo, hi)`` (optionally
  dilated: only keys ``lo, lo+step, ...``). Exact areas, block maps, tile plans for the block-sparse kernel and
  context-parallel shard areas are all computed from it in O(S·R), never from an S×S matrix.

Varlen-expressible masks (documents, each full/causal/windowed) also carry a :class:`Varlen` description for
kernels such as flash-attn's varlen API.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Optional

import torch

MaskMod = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]

EMPTY, PARTIAL, FULL = 0, 1, 2

# Mask features: what a kernel must be able to express to run a mask (see Mask.features).
CAUSAL = "causal"
WINDOW = "window"
VARLEN = "varlen"
ARBITRARY = "arbitrary"
PER_HEAD = "per_head"
ALL_FEATURES = frozenset({CAUSAL, WINDOW, VARLEN, ARBITRARY, PER_HEAD})


@dataclass(frozen=True)
class RowIntervals:
    """Per (head, query row): R disjoint key intervals ``[lo, hi)`` with a dilation ``step``.

    Shapes are ``[Hm, S, R]`` where ``Hm`` is 1 for a mask shared by all heads or the number of heads.
    Empty slots have ``lo >= hi``. Keys inside an interval are ``lo, lo + step, ... < hi``.
    """

    lo: torch.Tensor
    hi: torch.Tensor
    step: torch.Tensor

    @staticmethod
    def build(lo: torch.Tensor, hi: torch.Tensor, step: Optional[torch.Tensor] = None) -> "RowIntervals":
        """Normalise to int64 ``[Hm, S, R]`` tensors (accepts ``[S]``, ``[S, R]`` or ``[Hm, S, R]``)."""

        def shape3(t: torch.Tensor) -> torch.Tensor:
            t = torch.as_tensor(t, dtype=torch.int64)
            if t.dim() == 1:
                t = t[:, None]
            if t.dim() == 2:
                t = t[None]
            return t.contiguous()

        lo, hi = shape3(lo), shape3(hi)
        lo, hi = torch.broadcast_tensors(lo, hi)
        step = torch.ones_like(lo) if step is None else shape3(step).expand_as(lo)
        hi = torch.maximum(hi, lo)  # canonical empty slots: lo == hi
        return RowIntervals(lo.contiguous(), hi.contiguous(), step.contiguous())

    @property
    def num_heads(self) -> int:
        return self.lo.shape[0]

    @property
    def seqlen(self) -> int:
        return self.lo.shape[1]

    def counts(self) -> torch.Tensor:
        """Allowed keys per (head, row): ``[Hm, S]``."""
        return count_progression(self.lo, self.hi, self.step, self.lo, self.hi).sum(-1)

    def select_rows(self, rows: torch.Tensor) -> "RowIntervals":
        return RowIntervals(self.lo[:, rows], self.hi[:, rows], self.step[:, rows])

    def count_in_ranges(self, q_pos: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """Allowed keys of each row ``q_pos`` inside each key range ``[a_j, b_j)``: ``[Hm, n, len(a)]``."""
        a, b = a.view(1, 1, 1, -1), b.view(1, 1, 1, -1)
        chunk = max(1, (1 << 22) // max(1, a.numel() * self.lo.shape[-1] * self.num_heads))
        out = []
        for rows in q_pos.split(chunk):
            sub = self.select_rows(rows)
            out.append(count_progression(sub.lo[..., None], sub.hi[..., None], sub.step[..., None], a, b).sum(2))
        return torch.cat(out, dim=1)

    def evaluate(self, q_pos: torch.Tensor, k_pos: torch.Tensor) -> torch.Tensor:
        """Dense boolean mask ``[Hm, len(q_pos), len(k_pos)]`` at arbitrary global positions."""
        lo = self.lo[:, q_pos].unsqueeze(-1)  # [Hm, n, R, 1]
        hi = self.hi[:, q_pos].unsqueeze(-1)
        st = self.step[:, q_pos].unsqueeze(-1)
        k = k_pos.view(1, 1, 1, -1)
        inside = (k >= lo) & (k < hi) & (torch.remainder(k - lo, st) == 0)
        return inside.any(dim=2)


def count_progression(lo, hi, step, a, b) -> torch.Tensor:
    """How many of ``lo, lo+step, ... < hi`` fall in ``[a, b)`` (all broadcastable int64 tensors)."""
    start = torch.maximum(lo, a)
    end = torch.minimum(hi, b)
    # first element of the progression >= start
    first = lo + torch.div(start - lo + step - 1, step, rounding_mode="floor").clamp_min(0) * step
    n = torch.div(end - first + step - 1, step, rounding_mode="floor")
    return n.clamp_min(0)


@dataclass(frozen=True)
class Varlen:
    """Varlen description: documents ``cu_seqlens`` (int32), each with the same causal flag and window.

    ``window`` is ``(left, right)`` in flash-attn's convention (-1 = unbounded); ``causal`` means the
    bottom-right aligned causal mask inside every document (square documents, so also top-left).
    """

    cu_seqlens: torch.Tensor
    causal: bool
    window: tuple[int, int] = (-1, -1)

    @property
    def num_docs(self) -> int:
        return len(self.cu_seqlens) - 1

    @property
    def max_seqlen(self) -> int:
        return int((self.cu_seqlens[1:] - self.cu_seqlens[:-1]).max())


@dataclass(eq=False)
class Mask:
    """An attention mask over a square ``seqlen x seqlen`` problem (self-attention, packed batch of 1)."""

    name: str
    seqlen: int
    intervals: RowIntervals
    definition: MaskMod
    params: dict = field(default_factory=dict)
    varlen: Optional[Varlen] = None
    doc_lengths: Optional[list[int]] = None
    padding: int = 0  # trailing tokens added by :meth:`padded` (they attend nothing and are attended by none)
    _areas: Optional[torch.Tensor] = field(default=None, repr=False)

    # ----- area and density -------------------------------------------------------------------------
    @property
    def per_head(self) -> bool:
        return self.intervals.num_heads > 1

    def head_areas(self) -> torch.Tensor:
        """Exact number of allowed (q, k) pairs for each distinct head pattern: ``[Hm]`` int64."""
        if self._areas is None:
            self._areas = self.intervals.counts().sum(-1)
        return self._areas

    def area(self, num_heads: int = 1) -> int:
        """Exact allowed pairs summed over ``num_heads`` heads (one head's area when shared)."""
        areas = self.head_areas()
        if not self.per_head:
            return int(areas[0]) * num_heads
        if num_heads != len(areas):
            raise ValueError(f"mask {self.name!r} is per-head with {len(areas)} heads, run has {num_heads}")
        return int(areas.sum())

    def density(self) -> float:
        return float(self.head_areas().double().mean()) / float(self.seqlen) ** 2

    # ----- features -------------------------------------------------------------------------------
    @property
    def features(self) -> frozenset[str]:
        """What a kernel must express to run this mask; a full mask needs nothing."""
        feats: set[str] = set()
        if self.per_head:
            feats.add(PER_HEAD)
        if self.varlen is None:
            feats.add(ARBITRARY)
            return frozenset(feats)
        if self.varlen.num_docs > 1:
            feats.add(VARLEN)
        if self.varlen.causal:
            feats.add(CAUSAL)
        if self.varlen.window != (-1, -1):
            feats.add(WINDOW)
        return frozenset(feats)

    @property
    def is_full(self) -> bool:
        return not self.features

    @property
    def is_plain_causal(self) -> bool:
        return self.features == {CAUSAL}

    # ----- padding -----------------------------------------------------------------------------------
    def padded(self, seqlen: int) -> "Mask":
        """This mask over ``seqlen >= self.seqlen`` tokens, the extra ones at the end attending nothing and
        attended by none: what context parallelism runs when the layout's chunks do not divide the length
        (Megatron and TransformerEngine pad the sequence so). Areas are unchanged; ``varlen`` still describes
        the real tokens (so the features a kernel must express are the same); the padding is one more entry of
        ``doc_lengths`` (a document layout then keeps it whole at the end)."""
        pad = seqlen - self.seqlen
        if pad < 0:
            raise ValueError(f"cannot pad mask {self.name!r} of {self.seqlen} tokens to {seqlen}")
        if pad == 0:
            return self
        iv, real, definition = self.intervals, self.seqlen, self.definition
        empty = torch.zeros((iv.num_heads, pad, iv.lo.shape[-1]), dtype=torch.int64)
        intervals = RowIntervals(torch.cat([iv.lo, empty], 1), torch.cat([iv.hi, empty], 1),
                                 torch.cat([iv.step, torch.ones_like(empty)], 1))

        def padded_definition(b, h, q_idx, k_idx):
            inside = (q_idx < real) & (k_idx < real)
            return definition(b, h, q_idx.clamp_max(real - 1), k_idx.clamp_max(real - 1)) & inside

        return Mask(name=self.name, seqlen=seqlen, intervals=intervals, definition=padded_definition,
                    params=self.params, varlen=self.varlen, _areas=self._areas,
                    doc_lengths=[*self.doc_lengths, pad] if self.doc_lengths is not None else None,
                    padding=self.padding + pad)

    # ----- conversions ------------------------------------------------------------------------------
    def dense(self, q_pos: Optional[torch.Tensor] = None, k_pos: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Boolean ``[Hm, n, m]`` mask from the interval form (all positions by default)."""
        ar = torch.arange(self.seqlen)
        return self.intervals.evaluate(ar if q_pos is None else q_pos, ar if k_pos is None else k_pos)

    def dense_from_definition(self, num_heads: Optional[int] = None) -> torch.Tensor:
        """Boolean ``[Hm, S, S]`` mask from ``definition`` — the brute-force reference."""
        hm = self.intervals.num_heads if num_heads is None else num_heads
        q = torch.arange(self.seqlen).view(1, -1, 1)
        k = torch.arange(self.seqlen).view(1, 1, -1)
        h = torch.arange(hm).view(-1, 1, 1)
        b = torch.zeros((), dtype=torch.int64)
        return self.definition(b, h, q, k).expand(hm, self.seqlen, self.seqlen)

    def block_counts(self, block_q: int, block_k: int) -> torch.Tensor:
        """Allowed pairs per (head, q block, k block): ``[Hm, ceil(S/bq), ceil(S/bk)]``."""
        starts = torch.arange(0, self.seqlen, block_k)
        per_row = self.intervals.count_in_ranges(torch.arange(self.seqlen), starts, (starts + block_k).clamp_max(self.seqlen))
        nq = math.ceil(self.seqlen / block_q)
        per_row = torch.nn.functional.pad(per_row, (0, 0, 0, nq * block_q - self.seqlen))
        return per_row.view(self.intervals.num_heads, nq, block_q, len(starts)).sum(2)

    def block_map(self, block_q: int, block_k: int) -> torch.Tensor:
        """Each block classified EMPTY (0), PARTIAL (1) or FULL (2): ``[Hm, nq, nk]`` int8."""
        counts = self.block_counts(block_q, block_k)
        sizes_q = torch.full((math.ceil(self.seqlen / block_q),), block_q)
        sizes_q[-1] = self.seqlen - block_q * (len(sizes_q) - 1)
        sizes_k = torch.full((math.ceil(self.seqlen / block_k),), block_k)
        sizes_k[-1] = self.seqlen - block_k * (len(sizes_k) - 1)
        cap = sizes_q.view(1, -1, 1) * sizes_k.view(1, 1, -1)
        cls = torch.full_like(counts, PARTIAL, dtype=torch.int8)
        cls[counts == 0] = EMPTY
        cls[counts == cap] = FULL
        return cls

    def flex_mask_mod(self) -> MaskMod:
        """A FlexAttention mask_mod (the pattern's own definition)."""
        return self.definition

    def describe(self) -> dict:
        """Plain-data summary stored with every run."""
        info = {
            "mask": self.name,
            "seqlen": self.seqlen,
            "area_per_head": [int(a) for a in self.head_areas()],
            "density": round(self.density(), 6),
            "features": sorted(self.features),
            "params": self.params,
        }
        if self.doc_lengths is not None:
            lengths = torch.tensor(self.doc_lengths, dtype=torch.float64)
            info["documents"] = {
                "count": len(self.doc_lengths),
                "min": int(lengths.min()),
                "median": float(lengths.median()),
                "max": int(lengths.max()),
            }
        return info
