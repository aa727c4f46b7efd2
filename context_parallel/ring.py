"""Ring attention (Liu et al. 2023) on contiguous shards: the baseline ring, unbalanced for causal masks."""

from context_parallel import layouts
from context_parallel.family import ring_strategy

STRATEGY = ring_strategy(
    "ring",
    "P2P ring: K/V blocks passed around all ranks, next block's isend/irecv overlapped with compute; "
    "contiguous shards (causal: rank W-1 does W times the work of rank 0)",
    layouts.contiguous,
    homepage="https://arxiv.org/abs/2310.01889",
)
