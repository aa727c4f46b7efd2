"""TTT-Linear (arXiv 2407.04620; REFERENCE.md section 5) as a registered non-softmax attention method.

``ttt_linear``: the mini-batch dual form (b = 16) of :mod:`methods._ttt_linear` — per q head an inner linear
model of the head's dimension, trained on the tokens as they stream by; output ``x_q + LN(Zbar)``. Causal by
construction (the plain causal mask only). The inner model starts at seeded weights (option ``seed``) and
learns with rate ``eta`` (option; 0 means ttt-lm-pytorch's ``base_lr 1 x sigmoid(0) / f = 0.5 / f``).
Its reference is the sequential primal form in float64 (explicit per-token weights), forward and backward.

``ttt_linear_fla``: fla-core's ``chunk_ttt_linear_ref`` (pure torch, float32) as the peer, behind a probe.
fla's conventions differ (q scaled by ``1/sqrt(f)``, output ``Zbar + LN(Zbar)``), so its reference is our
primal form with those conventions — which also cross-checks fla against our definition.
"""

from __future__ import annotations

from typing import Optional

import torch

from harness.interfaces import AttentionFn, Method, Problem
from harness.masks.core import CAUSAL, Mask
from methods import _ttt_linear as ttt

OPTIONS = {"eta": 0.0, "seed": 0, "mini_batch": ttt.MINI_BATCH}
FLA_HOME = "https://github.com/fla-org/flash-linear-attention"


def causal_only(problem: Problem) -> Optional[str]:
    """TTT layers are causal sequence models: the plain causal mask only."""
    if not problem.mask.is_plain_causal:
        return f"mask {problem.mask.name}: ttt_linear runs the plain causal mask only"
    return None


def _option(options: Optional[dict], name: str):
    value = (options or {}).get(name, OPTIONS[name])
    return type(OPTIONS[name])(value)


def eta_of(dim: int, options: Optional[dict]) -> float:
    eta = _option(options, "eta")
    return eta if eta > 0 else 0.5 / dim


def _w0(heads: int, dim: int, options: Optional[dict], device: torch.device) -> torch.Tensor:
    return ttt.initial_weights(heads, dim, _option(options, "seed"), torch.float64, device)


def build(problem: Problem) -> AttentionFn:
    w0 = _w0(problem.heads_q, problem.head_dim, problem.options, problem.device)
    eta, mb = eta_of(problem.head_dim, problem.options), _option(problem.options, "mini_batch")

    def ttt_linear(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return ttt.dual(q, k, v, w0, eta, mb)

    return ttt_linear


def flops(problem: Problem, direction: str) -> float:
    """Matmul FLOPs of the dual form: ``(6 f^2 + 4 b f)`` per padded token, q head and batch element forward;
    backward 2x (autograd), fwd+bwd 3x."""
    fwd = problem.batch * problem.heads_q * ttt.forward_flops(
        problem.seqlen, problem.head_dim, _option(problem.options, "mini_batch"))
    return fwd * {"fwd": 1.0, "bwd": ttt.BACKWARD_FACTOR, "fwd+bwd": 1.0 + ttt.BACKWARD_FACTOR}[direction]


def make_reference(q_scale_of, residual: str):
    """A ``Method.reference`` (signature of ``harness.interfaces.reference.reference_outputs``): the primal form
    in ``compute_dtype`` over the whole sequence (it is sequential), out on ``rows`` and, given the upstream
    gradient of those rows, full dq/dk/dv by autograd."""

    def reference(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: Mask, scale: float,
                  rows: torch.Tensor, dout_rows: Optional[torch.Tensor], q_offset: int = 0,
                  compute_dtype: torch.dtype = torch.float64, options: Optional[dict] = None,
                  **_: object) -> dict[str, torch.Tensor]:
        if not mask.is_plain_causal or q_offset:
            raise ValueError(f"ttt_linear has a reference for the causal mask over all rows only ({mask.name})")
        dim = q.shape[-1]
        want = dout_rows is not None
        leaves = [t.detach().to(compute_dtype).requires_grad_(want) for t in (q, k, v)]
        rows = rows.to(q.device)
        with torch.set_grad_enabled(want):
            out = ttt.primal(*leaves, _w0(q.shape[2], dim, options, q.device), eta_of(dim, options),
                             _option(options, "mini_batch"), q_scale_of(dim), residual, compute_dtype)[:, rows]
        refs = {"out": out.detach()}
        if want:
            grads = torch.autograd.grad(out, leaves, dout_rows.to(device=q.device, dtype=compute_dtype))
            refs.update(dict(zip(("dq", "dk", "dv"), grads)))
        return refs

    return reference


# ----- fla-core's pure-torch reference as the peer ----------------------------------------------------------

def fla_probe() -> Optional[str]:
    try:
        from fla.ops.ttt.naive import chunk_ttt_linear_ref  # noqa: F401
    except Exception as e:  # ImportError, or a broken install
        return f"fla-core not importable ({type(e).__name__}: {e}); pip install fla-core"
    return None


def fla_build(problem: Problem) -> AttentionFn:
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "Triton is not supported on current platform, roll back to CPU"
        from fla.ops.ttt.naive import chunk_ttt_linear_ref
    heads, dim = problem.heads_q, problem.head_dim
    w0 = _w0(heads, dim, problem.options, problem.device).float()
    eta, mb = eta_of(dim, problem.options), _option(problem.options, "mini_batch")
    group = problem.heads_q // problem.heads_kv
    ln_w = torch.ones(heads, dim, device=problem.device)
    ln_b = torch.zeros(heads, dim, device=problem.device)

    def ttt_linear_fla(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        if group > 1:
            k, v = (t.repeat_interleave(group, dim=2) for t in (k, v))
        state = w0.unsqueeze(0).expand(q.shape[0], heads, dim, dim).contiguous()
        # fla scales q in place after a no-op float32 cast: hand it a copy
        out, _, _ = chunk_ttt_linear_ref(q.clone(), k, v, ln_w, ln_b, eta, scale=dim**-0.5, eps=ttt.EPS,
                                         mini_batch_size=mb, initial_state=state)
        return out.to(q.dtype)

    return ttt_linear_fla


METHOD = Method(
    name="ttt_linear",
    summary="TTT-Linear: per-head linear inner model trained on the stream, mini-batch dual form (b=16), torch",
    build=build,
    mask_features=frozenset({CAUSAL}),
    dtypes=frozenset({"float32", "bfloat16", "float64"}),
    limits=causal_only,
    flops=flops,
    reference=make_reference(lambda dim: 1.0, ttt.QUERY),
    flop_convention="ttt_linear: dual-form matmuls (6f^2+4bf) per padded token x q head x batch fwd, bwd 2x, "
                    "fwd+bwd 3x",
    options=dict(OPTIONS),
    homepage="https://github.com/test-time-training/ttt-lm-pytorch",
)

FLA_PEER = Method(
    name="ttt_linear_fla",
    summary="fla-core chunk_ttt_linear_ref (pure torch, float32; fla conventions: q/sqrt(f), Zbar+LN(Zbar))",
    build=fla_build,
    mask_features=frozenset({CAUSAL}),
    dtypes=frozenset({"float32"}),
    limits=causal_only,
    probe=fla_probe,
    flops=flops,
    reference=make_reference(lambda dim: dim**-0.5, ttt.INNER),
    flop_convention=METHOD.flop_convention,
    options=dict(OPTIONS),
    homepage=FLA_HOME,
)

METHODS = [METHOD, FLA_PEER]
