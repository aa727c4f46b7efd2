"""PowerAttention and its equal-budget block-sparse baselines (REFERENCE.md §3, arXiv 2503.03588).

All patterns are causal and defined on blocks of ``block`` tokens with ``blk = q//block - k//block``; the
diagonal block is causal at token level (``q >= k``). Every other parameter counts blocks, so a pattern keeps
its block graph when ``block`` changes (what the receptive-field analysis, :mod:`harness.masks.reach`, uses).

The defaults are the paper's: block 256, and budgets equal to PowerAttention's 10 blocks per query block at
32K (128 blocks: sink + 5 window + power-of-two distances 8, 16, 32, 64):

- ``power``: window 5 blocks, 1 sink block;
- ``sliding_window_sink``: window 9 blocks + 1 sink block;
- ``stride_slash``: window 6 + 1 sink + 3 slashes. The paper names the slash count, not the stride; the
  slashes are the distances ``stride, 2*stride, ...`` beyond the window, and ``stride=32`` gives exactly 3 of
  them (32, 64, 96) for the last block at 32K (any stride in 32..42 does; 32 is the power of two). At other
  lengths the count is ``(blocks - 2) // stride`` (e.g. 15 at 128K): the stride, not the count, is fixed;
- ``dilated``: "20 blocks with dilation 1 block" — one block skipped between attended ones, i.e. distances
  0, 2, ..., 18 (``dilation=2`` here is the step between attended blocks), 10 blocks;
- ``longnet``: segments 8..128 blocks with dilations 1..16.

Short CPU lengths need smaller blocks for the patterns to keep their shape (at 4K, block 256 leaves 16 blocks);
suites name such scaled variants explicitly (e.g. ``{name: power, block: 64}``).
"""

from __future__ import annotations

import torch

from harness.masks.core import Mask
from harness.masks.patterns.common import arbitrary_mask, block_runs_to_intervals, single_blocks
from harness.masks.registry import register_mask, require

Runs = list[tuple[torch.Tensor, torch.Tensor]]


