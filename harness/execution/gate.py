"""The correctness gate: a method's output and gradients against float64, judged by the field's rule.

The rule is flash-attention's own (its tests), made to hold in the 16-bit dtypes. Per tensor (out, dq, dk, dv):

* max: a kernel's largest error against the float64 reference is at most ``FACTOR`` (2 for out, 3 for
  gradients) times the largest error of the method's ``reference`` evaluated eagerly *in* the run's dtype
  (``compute_dtype``), plus an absolute floor: one ulp of the tensor's largest value in that dtype
  (:func:`~harness.interfaces.reference.ulp_floor`, what storing the result costs; flash-attention's tests add
  about that as ``atol``), and never less than a tiny share of the reference's magnitude (the floor of an
  exactly zero gradient). It catches a local error (a wrong row, tile or document) and names its place.
* RMS: the root-mean-square error is at most ``RMS_FACTOR`` (4) times that of the *sound yardstick*, plus only
  the tiny share — no ulp floor. The yardstick is the same ``reference`` computed from the run's inputs in
  :func:`~harness.interfaces.reference.yardstick_dtype` (float32 for the 16-bit dtypes: chunked, float32
  accumulation, as real kernels are), its results rounded to the run's dtype; in float32 and float64 it is the
  eager pass itself. (The eager bfloat16 pass is up to 10x less accurate than that — a TTT layer's inner loop,
  softmax scores rounded before the exponent — so a multiple of it admitted 1% errors; and a 1% error is about
  one bf16 ulp, within the max rule's floor, but 6x the RMS of bf16 rounding.)
* bias: an error whose component along the reference (a relative scale bias) lies more than ``BIAS_Z``
  standard errors from zero, and whose RMS exceeds the yardstick's whole RMS error, is systematic: rounding
  noise is unbiased, a scaled output or a decay that is off is not (a 1% decay error moves bf16 outputs by
  about 3x the rounding, within the RMS rule's 4x).

So the allowance follows the dtype and the problem by itself: no hand-tuned tolerance per dtype, no division
by a near-zero reference (an exactly zero gradient — a mask where each query sees only itself — has yardstick
errors of ~0 and is judged against the floor). A failing max rule is reported before the others.

Checked rows (:func:`~harness.interfaces.reference.gate_rows`) are every row where that is affordable, else a
fresh draw per run (seeded by the run's key) with at least one row in every ``ROW_TILE``-row query tile and every
document of the mask. The upstream gradient is zero outside the checked rows, so dk and dv are still exact for
the whole problem and dq must be exactly zero elsewhere. A run that fails is stored as ``invalid`` with a
reason naming the tensor, the row (max rule) and the ratio: its timing is never reported as a valid benchmark
number.
"""

from __future__ import annotations

import inspect
import math
from dataclasses import dataclass, field
from typing import Callable, Optional

import torch

from harness.masks.core import Mask
from harness.interfaces.reference import (  # noqa: F401 — the row selection is re-exported for the gate's callers
    EXTRA_ROWS, FULL_CHECK_SEQLEN, FULL_CHECK_WORK, FULL_CHECK_WORK_OTHER, GRADIENT_FACTOR, OUTPUT_FACTOR,
    RMS_FACTOR, ROW_TILE, full_check_affordable, gate_rows, reference_outputs, run_seed, ulp_floor,
    yardstick_dtype,
)

# A kernel may be this many times less accurate than the same-dtype yardstick (max error): flash-attention's
# tests allow 2x on the output and 3x on the gradients (accumulated over many tiles, in any kernel's order).
FACTOR = {"out": OUTPUT_FACTOR, "dq": GRADIENT_FACTOR, "dk": GRADIENT_FACTOR, "dv": GRADIENT_FACTOR}
# Absolute floor: one ulp of the tensor's largest value, and at least FLOOR_REL (at most 100 ulp of the dtype) x (the
# tensor's largest reference magnitude plus FLOOR_SHARE x the problem's, for tensors whose exact value is zero).
FLOOR_REL = 1e-5
FLOOR_SHARE = 0.1
# The bias rule: an error whose component along the reference (a relative scale bias) lies more than BIAS_Z
# standard errors from zero — rounding noise is unbiased, so its component is ~1/sqrt(elements) of its RMS — and
# whose RMS exceeds the sound yardstick's whole RMS error is systematic (a scaled output, a decay that is off).
BIAS_Z = 8.0
# Used only by callers that compare without an eager baseline (``compare(..., eager=None)``): normalised error.
TOLERANCE = {"float64": 1e-9, "float32": 5e-4, "float16": 1e-2, "bfloat16": 5e-2}
TENSORS = ("out", "dq", "dk", "dv")


