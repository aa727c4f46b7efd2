"""Ring attention with per-document head-tail sharding, for packed documents (balanced document masks)."""

from context_parallel import layouts
from context_parallel.family import ring_strategy

STRATEGY = ring_strategy(
    "ring_doc_zigzag",
    "P2P ring with every packed document cut into 2W chunks, rank i holding chunks i and 2W-1-i of each "
    "(whole sequence = one document when the mask has none); shards may differ by a few tokens",
    layouts.doc_zigzag,
)
