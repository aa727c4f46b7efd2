"""The local-kernel interface: what a context-parallel strategy needs of a method's attention kernel.

A CP strategy cuts the sequence over ranks; each rank attends its local q rows to blocks of keys (its own,
received ones, gathered ones) and merges the partial results. The local kernel is the method chosen by
``Run.method`` (``Method.local_kernel``); a strategy gets it as ``ctx.kernel`` and uses exactly this:

* ``plan(spec)`` — once per (local q rows, key block, head range), OUTSIDE the timed region: whatever the
  kernel precomputes (tile lists, dense masks) for the :class:`PlanSpec` — rows at the GLOBAL positions
  ``q_pos`` against keys at ``k_pos``, q heads ``[h0, h1)`` of the problem's mask;
* ``forward(q, k, v, plan, scale) -> (out, lse)`` — the partial output ``[B, Sq, H, d]`` (q's dtype) and its
  log-sum-exp ``[B, H, Sq]`` (float32, ``-inf`` where a row has no allowed key), so that partial results merge
  exactly (:func:`merge_into`);
* ``backward(dout, q, k, v, out, lse, plan, scale) -> (dq, dk, dv)`` — given the GLOBAL (merged) ``out`` and
  ``lse``, the block's exact share of the gradients (the flash-attention backward identity), in the inputs'
  dtypes;
* ``area(plan)`` — the allowed (q, k, q-head) pairs one call computes for ONE batch element (what the
  per-rank area and its imbalance are made of).

Tensors are ``[batch, rows, heads, head_dim]``; k/v may have fewer heads than q (GQA: q head h uses kv head
``h // (Hq / Hkv)``). Nothing here imports a plugin package.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch

from harness.masks.core import Mask, RowIntervals

Plan = Any
"""A kernel's own precomputed work description (opaque to strategies)."""

HeadRange = tuple[int, int]
"""q heads ``[h0, h1)`` a plan covers (a rank's head slice after a head all-to-all, or all heads)."""


@dataclass(frozen=True)
class PlanSpec:
    """One local (q rows, key rows) problem a plan is built for; positions are global token indices."""

    mask: Mask
    q_pos: torch.Tensor  # int64 [Sq]: global positions of the local q rows, in row order
    k_pos: torch.Tensor  # int64 [Sk]: global positions of the key rows, in row order
    heads: HeadRange  # q heads [h0, h1) the tensors hold (k/v hold the matching kv heads)
    dtype: torch.dtype
    device: torch.device
    options: dict  # Run.options (e.g. a kernel's tile sizes)
    kv_group: int = 1  # q heads per kv head in the tensors (GQA; a kernel may stack them into taller products)

    @property
    def num_heads(self) -> int:
        return self.heads[1] - self.heads[0]

    @property
    def intervals(self) -> RowIntervals:
        """The mask's row intervals for the plan's q heads (one pattern when the mask is shared by all heads)."""
        return head_intervals(self.mask, self.heads)


@dataclass(frozen=True)
class LocalKernel:
    """A method's attention on arbitrary global positions, with log-sum-exp (see the module docstring)."""

    name: str  # what runs, as recorded in a run's ``kernel`` field, e.g. "blocksparse (aten CPU flash per tile)"
    plan: Callable[[PlanSpec], Plan]
    forward: Callable[[torch.Tensor, torch.Tensor, torch.Tensor, Plan, float], tuple[torch.Tensor, torch.Tensor]]
    backward: Callable[..., tuple[torch.Tensor, torch.Tensor, torch.Tensor]]
    area: Callable[[Plan], int]


def head_intervals(mask: Mask, heads: HeadRange) -> RowIntervals:
    """The mask's row intervals for q heads ``[h0, h1)`` (all of them when the mask is shared by all heads)."""
    iv = mask.intervals
    if iv.num_heads == 1:
        return iv
    h0, h1 = heads
    return RowIntervals(iv.lo[h0:h1], iv.hi[h0:h1], iv.step[h0:h1])


def merge_into(acc_out: torch.Tensor, acc_lse: torch.Tensor, out: torch.Tensor, lse: torch.Tensor) -> None:
    """Online-softmax merge of a partial result into float32 accumulators, in place.

    ``acc_out``/``out``: ``[B, S, H, d]``; ``acc_lse``/``lse``: ``[B, H, S]`` (-inf where a row has no key).
    """
    new = torch.logaddexp(acc_lse, lse)
    safe = new.masked_fill(torch.isneginf(new), 0.0)
    w_old = torch.exp(acc_lse - safe).transpose(1, 2).unsqueeze(-1)  # [B, S, H, 1]
    w_new = torch.exp(lse - safe).transpose(1, 2).unsqueeze(-1)
    acc_out.mul_(w_old).addcmul_(out, w_new)  # two passes over the output, no temporary
    acc_lse.copy_(new)


class _LocalAttention(torch.autograd.Function):
    """Differentiable ``kernel.forward`` (its backward is ``kernel.backward`` with the saved out/lse)."""

    @staticmethod
    def forward(fctx, q, k, v, kernel: LocalKernel, plan: Plan, scale: float):
        out, lse = kernel.forward(q, k, v, plan, scale)
        fctx.save_for_backward(q, k, v, out, lse)
        fctx.kernel, fctx.plan, fctx.scale = kernel, plan, scale
        return out

    @staticmethod
    def backward(fctx, dout):
        q, k, v, out, lse = fctx.saved_tensors
        dq, dk, dv = fctx.kernel.backward(dout.contiguous(), q, k, v, out, lse, fctx.plan, fctx.scale)
        return dq, dk, dv, None, None, None


def local_attention(
    kernel: LocalKernel, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, plan: Plan, scale: float
) -> torch.Tensor:
    """The complete attention of one (q rows, k rows) problem with a prepared plan, differentiable."""
    return _LocalAttention.apply(q, k, v, kernel, plan, scale)

