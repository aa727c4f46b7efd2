"""FlexAttention on CPU: ``torch.nn.attention.flex_attention`` compiled by ``torch.compile`` (Inductor's C++
flex kernel), any mask of the IR.

The mask reaches the kernel twice, as in FlexAttention itself: the pattern's own ``mask_mod`` (evaluated inside
partial blocks) and a ``BlockMask`` telling the kernel which blocks to skip (empty) and where it may skip the
mask_mod (full). The ``BlockMask`` is built from the mask's exact block map (``Mask.block_map``), which holds
the same classification ``create_block_mask(mask.flex_mask_mod(), ...)`` computes, but in O(S·R) memory
instead of materialising the S×S mask (``create_block_mask`` evaluates the mask_mod on every (q, k) pair:
S² booleans plus int64 temporaries, over 100 GB at 128K tokens); a test checks that the two agree.

One compiled function serves the whole process (Dynamo caches one graph per mask/shape), and ``build``
compiles the problem's graph with a warm-up call, so compilation never lands in the timed region. Dynamo's
default recompile limit (8) would, once a sweep has built more than 8 problems, silently fall back to the
*unfused eager* flex_attention, which materialises the scores — a different kernel. The limit is therefore
raised, and the warm-up runs with ``fail_on_recompile_limit_hit`` so that case fails loudly instead.

Backward: torch 2.13 does not implement FlexAttention's backward on CPU (``flex_attention`` raises
``NotImplementedError: FlexAttention does not support backward on CPU``), so this method is forward only.
GQA uses ``enable_gqa=True`` (no K/V repeat). Option ``block_size`` (default 128) sets the sparse block size.

Decode: q holds the last ``decode_tokens`` rows (``Q_LEN = n``) against the whole KV cache. The BlockMask then
has one row of key blocks per ``block_size`` q rows, classified from the mask's intervals at the rows' global
positions, and its mask_mod is the pattern's own with ``q_idx`` shifted by ``problem.q_offset``.
"""

from __future__ import annotations

import functools
import os
import shutil
import types
from typing import Callable, Optional

import torch
from torch.nn.attention.flex_attention import BlockMask, flex_attention

from harness.masks.core import ALL_FEATURES, EMPTY, FULL, PARTIAL, Mask, MaskMod
from harness.interfaces import AttentionFn, Method, Problem

DEFAULT_BLOCK_SIZE = 128
RECOMPILE_LIMIT = 1024  # graphs per process: one per (mask, shape, dtype); a sweep stays far below


@functools.lru_cache(maxsize=1)
def compiled_flex() -> Callable:
    """The process-wide compiled flex_attention (created on first use, so importing methods stays cheap)."""
    return torch.compile(flex_attention, dynamic=False)


def mask_mod_on(mask_mod: MaskMod, device: torch.device, depth: int = 3) -> MaskMod:
    """``mask_mod`` with every tensor it closes over (through up to ``depth`` nested closures) on ``device``.

    Pattern definitions close over index tensors (document ids, per-head windows) built on the CPU; a kernel
    on another device needs them there. Returns ``mask_mod`` itself when nothing has to move.
    """
    closure = getattr(mask_mod, "__closure__", None)
    if not closure or depth < 0:
        return mask_mod
    moved = [_on_device(cell.cell_contents, device, depth) if _filled(cell) else None for cell in closure]
    if all(new is None or new is cell.cell_contents for new, cell in zip(moved, closure)):
        return mask_mod
    cells = tuple(
        types.CellType(new) if _filled(cell) else cell for new, cell in zip(moved, closure)
    )
    fn = types.FunctionType(
        mask_mod.__code__, mask_mod.__globals__, mask_mod.__name__, mask_mod.__defaults__, cells
    )
    fn.__kwdefaults__ = mask_mod.__kwdefaults__
    return fn


def _filled(cell: types.CellType) -> bool:
    try:
        cell.cell_contents
    except ValueError:  # an empty cell (a variable not yet bound)
        return False
    return True


def _on_device(value, device: torch.device, depth: int):
    if isinstance(value, torch.Tensor):
        return value.to(device)
    if isinstance(value, types.FunctionType):
        return mask_mod_on(value, device, depth - 1)
    return value


def rows_block_map(mask: Mask, q_pos: torch.Tensor, block_size: int) -> torch.Tensor:
    """The block map (EMPTY / PARTIAL / FULL, ``[Hm, nq, nk]``) of the query rows at global positions ``q_pos``
    (blocks of ``block_size`` consecutive rows of ``q_pos``) against every key of the mask."""
    starts = torch.arange(0, mask.seqlen, block_size)
    ends = (starts + block_size).clamp_max(mask.seqlen)
    per_row = mask.intervals.count_in_ranges(q_pos, starts, ends)  # [Hm, n, nk]
    q_blocks = torch.arange(len(q_pos)).div(block_size, rounding_mode="floor")
    nq = int(q_blocks[-1]) + 1
    counts = torch.zeros(per_row.shape[0], nq, len(starts), dtype=per_row.dtype).index_add_(1, q_blocks, per_row)
    rows = torch.bincount(q_blocks, minlength=nq)
    cap = rows.view(1, -1, 1) * (ends - starts).view(1, 1, -1)
    classes = torch.full(counts.shape, PARTIAL, dtype=torch.int8)
    classes[counts == 0] = EMPTY
    classes[counts == cap] = FULL
    return classes