@dataclass
class GateResult:
    """The verdict on one run. ``errors`` are normalised (max error / the tensor's reference magnitude, floored
    by a share of the problem's); ``ratios`` are max error / the eager same-dtype max error (``eager_errors``);
    ``limits`` the absolute limit each tensor's max error was held to; ``rms_ratios``, ``rms_limits`` and
    ``eager_rms_errors`` the same for the RMS error against the sound yardstick's; ``biases`` each error's
    relative scale bias (its component along the reference); ``tolerance`` the largest allowed max ratio."""

    ok: bool
    max_abs_err: float  # of the output, absolute
    errors: dict[str, float] = field(default_factory=dict)
    tolerance: float = 0.0
    ratios: dict[str, float] = field(default_factory=dict)
    limits: dict[str, float] = field(default_factory=dict)
    eager_errors: dict[str, float] = field(default_factory=dict)
    rms_ratios: dict[str, float] = field(default_factory=dict)
    rms_limits: dict[str, float] = field(default_factory=dict)
    eager_rms_errors: dict[str, float] = field(default_factory=dict)
    biases: dict[str, float] = field(default_factory=dict)
    checked_rows: int = 0
    failure: Optional[str] = None  # the one-line reason of a failure

    @property
    def reason(self) -> Optional[str]:
        if self.ok:
            return None
        return self.failure or "failed correctness gate"


def dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def floor_rel(dtype: str) -> float:
    """``FLOOR_REL``, or 100 ulp of a dtype finer than that (float64)."""
    return min(FLOOR_REL, 100 * torch.finfo(getattr(torch, dtype)).eps)


def upstream_gradient(out: torch.Tensor, rows: torch.Tensor, seed: int = 1) -> torch.Tensor:
    """A random upstream gradient that is zero outside the checked rows."""
    g = torch.Generator().manual_seed(seed)
    dout = torch.zeros(out.shape, dtype=out.dtype)
    dout[:, rows] = torch.randn(dout[:, rows].shape, generator=g).to(out.dtype)
    return dout.to(out.device)


def _where(name: str, index: tuple[int, ...], rows: Optional[torch.Tensor], q_offset: int) -> str:
    """Human words for an element ``[b, row, head, dim]`` of a tensor (out holds only the checked rows)."""
    b, r, h = index[0], index[1], index[2]
    if name == "out" and rows is not None:
        r = int(rows[r])
    what = "key" if name in ("dk", "dv") else "row"
    if name not in ("dk", "dv") and q_offset:
        return f"row {r} (position {r + q_offset}), head {h}" + (f", batch {b}" if b else "")
    return f"{what} {r}, head {h}" + (f", batch {b}" if b else "")


def _max_error(x: torch.Tensor, ref: torch.Tensor) -> tuple[float, tuple[int, ...]]:
    diff = (x.double() - ref.double()).abs()
    flat = int(diff.argmax()) if diff.numel() else 0
    index = tuple(int(i) for i in torch.unravel_index(torch.tensor(flat), diff.shape)) if diff.numel() else (0,) * 4
    return (float(diff.max()) if diff.numel() else 0.0), index


def _rms_error(x: torch.Tensor, ref: torch.Tensor) -> float:
    return float((x.double() - ref.double()).pow(2).mean().sqrt()) if x.numel() else 0.0


def _ratio(err: float, base: float) -> float:
    return err / base if base > 0 else (0.0 if err == 0 else math.inf)


def _amax(t: torch.Tensor) -> float:
    return float(t.double().abs().max()) if t.numel() else 0.0


