"""S2-Attention: heterogeneous context sharding over heads — a different block-sparse mask per head.

In blocks of ``block`` tokens, head ``h`` lets query block ``i`` see key block ``j`` iff
``i >= j and (i - j < local_blocks or (j + h*step) % vert_stride == 0)`` with
``step = max(1, vert_stride // num_heads)``: a local window plus vertical stripes whose offset shifts with the
head, so the union over heads covers the whole context while each head reads only a shard. The last
``dense_heads`` heads are dense (causal). Diagonal blocks are causal at token level. The mask is per head
(``RowIntervals`` with ``Hm = num_heads``), so its area differs per head.
"""

from __future__ import annotations

import torch

from harness.masks.core import Mask
from harness.masks.patterns.common import arbitrary_mask, block_runs_to_intervals, single_blocks
from harness.masks.registry import register_mask, require


@register_mask(
    "s2",
    "S2-Attention: per-head local window + vertical stripes shifted per head; last dense_heads heads dense",
    examples=({"block": 32, "dense_heads": 1},),
    block=64,
    local_blocks=4,
    vert_stride=8,
    dense_heads=0,
)
def s2(seqlen: int, num_heads: int, block: int, local_blocks: int, vert_stride: int, dense_heads: int) -> Mask:
    name = "s2"
    require(block >= 1, name, "block", block, "expected an integer >= 1")
    require(local_blocks >= 1, name, "local_blocks", local_blocks, "expected an integer >= 1")
    require(vert_stride >= 1, name, "vert_stride", vert_stride, "expected an integer >= 1")
    require(num_heads >= 1, name, "num_heads", num_heads, "expected an integer >= 1")
    require(0 <= dense_heads <= num_heads, name, "dense_heads", dense_heads, f"expected 0..num_heads ({num_heads})")
    step = max(1, vert_stride // num_heads)
    i = torch.arange(-(-seqlen // block)).view(1, -1)  # query blocks
    h = torch.arange(num_heads).view(-1, 1)
    dense = h >= num_heads - dense_heads
    first_stripe = torch.remainder(-h * step, vert_stride)  # smallest j with (j + h*step) % vert_stride == 0
    runs = [(torch.where(dense, 0, (i - local_blocks + 1).clamp_min(0)), (i + 1).expand(num_heads, -1))]
    for m in range(0, -(-i.shape[1] // vert_stride)):
        j = first_stripe + m * vert_stride
        runs.append(single_blocks(torch.where(~dense & (j <= i), j, -1)))
    lo = torch.stack([torch.broadcast_to(r[0], (num_heads, i.shape[1])) for r in runs], dim=-1)
    hi = torch.stack([torch.broadcast_to(r[1], (num_heads, i.shape[1])) for r in runs], dim=-1)

    def definition(b, h_idx, q_idx, k_idx):
        qb, kb = q_idx // block, k_idx // block
        stripe = (kb + h_idx * step) % vert_stride == 0
        sparse = (qb - kb < local_blocks) | stripe
        return (q_idx >= k_idx) & (sparse | (h_idx >= num_heads - dense_heads))

    return arbitrary_mask(name, seqlen, block_runs_to_intervals(seqlen, block, lo, hi), definition)