def offset_mask_mod(mask_mod: MaskMod, q_offset: int, last: int) -> MaskMod:
    """``mask_mod`` for a q that starts at global position ``q_offset``: row ``q_idx`` is position
    ``q_offset + q_idx`` (clamped to ``last`` so that padding rows of a partial q block index in range)."""

    def shifted(b: torch.Tensor, h: torch.Tensor, q_idx: torch.Tensor, kv_idx: torch.Tensor) -> torch.Tensor:
        return mask_mod(b, h, torch.clamp(q_idx + q_offset, max=last), kv_idx)

    return shifted


def block_mask_from_ir(
    mask: Mask, block_size: int, device: torch.device, q_pos: Optional[torch.Tensor] = None
) -> BlockMask:
    """``mask``'s ``BlockMask`` from its exact block map: partial blocks run the mask_mod, full blocks skip it.

    Shared masks give a head dimension of 1 (broadcast over heads); per-head masks one entry per head.
    Each row lists its blocks in ascending key order, as ``create_block_mask`` does. ``q_pos``: the global
    positions of q's rows when they are not every row — contiguous positions ``q_pos[0] ...`` (a decode step).
    """
    mask_mod = mask_mod_on(mask.flex_mask_mod(), device)
    if q_pos is None:
        classes = mask.block_map(block_size, block_size)  # [Hm, nq, nk]
        q_len = mask.seqlen
    else:
        classes = rows_block_map(mask, q_pos, block_size)
        q_len = len(q_pos)
        mask_mod = offset_mask_mod(mask_mod, int(q_pos[0]), mask.seqlen - 1)

    def sparse(selected: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        counts = selected.sum(-1).to(torch.int32)
        order = torch.argsort((~selected).to(torch.int8), dim=-1, stable=True).to(torch.int32)
        return counts[None].to(device), order[None].contiguous().to(device)  # [1, Hm, nq], [1, Hm, nq, nk]

    kv_num, kv_idx = sparse(classes == PARTIAL)
    full_num, full_idx = sparse(classes == FULL)
    return BlockMask.from_kv_blocks(
        kv_num, kv_idx, full_num, full_idx,
        BLOCK_SIZE=block_size,
        mask_mod=mask_mod,
        seq_lengths=(q_len, mask.seqlen),
    )


def build(problem: Problem) -> AttentionFn:
    """Compile flex_attention for this problem (device-generic: the CUDA variant reuses it)."""
    block_size = int(problem.options.get("block_size", DEFAULT_BLOCK_SIZE))
    q_pos = problem.q_positions if problem.is_decode else None
    block_mask = block_mask_from_ir(problem.mask, block_size, problem.device, q_pos)
    flex = compiled_flex()
    gqa = problem.heads_q != problem.heads_kv
    scale = problem.scale

    def flex_attention_call(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        out = flex(
            q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2),
            block_mask=block_mask, scale=scale, enable_gqa=gqa,
        )
        return out.transpose(1, 2)

    warm_up(flex_attention_call, problem)
    return flex_attention_call


def probe() -> Optional[str]:
    """Inductor compiles the CPU kernel with the system C++ compiler (``$CXX``, else g++)."""
    candidates = [os.environ["CXX"]] if os.environ.get("CXX") else ["g++", "c++", "clang++"]
    if not any(shutil.which(c) for c in candidates):
        return f"needs a C++ compiler for Inductor's CPU kernels (none of {', '.join(candidates)} on PATH)"
    return None


def limits(problem: Problem) -> Optional[str]:
    heads = problem.mask.intervals.num_heads
    if problem.mask.per_head and heads != problem.heads_q:
        return f"per-head mask has {heads} heads, the run has heads_q={problem.heads_q}"
    return None


def warm_up(fn: AttentionFn, problem: Problem) -> None:
    """Compile the graphs the run will use, failing (not silently going eager) if Dynamo's limit is hit."""
    dynamo = torch._dynamo.config
    dynamo.recompile_limit = max(dynamo.recompile_limit, RECOMPILE_LIMIT)
    dynamo.accumulated_recompile_limit = max(dynamo.accumulated_recompile_limit, RECOMPILE_LIMIT)
    args = dict(dtype=problem.dtype, device=problem.device)
    q = torch.zeros(problem.batch, problem.q_rows, problem.heads_q, problem.head_dim, **args)
    k = torch.zeros(problem.batch, problem.seqlen, problem.heads_kv, problem.head_dim, **args)
    v = torch.zeros_like(k)
    with dynamo.patch(fail_on_recompile_limit_hit=True):
        with torch.no_grad():
            fn(q, k, v)
        if problem.needs_grad:
            fn(*(t.requires_grad_(True) for t in (q, k, v))).sum().backward()


METHOD = Method(
    name="flex",
    summary="FlexAttention (torch.compile, Inductor CPU kernel), BlockMask from the exact block map; "
    "forward only: torch 2.13 has no FlexAttention backward on CPU",
    build=build,
    mask_features=ALL_FEATURES,
    dtypes=frozenset({"float32", "bfloat16", "float16"}),  # float64 is rejected by the CPU kernel
    devices=frozenset({"cpu"}),
    backward=False,
    decode=True,
    gqa=True,
    probe=probe,
    limits=limits,
    homepage="https://pytorch.org/docs/stable/nn.attention.flex_attention.html",
)
