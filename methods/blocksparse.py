"""lcbench's block-sparse attention: any mask in the IR, work proportional to the mask area.

The (q, k) plane is cut into tiles. A plan, made once per problem outside the timed region, classifies each
tile from the mask's row intervals as empty (skipped), full (no mask; runs of full tiles are merged into one
call) or partial (masked exactly: a causal diagonal uses the kernel's causal flag, any other tile an additive
mask). Every non-empty item runs the CPU flash-attention kernel (``aten._scaled_dot_product_flash_attention_
for_cpu``, GQA without repeating K/V), and the items of a q tile are merged by log-sum-exp — the online
softmax at tile granularity. The backward replays the same items through the flash backward with the
global output and log-sum-exp, which gives each item's exact share of dq, dk and dv.

Plans take the global positions of the local q and k rows, so the same kernel is the local attention of
the context-parallel strategies (:data:`LOCAL_KERNEL`, ``METHOD.local_kernel``): a rank's shard of any layout
(contiguous, zigzag, striped) gets the right mask and returns its log-sum-exp for the ring merge.

A decode step is the same plan for q's last rows at their global positions against the whole KV cache: key
tiles no decode row attends to are never read, which is what ``decode_bytes`` reports.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch

from harness.masks.core import ALL_FEATURES, RowIntervals
from harness.interfaces import LocalKernel, Method, Problem
from harness.interfaces.local_kernel import PlanSpec
from harness.interfaces.method import allowed_block_bytes

_flash_fwd = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu
_flash_bwd = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu_backward


@dataclass
class Item:
    """One kernel call: a q tile against keys ``[k0, k1)`` (local indices)."""

    k0: int
    k1: int
    causal: bool = False
    bias: Optional[torch.Tensor] = None  # additive mask [1, Hm, bq, bk] (0 / -inf), dtype of q
    empty_rows: Optional[torch.Tensor] = None  # [Hm, bq] rows with no allowed key in this item


@dataclass
class TilePlan:
    """The non-empty work of a (q rows) x (k rows) problem, by q tile."""

    q_tiles: list[tuple[int, int]]
    items: list[list[Item]]
    area: int  # allowed pairs per head pattern summed over patterns (for checks)

    @property
    def num_calls(self) -> int:
        return sum(len(i) for i in self.items)


def _contiguous(pos: torch.Tensor) -> bool:
    return len(pos) > 0 and int(pos[-1] - pos[0]) == len(pos) - 1 and bool((pos[1:] > pos[:-1]).all())


@dataclass(frozen=True)
class KeyTiles:
    """Key rows (at global positions ``k_pos``) cut into tiles, and how many keys of each tile a query row may
    attend to: ``RowIntervals.count_in_ranges`` over a tile's position range is exact where the tile's positions
    are contiguous; any other tile (a strided or zigzag CP shard) is evaluated densely."""

    k_pos: torch.Tensor
    bounds: list[tuple[int, int]]  # local [a, b) of each tile
    contiguous: list[bool]
    starts: torch.Tensor  # global position range of each tile
    ends: torch.Tensor
    widths: torch.Tensor  # keys per tile

    @staticmethod
    def cut(k_pos: torch.Tensor, size: int) -> "KeyTiles":
        bounds = [(s, min(s + size, len(k_pos))) for s in range(0, len(k_pos), size)]
        return KeyTiles(
            k_pos=k_pos,
            bounds=bounds,
            contiguous=[_contiguous(k_pos[a:b]) for a, b in bounds],
            starts=torch.tensor([int(k_pos[a]) for a, _ in bounds]),
            ends=torch.tensor([int(k_pos[b - 1]) + 1 for _, b in bounds]),
            widths=torch.tensor([b - a for a, b in bounds]),
        )

    def row_counts(self, intervals: RowIntervals, rows: torch.Tensor) -> tuple[torch.Tensor, dict[int, torch.Tensor]]:
        """Allowed keys of each row in each tile ``[Hm, len(rows), tiles]``, and the dense masks
        ``[Hm, len(rows), width]`` computed for the non-contiguous tiles (by tile index)."""
        counts = intervals.count_in_ranges(rows, self.starts, self.ends)
        dense = {}
        for j, (a, b) in enumerate(self.bounds):
            if not self.contiguous[j]:
                dense[j] = intervals.evaluate(rows, self.k_pos[a:b])
                counts[:, :, j] = dense[j].sum(-1)
        return counts, dense

    def allowed(self, intervals: RowIntervals, rows: torch.Tensor, j: int, dense: dict[int, torch.Tensor]) -> torch.Tensor:
        """Tile ``j``'s dense mask ``[Hm, len(rows), width]`` (reusing one ``row_counts`` computed)."""
        if j in dense:
            return dense[j]
        a, b = self.bounds[j]
        return intervals.evaluate(rows, self.k_pos[a:b])


