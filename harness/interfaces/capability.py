"""What the three plugin kinds — :class:`~harness.interfaces.Method`, :class:`~harness.interfaces.Strategy`,
:class:`~harness.interfaces.Workload` — share: the capabilities every entry declares (``dtypes``, ``devices``,
``probe``; and where the kind has them ``mask_features``, ``backward``, ``decode``) and the one way they are
checked, so that "unavailable: ..." and "unsupported: ..." read the same whichever kind says them.

``unavailable_reason()`` is whether the entry can run here at all (its probe: an optional package, a GPU),
asked once per process; ``capability_reason(...)`` is the declared part of whether it can run one problem,
before the entry's own ``limits``.
"""

from __future__ import annotations

import functools
from typing import Callable, Optional

from harness.masks import Mask
from harness.run import DECODE, needs_grad


class Capabilities:
    """Mixin of the three kinds' frozen dataclasses (which declare the fields it reads)."""

    dtypes: frozenset[str]
    devices: frozenset[str]
    probe: Callable[[], Optional[str]]

    def unavailable_reason(self) -> Optional[str]:
        """Why this entry cannot run on this machine (its probe), or None; cached per entry."""
        return _probe(self)

    def capability_reason(self, dtype: str, device: str, mask: Optional[Mask] = None,
                          direction: Optional[str] = None) -> Optional[str]:
        """Why the declared capabilities exclude this dtype, device, mask or direction (None when they do not).
        ``mask`` is checked against ``mask_features``, ``direction`` against ``decode`` and ``backward``."""
        if dtype not in self.dtypes:
            return f"dtype {dtype} (supports {', '.join(sorted(self.dtypes))})"
        if device not in self.devices:
            return f"device {device} (runs on {', '.join(sorted(self.devices))})"
        if mask is not None:
            missing = mask.features - getattr(self, "mask_features")
            if missing:
                return f"mask feature {', '.join(sorted(missing))} of {mask.name}"
        if direction is not None:
            if direction == DECODE and not getattr(self, "decode", False):
                return "decode (no decode path)"
            if needs_grad(direction) and not getattr(self, "backward"):
                return "backward (forward only)"
        return None


@functools.lru_cache(maxsize=None)
def _probe(entry: Capabilities) -> Optional[str]:
    try:
        return entry.probe()
    except Exception as e:  # a broken optional install must never crash a sweep
        return f"probe failed: {type(e).__name__}: {e}"
