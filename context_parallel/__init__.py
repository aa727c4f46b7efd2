"""Context-parallel strategies, one file each. Third-party strategies use the ``lcbench.strategies`` entry point."""

from context_parallel.base import Strategy, get_strategy, strategies

BUILTIN: list[Strategy] = []

__all__ = ["BUILTIN", "Strategy", "get_strategy", "strategies"]