def _blocks(name: str, seqlen: int, block: int) -> torch.Tensor:
    """Query block indices ``0 .. ceil(seqlen/block) - 1`` (the last block may be partial)."""
    require(block >= 1, name, "block", block, "expected an integer >= 1")
    return torch.arange(-(-seqlen // block))


def _sink_and_window(i: torch.Tensor, sink_blocks: int, window_blocks: int) -> Runs:
    """Runs of the first ``sink_blocks`` blocks and of the ``window_blocks`` blocks ending at block ``i``."""
    return [
        (torch.zeros_like(i), torch.clamp_max(i + 1, sink_blocks)),
        ((i - window_blocks + 1).clamp_min(0), i + 1),
    ]


def _build(name: str, seqlen: int, block: int, runs: Runs, definition) -> Mask:
    lo = torch.stack([r[0] for r in runs], dim=-1)
    hi = torch.stack([r[1] for r in runs], dim=-1)
    return arbitrary_mask(name, seqlen, block_runs_to_intervals(seqlen, block, lo, hi), definition)


def _check_sink_window(name: str, sink_blocks: int, window_blocks: int) -> None:
    require(sink_blocks >= 0, name, "sink_blocks", sink_blocks, "expected an integer >= 0")
    require(window_blocks >= 1, name, "window_blocks", window_blocks, "expected an integer >= 1 (the diagonal block)")


@register_mask(
    "power",
    "PowerAttention: sink + window + key blocks at power-of-two block distances (causal)",
    examples=({"block": 32},),
    block=256,
    window_blocks=5,
    sink_blocks=1,
)
def power(seqlen: int, num_heads: int, block: int, window_blocks: int, sink_blocks: int) -> Mask:
    i = _blocks("power", seqlen, block)
    _check_sink_window("power", sink_blocks, window_blocks)
    runs = _sink_and_window(i, sink_blocks, window_blocks)
    distance = 1
    while distance < len(i):
        runs.append(single_blocks(i - distance))
        distance *= 2

    def definition(b, h, q_idx, k_idx):
        blk = q_idx // block - k_idx // block
        power_of_two = (blk & (blk - 1)) == 0  # includes blk = 0, the diagonal
        return (q_idx >= k_idx) & ((k_idx < sink_blocks * block) | (blk < window_blocks) | power_of_two)

    return _build("power", seqlen, block, runs, definition)


@register_mask(
    "sliding_window_sink",
    "PowerAttention baseline: sink blocks + a causal window of window_blocks blocks",
    examples=({"block": 32},),
    block=256,
    window_blocks=9,
    sink_blocks=1,
)
def sliding_window_sink(seqlen: int, num_heads: int, block: int, window_blocks: int, sink_blocks: int) -> Mask:
    i = _blocks("sliding_window_sink", seqlen, block)
    _check_sink_window("sliding_window_sink", sink_blocks, window_blocks)

    def definition(b, h, q_idx, k_idx):
        blk = q_idx // block - k_idx // block
        return (q_idx >= k_idx) & ((k_idx < sink_blocks * block) | (blk < window_blocks))

    return _build("sliding_window_sink", seqlen, block, _sink_and_window(i, sink_blocks, window_blocks), definition)


@register_mask(
    "stride_slash",
    "PowerAttention baseline: sink + window + key blocks at distances that are multiples of stride (causal)",
    examples=({"block": 32, "stride": 8},),
    block=256,
    window_blocks=6,
    sink_blocks=1,
    stride=32,
)
def stride_slash(seqlen: int, num_heads: int, block: int, window_blocks: int, sink_blocks: int, stride: int) -> Mask:
    i = _blocks("stride_slash", seqlen, block)
    _check_sink_window("stride_slash", sink_blocks, window_blocks)
    require(stride >= 1, "stride_slash", "stride", stride, "expected an integer >= 1 (in blocks)")
    runs = _sink_and_window(i, sink_blocks, window_blocks)
    runs += [single_blocks(i - distance) for distance in range(0, len(i), stride)]

    def definition(b, h, q_idx, k_idx):
        blk = q_idx // block - k_idx // block
        slash = blk % stride == 0
        return (q_idx >= k_idx) & ((k_idx < sink_blocks * block) | (blk < window_blocks) | slash)

    return _build("stride_slash", seqlen, block, runs, definition)


@register_mask(
    "dilated",
    "PowerAttention baseline: key blocks at distances that are multiples of dilation below span_blocks (causal)",
    examples=({"block": 32},),
    block=256,
    dilation=2,
    span_blocks=20,
)
def dilated(seqlen: int, num_heads: int, block: int, dilation: int, span_blocks: int) -> Mask:
    i = _blocks("dilated", seqlen, block)
    require(dilation >= 1, "dilated", "dilation", dilation, "expected an integer >= 1 (in blocks)")
    require(span_blocks >= 1, "dilated", "span_blocks", span_blocks, "expected an integer >= 1")
    runs = [single_blocks(i - distance) for distance in range(0, min(span_blocks, len(i)), dilation)]

    def definition(b, h, q_idx, k_idx):
        blk = q_idx // block - k_idx // block
        return (q_idx >= k_idx) & (blk % dilation == 0) & (blk < span_blocks)

    return _build("dilated", seqlen, block, runs, definition)


@register_mask(
    "longnet",
    "LongNet dilated attention, one head (offset 0): for each (segment, dilation) pair, blocks at positions "
    "divisible by the dilation inside a segment attend to each other (causal); the rules are united",
    examples=({"block": 16},),
    block=256,
    segments=[8, 16, 32, 64, 128],
    dilations=[1, 2, 4, 8, 16],
)
def longnet(seqlen: int, num_heads: int, block: int, segments: list, dilations: list) -> Mask:
    name = "longnet"
    i = _blocks(name, seqlen, block)
    ok_lists = len(segments) == len(dilations) and len(segments) > 0
    require(ok_lists, name, "dilations", dilations, f"expected one per segment ({len(segments)}), at least one")
    for w, r in zip(segments, dilations):
        require(isinstance(w, int) and w >= 1, name, "segments", segments, "expected integers >= 1 (in blocks)")
        require(isinstance(r, int) and r >= 1, name, "dilations", dilations, "expected integers >= 1 (in blocks)")
    rules = list(zip(segments, dilations))
    runs: Runs = []
    for w, r in rules:
        pos = i % w  # position of the query block in its segment
        active = pos % r == 0  # LongNet sparsifies queries and keys alike
        seg_start = i - pos
        if r == 1:
            runs.append((seg_start, torch.where(active, i + 1, seg_start)))
            continue
        for m in range(0, -(-w // r)):
            key = seg_start + m * r
            runs.append(single_blocks(torch.where(active & (key <= i), key, -1)))

    def definition(b, h, q_idx, k_idx):
        qb, kb = q_idx // block, k_idx // block
        ok = torch.zeros((), dtype=torch.bool)
        for w, r in rules:
            ok = ok | ((qb // w == kb // w) & ((qb % w) % r == 0) & ((kb % w) % r == 0))
        return (q_idx >= k_idx) & ok

    return _build(name, seqlen, block, runs, definition)
