"""What the linear-attention strategies share: their kernel (``ctx.kernel``, a
:class:`~harness.interfaces.linear_kernel.LinearKernel`), the contiguous layout they need, and the per-rank
plan (decay rates, rows of every rank, the state's shape and bytes).

Every linear strategy cuts the sequence into contiguous chunks (rank r holds rows ``[t_r, t_r + C_r)``):
the state passed between ranks is the decayed summary of everything before a chunk, which only makes sense
for contiguous rows. Causal only (a linear method's own limits say the same).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

import numpy as np
import torch

from context_parallel import layouts
from harness.interfaces.schedule import BWD, FWD, Compute, Placement, ProgramBuilder, Schedule, Transfer
from harness.interfaces.comm import Comm
from harness.interfaces.linear_kernel import LinearKernel, carry, state_bytes, state_dtype
from harness.interfaces.strategy import WITH_LINEAR_KERNEL, CPContext, CPProblem, Strategy
from harness.masks.core import CAUSAL

LINEAR_OPTIONS = {"decay": None, "layer": 0, "layers": 1, "block": None}
"""Options the linear strategies pass to their kernel (None: the method's default)."""

layout = layouts.contiguous


@dataclass
class LinearPlan:
    """One rank's plan: kernel, rates, every rank's row count, and where the state goes."""

    comm: Comm
    kernel: LinearKernel
    rates: torch.Tensor  # s_h, float64 [Hq]
    sizes: list[int]  # rows of every rank (contiguous chunks, in rank order)
    rank: int
    heads_q: int
    options: dict
    state_shape: tuple[int, int, int, int]  # [B, Hq, d, d]
    state_dtype: torch.dtype
    device: torch.device

    def decay(self, rank: int) -> torch.Tensor:
        """``exp(-s C_rank)``: how much a state decays across rank ``rank``'s chunk, ``[1, Hq, 1, 1]``."""
        return carry(self.rates, self.sizes[rank], self.state_dtype).to(self.device)

    def zeros(self) -> torch.Tensor:
        return torch.zeros(self.state_shape, dtype=self.state_dtype, device=self.device)


def kernel_of(ctx: CPContext) -> LinearKernel:
    if not isinstance(ctx.kernel, LinearKernel):
        raise RuntimeError(f"local method {ctx.problem.run.method} is not causal linear attention")
    return ctx.kernel


def causal_only(problem: CPProblem) -> Optional[str]:
    if not problem.mask.is_plain_causal:
        return f"mask {problem.mask.name}: linear-attention strategies run the plain causal mask only"
    return None


def kernel_options(problem: CPProblem) -> dict:
    """The run's options without the unset (None) ones: the kernel then applies the method's defaults."""
    return {k: v for k, v in problem.options.items() if v is not None}


def prepare_plan(ctx: CPContext) -> LinearPlan:
    problem = ctx.problem
    kernel = kernel_of(ctx)
    options = kernel_options(problem)
    plan = LinearPlan(
        comm=ctx.comm, kernel=kernel, rates=kernel.rates(problem.heads_q, options),
        sizes=[len(p) for p in ctx.positions], rank=ctx.rank, heads_q=problem.heads_q, options=options,
        state_shape=(problem.batch, problem.heads_q, problem.head_dim, problem.head_dim),
        state_dtype=state_dtype(problem.dtype), device=problem.device,
    )
    ctx.state["linear"] = plan
    ctx.state["info"] = {"tokens": plan.sizes, "state_bytes": one_state_bytes(problem)}
    # Linear attention has no (q, k) pairs to balance: a rank's work is its rows (x heads x batch).
    ctx.area = plan.sizes[ctx.rank] * problem.heads_q * problem.batch
    return plan


def one_state_bytes(problem: CPProblem) -> int:
    """Bytes of one ``[B, Hq, d, d]`` state as communicated (float32 for 16-bit runs)."""
    return state_bytes(problem.batch, problem.heads_q, problem.head_dim, problem.dtype)


# How a linear strategy's step communicates, for its schedule: (direction "fwd"/"bwd", the problem) -> the
# transfer of that pass and whether it comes BEFORE the pass's compute (the forward's incoming state) or after
# it (the backward's outgoing gradient).
PassTransfer = Callable[[str, CPProblem], tuple[Transfer, bool]]


def linear_schedule(transfer_of: PassTransfer, prefix_rows: bool = False) -> Callable[[CPProblem, Placement], Schedule]:
    """A linear strategy's ``schedule``: per pass, its transfer and the local kernel's call (work = rows x heads x
    batch, as ``CPContext.area``; ``prefix_rows``: the rank also computes the state of every row before its
    chunk). The chunk-state part of the kernel is counted with the call, after the incoming state arrives."""

    def schedule(problem: CPProblem, placement: Placement) -> Schedule:
        rows = np.array([len(p) for p in layout(problem)], dtype=np.int64)
        work_rows = rows + (np.cumsum(rows) - rows if prefix_rows else 0)
        heads, b = problem.heads_q, problem.batch
        prog = ProgramBuilder()
        direction = problem.run.direction
        for pas in ("fwd", "bwd"):
            if pas not in direction.split("+"):
                continue
            transfer, first = transfer_of(pas, problem)
            if first:
                prog.wait(prog.post(f"{pas} states", transfer))
            prog.compute(f"{pas} chunk", Compute.of(work_rows * heads * b, rows, rows, heads, b,
                                                     FWD if pas == "fwd" else BWD))
            if not first:
                prog.wait(prog.post(f"{pas} states", transfer))
        item = torch.empty((), dtype=problem.dtype).element_size()
        peak = b * rows * 4 * heads * problem.head_dim * item + 2 * one_state_bytes(problem) * problem.world_size
        return prog.build(peak)

    return schedule


def linear_strategy(name: str, summary: str, attention: Callable, comm_model: Callable, homepage: str,
                    prepare: Callable[[CPContext], object] = prepare_plan,
                    schedule: Optional[Callable[[CPProblem, Placement], Schedule]] = None) -> Strategy:
    """A linear-attention strategy: contiguous layout, causal mask only, any method with a linear kernel."""
    return Strategy(
        name=name, summary=summary, layout=layout, prepare=prepare, attention=attention,
        mask_features=frozenset({CAUSAL}), local_methods=WITH_LINEAR_KERNEL, options=LINEAR_OPTIONS,
        limits=causal_only, comm_model=comm_model, homepage=homepage, schedule=schedule,
    )
