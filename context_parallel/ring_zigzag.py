"""Ring attention on the zigzag (head-tail) layout: rank i holds chunks i and 2W-1-i, balancing causal work."""

from context_parallel import layouts
from context_parallel.family import ring_strategy

STRATEGY = ring_strategy(
    "ring_zigzag",
    "P2P ring on the head-tail layout (rank i: chunks i and 2W-1-i of 2W), as ring-flash-attention's zigzag",
    layouts.zigzag,
    homepage="https://github.com/zhuzilin/ring-flash-attention",
)
