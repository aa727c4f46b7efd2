"""LASP-2 (arXiv 2502.07563): linear-attention context parallelism with one all-gather of d x d states.

Rank r holds the contiguous rows ``[t_r, t_r + C_r)``. Forward: it computes the decayed state of its chunk
``m_r = sum_p exp(-s (C_r - 1 - p)) k_p^T v_p`` (``kernel.state``, float32 for 16-bit runs), ONE all-gather
of the W states, then combines the state entering its chunk locally,
``KV_r = sum_{j<r} exp(-s (C_{j+1} + ... + C_{r-1})) m_j``, and runs its chunk with that incoming state
(``kernel.attend``: intra-chunk causal part + ``exp(-s (p + 1)) q_p KV_r``). Backward: the gradient of the
incoming state ``g_r = sum_p exp(-s (p + 1)) q_p^T do_p`` (autograd through ``attend``), ONE all-gather, and
the suffix combine ``dm_r = sum_{t>r} exp(-s (C_{r+1} + ... + C_{t-1})) g_t``. Bytes per rank per direction:
``(W - 1) x B x Hq x d x d x 4`` — independent of the sequence length. The decay chain stays in the state
dtype (float32, float64 for float64 runs). LASP-2's paper has no decay; with one this is the combine of
LASP-1 and fla's CP merge (../shared/design/REFERENCE.md section 4).
"""

from __future__ import annotations

import torch

import numpy as np

from context_parallel.linear_local import LinearPlan, linear_schedule, linear_strategy, one_state_bytes
from harness.interfaces.schedule import ALL_GATHER, Transfer
from context_parallel.volumes import directions
from harness.interfaces.strategy import CPContext, CPProblem


def prefix_combine(plan: LinearPlan, states: list[torch.Tensor]) -> torch.Tensor:
    """``KV_r = sum_{j<r} exp(-s (C_{j+1} + ... + C_{r-1})) m_j`` (the state entering this rank's chunk)."""
    kv = torch.zeros_like(states[0])
    for j in range(plan.rank):
        kv = plan.decay(j) * kv + states[j]
    return kv


def suffix_combine(plan: LinearPlan, grads: list[torch.Tensor]) -> torch.Tensor:
    """``dm_r = sum_{t>r} exp(-s (C_{r+1} + ... + C_{t-1})) g_t`` (the gradient of this rank's chunk state)."""
    dm = torch.zeros_like(grads[0])
    for t in reversed(range(plan.rank + 1, len(grads))):
        dm = plan.decay(t) * dm + grads[t]
    return dm


class GatherStates(torch.autograd.Function):
    """``m_r -> KV_r``: one all-gather of the chunk states forward, one of the state gradients backward."""

    @staticmethod
    def forward(fctx, m: torch.Tensor, plan: LinearPlan) -> torch.Tensor:
        fctx.plan = plan
        return prefix_combine(plan, plan.comm.all_gather(m))

    @staticmethod
    def backward(fctx, grad: torch.Tensor):
        plan: LinearPlan = fctx.plan
        return suffix_combine(plan, plan.comm.all_gather(grad.contiguous())), None


def attention(ctx: CPContext, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    plan: LinearPlan = ctx.state["linear"]
    m = plan.kernel.state(k, v, plan.rates, plan.heads_q, plan.options)
    kv_in = GatherStates.apply(m, plan)
    return plan.kernel.attend(q, k, v, plan.rates, plan.options, kv_in)


def comm_model(problem: CPProblem, direction: str) -> list[int]:
    """One all-gather of W states each way: ``(W - 1)`` states sent per rank per direction."""
    per_rank = [(problem.world_size - 1) * one_state_bytes(problem)] * problem.world_size
    return directions(per_rank, per_rank, direction)


def transfer(pas: str, problem: CPProblem) -> tuple[Transfer, bool]:
    """One all-gather of every rank's state: before the forward's attend, after the backward's."""
    everyone = (tuple(range(problem.world_size)),)
    return Transfer(ALL_GATHER, np.array(comm_model(problem, pas)), groups=everyone), pas == "fwd"


STRATEGY = linear_strategy(
    name="lasp2",
    summary="LASP-2: linear attention, one all-gather of d x d chunk states fwd and one bwd (bytes independent "
    "of S); contiguous layout",
    attention=attention,
    comm_model=comm_model,
    homepage="https://arxiv.org/abs/2502.07563",
    schedule=linear_schedule(transfer),
)
