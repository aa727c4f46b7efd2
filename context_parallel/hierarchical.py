"""TransformerEngine-style hierarchical CP (``cp_comm_type="a2a+p2p"``): all-to-all inside a node, ring across.

Groups of ``a2a_size`` consecutive ranks (the GPUs of a node; default as ``usp``'s degree) exchange heads
by all-to-all, then a P2P ring runs across the groups. Unlike ``usp`` the layout is TransformerEngine's
load-balanced one over ALL ranks (2W chunks, rank i holds i and 2W-1-i), so each group's combined shard is
the union of its members' head-tail chunks.
"""

from context_parallel import layouts
from context_parallel.family import a2a_ring_strategy

STRATEGY = a2a_ring_strategy(
    "hierarchical",
    "TransformerEngine a2a+p2p: all-to-all inside groups of a2a_size consecutive ranks, P2P ring across "
    "groups, load-balanced head-tail layout over all ranks",
    layouts.zigzag,
    "a2a_size",
    homepage="https://github.com/NVIDIA/TransformerEngine",
)
