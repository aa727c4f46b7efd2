"""Eager attention with materialised scores: the readable reference implementation, any mask.

The mask is evaluated at the global positions of q's rows (every row for fwd/bwd, the last
``problem.decode_tokens`` rows for a decode step), so the same code runs both directions.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch

from harness.masks.core import ALL_FEATURES
from harness.interfaces import LocalKernel, Method, Problem
from harness.interfaces.local_kernel import PlanSpec
from harness.interfaces.method import dense_matmul_flops

MAX_SCORE_BYTES = 4 << 30


def build(problem: Problem):
    allowed = problem.mask.dense(q_pos=problem.q_positions).to(problem.device)  # [Hm, rows, S]
    group = problem.heads_q // problem.heads_kv
    scale = problem.scale

    def naive(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        q, k, v = (x.transpose(1, 2) for x in (q, k, v))  # [B, H, S, d]
        k = k.repeat_interleave(group, dim=1)
        v = v.repeat_interleave(group, dim=1)
        scores = (q @ k.transpose(-1, -2)).to(torch.promote_types(q.dtype, torch.float32)) * scale  # half -> fp32
        scores = scores.masked_fill(~allowed, float("-inf"))
        probs = torch.softmax(scores, dim=-1).nan_to_num(0.0).to(q.dtype)
        return (probs @ v).transpose(1, 2)

    return naive


def limits(problem: Problem) -> Optional[str]:
    need = problem.batch * problem.heads_q * problem.q_rows * problem.seqlen * 4 * 3  # scores, probs, grad
    if need > MAX_SCORE_BYTES:
        return f"materialised scores need {need / 2**30:.1f} GiB (limit {MAX_SCORE_BYTES / 2**30:.0f} GiB)"
    return None


# ----- the local kernel of the context-parallel strategies ------------------------------------------------
# The same eager computation on a (local q rows, key block) pair at global positions, returning the
# log-sum-exp; the backward is written out (the flash identity with the GLOBAL out/lse), so a block's
# gradients are its exact share.

@dataclass
class DensePlan:
    """The dense boolean mask of one CP block and the (q, k, q-head) pairs it allows per batch element."""

    allowed: torch.Tensor  # [Hm, Sq, Sk] (Hm = 1 for a shared mask, else the plan's heads), on the run's device
    pairs: int


def local_plan(spec: PlanSpec) -> DensePlan:
    allowed = spec.intervals.evaluate(spec.q_pos, spec.k_pos)
    pairs = int(allowed.sum()) * (spec.num_heads if allowed.shape[0] == 1 else 1)
    return DensePlan(allowed.to(spec.device), pairs)


def _accumulation_dtype(x: torch.Tensor) -> torch.dtype:
    return torch.float64 if x.dtype == torch.float64 else torch.float32


def _heads_first(x: torch.Tensor, dtype: torch.dtype, repeat: int = 1) -> torch.Tensor:
    """[B, S, H, d] -> [B, H * repeat, S, d] in ``dtype`` (kv heads repeated for GQA)."""
    x = x.transpose(1, 2).to(dtype)
    return x.repeat_interleave(repeat, dim=1) if repeat > 1 else x


def _masked_scores(qh: torch.Tensor, kh: torch.Tensor, plan: DensePlan, scale: float) -> torch.Tensor:
    return (qh @ kh.transpose(-1, -2) * scale).masked_fill(~plan.allowed, float("-inf"))


def local_forward(q, k, v, plan: DensePlan, scale: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Output [B, Sq, Hq, d] (q's dtype) and log-sum-exp [B, Hq, Sq] (float32, -inf for rows with no key)."""
    acc, group = _accumulation_dtype(q), q.shape[2] // k.shape[2]
    scores = _masked_scores(_heads_first(q, acc), _heads_first(k, acc, group), plan, scale)
    lse = torch.logsumexp(scores, dim=-1)  # -inf where a row has no allowed key
    probs = torch.exp(scores - lse.masked_fill(torch.isneginf(lse), 0.0).unsqueeze(-1))
    out = probs @ _heads_first(v, acc, group)
    return out.transpose(1, 2).to(q.dtype), lse.float()


def local_backward(dout, q, k, v, out, lse, plan: DensePlan, scale: float):
    """The block's share of dq, dk, dv given the GLOBAL out and lse: P = exp(S - lse), dS = P (dP - rowsum(dO*O)),
    dq = dS k scale, dk = dS^T q scale, dv = P^T dO (summed over each GQA group's q heads)."""
    acc, group = _accumulation_dtype(q), q.shape[2] // k.shape[2]
    qh, kh, vh = _heads_first(q, acc), _heads_first(k, acc, group), _heads_first(v, acc, group)
    doh, oh = _heads_first(dout, acc), _heads_first(out, acc)
    lse = lse.to(acc).masked_fill(torch.isneginf(lse), float("inf"))  # rows with no key anywhere: P = 0
    probs = torch.exp(_masked_scores(qh, kh, plan, scale) - lse.unsqueeze(-1))
    dscores = probs * (doh @ vh.transpose(-1, -2) - (doh * oh).sum(-1, keepdim=True))
    dq = dscores @ kh * scale
    dk = dscores.transpose(-1, -2) @ qh * scale
    dv = probs.transpose(-1, -2) @ doh

    def kv_heads(x: torch.Tensor) -> torch.Tensor:  # sum the q heads of each GQA group: [B, Hkv, Sk, d]
        b, h, s, d = x.shape
        return x.view(b, h // group, group, s, d).sum(2)

    return dq.transpose(1, 2).to(q.dtype), kv_heads(dk).transpose(1, 2).to(k.dtype), \
        kv_heads(dv).transpose(1, 2).to(v.dtype)


LOCAL_KERNEL = LocalKernel(
    name="naive (eager masked softmax, materialised scores per block)",
    plan=local_plan,
    forward=local_forward,
    backward=local_backward,
    area=lambda plan: plan.pairs,
)


def executed_flops(problem: Problem, part: str, kv_grad: bool) -> float:
    """What naive executes: the whole (rows x keys) score rectangle, masked or not — forward QK^T and PV;
    autograd's backward dP = dO V^T and dQ = dS K, plus dV = P^T dO and dK = dS^T Q only when K and V need a
    gradient (a frozen cache skips them)."""
    matmuls = 2 if part == "fwd" else (4 if kv_grad else 2)
    return matmuls * dense_matmul_flops(problem)


METHOD = Method(
    name="naive",
    summary="eager PyTorch, materialised S x S scores; the readable reference",
    build=build,
    mask_features=ALL_FEATURES,
    decode=True,
    limits=limits,
    local_kernel=LOCAL_KERNEL,
    executed_flops=executed_flops,
)