def make_plan(
    intervals: RowIntervals,
    q_pos: torch.Tensor,
    k_pos: torch.Tensor,
    dtype: torch.dtype,
    block_q: int = 256,
    block_k: int = 256,
    masked_tiles: bool = True,
) -> Optional[TilePlan]:
    """Classify every tile of ``q_pos x k_pos`` (global positions of local rows) and build the items; with
    ``masked_tiles=False``, None as soon as a tile would need an additive mask."""
    sq = len(q_pos)
    q_tiles = [(s, min(s + block_q, sq)) for s in range(0, sq, block_q)]
    keys = KeyTiles.cut(k_pos, block_k)
    hm = intervals.num_heads
    items: list[list[Item]] = []
    area = 0
    for q0, q1 in q_tiles:
        row_items: list[Item] = []
        rows = q_pos[q0:q1]
        per_row, dense_tiles = keys.row_counts(intervals, rows)
        counts = per_row.sum(1)  # [Hm, nk]
        cap = (q1 - q0) * keys.widths
        area += int(counts.sum())
        for j, (k0, k1) in enumerate(keys.bounds):
            c = counts[:, j]
            if bool((c == 0).all()):
                continue
            if bool((c == cap[j]).all()):
                last = row_items[-1] if row_items else None
                if last is not None and last.bias is None and not last.causal and last.k1 == k0:
                    last.k1 = k1  # merge runs of full tiles into one call
                else:
                    row_items.append(Item(k0, k1))
                continue
            tile = keys.allowed(intervals, rows, j, dense_tiles)  # [Hm, bq, bk]
            if hm == 1 and tile.shape[1] == tile.shape[2] and torch.equal(tile[0], _tril(tile.shape[1])):
                row_items.append(Item(k0, k1, causal=True))
                continue
            if not masked_tiles:
                return None
            bias = torch.zeros(tile.shape, dtype=dtype).masked_fill_(~tile, float("-inf")).unsqueeze(0)
            empty = ~tile.any(-1)
            row_items.append(Item(k0, k1, bias=bias, empty_rows=empty if bool(empty.any()) else None))
        items.append(row_items)
    return TilePlan(q_tiles, items, area)


def _tril(n: int) -> torch.Tensor:
    return torch.ones(n, n, dtype=torch.bool).tril()


def _bhsd(x: torch.Tensor) -> torch.Tensor:
    return x.transpose(1, 2)


