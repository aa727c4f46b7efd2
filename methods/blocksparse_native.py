"""lcbench's native block-sparse flash attention: any mask in the IR, masked sub-blocks skipped row by row.

``blocksparse`` calls the aten CPU flash kernel once per tile; that kernel computes a partial tile whole under
an additive mask and cuts a call of fewer than 768 query rows into 64-row blocks, so masks whose edges cut
tiles at token granularity (sliding windows, documents) and block patterns of short key runs lose per unit
of area. This method runs one C++ kernel (``methods/_native/blocksparse.cpp``, compiled on first use) over a
plan of the mask: per block of query rows, runs of fully allowed keys (any length) and, where a 256-key tile is
partial, its 32-key sub-blocks, each against only the rows that have an allowed key there and with a bitmap
only where some row is cut. The query heads of one KV head are stacked into one task when they share the mask
(GQA packing), so a block of 256 / group rows still gives 256-row products: short blocks waste little at a
mask's edges, and K and V are read once per group. Forward: online softmax with log-sum-exp; backward: the
flash backward (probabilities recomputed from the saved log-sum-exp). Float32 and float64 run natively;
bfloat16 is computed in float32 (converted on the way in and out, inside the timed call).

The plan takes global positions, so the kernel is also a context-parallel local kernel (``LOCAL_KERNEL``).
"""

from __future__ import annotations

import ctypes
import functools
from dataclasses import dataclass
from typing import Callable, Optional

import torch

from harness.interfaces import LocalKernel, Method, Problem
from harness.interfaces.local_kernel import PlanSpec
from harness.interfaces.method import allowed_block_bytes
from harness.masks.core import ALL_FEATURES, RowIntervals
from methods import _native
from methods.blocksparse import KeyTiles

KERNEL = "blocksparse"  # methods/_native/blocksparse.cpp
STACKED_ROWS = 256  # query rows x packed heads per task: the height of every score block
Q_BLOCK = 64  # the fewest query rows per plan block (the stacked rows of a group of four or more heads)
TILE = 256  # keys per tile of the first classification
SUB = 32  # a partial tile is split into sub-blocks of this many keys
NO_BITS = -1


@dataclass
class NativePlan:
    """Per (mask pattern, query block): items ``(k0, k1, r0, r1, bits)`` — keys ``[k0, k1)`` against the block's
    rows ``[r0, r1)``, every pair allowed (``bits == -1``) or as the uint8 bitmap at offset ``bits``."""

    q_block: int
    num_q_blocks: int
    num_patterns: int
    item_ptr: torch.Tensor  # int64 [num_patterns * num_q_blocks + 1]
    items: torch.Tensor  # int64 [n, 5]
    bits: torch.Tensor  # uint8, the bitmaps one after another
    pairs: int  # allowed (q, k) pairs summed over patterns


class _Bitmaps:
    """The plan's bitmaps, one after another; ``add`` returns where one starts."""

    def __init__(self) -> None:
        self.parts: list[torch.Tensor] = []
        self.size = 0

    def add(self, allowed: torch.Tensor) -> int:
        offset = self.size
        self.parts.append(allowed.to(torch.uint8).flatten())
        self.size += allowed.numel()
        return offset

    def tensor(self) -> torch.Tensor:
        return torch.cat(self.parts) if self.parts else torch.zeros(1, dtype=torch.uint8)


class _Items:
    """One pattern's items for one query block; adjacent fully allowed runs over the same rows merge."""

    def __init__(self, bitmaps: _Bitmaps) -> None:
        self.items: list[list[int]] = []
        self.bitmaps = bitmaps
        self.pairs = 0

    def run(self, k0: int, k1: int, r0: int, r1: int) -> None:
        self.pairs += (k1 - k0) * (r1 - r0)
        last = self.items[-1] if self.items else None
        if last is not None and last[4] == NO_BITS and last[1] == k0 and last[2] == r0 and last[3] == r1:
            last[1] = k1
        else:
            self.items.append([k0, k1, r0, r1, NO_BITS])

    def sub_block(self, k0: int, allowed: torch.Tensor) -> None:
        """Keys ``k0 ...`` under the dense ``allowed`` [rows, keys], against the rows that have any of them: a
        run where those rows have all of them, else a masked item."""
        rows = allowed.any(1).nonzero().flatten()
        if len(rows) == 0:
            return
        r0, r1 = int(rows[0]), int(rows[-1]) + 1
        part, k1 = allowed[r0:r1], k0 + allowed.shape[1]
        if bool(part.all()):
            self.run(k0, k1, r0, r1)
        else:
            self.pairs += int(part.sum())
            self.items.append([k0, k1, r0, r1, self.bitmaps.add(part)])


