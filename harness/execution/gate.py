"""The correctness gate: a method's output and gradients against the float64 reference.

Errors are normalised by the largest reference magnitude of each tensor, and a run passes when every one
(out, dq, dk, dv) is within the tolerance of its dtype. A run that fails is stored as ``invalid``: its timing
is never reported as a valid benchmark number.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Optional

import torch

from harness.masks.core import Mask
from harness.interfaces.reference import reference_outputs, sample_rows

# Normalised max error allowed per dtype (inputs ~ N(0, 1)); low precision accumulates rounding in grads.
TOLERANCE = {"float64": 1e-9, "float32": 5e-4, "float16": 1e-2, "bfloat16": 5e-2}


@dataclass
class GateResult:
    ok: bool
    max_abs_err: float  # of the output, absolute
    errors: dict[str, float] = field(default_factory=dict)  # normalised, per tensor
    tolerance: float = 0.0

    @property
    def reason(self) -> Optional[str]:
        if self.ok:
            return None
        worst = max(self.errors, key=self.errors.get)
        return f"failed correctness gate: {worst} error {self.errors[worst]:.2e} > {self.tolerance:.0e}"


def _normalised(x: torch.Tensor, ref: torch.Tensor) -> float:
    scale = max(float(ref.abs().max()), 1e-6)
    return float((x.double() - ref).abs().max()) / scale


def compare(
    got: dict[str, torch.Tensor], ref: dict[str, torch.Tensor], rows: torch.Tensor, dtype: str
) -> GateResult:
    """``got['out']`` is the full output; the reference holds only the checked rows."""
    errors = {"out": _normalised(got["out"][:, rows], ref["out"])}
    max_abs = float((got["out"][:, rows].double() - ref["out"]).abs().max())
    for name in ("dq", "dk", "dv"):
        if name in ref:
            errors[name] = _normalised(got[name], ref[name])
    tol = TOLERANCE[dtype]
    ok = all(e <= tol for e in errors.values()) and all(torch.isfinite(t).all() for t in got.values())
    return GateResult(ok=ok, max_abs_err=max_abs, errors=errors, tolerance=tol)


def upstream_gradient(out: torch.Tensor, rows: torch.Tensor, seed: int = 1) -> torch.Tensor:
    """A random upstream gradient that is zero outside the checked rows."""
    g = torch.Generator().manual_seed(seed)
    dout = torch.zeros(out.shape, dtype=out.dtype)
    dout[:, rows] = torch.randn(dout[:, rows].shape, generator=g).to(out.dtype)
    return dout.to(out.device)


def check_method(
    fn,
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    mask: Mask,
    scale: float,
    with_grad: bool,
    reference: Callable[..., dict[str, torch.Tensor]] = reference_outputs,
    q_offset: int = 0,
) -> GateResult:
    """Run ``fn`` once on (q, k, v) and compare with ``reference`` (masked softmax by default) on sampled rows."""
    rows = sample_rows(q.shape[1])
    dtype = str(q.dtype).removeprefix("torch.")
    if not with_grad:
        with torch.no_grad():
            out = fn(q, k, v)
        ref = reference(q, k, v, mask, scale, rows, None, q_offset=q_offset)
        return compare({"out": out.detach().cpu()}, ref, rows, dtype)
    leaves = [t.detach().requires_grad_(True) for t in (q, k, v)]
    out = fn(*leaves)
    dout = upstream_gradient(out, rows)
    dq, dk, dv = torch.autograd.grad(out, leaves, dout)
    ref = reference(q, k, v, mask, scale, rows, dout[:, rows].cpu())
    got = {"out": out.detach().cpu(), "dq": dq.cpu(), "dk": dk.cpu(), "dv": dv.cpu()}
    return compare(got, ref, rows, dtype)
