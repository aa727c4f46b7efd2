"""Context-parallel strategies, one file each. Third-party strategies use the ``lcbench.strategies`` entry point.

Interface: :mod:`context_parallel.base`; communication (byte-counted): :mod:`context_parallel.comm`;
layouts: :mod:`context_parallel.layouts`; rank-side executor: :mod:`context_parallel.runner`; local
launcher: :mod:`context_parallel.launch`.
"""

from context_parallel.base import CPContext, CPProblem, Strategy, Unsupported, get_strategy, strategies

BUILTIN: list[Strategy] = []

__all__ = ["BUILTIN", "CPContext", "CPProblem", "Strategy", "Unsupported", "get_strategy", "strategies"]
