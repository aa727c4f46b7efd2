"""The context-parallel strategy interface.

A strategy is one file that defines a :class:`Strategy`: what it supports, and how it shards the global
sequence over the ranks of a torch.distributed group, runs attention on the local shards (with autograd) and
gathers the output. Strategies run inside an initialised process group (gloo on CPU, NCCL on GPU); the
single-device kernel they use locally is a registered method (on CPU ``blocksparse``, which takes global q/k
positions so that any mask works across shards).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Callable, Optional

from harness.errors import unknown


@dataclass(frozen=True)
class Strategy:
    """A context-parallel strategy (see module docstring). Fields are filled by each strategy's file."""

    name: str
    summary: str
    probe: Callable[[], Optional[str]] = lambda: None  # None when usable here, else why not
    homepage: str = ""

    def unavailable_reason(self) -> Optional[str]:
        try:
            return self.probe()
        except Exception as e:  # a broken optional install must never crash a sweep
            return f"probe failed: {type(e).__name__}: {e}"


@functools.lru_cache(maxsize=1)
def strategies() -> dict[str, Strategy]:
    """All registered strategies: built-ins, ``LCBENCH_PLUGINS`` modules, then entry points of group ``lcbench.strategies``."""
    from context_parallel import BUILTIN
    from harness.registry import collect

    return collect(BUILTIN, "lcbench.strategies", "STRATEGIES", Strategy)


def get_strategy(name: str) -> Strategy:
    registry = strategies()
    if name not in registry:
        raise unknown("strategy", name, registry)
    return registry[name]