def blocksparse_forward(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, plan: TilePlan, scale: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Output ``[B, Sq, Hq, d]`` and log-sum-exp ``[B, Hq, Sq]`` (float32; -inf for rows with no keys)."""
    b, sq, hq, d = q.shape
    out = torch.zeros_like(q)
    lse = torch.full((b, hq, sq), float("-inf"), dtype=torch.float32, device=q.device)
    qh, kh, vh = _bhsd(q), _bhsd(k), _bhsd(v)
    for (q0, q1), row_items in zip(plan.q_tiles, plan.items):
        if not row_items:
            continue
        outs, lses = [], []
        for it in row_items:
            o, l = _flash_fwd(
                qh[:, :, q0:q1], kh[:, :, it.k0 : it.k1], vh[:, :, it.k0 : it.k1], 0.0, it.causal,
                attn_mask=it.bias, scale=scale,
            )
            if it.empty_rows is not None:  # the kernel reports lse 0 for a row with no key: make it -inf
                l = l.masked_fill(it.empty_rows.unsqueeze(0).expand_as(l), float("-inf"))
            outs.append(o)
            lses.append(l)
        if len(outs) == 1:
            out[:, q0:q1] = outs[0].transpose(1, 2)
            lse[:, :, q0:q1] = lses[0]
            continue
        stacked = torch.stack(lses)  # [n, B, H, bq]
        total = torch.logsumexp(stacked, dim=0)
        weights = torch.exp(stacked - total.masked_fill(torch.isinf(total), 0.0))  # 0 where no key
        merged = sum(w.unsqueeze(-1) * o.float() for w, o in zip(weights, outs))
        out[:, q0:q1] = merged.to(q.dtype).transpose(1, 2)
        lse[:, :, q0:q1] = total
    return out, lse


def blocksparse_backward(
    dout: torch.Tensor,
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    out: torch.Tensor,
    lse: torch.Tensor,
    plan: TilePlan,
    scale: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """dq, dk, dv (float32 accumulators, cast to the input dtype) given the *global* out and lse."""
    dq = torch.zeros(q.shape, dtype=torch.float32, device=q.device)
    dk = torch.zeros(k.shape, dtype=torch.float32, device=k.device)
    dv = torch.zeros(v.shape, dtype=torch.float32, device=v.device)
    lse = lse.masked_fill(torch.isneginf(lse), float("inf"))  # rows with no key: probabilities exp(s - inf) = 0
    qh, kh, vh, oh, doh = (_bhsd(x) for x in (q, k, v, out, dout))
    dqh, dkh, dvh = _bhsd(dq), _bhsd(dk), _bhsd(dv)
    for (q0, q1), row_items in zip(plan.q_tiles, plan.items):
        for it in row_items:
            gq, gk, gv = _flash_bwd(
                doh[:, :, q0:q1], qh[:, :, q0:q1], kh[:, :, it.k0 : it.k1], vh[:, :, it.k0 : it.k1],
                oh[:, :, q0:q1], lse[:, :, q0:q1], 0.0, it.causal, attn_mask=it.bias, scale=scale,
            )
            dqh[:, :, q0:q1] += gq
            dkh[:, :, it.k0 : it.k1] += gk
            dvh[:, :, it.k0 : it.k1] += gv
    return dq.to(q.dtype), dk.to(k.dtype), dv.to(v.dtype)


class BlockSparseAttention(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, plan: TilePlan, scale: float):
        out, lse = blocksparse_forward(q, k, v, plan, scale)
        ctx.save_for_backward(q, k, v, out, lse)
        ctx.plan, ctx.scale = plan, scale
        return out

    @staticmethod
    def backward(ctx, dout):
        q, k, v, out, lse = ctx.saved_tensors
        dq, dk, dv = blocksparse_backward(dout.contiguous(), q, k, v, out, lse, ctx.plan, ctx.scale)
        return dq, dk, dv, None, None


def blocksparse_attention(q, k, v, plan: TilePlan, scale: float) -> torch.Tensor:
    """Differentiable block-sparse attention on ``[B, S, H, d]`` tensors with a prepared plan."""
    return BlockSparseAttention.apply(q, k, v, plan, scale)


DEFAULT_BLOCK = 256


def _block_k(problem: Problem) -> int:
    return int(problem.options.get("block_k", DEFAULT_BLOCK))


LARGE_BLOCKS = (1024, 512)  # tried first when the tiles are not set: fewer calls, the kernel's larger GEMMs


def _plan(problem: Problem) -> TilePlan:
    """The tiles of ``block_q`` x ``block_k`` (options); when neither is set and the mask needs no additive
    mask at a larger square tile (every tile empty, full or a causal diagonal: causal, full, block-aligned
    patterns at that size), the largest such tile. The aten kernel splits a call of 768+ q rows into 256-row
    blocks against 512 keys and a 256-row call into 64-row blocks: at 16K causal, 1024-tiles ran forward at
    0.96x of SDPA's per-area rate where 256-tiles ran at 0.82x (Intel Xeon, 2 cores). A partial tile is
    computed whole under its mask, so any other mask keeps the finer default. Decode keeps the default too
    (``decode_bytes`` counts ``block_k`` tiles)."""
    return plan_tiles(problem.mask.intervals, problem.q_positions, torch.arange(problem.seqlen), problem.dtype,
                      problem.options, large=not problem.is_decode)


def plan_tiles(intervals: RowIntervals, q_pos: torch.Tensor, k_pos: torch.Tensor, dtype: torch.dtype,
               options: dict, large: bool = True) -> TilePlan:
    """The tile plan of ``q_pos x k_pos`` by the rule of :func:`_plan`: the ``block_q`` x ``block_k`` options
    when set, else (``large``: one device, not decode) the largest of :data:`LARGE_BLOCKS` that needs no additive
    mask, else the default tiles (a CP step: :func:`local_plan`)."""
    if large and not {"block_q", "block_k"} & set(options):
        for size in LARGE_BLOCKS:
            plan = make_plan(intervals, q_pos, k_pos, dtype, block_q=size, block_k=size, masked_tiles=False)
            if plan is not None:
                return plan
    return make_plan(intervals, q_pos, k_pos, dtype, block_q=int(options.get("block_q", DEFAULT_BLOCK)),
                     block_k=int(options.get("block_k", DEFAULT_BLOCK)))


def build(problem: Problem):
    """The plan (:func:`_plan`) covers q's rows at their global positions: every row, or the last
    ``decode_tokens`` rows of a decode step against the whole KV cache (key tiles no decode row attends to are
    never read)."""
    plan = _plan(problem)
    scale = problem.scale
    if problem.is_decode:
        return lambda q, k, v: blocksparse_forward(q, k, v, plan, scale)[0]
    return lambda q, k, v: blocksparse_attention(q, k, v, plan, scale)


def decode_bytes(problem: Problem) -> int:
    """A decode step reads only the key tiles of ``block_k`` tokens that some decode row attends to."""
    return allowed_block_bytes(problem, _block_k(problem))


# ----- the local kernel of the context-parallel strategies ------------------------------------------------

@dataclass
class LocalPlan:
    """A tile plan for one CP block, with the (q, k, q-head) pairs it computes per batch element."""

    tiles: TilePlan
    pairs: int


def local_plan(spec: PlanSpec) -> LocalPlan:
    """One CP step's plan in the default tiles (or the options'). The large unmasked tiles of one device
    (:func:`plan_tiles`) were tried here: at S=4096, W=2 our strategies ran within the noise of the default
    tiles (results/BENCHMARKS.md section 5), so a CP step keeps the tiles its tests and rate tables used."""
    iv = spec.intervals
    tiles = plan_tiles(iv, spec.q_pos, spec.k_pos, spec.dtype, spec.options, large=False)
    shared = iv.num_heads == 1  # else tiles.area already sums the plan's heads' patterns
    return LocalPlan(tiles, tiles.area * (spec.num_heads if shared else 1))


def local_forward(q, k, v, plan: LocalPlan, scale: float) -> tuple[torch.Tensor, torch.Tensor]:
    return blocksparse_forward(q, k, v, plan.tiles, scale)


def local_backward(dout, q, k, v, out, lse, plan: LocalPlan, scale: float):
    return blocksparse_backward(dout, q, k, v, out, lse, plan.tiles, scale)


LOCAL_KERNEL = LocalKernel(
    name="blocksparse (aten._scaled_dot_product_flash_attention_for_cpu per tile)",
    plan=local_plan,
    forward=local_forward,
    backward=local_backward,
    area=lambda plan: plan.pairs,
)


METHOD = Method(
    name="blocksparse",
    summary="lcbench's tiled kernel: skips empty tiles, masks partial tiles exactly, any mask, fwd+bwd",
    build=build,
    mask_features=ALL_FEATURES,
    dtypes=frozenset({"float32", "bfloat16", "float64"}),
    local_kernel=LOCAL_KERNEL,
    decode=True,
    decode_bytes=decode_bytes,
    # the tile sizes (None: DEFAULT_BLOCK, or a plan of the mask's own when neither is set; see _plan)
    options={"block_q": None, "block_k": None},
)
