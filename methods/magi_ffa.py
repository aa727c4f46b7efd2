"""MagiAttention's Flex-Flash-Attention (FFA): ``magi_attention.functional.flex_flash_attn_func``.

FFA takes the mask as a list of slices ``(q_range, k_range, type)`` with type 0 full, 1 causal (bottom-right
aligned), 2 inverse causal (top-left aligned), 3 bi-causal (both). The plan, made once outside the timed call:

* documents without a window: one slice per document, causal or full;
* any other shared mask, via its exact block map at ``block_size`` (option, default 128): every full tile is a
  full slice (runs of full tiles in a row merged into one), and a partial tile is kept only if its pattern
  is exactly one of FFA's slice types (e.g. the diagonal tile of a causal mask, the edge tile of a sliding
  window whose width is a multiple of the tile); any other partial tile makes the mask unsupported.

Per-head masks are unsupported (the slices are shared by all heads). A batch of ``B`` sequences becomes one
packed sequence of ``B * S`` tokens with the slices repeated. CUDA (Hopper) only; GQA native.
"""

from __future__ import annotations

import functools
import inspect
from dataclasses import dataclass
from typing import Callable, Optional, Union

import torch

from harness.masks.core import ALL_FEATURES, EMPTY, FULL, PER_HEAD, Mask
from harness.interfaces import AttentionFn, Method, Problem
from methods._common import first, needs

DEFAULT_BLOCK_SIZE = 128
FULL_TYPE, CAUSAL_TYPE, INV_CAUSAL_TYPE, BI_CAUSAL_TYPE = 0, 1, 2, 3

# Allowed (i, j) of an m x n slice in local coordinates, per FFA slice type.
SLICE_PATTERNS: dict[int, Callable[[torch.Tensor, torch.Tensor, int, int], torch.Tensor]] = {
    CAUSAL_TYPE: lambda i, j, m, n: j - i <= n - m,
    INV_CAUSAL_TYPE: lambda i, j, m, n: j >= i,
    BI_CAUSAL_TYPE: lambda i, j, m, n: (j - i <= n - m) & (j >= i),
}


@dataclass(frozen=True)
class RangePlan:
    """FFA's mask arguments for one sequence: ``[N, 2]`` q and k ranges and ``[N]`` slice types (int32)."""

    q_ranges: torch.Tensor
    k_ranges: torch.Tensor
    types: torch.Tensor

    def repeated(self, batch: int, seqlen: int) -> "RangePlan":
        """The plan of ``batch`` sequences packed one after another."""
        offsets = (torch.arange(batch, dtype=torch.int32) * seqlen).repeat_interleave(len(self.types))
        return RangePlan(
            self.q_ranges.repeat(batch, 1) + offsets[:, None],
            self.k_ranges.repeat(batch, 1) + offsets[:, None],
            self.types.repeat(batch),
        )

    def dense(self, seqlen: int) -> torch.Tensor:
        """The boolean ``[S, S]`` mask the plan describes (for tests; small S only)."""
        allowed = torch.zeros(seqlen, seqlen, dtype=torch.bool)
        for (q0, q1), (k0, k1), kind in zip(self.q_ranges.tolist(), self.k_ranges.tolist(), self.types.tolist()):
            i = torch.arange(q1 - q0).view(-1, 1)
            j = torch.arange(k1 - k0).view(1, -1)
            tile = torch.ones(q1 - q0, k1 - k0, dtype=torch.bool)
            if kind != FULL_TYPE:
                tile = SLICE_PATTERNS[kind](i, j, q1 - q0, k1 - k0)
            allowed[q0:q1, k0:k1] |= tile
        return allowed


def _plan(rows: list[tuple[int, int, int, int, int]]) -> RangePlan:
    t = torch.tensor(rows, dtype=torch.int32).view(-1, 5)
    return RangePlan(t[:, 0:2].contiguous(), t[:, 2:4].contiguous(), t[:, 4].contiguous())


def document_plan(mask: Mask) -> RangePlan:
    """One slice per document, causal or full."""
    cu = mask.varlen.cu_seqlens.tolist()
    kind = CAUSAL_TYPE if mask.varlen.causal else FULL_TYPE
    return _plan([(a, b, a, b, kind) for a, b in zip(cu[:-1], cu[1:])])


