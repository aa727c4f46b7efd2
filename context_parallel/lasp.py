"""LASP-1 (OpenNLPLab/LASP): linear-attention context parallelism with the state passed around a ring.

Rank r holds the contiguous rows ``[t_r, t_r + C_r)``. Forward, in rank order: receive the incoming state
``KV_r`` from rank r-1 (zero on rank 0), send ``exp(-s C_r) KV_r + m_r`` (``m_r`` its chunk's decayed state)
to rank r+1, and run the chunk with ``KV_r`` (``kernel.attend``). Backward, in reverse order: receive the
gradient of the outgoing state from rank r+1 (zero on the last rank) — that is ``dm_r`` — and send
``g_r + exp(-s C_r) dKV_out`` to rank r-1 (``g_r`` the gradient of ``KV_r`` from this rank's own rows).
The ranks wait on each other (a sequential chain of W hops each way): that latency is what LASP-2's
all-gather removes. Bytes: one ``B x Hq x d x d`` state (float32 for 16-bit runs) per rank and direction,
except the last rank forward and the first backward.
"""

from __future__ import annotations

import torch

import numpy as np

from context_parallel.linear_local import LinearPlan, linear_schedule, linear_strategy, one_state_bytes
from harness.interfaces.schedule import SEND_RECV, Transfer
from context_parallel.volumes import directions
from harness.interfaces.strategy import CPContext, CPProblem

FWD_TAG, BWD_TAG = 31, 32


def _recv(plan: LinearPlan, src: int, tag: int) -> torch.Tensor:
    buf = plan.zeros()
    if 0 <= src < len(plan.sizes):
        plan.comm.exchange([], [(buf, src)], tag=tag).wait()
    return buf


def _send(plan: LinearPlan, x: torch.Tensor, dst: int, tag: int) -> None:
    if 0 <= dst < len(plan.sizes):
        plan.comm.exchange([(x.contiguous(), dst)], [], tag=tag).wait()


class RingState(torch.autograd.Function):
    """``m_r -> KV_r``: the state arrives from rank r-1 and leaves, updated, for rank r+1 (reverse backward)."""

    @staticmethod
    def forward(fctx, m: torch.Tensor, plan: LinearPlan) -> torch.Tensor:
        fctx.plan = plan
        kv_in = _recv(plan, plan.rank - 1, FWD_TAG)
        _send(plan, plan.decay(plan.rank) * kv_in + m, plan.rank + 1, FWD_TAG)
        return kv_in

    @staticmethod
    def backward(fctx, grad: torch.Tensor):
        plan: LinearPlan = fctx.plan
        d_out = _recv(plan, plan.rank + 1, BWD_TAG)  # the gradient of the state this rank sent on
        _send(plan, grad + plan.decay(plan.rank) * d_out, plan.rank - 1, BWD_TAG)
        return d_out, None


def attention(ctx: CPContext, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    plan: LinearPlan = ctx.state["linear"]
    m = plan.kernel.state(k, v, plan.rates, plan.heads_q, plan.options)
    kv_in = RingState.apply(m, plan)
    return plan.kernel.attend(q, k, v, plan.rates, plan.options, kv_in)


def comm_model(problem: CPProblem, direction: str) -> list[int]:
    """One state sent per rank and direction, but by the last rank forward and the first backward."""
    w, one = problem.world_size, one_state_bytes(problem)
    fwd = [one if r < w - 1 else 0 for r in range(w)]
    bwd = [one if r > 0 else 0 for r in range(w)]
    return directions(fwd, bwd, direction)


def transfer(pas: str, problem: CPProblem) -> tuple[Transfer, bool]:
    """The relay: forward from rank r-1 before the attend; backward from rank r+1 after it."""
    w = problem.world_size
    ranks = np.arange(w)
    peer = np.where(ranks > 0, ranks - 1, -1) if pas == "fwd" else np.where(ranks < w - 1, ranks + 1, -1)
    return Transfer(SEND_RECV, np.array(comm_model(problem, pas)), peer=peer, chain=True), pas == "fwd"


STRATEGY = linear_strategy(
    name="lasp",
    summary="LASP-1: linear attention, the d x d state passed rank to rank around a ring, fwd and bwd "
    "(sequential); contiguous layout",
    attention=attention,
    comm_model=comm_model,
    homepage="https://github.com/OpenNLPLab/LASP",
    schedule=linear_schedule(transfer),
)
