"""Context-parallel strategies, one file each. Third-party strategies use the ``lcbench.strategies`` entry point.

Interface: :mod:`harness.interfaces.strategy`; communication (byte-counted): :mod:`harness.interfaces.comm`;
layouts: :mod:`context_parallel.layouts`; the shared ring/all-to-all engine: :mod:`context_parallel.engine`.
The harness runs them (:mod:`harness.execution`) and finds them through :mod:`harness.catalog`.
"""

from harness.interfaces import Strategy
from context_parallel import (
    all_gather, double_ring, hierarchical, ring, ring_doc_zigzag, ring_striped, ring_zigzag, ulysses, usp,
    peer_deepspeed_ulysses, peer_magi_attention, peer_ring_flash_attn, peer_torch_native,
    peer_transformer_engine, peer_yunchang,
)
from context_parallel import lasp, lasp2, linear_all_gather

BUILTIN: list[Strategy] = [
    all_gather.STRATEGY,
    ring.STRATEGY,
    ring_zigzag.STRATEGY,
    ring_striped.STRATEGY,
    ring_doc_zigzag.STRATEGY,
    ulysses.STRATEGY,
    usp.STRATEGY,
    double_ring.STRATEGY,
    hierarchical.STRATEGY,
    # linear attention (Run.method a linear method: lightning, lightning_tnl, linear_attn)
    lasp2.STRATEGY,
    lasp.STRATEGY,
    linear_all_gather.STRATEGY,
    # peers: other libraries' context parallelism, beside ours (GPU-only ones report why when unavailable)
    peer_deepspeed_ulysses.STRATEGY,
    *peer_torch_native.STRATEGIES,
    *peer_yunchang.STRATEGIES,
    *peer_transformer_engine.STRATEGIES,
    *peer_ring_flash_attn.STRATEGIES,
    peer_magi_attention.STRATEGY,
]

__all__ = ["BUILTIN"]
