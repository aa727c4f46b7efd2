"""The method registry: every attention kernel lcbench can run, with what it supports.

A method is one small file in ``methods/`` that defines a :class:`Method`. The registry holds the built-in
methods (``methods.BUILTIN``) plus third-party ones published under the entry-point group ``lcbench.methods``
(each entry point resolves to a ``Method``). Nothing outside a method's file knows its name.
"""

from __future__ import annotations

import functools
import importlib
import os
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from typing import Callable, Optional

import torch

from harness.errors import unknown
from harness.gate import reference_outputs
from harness.masks.core import Mask
from harness.spec import DTYPES

AttentionFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]
"""``fn(q, k, v) -> out`` on ``[batch, seqlen, heads, head_dim]`` tensors (q: heads_q, k/v: heads_kv)."""


@dataclass(frozen=True)
class Problem:
    """One attention problem, as a method sees it when it builds its callable (outside the timed region)."""

    mask: Mask
    batch: int
    seqlen: int
    heads_q: int
    heads_kv: int
    head_dim: int
    dtype: torch.dtype
    device: torch.device
    needs_grad: bool = False
    options: dict = field(default_factory=dict)

    @property
    def scale(self) -> float:
        return self.head_dim**-0.5


def softmax_forward_flops(problem: Problem) -> float:
    """The field's convention: forward FLOPs = 4 * exact mask area * head_dim (summed over heads, batch)."""
    return 4.0 * problem.mask.area(problem.heads_q) * problem.head_dim * problem.batch


@dataclass(frozen=True)
class Method:
    """An attention kernel: what it supports, whether it is available here, and how to build it."""

    name: str
    summary: str
    build: Callable[[Problem], AttentionFn]
    mask_features: frozenset[str] = frozenset()  # features beyond a full mask (harness.masks.core)
    dtypes: frozenset[str] = frozenset({"float32", "bfloat16", "float16", "float64"})
    devices: frozenset[str] = frozenset({"cpu"})
    backward: bool = True
    gqa: bool = True
    probe: Callable[[], Optional[str]] = lambda: None  # None when usable, else why not
    limits: Callable[[Problem], Optional[str]] = lambda p: None  # shape limits -> why unsupported
    # What the method computes: its FLOP count and its float64 reference (masked softmax attention by default;
    # linear-attention or TTT methods bring their own).
    forward_flops: Callable[[Problem], float] = softmax_forward_flops
    reference: Callable[..., dict] = reference_outputs
    homepage: str = ""

    def unavailable_reason(self) -> Optional[str]:
        return _probe(self)

    def unsupported_reason(self, problem: Problem, direction: str) -> Optional[str]:
        """Why this method cannot run ``problem`` (None when it can)."""
        dtype = str(problem.dtype).removeprefix("torch.")
        if dtype not in self.dtypes:
            return f"dtype {dtype} (supports {', '.join(sorted(self.dtypes))})"
        if problem.device.type not in self.devices:
            return f"device {problem.device.type} (runs on {', '.join(sorted(self.devices))})"
        missing = problem.mask.features - self.mask_features
        if missing:
            return f"mask feature {', '.join(sorted(missing))} of {problem.mask.name}"
        if direction != "fwd" and not self.backward:
            return "backward (forward only)"
        if problem.heads_q != problem.heads_kv and not self.gqa:
            return "GQA (heads_q != heads_kv)"
        return self.limits(problem)


@functools.lru_cache(maxsize=None)
def _probe(method: Method) -> Optional[str]:
    try:
        return method.probe()
    except Exception as e:  # a broken optional install must never crash a sweep
        return f"probe failed: {type(e).__name__}: {e}"


def plugin_modules() -> list:
    """Modules named in ``LCBENCH_PLUGINS`` (comma-separated): a way to add methods/strategies without
    packaging (each module may define ``METHODS`` and/or ``STRATEGIES`` lists). Env vars reach Ray workers."""
    names = [n.strip() for n in os.environ.get("LCBENCH_PLUGINS", "").split(",") if n.strip()]
    return [importlib.import_module(n) for n in names]


def collect(builtin: list, group: str, attr: str, kind: type) -> dict:
    """Built-ins, then ``LCBENCH_PLUGINS`` modules' ``attr`` lists, then entry points of ``group``, by name."""
    found = {item.name: item for item in builtin}
    extra = [item for module in plugin_modules() for item in getattr(module, attr, [])]
    extra += [ep.load() for ep in entry_points(group=group)]
    for item in extra:
        if not isinstance(item, kind):
            raise TypeError(f"{item!r} registered in {group} is not an lcbench {kind.__name__}")
        found.setdefault(item.name, item)
    return found


@functools.lru_cache(maxsize=1)
def methods() -> dict[str, Method]:
    """All registered methods by name: built-ins, plugins, then entry points of group ``lcbench.methods``."""
    from methods import BUILTIN

    return collect(BUILTIN, "lcbench.methods", "METHODS", Method)


def get_method(name: str) -> Method:
    registry = methods()
    if name not in registry:
        raise unknown("method", name, registry)
    return registry[name]


def torch_dtype(name: str) -> torch.dtype:
    if name not in DTYPES:
        raise unknown("dtype", name, DTYPES)
    return getattr(torch, name)