def compare(
    got: dict[str, torch.Tensor], ref: dict[str, torch.Tensor], rows: torch.Tensor, dtype: str,
    eager: Optional[dict[str, torch.Tensor]] = None, q_offset: int = 0,
    sound: Optional[dict[str, torch.Tensor]] = None, sound_name: Optional[str] = None,
) -> GateResult:
    """Judge ``got`` against the float64 ``ref`` by the field's rule (module docstring).

    ``got['out']`` is the full output, ``ref['out']``, ``eager['out']`` and ``sound['out']`` hold only ``rows``;
    gradients are full tensors. ``eager`` is the eager pass in the run's dtype (the max rule's yardstick),
    ``sound`` the sound same-dtype yardstick of the RMS and bias rules (named ``sound_name`` in a reason; by
    default ``eager``, which it is in float32 and float64). Without ``eager`` (legacy callers) each tensor's max
    error is held to ``TOLERANCE[dtype]`` of its reference magnitude instead, and nothing else."""
    got = {n: t.detach().cpu() for n, t in got.items()}
    ref = {n: t.detach().cpu() for n, t in ref.items()}
    eager = None if eager is None else {n: t.detach().cpu() for n, t in eager.items()}
    sound = eager if sound is None else {n: t.detach().cpu() for n, t in sound.items()}
    sound_name = sound_name or f"eager {dtype}"
    rows = rows.cpu()
    view = {n: (got[n][:, rows] if n == "out" else got[n]) for n in ref if n in TENSORS}
    for name, t in view.items():
        bad = ~torch.isfinite(t)
        if bad.any():
            index = tuple(int(i) for i in bad.nonzero()[0])
            where = _where(name, index, rows if name == "out" else None, q_offset)
            return GateResult(ok=False, max_abs_err=math.inf, tolerance=max(FACTOR.values()), checked_rows=len(rows),
                              failure=f"failed correctness gate: {name} is not finite at {where}")
    magnitude = max(_amax(t) for n, t in ref.items() if n in view)
    rel = floor_rel(dtype)
    result = GateResult(ok=True, max_abs_err=0.0, tolerance=max(FACTOR.values()), checked_rows=len(rows))
    failures: list[tuple[float, str]] = []  # the max rule's (excess over its limit, reason)
    statistical: list[tuple[float, str]] = []  # the RMS and bias rules'
    for name, x in view.items():
        err, index = _max_error(x, ref[name])
        scale = _amax(ref[name]) + FLOOR_SHARE * magnitude
        result.errors[name] = err / scale if scale > 0 else err
        if name == "out":
            result.max_abs_err = err
        if eager is None:
            base, limit = math.nan, TOLERANCE[dtype] * scale
        else:
            base, _ = _max_error(eager[name], ref[name])
            limit = FACTOR[name] * base + max(rel * scale, ulp_floor(ref[name], getattr(torch, dtype)))
            result.eager_errors[name], result.ratios[name] = base, _ratio(err, base)
            statistical += _statistical_failures(result, name, x, ref[name], sound[name], rel * scale, sound_name)
        result.limits[name] = limit
        failures.append((_ratio(err, limit),
                         _reason(name, err, _where(name, index, rows, q_offset), base, limit, dtype)))
    excess, reason = max(failures, key=lambda f: f[0])
    if excess <= 1 and statistical:  # a failure of the max rule is reported first: it names the place
        excess, reason = max(statistical, key=lambda f: f[0])
    if excess > 1:
        result.ok, result.failure = False, reason
    return result


def _statistical_failures(result: GateResult, name: str, x: torch.Tensor, ref: torch.Tensor,
                          sound: torch.Tensor, floor: float, sound_name: str) -> list[tuple[float, str]]:
    """The RMS and the bias rules on one tensor (module docstring), as (excess over the limit, reason); fills
    ``result``'s RMS and bias fields."""
    e, r = x.double() - ref.double(), ref.double()
    n = max(1, e.numel())
    rms = float(e.pow(2).mean().sqrt()) if e.numel() else 0.0
    rms_base = _rms_error(sound, ref)
    rms_limit = RMS_FACTOR * rms_base + floor
    result.eager_rms_errors[name], result.rms_ratios[name] = rms_base, _ratio(rms, rms_base)
    result.rms_limits[name] = rms_limit
    out = [(_ratio(rms, rms_limit), _rms_reason(name, rms, rms_base, rms_limit, sound_name))]
    norm2 = float(r.pow(2).sum())
    if norm2 > 0 and rms > 0:
        bias = float((e * r).sum()) / norm2  # the relative scale bias: the error's component along the reference
        z = abs(bias) / (rms / math.sqrt(norm2))  # in standard errors of that component under unbiased noise
        systematic = abs(bias) * math.sqrt(norm2 / n)  # the RMS of that component
        result.biases[name] = bias
        if z > BIAS_Z:
            out.append((_ratio(systematic, rms_base + floor),
                        _bias_reason(name, bias, z, systematic, rms_base, sound_name)))
    return out


def _reason(name: str, err: float, where: str, base: float, limit: float, dtype: str) -> str:
    head = f"failed correctness gate: {name} error {err:.1e} at {where}"
    if math.isnan(base):
        return f"{head} exceeds the fixed {dtype} limit {limit:.1e}"
    if base > 0:
        return (f"{head} is {err / base:.3g}x the eager {dtype} error {base:.1e} "
                f"(limit {FACTOR[name]:g}x + floor = {limit:.1e})")
    return f"{head} exceeds the floor {limit:.1e} (the eager {dtype} error is 0)"


def _rms_reason(name: str, rms: float, base: float, limit: float, yardstick: str) -> str:
    head = f"failed correctness gate: {name} error {rms:.1e} RMS (over the checked elements)"
    if base > 0:
        return (f"{head} is {rms / base:.3g}x the {yardstick} RMS error {base:.1e} (limit {RMS_FACTOR:g}x, "
                f"no rounding floor)")
    return f"{head} exceeds the floor {limit:.1e} (the {yardstick} RMS error is 0)"