def tile_type(mask: Mask, q0: int, q1: int, k0: int, k1: int) -> Optional[int]:
    """FFA's slice type whose pattern equals the mask on the tile, or None."""
    actual = mask.dense(torch.arange(q0, q1), torch.arange(k0, k1))[0]
    i = torch.arange(q1 - q0).view(-1, 1)
    j = torch.arange(k1 - k0).view(1, -1)
    for kind, pattern in SLICE_PATTERNS.items():
        if torch.equal(pattern(i, j, q1 - q0, k1 - k0), actual):
            return kind
    return None


def block_plan(mask: Mask, block: int) -> Union[RangePlan, str]:
    """Slices from the block map, or why the mask has a partial tile FFA cannot express."""
    if mask.per_head:
        return "per-head mask (FFA slices are shared by all heads)"
    classes = mask.block_map(block, block)[0]
    seqlen = mask.seqlen
    rows: list[tuple[int, int, int, int, int]] = []
    for qi, row in enumerate(classes.tolist()):
        q0, q1 = qi * block, min((qi + 1) * block, seqlen)
        run_start = None  # first key tile of the current run of full tiles
        for kj, cls in enumerate(row + [EMPTY]):
            if cls == FULL:
                run_start = kj if run_start is None else run_start
                continue
            if run_start is not None:
                rows.append((q0, q1, run_start * block, min(kj * block, seqlen), FULL_TYPE))
                run_start = None
            if cls == EMPTY:
                continue
            k0, k1 = kj * block, min((kj + 1) * block, seqlen)
            kind = tile_type(mask, q0, q1, k0, k1)
            if kind is None:
                return (
                    f"partial tile q[{q0}:{q1}] x k[{k0}:{k1}] at block_size {block} is not a causal, "
                    "inverse-causal or bi-causal slice"
                )
            rows.append((q0, q1, k0, k1, kind))
    return _plan(rows)


@functools.lru_cache(maxsize=8)
def range_plan(mask: Mask, block: int) -> Union[RangePlan, str]:
    """FFA slices for one sequence of ``mask`` (cached: ``limits`` and ``build`` both need it)."""
    varlen = mask.varlen
    if varlen is not None and varlen.window == (-1, -1):
        return document_plan(mask)
    return block_plan(mask, block)


def block_size(problem: Problem) -> int:
    return int(problem.options.get("block_size", DEFAULT_BLOCK_SIZE))


def build(problem: Problem) -> AttentionFn:
    from magi_attention.functional import flex_flash_attn_func

    plan = range_plan(problem.mask, block_size(problem))
    assert isinstance(plan, RangePlan), plan  # limits() reported it otherwise
    plan = plan.repeated(problem.batch, problem.seqlen)
    kwargs = dict(
        q_ranges=plan.q_ranges.to(problem.device),
        k_ranges=plan.k_ranges.to(problem.device),
        attn_type_map=plan.types.to(problem.device),
        softmax_scale=problem.scale,
    )
    # Older releases require max_seqlen_q/k; newer ones take max_seqlen_q only (as a scheduling hint).
    accepted = inspect.signature(flex_flash_attn_func).parameters
    longest = {
        "max_seqlen_q": int((plan.q_ranges[:, 1] - plan.q_ranges[:, 0]).max()),
        "max_seqlen_k": int((plan.k_ranges[:, 1] - plan.k_ranges[:, 0]).max()),
    }
    kwargs.update({name: value for name, value in longest.items() if name in accepted})
    b, s, hq, hk, d = problem.batch, problem.seqlen, problem.heads_q, problem.heads_kv, problem.head_dim

    def magi_ffa(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        q, k, v = q.reshape(b * s, hq, d), k.reshape(b * s, hk, d), v.reshape(b * s, hk, d)
        out = first(flex_flash_attn_func(q, k, v, **kwargs))
        return out.view(b, s, hq, d)

    return magi_ffa


def limits(problem: Problem) -> Optional[str]:
    plan = range_plan(problem.mask, block_size(problem))
    return plan if isinstance(plan, str) else None


METHOD = Method(
    name="magi_ffa",
    summary="MagiAttention Flex-Flash-Attention: mask as (q_range, k_range, type) slices from documents or "
    "the block map",
    build=build,
    mask_features=ALL_FEATURES - {PER_HEAD},
    dtypes=frozenset({"bfloat16", "float16"}),
    devices=frozenset({"cuda"}),
    backward=True,
    gqa=True,
    probe=needs("magi_attention", min_capability=(9, 0)),
    limits=limits,
    homepage="https://github.com/SandAI-org/MagiAttention",
)
