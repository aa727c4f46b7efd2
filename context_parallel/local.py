"""The local kernel as the strategies use it: ``ctx.kernel`` (``Run.method``'s LocalKernel) on global positions.

Plans are built in ``prepare`` (outside the timed region), one per (local q rows, key block) pair a rank
will meet; ``kernel.forward`` returns the block's log-sum-exp so partial outputs merge exactly
(:func:`merge_into`), and ``kernel.backward`` takes the GLOBAL out/lse, which gives each block's exact share
of dq, dk and dv. Which kernel runs is the method's business: nothing here knows one.
"""

from __future__ import annotations

from typing import Optional

import torch

from harness.interfaces.local_kernel import HeadRange, LocalKernel, Plan, PlanSpec, merge_into
from harness.interfaces.strategy import CPContext, CPProblem

__all__ = ["build_plan", "kernel_of", "local_kv_group", "merge_into", "plan_area"]


def kernel_of(ctx: CPContext) -> LocalKernel:
    """The context's local kernel; a strategy that needs one is only run for methods that have one."""
    if ctx.kernel is None:
        raise RuntimeError(f"local method {ctx.problem.run.method} has no local kernel (Method.local_kernel)")
    return ctx.kernel


def build_plan(ctx: CPContext, q_pos: torch.Tensor, k_pos: torch.Tensor,
               heads: Optional[HeadRange] = None) -> Plan:
    """The kernel's plan for local q rows ``q_pos`` x keys ``k_pos`` (global positions), q heads ``heads``
    (all when None)."""
    problem = ctx.problem
    heads = heads or (0, problem.heads_q)
    spec = PlanSpec(
        mask=problem.mask, q_pos=q_pos, k_pos=k_pos, heads=heads, dtype=problem.dtype, device=problem.device,
        options=problem.options, kv_group=local_kv_group(problem, heads),
    )
    return kernel_of(ctx).plan(spec)


def local_kv_group(problem: CPProblem, heads: HeadRange) -> int:
    """q heads per kv head in a rank's tensors of q heads ``heads``: the problem's GQA group, or all the rank's q
    heads when a head all-to-all left it fewer q heads than a group (their one kv head, repeated if need be)."""
    return min(problem.heads_q // problem.heads_kv, heads[1] - heads[0])


def plan_area(problem: CPProblem, kernel: LocalKernel, plan: Plan) -> int:
    """(q, k, head) pairs a plan computes per call, batch included."""
    return kernel.area(plan) * problem.batch