def _bias_reason(name: str, bias: float, z: float, systematic: float, base: float, yardstick: str) -> str:
    return (f"failed correctness gate: {name} error is systematic: {bias:+.2%} of the reference along it "
            f"({z:.0f} standard errors from unbiased rounding), RMS {systematic:.1e}, more than the {yardstick} "
            f"RMS error {base:.1e}")


def _takes_compute_dtype(reference: Callable) -> bool:
    try:
        params = inspect.signature(reference).parameters.values()
    except (TypeError, ValueError):
        return False
    return any(p.name == "compute_dtype" or p.kind is p.VAR_KEYWORD for p in params)


def reference_options(reference: Callable, options: Optional[dict]) -> dict:
    """``{"options": options}`` for a reference that takes the run's options (a linear method's decay
    schedule is one), else nothing: the keyword arguments to add to its calls."""
    if options is None:
        return {}
    try:
        params = inspect.signature(reference).parameters.values()
    except (TypeError, ValueError):
        return {}
    return {"options": options} if any(p.name == "options" for p in params) else {}


def yardstick_name(dtype: torch.dtype) -> str:
    """How a failure's reason names the yardstick of ``dtype`` (see :func:`yardstick`)."""
    acc = yardstick_dtype(dtype)
    return f"eager {dtype_name(dtype)}" if acc == dtype else f"{dtype_name(acc)}-accumulated {dtype_name(dtype)}"


def yardstick(reference: Callable[..., dict[str, torch.Tensor]], q: torch.Tensor, k: torch.Tensor,
              v: torch.Tensor, *args, **kwargs) -> dict[str, torch.Tensor]:
    """The same-dtype yardstick: ``reference(q, k, v, *args, **kwargs)`` computed in
    :func:`~harness.interfaces.reference.yardstick_dtype` of q's dtype from the run's inputs, each result
    rounded to q's dtype (module docstring)."""
    computed = reference(q, k, v, *args, compute_dtype=yardstick_dtype(q.dtype), **kwargs)
    return {name: t.to(q.dtype) for name, t in computed.items()}


def check_outputs(
    got: dict[str, torch.Tensor], q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: Mask, scale: float,
    rows: torch.Tensor, dout: Optional[torch.Tensor],
    reference: Callable[..., dict[str, torch.Tensor]] = reference_outputs, q_offset: int = 0,
    options: Optional[dict] = None,
) -> GateResult:
    """Judge outputs already computed (e.g. gathered from the ranks of a context-parallel run): ``got`` holds
    the full ``out`` (and ``dq``/``dk``/``dv`` for the upstream gradient ``dout``, zero outside ``rows``).
    Evaluates ``reference`` in float64, eagerly in q's dtype and as the sound :func:`yardstick`, then
    :func:`compare`.
    ``options`` (the run's) go to a reference that takes them (:func:`reference_options`)."""
    dout_rows = None if dout is None else dout[:, rows.to(dout.device)]
    extra = reference_options(reference, options)
    ref = reference(q, k, v, mask, scale, rows, dout_rows, q_offset=q_offset, **extra)
    eager = sound = None
    if _takes_compute_dtype(reference):
        eager = reference(q, k, v, mask, scale, rows, dout_rows, q_offset=q_offset, compute_dtype=q.dtype,
                          **extra)
        if yardstick_dtype(q.dtype) != q.dtype:
            sound = yardstick(reference, q, k, v, mask, scale, rows, dout_rows, q_offset=q_offset, **extra)
    return compare(got, ref, rows, dtype_name(q.dtype), eager=eager, q_offset=q_offset, sound=sound,
                   sound_name=yardstick_name(q.dtype))


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
    *,
    seed: int = 0,
    rows: Optional[torch.Tensor] = None,
    options: Optional[dict] = None,
) -> GateResult:
    """Run ``fn`` once on (q, k, v) and judge it (module docstring). ``seed`` draws the checked rows and the
    upstream gradient (pass :func:`run_seed` of the run's key); ``rows`` overrides :func:`gate_rows`;
    ``options`` (the run's) reach a reference that takes them."""
    if rows is None:
        rows = gate_rows(q.shape[1], mask, seed, q_offset, batch=q.shape[0], heads_q=q.shape[2],
                         head_dim=q.shape[3], device=q.device.type)
    if not with_grad:
        with torch.no_grad():
            out = fn(q, k, v)
        return check_outputs({"out": out}, q, k, v, mask, scale, rows, None, reference, q_offset, options)
    leaves = [t.detach().requires_grad_(True) for t in (q, k, v)]
    out = fn(*leaves)
    dout = upstream_gradient(out, rows, seed=seed + 1)
    dq, dk, dv = torch.autograd.grad(out, leaves, dout)
    got = {"out": out.detach(), "dq": dq, "dk": dk, "dv": dv}
    return check_outputs(got, q, k, v, mask, scale, rows, dout, reference, q_offset, options)