def make_native_plan(
    intervals: RowIntervals, q_pos: torch.Tensor, k_pos: torch.Tensor, q_block: int = Q_BLOCK,
    tile: int = TILE, sub: int = SUB,
) -> NativePlan:
    """The plan of ``q_pos x k_pos`` (global positions of the local rows): tiles of ``q_block x tile``
    classified from per-row counts (:class:`methods.blocksparse.KeyTiles`), a partial tile evaluated densely
    and cut into ``sub``-key blocks."""
    sq = len(q_pos)
    keys = KeyTiles.cut(k_pos, tile)
    hm = intervals.num_heads
    q_blocks = [(s, min(s + q_block, sq)) for s in range(0, sq, q_block)]
    per_pattern: list[list[_Items]] = [[] for _ in range(hm)]
    bitmaps = _Bitmaps()
    for q0, q1 in q_blocks:
        rows = q_pos[q0:q1]
        counts, dense = keys.row_counts(intervals, rows)  # [Hm, rows, tiles]
        full_rows = counts == keys.widths
        for p in range(hm):
            block = _Items(bitmaps)
            tile_full = full_rows[p].all(0).tolist()
            for j in (counts[p].sum(0) > 0).nonzero().flatten().tolist():
                a, b = keys.bounds[j]
                if tile_full[j]:
                    block.run(a, b, 0, q1 - q0)
                    continue
                allowed = keys.allowed(intervals, rows, j, dense)[p]
                for s in range(0, b - a, sub):
                    block.sub_block(a + s, allowed[:, s : s + sub])
            per_pattern[p].append(block)
    blocks = [block for pattern in per_pattern for block in pattern]
    return NativePlan(
        q_block=q_block,
        num_q_blocks=len(q_blocks),
        num_patterns=hm,
        item_ptr=torch.tensor([0] + [len(b.items) for b in blocks], dtype=torch.int64).cumsum(0),
        items=torch.tensor([item for b in blocks for item in b.items], dtype=torch.int64).view(-1, 5),
        bits=bitmaps.tensor(),
        pairs=sum(b.pairs for b in blocks),
    )


# ----- the calls into the compiled kernel -------------------------------------------------------------------

_COMPUTE = {torch.float32: (torch.float32, "f32"), torch.bfloat16: (torch.float32, "f32"),
            torch.float64: (torch.float64, "f64")}
_P, _I = ctypes.c_void_p, ctypes.c_int64
_SHAPE_ARGS = [_I] * 6 + [ctypes.c_double]  # b, sq, sk, hq, hkv, d, scale
_PLAN_ARGS = [_I, _I, _I, _P, _P, _P, ctypes.c_int]  # q_block, blocks, patterns, item_ptr, items, bits, threads
_TENSOR_ARGS = {"forward": 5, "backward": 9}  # q k v out lse / dout q k v out lse dq dk dv


@functools.lru_cache(maxsize=None)
def _entry(direction: str, suffix: str) -> Callable:
    """The compiled ``lcb_{direction}_{suffix}`` with its argument types."""
    fn = getattr(_native.load(KERNEL), f"lcb_{direction}_{suffix}")
    fn.argtypes = [_P] * _TENSOR_ARGS[direction] + _SHAPE_ARGS + _PLAN_ARGS
    return fn


def _ptr(t: torch.Tensor) -> int:
    return t.data_ptr()


def _plan_args(plan: NativePlan) -> list:
    return [plan.q_block, plan.num_q_blocks, plan.num_patterns, _ptr(plan.item_ptr), _ptr(plan.items),
            _ptr(plan.bits), torch.get_num_threads()]


