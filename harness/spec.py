"""What one benchmark run is: plain, hashable, serialisable data.

A :class:`Run` names a method (a single-device kernel) or a context-parallel strategy, a mask with its
parameters, the problem shape, dtype, direction and world size. It is what the suite expands into, what the
store keys results by (``Run.key``) and what is shipped to Ray workers.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from typing import Any, Optional

DIRECTIONS = ("fwd", "bwd", "fwd+bwd")
DTYPES = ("float32", "bfloat16", "float16", "float64")

# FLOPs of the backward and of forward+backward relative to the forward (5 matmuls incl. recompute).
DIRECTION_FLOP_FACTOR = {"fwd": 1.0, "bwd": 2.5, "fwd+bwd": 3.5}


def _frozen(params: Optional[dict]) -> tuple:
    """A dict as a sorted tuple of pairs (lists become tuples) so that runs hash and compare by value."""
    if not params:
        return ()

    def freeze(v: Any) -> Any:
        if isinstance(v, dict):
            return _frozen(v)
        if isinstance(v, list):
            return tuple(freeze(x) for x in v)
        return v

    return tuple(sorted((str(k), freeze(v)) for k, v in params.items()))


def _thaw(pairs: tuple) -> dict:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in pairs}


@dataclass(frozen=True)
class Timing:
    """How a run is timed: warm-up calls, then samples until both minimums are met."""

    warmup: int = 2
    min_samples: int = 5
    min_run_time: float = 0.2  # seconds of timed work at least
    max_samples: int = 50


@dataclass(frozen=True)
class Run:
    method: str
    mask: str
    seqlen: int
    heads_q: int
    heads_kv: int
    head_dim: int
    dtype: str = "float32"
    direction: str = "fwd"
    batch: int = 1
    world_size: int = 1
    strategy: Optional[str] = None  # context-parallel strategy; ``method`` is then its local kernel
    mask_params: tuple = ()
    options: tuple = ()
    device: str = "cpu"
    timing: Timing = field(default_factory=Timing)

    @staticmethod
    def make(mask_params: Optional[dict] = None, options: Optional[dict] = None, **kw: Any) -> "Run":
        timing = kw.pop("timing", None)
        if isinstance(timing, dict):
            timing = Timing(**timing)
        return Run(mask_params=_frozen(mask_params), options=_frozen(options), timing=timing or Timing(), **kw)

    @property
    def mask_kwargs(self) -> dict:
        return _thaw(self.mask_params)

    @property
    def option_kwargs(self) -> dict:
        return _thaw(self.options)

    @property
    def label(self) -> str:
        who = f"{self.strategy}[{self.method}]" if self.strategy else self.method
        params = ",".join(f"{k}={v}" for k, v in self.mask_params)
        mask = f"{self.mask}({params})" if params else self.mask
        ws = f" ws={self.world_size}" if self.world_size > 1 else ""
        return (
            f"{who} {mask} S={self.seqlen} B={self.batch} H={self.heads_q}:{self.heads_kv} d={self.head_dim} "
            f"{self.dtype} {self.direction}{ws}"
        )

    def to_dict(self) -> dict:
        d = asdict(self)
        d["mask_params"] = self.mask_kwargs
        d["options"] = self.option_kwargs
        return d

    @staticmethod
    def from_dict(d: dict) -> "Run":
        d = dict(d)
        return Run.make(**d)

    @property
    def key(self) -> str:
        """Stable identity of the run (timing settings excluded: re-timing the same point is the same run)."""
        d = self.to_dict()
        d.pop("timing")
        blob = json.dumps(d, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()[:20]
