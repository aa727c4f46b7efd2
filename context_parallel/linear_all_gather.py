"""All-gather of K/V applied to linear attention: the naive baseline of the linear strategies.

What a softmax CP strategy (Llama 3's all-gather) would do with a linear method: every rank all-gathers K
and V (bytes grow with S), computes the state of all rows before its contiguous chunk from the gathered
keys and values (``kernel.state``), and runs its chunk with it (``kernel.attend``). Backward:
reduce-scatter of the gathered K/V gradients (in the state dtype, float32 for 16-bit runs) back to their
owners. Exact; compare its bytes and time with ``lasp2``/``lasp``, whose traffic is one d x d state.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from context_parallel.linear_local import LinearPlan, linear_schedule, linear_strategy, prepare_plan
from harness.interfaces.schedule import ALL_GATHER, REDUCE_SCATTER, Transfer
from context_parallel.volumes import directions, kv_bytes
from harness.interfaces.linear_kernel import state_dtype
from harness.interfaces.strategy import CPContext, CPProblem


@dataclass
class GatherPlan:
    linear: LinearPlan
    start: int  # first global row of this rank (the rows before it are the prefix it needs)


def prepare(ctx: CPContext) -> None:
    plan = prepare_plan(ctx)
    ctx.state["gather"] = GatherPlan(plan, sum(plan.sizes[: ctx.rank]))


class GatherAttention(torch.autograd.Function):
    """The whole step as one function, so that every rank reaches the backward's reduce-scatter (rank 0 uses
    no gathered rows, so autograd alone would never call its share of the collective)."""

    @staticmethod
    def forward(fctx, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, gp: GatherPlan) -> torch.Tensor:
        plan = gp.linear
        gathered = torch.cat(plan.comm.all_gather_varlen(torch.stack([k, v]), dim=2, sizes=plan.sizes), dim=2)
        prefix = gathered[:, :, : gp.start].detach().requires_grad_(gp.start > 0)
        leaves = [t.detach().requires_grad_(True) for t in (q, k, v)]
        with torch.enable_grad():
            kv_in = None
            if gp.start:
                kv_in = plan.kernel.state(prefix[0], prefix[1], plan.rates, plan.heads_q, plan.options)
            out = plan.kernel.attend(*leaves, plan.rates, plan.options, kv_in)
        fctx.gp, fctx.graph = gp, (out, leaves, prefix)
        return out.detach()

    @staticmethod
    def backward(fctx, dout: torch.Tensor):
        gp: GatherPlan = fctx.gp
        plan = gp.linear
        out, leaves, prefix = fctx.graph
        inputs = leaves + ([prefix] if gp.start else [])
        # retain_graph: a ``bwd`` run times this backward repeatedly on one forward (the outer graph is retained)
        grads = torch.autograd.grad(out, inputs, dout, retain_graph=True)
        dq, dk, dv = grads[:3]
        acc = state_dtype(dk.dtype)
        full = torch.zeros((2, dk.shape[0], sum(plan.sizes), *dk.shape[2:]), dtype=acc, device=dk.device)
        if gp.start:
            full[:, :, : gp.start] = grads[3].to(acc)
        mine = plan.comm.reduce_scatter(list(full.split(plan.sizes, dim=2)))
        return dq, (dk.to(acc) + mine[0]).to(dk.dtype), (dv.to(acc) + mine[1]).to(dv.dtype), None


def attention(ctx: CPContext, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    return GatherAttention.apply(q, k, v, ctx.state["gather"])


def comm_model(problem: CPProblem, direction: str) -> list[int]:
    """Forward: all-gather of K and V ((W-1) chunks). Backward: reduce-scatter of the state-dtype dK/dV."""
    w = problem.world_size
    sizes = [problem.seqlen // w] * w
    grad_size = torch.empty((), dtype=state_dtype(problem.dtype)).element_size()
    fwd = [(w - 1) * kv_bytes(problem, max(sizes))] * w
    total = sum(kv_bytes(problem, n, size=grad_size) for n in sizes)
    bwd = [total - kv_bytes(problem, n, size=grad_size) for n in sizes]
    return directions(fwd, bwd, direction)


def transfer(pas: str, problem: CPProblem) -> tuple[Transfer, bool]:
    """All-gather of K/V before the forward; reduce-scatter of dK/dV after the backward."""
    everyone = (tuple(range(problem.world_size)),)
    op = ALL_GATHER if pas == "fwd" else REDUCE_SCATTER
    return Transfer(op, np.array(comm_model(problem, pas)), groups=everyone), pas == "fwd"


STRATEGY = linear_strategy(
    name="linear_all_gather",
    summary="naive baseline for linear attention: all-gather K/V, prefix state from the gathered rows, "
    "reduce-scatter dK/dV (bytes grow with S); contiguous layout",
    attention=attention,
    comm_model=comm_model,
    homepage="https://arxiv.org/abs/2407.21783",
    prepare=prepare,
    schedule=linear_schedule(transfer, prefix_rows=True),
)
