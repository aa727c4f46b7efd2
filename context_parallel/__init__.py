"""Context-parallel strategies, one file each. Third-party strategies use the ``lcbench.strategies`` entry point.

Interface: :mod:`context_parallel.base`; communication (byte-counted): :mod:`context_parallel.comm`;
layouts: :mod:`context_parallel.layouts`; the shared ring/all-to-all engine: :mod:`context_parallel.engine`;
rank-side executor: :mod:`context_parallel.runner`; local launcher: :mod:`context_parallel.launch`.
"""

from context_parallel.base import CPContext, CPProblem, Strategy, Unsupported, get_strategy, strategies
from context_parallel import (  # noqa: E402  (strategy files import the interface above)
    all_gather, double_ring, hierarchical, ring, ring_doc_zigzag, ring_striped, ring_zigzag, ulysses, usp,
)

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
]

__all__ = ["BUILTIN", "CPContext", "CPProblem", "Strategy", "Unsupported", "get_strategy", "strategies"]
