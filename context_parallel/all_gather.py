"""All-gather KV (Llama 3's context parallelism): gather every rank's K and V, attend the local queries.

The forward all-gathers K and V once (memory grows with S: every rank holds the whole K/V, which the
backward reuses), the local q rows attend to all keys with one plan of the local kernel (``ctx.kernel``,
``Run.method``'s) on global positions, and the backward reduce-scatters the float32 dK/dV back to their
owners. Layout: head-tail (2W chunks, rank i holds i and 2W-1-i), as in the Llama 3 paper, so causal work
is balanced.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from context_parallel import layouts, volumes
from harness.interfaces.schedule import (ALL_GATHER, BWD, FWD, REDUCE_SCATTER, Compute, Placement, ProgramBuilder,
                                         Schedule, Transfer)
from harness.interfaces.strategy import CPContext, CPProblem, Strategy
from harness.interfaces.comm import Comm
from harness.interfaces.local_kernel import LocalKernel, Plan
from context_parallel.local import build_plan, kernel_of, plan_area
from context_parallel.volumes import all_gather_bytes


@dataclass
class GatherState:
    comm: Comm
    kernel: LocalKernel
    plan: Plan
    sizes: list[int]
    scale: float


def prepare(ctx: CPContext) -> None:
    k_pos = torch.cat(ctx.positions)
    kernel = kernel_of(ctx)
    plan = build_plan(ctx, ctx.local_positions, k_pos)
    ctx.state["gather"] = GatherState(ctx.comm, kernel, plan, [len(p) for p in ctx.positions], ctx.scale)
    ctx.state["info"] = {"tokens": [len(p) for p in ctx.positions]}
    ctx.area = plan_area(ctx.problem, kernel, plan)


class AllGatherAttention(torch.autograd.Function):
    @staticmethod
    def forward(fctx, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, st: GatherState) -> torch.Tensor:
        q = q.contiguous()
        parts = st.comm.all_gather_varlen(torch.stack([k, v]), dim=2, sizes=st.sizes)
        kv = torch.cat(parts, dim=2)
        out, lse = st.kernel.forward(q, kv[0], kv[1], st.plan, st.scale)
        fctx.save_for_backward(q, kv, out, lse)
        fctx.st = st
        return out

    @staticmethod
    def backward(fctx, dout: torch.Tensor):
        q, kv, out, lse = fctx.saved_tensors
        st: GatherState = fctx.st
        dq, dk, dv = st.kernel.backward(dout.contiguous(), q, kv[0], kv[1], out, lse, st.plan, st.scale)
        dkv = torch.stack([dk, dv]).float()
        mine = st.comm.reduce_scatter(list(dkv.split(st.sizes, dim=2)))
        return dq, mine[0].to(q.dtype), mine[1].to(q.dtype), None


def attention(ctx: CPContext, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    return AllGatherAttention.apply(q, k, v, ctx.state["gather"])


def comm_model(problem: CPProblem, direction: str) -> list[int]:
    return all_gather_bytes(problem, [len(p) for p in layouts.zigzag(problem)], direction)


def schedule(problem: CPProblem, placement: Placement) -> Schedule:
    """All-gather K/V (padded to the largest shard), attend the local rows to every key; backward: attend, then
    reduce-scatter the float32 dK/dV."""
    positions = layouts.zigzag(problem)
    w, b = problem.world_size, problem.batch
    tokens = np.array([len(p) for p in positions], dtype=np.int64)
    everyone = (tuple(range(w)),)
    heads = problem.heads_q
    area = layouts.rank_pair_areas(problem, layouts.zigzag, positions).sum(1) * heads * b // problem.mask.intervals.num_heads
    item = volumes.itemsize(problem)
    gathered = np.full(w, volumes.kv_bytes(problem, problem.seqlen))  # every rank holds all K/V
    local = b * tokens * (2 * problem.heads_q + 2 * problem.heads_kv) * problem.head_dim * item
    peak = local + gathered + b * tokens * heads * (problem.head_dim + 1) * 4
    prog = ProgramBuilder()
    gather = (w - 1) * volumes.kv_bytes(problem, int(tokens.max()))
    direction = problem.run.direction
    if direction in ("fwd", "fwd+bwd"):  # a timed backward reuses the K/V its forward gathered
        prog.wait(prog.post("all-gather K/V", Transfer(ALL_GATHER, np.full(w, gather), groups=everyone)))
        prog.compute("attention", Compute.of(area, tokens, np.full(w, problem.seqlen), heads, b, FWD))
    if direction in ("bwd", "fwd+bwd"):
        prog.compute("attention backward", Compute.of(area, tokens, np.full(w, problem.seqlen), heads, b, BWD))
        total = volumes.kv_bytes(problem, problem.seqlen, size=volumes.FP32)
        mine = np.array([volumes.kv_bytes(problem, int(n), size=volumes.FP32) for n in tokens])
        prog.wait(prog.post("reduce-scatter dK/dV", Transfer(REDUCE_SCATTER, total - mine, groups=everyone)))
        peak = peak + 2 * gathered * 4 // item
    return prog.build(peak)


STRATEGY = Strategy(
    name="all_gather",
    summary="Llama 3 style: all-gather K/V once, local queries attend to all keys, reduce-scatter dK/dV; "
    "head-tail layout",
    layout=layouts.zigzag,
    prepare=prepare,
    attention=attention,
    comm_model=comm_model,
    schedule=schedule,
    homepage="https://arxiv.org/abs/2407.21783",
)
