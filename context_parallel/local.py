"""The local kernel as the strategies use it: blocksparse tile plans on global positions, areas, LSE merges.

Plans are built in ``prepare`` (outside the timed region), one per (local q rows, key block) pair a rank
will meet; ``blocksparse_forward`` returns the block's log-sum-exp so partial outputs merge exactly, and
``blocksparse_backward`` takes the GLOBAL out/lse, which gives each block's exact share of dq, dk and dv.
"""

from __future__ import annotations

from typing import Optional

import torch

from harness.interfaces.strategy import CPProblem
from harness.masks.core import RowIntervals
from methods.blocksparse import TilePlan, make_plan


def head_intervals(problem: CPProblem, heads: Optional[tuple[int, int]]) -> RowIntervals:
    """The mask's intervals for q heads ``[h0, h1)`` (all heads when None or when the mask is shared)."""
    iv = problem.mask.intervals
    if heads is None or iv.num_heads == 1:
        return iv
    h0, h1 = heads
    return RowIntervals(iv.lo[h0:h1], iv.hi[h0:h1], iv.step[h0:h1])


def build_plan(problem: CPProblem, q_pos: torch.Tensor, k_pos: torch.Tensor,
               heads: Optional[tuple[int, int]] = None) -> TilePlan:
    opts = problem.options
    return make_plan(
        head_intervals(problem, heads), q_pos, k_pos, problem.dtype,
        block_q=int(opts.get("block_q", 256)), block_k=int(opts.get("block_k", 256)),
    )


def plan_area(problem: CPProblem, plan: TilePlan, local_heads_q: int) -> int:
    """(q, k, head) pairs a plan computes per call, batch included (plan.area sums over mask head patterns)."""
    shared = problem.mask.intervals.num_heads == 1  # else plan.area already sums the local heads' patterns
    return plan.area * (local_heads_q if shared else 1) * problem.batch


def merge_into(acc_out: torch.Tensor, acc_lse: torch.Tensor, out: torch.Tensor, lse: torch.Tensor) -> None:
    """Online-softmax merge of a partial result into float32 accumulators, in place.

    ``acc_out``/``out``: ``[B, S, H, d]``; ``acc_lse``/``lse``: ``[B, H, S]`` (-inf where a row has no key).
    """
    new = torch.logaddexp(acc_lse, lse)
    safe = new.masked_fill(torch.isneginf(new), 0.0)
    w_old = torch.exp(acc_lse - safe).transpose(1, 2).unsqueeze(-1)  # [B, S, H, 1]
    w_new = torch.exp(lse - safe).transpose(1, 2).unsqueeze(-1)
    acc_out.mul_(w_old).add_(out.float() * w_new)
    acc_lse.copy_(new)
