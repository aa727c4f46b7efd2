"""What one benchmark run is: plain, hashable, serialisable data.

A :class:`Run` is one point of a sweep, of one of three kinds:

- a **method** (a single-device attention kernel): ``method`` set, ``strategy`` and ``workload`` None;
- a **strategy** (context parallelism on ``world_size`` ranks): ``strategy`` set, ``method`` its local kernel;
- a **workload** (a whole-model phase): ``workload`` set, ``params`` its parameters (a ``flavor`` among them),
  ``method``/``strategy`` the attention it uses where it takes one.

What is timed is a **direction** of an attention call (``fwd``, ``bwd``, ``fwd+bwd``, ``decode``) for a method
or a strategy, or a **phase** of a workload (``train_step``, ``prefill``, ``decode``, ...): a workload run has a
``phase`` and no ``direction``, the others a ``direction`` and no ``phase`` (:meth:`Run.__post_init__`).

The store keys results by :attr:`Run.key`, stable across versions: results written before ``phase`` was a field
of its own spelled a workload's phase in ``direction``, and the key still does, so those files resume unchanged.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Optional

DECODE = "decode"
TRAINING_DIRECTIONS = ("bwd", "fwd+bwd")
DIRECTIONS = ("fwd", "bwd", "fwd+bwd", DECODE)  # of an attention call (methods and strategies)
DTYPES = ("float32", "bfloat16", "float16", "float64")


def needs_grad(direction: str) -> bool:
    """Whether an attention call in ``direction`` runs a backward (the one rule; methods and strategies)."""
    return direction in TRAINING_DIRECTIONS


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


# The fields of lcbench 0.1.0's runs: always part of the key, so results files written then keep their keys.
KEY_FIELDS_V0 = ("method", "mask", "seqlen", "heads_q", "heads_kv", "head_dim", "dtype", "direction", "batch",
                 "world_size", "strategy", "mask_params", "options", "device")
NOT_IN_KEY = ("timing",)  # re-timing the same point is the same run


@dataclass(frozen=True)
class Run:
    method: str = ""
    mask: str = "causal"
    seqlen: int = 1024
    heads_q: Optional[int] = None
    heads_kv: Optional[int] = None
    head_dim: Optional[int] = None
    dtype: str = "float32"
    direction: Optional[str] = "fwd"  # of an attention call; None for a workload run (it has a phase)
    batch: int = 1
    world_size: int = 1
    strategy: Optional[str] = None  # context-parallel strategy; ``method`` is then its local kernel
    mask_params: tuple = ()
    options: tuple = ()
    device: str = "cpu"
    timing: Timing = field(default_factory=Timing)
    # ----- added after 0.1.0: in the key only when they differ from these defaults -------------------------
    workload: Optional[str] = None  # a model-level workload (harness.interfaces.workload)
    params: tuple = ()  # the workload's parameters (``flavor`` among them)
    decode_tokens: int = 1  # query rows of a decode step (the last ones of the sequence)
    phase: Optional[str] = None  # a workload's phase (``prefill``, ``train_step``, ...); only a workload has one

    def __post_init__(self) -> None:
        if self.workload:
            if not self.phase:
                raise ValueError(f"workload run {self.workload!r} names no phase")
            object.__setattr__(self, "direction", None)  # a workload's step is a phase, not one attention call
        elif self.phase is not None:
            raise ValueError(f"phase {self.phase!r} given to a {self.kind} run (only a workload has phases; "
                             f"a method or strategy takes a direction)")

    @staticmethod
    def make(
        mask_params: Optional[dict] = None, options: Optional[dict] = None, params: Optional[dict] = None, **kw: Any
    ) -> "Run":
        timing = kw.pop("timing", None)
        if isinstance(timing, dict):
            timing = Timing(**timing)
        return Run(mask_params=_frozen(mask_params), options=_frozen(options), params=_frozen(params),
                   timing=timing or Timing(), **kw)

    @property
    def kind(self) -> str:
        """``workload``, ``strategy`` or ``method``: which registry the run's subject comes from."""
        if self.workload:
            return "workload"
        return "strategy" if self.strategy else "method"

    @property
    def timed(self) -> str:
        """What the run times: its phase (a workload) or its direction (a method or strategy)."""
        return self.phase or self.direction or ""

    @property
    def mask_kwargs(self) -> dict:
        return _thaw(self.mask_params)

    @property
    def option_kwargs(self) -> dict:
        return _thaw(self.options)

    @property
    def param_kwargs(self) -> dict:
        return _thaw(self.params)

    @property
    def label(self) -> str:
        if self.workload:
            ps = ",".join(f"{k}={v}" for k, v in self.params)
            who = f"{self.workload}({ps})" + (f"[{self.method}]" if self.method else "")
        else:
            who = f"{self.strategy}[{self.method}]" if self.strategy else self.method
        params = ",".join(f"{k}={v}" for k, v in self.mask_params)
        mask = f"{self.mask}({params})" if params else self.mask
        ws = f" ws={self.world_size}" if self.world_size > 1 else ""
        shape = f" H={self.heads_q}:{self.heads_kv} d={self.head_dim}" if self.heads_q else ""
        return f"{who} {mask} S={self.seqlen} B={self.batch}{shape} {self.dtype} {self.timed}{ws}"

    def to_dict(self) -> dict:
        d = asdict(self)
        d["mask_params"] = self.mask_kwargs
        d["options"] = self.option_kwargs
        d["params"] = self.param_kwargs
        return d

    @staticmethod
    def from_dict(d: dict) -> "Run":
        """The run of a record or :meth:`to_dict`; a workload record stored before ``phase`` was a field of its
        own (its phase in ``direction``) reads as that phase."""
        known = {f.name for f in fields(Run)}
        given = {k: v for k, v in d.items() if k in known}
        if given.get("workload") and not given.get("phase"):
            given["phase"], given["direction"] = given.get("direction"), None
        return Run.make(**given)

    @property
    def key(self) -> str:
        """Stable identity of the run: the 0.1.0 fields, plus every later field that differs from its default.

        So a field added in a later version never changes the key of a run that does not use it, and
        ``--resume`` on a results file written by an older lcbench re-runs nothing. A workload's phase is
        keyed as ``direction``, as it was spelled before ``phase`` was a field of its own.
        """
        d = self.to_dict()
        if self.workload:
            d["direction"] = d.pop("phase")
        defaults = Run()
        for f in fields(Run):
            if f.name in NOT_IN_KEY or (f.name not in KEY_FIELDS_V0 and getattr(self, f.name) == getattr(defaults, f.name)):
                d.pop(f.name, None)
        blob = json.dumps(d, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()[:20]