def _as(x: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    return x.to(dtype).contiguous()


def native_forward(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, plan: NativePlan, scale: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Output ``[B, Sq, Hq, d]`` (q's dtype) and log-sum-exp ``[B, Hq, Sq]`` (the compute dtype; -inf for a row
    with no allowed key)."""
    compute, suffix = _COMPUTE[q.dtype]
    b, sq, hq, d = q.shape
    sk, hkv = k.shape[1], k.shape[2]
    qc, kc, vc = (_as(x, compute) for x in (q, k, v))
    out = torch.empty_like(qc)
    lse = torch.empty((b, hq, sq), dtype=compute)
    _entry("forward", suffix)(
        _ptr(qc), _ptr(kc), _ptr(vc), _ptr(out), _ptr(lse), b, sq, sk, hq, hkv, d, scale, *_plan_args(plan)
    )
    return out.to(q.dtype), lse


def native_backward(
    dout: torch.Tensor, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, out: torch.Tensor, lse: torch.Tensor,
    plan: NativePlan, scale: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """dq, dk, dv in the inputs' dtypes, given the *global* out and lse (the flash backward identity)."""
    compute, suffix = _COMPUTE[q.dtype]
    b, sq, hq, d = q.shape
    sk, hkv = k.shape[1], k.shape[2]
    doc, qc, kc, vc, oc = (_as(x, compute) for x in (dout, q, k, v, out))
    lc = _as(lse, compute)
    dq = torch.empty_like(qc)
    dk_per_q_head = torch.zeros((b, hq, sk, d), dtype=compute)  # summed onto the kv heads below
    dv_per_q_head = torch.zeros_like(dk_per_q_head)
    _entry("backward", suffix)(
        _ptr(doc), _ptr(qc), _ptr(kc), _ptr(vc), _ptr(oc), _ptr(lc), _ptr(dq), _ptr(dk_per_q_head),
        _ptr(dv_per_q_head), b, sq, sk, hq, hkv, d, scale, *_plan_args(plan),
    )
    dk, dv = (x.view(b, hkv, hq // hkv, sk, d).sum(2).transpose(1, 2) for x in (dk_per_q_head, dv_per_q_head))
    return dq.to(q.dtype), dk.to(k.dtype).contiguous(), dv.to(v.dtype).contiguous()


class NativeBlockSparseAttention(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, plan: NativePlan, scale: float):
        out, lse = native_forward(q, k, v, plan, scale)
        ctx.save_for_backward(q, k, v, out, lse)
        ctx.plan, ctx.scale = plan, scale
        return out

    @staticmethod
    def backward(ctx, dout):
        q, k, v, out, lse = ctx.saved_tensors
        dq, dk, dv = native_backward(dout, q, k, v, out, lse, ctx.plan, ctx.scale)
        return dq, dk, dv, None, None


def q_block_for(heads_q: int, heads_kv: int, per_head_mask: bool) -> int:
    """Query rows per plan block: the kernel stacks the query heads of a KV head (when they share the mask) into
    one task, so a block of ``STACKED_ROWS / group`` rows keeps the products ``STACKED_ROWS`` tall while the
    partial sub-blocks at a mask's token-granular edges stay short."""
    group = 1 if per_head_mask else heads_q // heads_kv
    return max(Q_BLOCK, STACKED_ROWS // group)


def build(problem: Problem):
    """The plan covers q's rows at their global positions: every row, or the last ``decode_tokens`` rows of a
    decode step against the whole KV cache (key sub-blocks no decode row attends to are never read)."""
    q_block = q_block_for(problem.heads_q, problem.heads_kv, problem.mask.per_head)
    plan = make_native_plan(problem.mask.intervals, problem.q_positions, torch.arange(problem.seqlen), q_block)
    scale = problem.scale
    if problem.is_decode:
        return lambda q, k, v: native_forward(q, k, v, plan, scale)[0]
    return lambda q, k, v: NativeBlockSparseAttention.apply(q, k, v, plan, scale)


def decode_bytes(problem: Problem) -> int:
    """A decode step reads the whole 256-key tiles a decode row fully attends to and, of a partial tile, the
    32-key sub-blocks some row attends to: exactly the sub-blocks holding an allowed key."""
    return allowed_block_bytes(problem, SUB)


# ----- the local kernel of the context-parallel strategies ------------------------------------------------


@dataclass
class LocalPlan:
    plan: NativePlan
    pairs: int  # allowed (q, k, q-head) pairs per batch element


def local_plan(spec: PlanSpec) -> LocalPlan:
    """The plan of one CP step, its query blocks as tall as on one device: ``256 / group`` rows when the q heads
    of a kv head (``spec.kv_group``) share the mask and are stacked into 256-row products."""
    iv = spec.intervals
    shared = iv.num_heads == 1  # else plan.pairs already sums the heads' patterns
    plan = make_native_plan(iv, spec.q_pos, spec.k_pos, q_block_for(spec.kv_group, 1, not shared))
    return LocalPlan(plan, plan.pairs * (spec.num_heads if shared else 1))


def local_forward(q, k, v, plan: LocalPlan, scale: float) -> tuple[torch.Tensor, torch.Tensor]:
    out, lse = native_forward(q, k, v, plan.plan, scale)
    return out, lse.float()


def local_backward(dout, q, k, v, out, lse, plan: LocalPlan, scale: float):
    return native_backward(dout, q, k, v, out, lse, plan.plan, scale)


def probe() -> Optional[str]:
    reason = _native.unavailable_reason(KERNEL)
    return None if reason is None else f"native kernel: {reason}"


LOCAL_KERNEL = LocalKernel(
    name="blocksparse_native (lcbench's C++ block-sparse flash kernel)",
    plan=local_plan,
    forward=local_forward,
    backward=local_backward,
    area=lambda plan: plan.pairs,
)


METHOD = Method(
    name="blocksparse_native",
    summary="lcbench's C++ block-sparse flash kernel: runs of allowed keys, 32-key sub-blocks row by row, GQA heads "
            "stacked, fwd+bwd",
    build=build,
    mask_features=ALL_FEATURES,
    dtypes=frozenset({"float32", "bfloat16", "float64"}),
    probe=probe,
    local_kernel=LOCAL_KERNEL,
    decode=True,
    decode_bytes=decode_bytes,
)
