"""A context-parallel strategy on a rank group, with a local method.

The local method (``Run.method``) gives the run its FLOP count and its float64 reference, as on one device;
the strategy gives the layout, ``prepare`` (agreed across ranks), the distributed attention and its
communication (bytes sent measured over one call by the byte-counting :class:`~harness.interfaces.Comm`).
The record says which kernel really ran: the strategy's own (peers) or the local method.
"""

from __future__ import annotations

import json
import statistics
from typing import Callable, Optional

import torch

from harness import status as st
from harness.catalog import get_method, get_strategy, methods
from harness.execution.executor import AgreedFailure, Built, Executor, classify_exception
from harness.execution.gate import GateResult, check_outputs, gate_rows, run_seed, upstream_gradient
from harness.execution.inputs import direction_call, make_inputs, mask_for, problem_for
from harness.interfaces import Comm, CPContext, CPProblem, Unsupported
from harness.run import DECODE, Run

COLLECTIVES = ("native", "p2p")


class StrategyCase:
    def __init__(self, run: Run):
        self.run = run
        self.strategy = get_strategy(run.strategy or "")
        self.method = get_method(run.method)

    def unavailable(self) -> Optional[str]:
        return self.strategy.unavailable_reason()

    def problem(self, executor: Executor) -> CPProblem:
        """The run's CP problem at the length the strategy lays out (padded at the end where its chunks do not
        divide the run's length: :meth:`~harness.interfaces.Strategy.laid_out`)."""
        run = self.run
        return self.strategy.laid_out(CPProblem.of(run, mask_for(run), torch.device(run.device), methods()))

    def unsupported(self, problem: CPProblem) -> Optional[str]:
        run = self.run
        if run.direction == DECODE:
            return "decode (context-parallel strategies run fwd, bwd and fwd+bwd)"
        why = self.strategy.unsupported_reason(problem)
        if why:
            return why
        collectives = run.option_kwargs.get("collectives", "native")
        if collectives not in COLLECTIVES:
            return f"option collectives={collectives!r}; expected one of {', '.join(map(repr, COLLECTIVES))}"
        return None

    def build(self, problem: CPProblem, executor: Executor) -> Built:
        run, strategy = self.run, self.strategy
        comm = Comm(native_collectives=run.option_kwargs.get("collectives", "native") == "native")
        ctx = CPContext(problem=problem, rank=executor.rank, comm=comm, positions=strategy.layout(problem),
                        kernel=self.method.local_kernel or self.method.linear_kernel)
        q, k, v = make_inputs(run, problem.device)
        local = tuple(strategy.shard(ctx, pad_rows(t, problem.seqlen)) for t in (q, k, v))
        failed = executor.agree(_try_prepare(strategy, ctx))
        if failed:
            raise AgreedFailure(*failed)

        def fn(a, b, c):
            return strategy.attention(ctx, a, b, c)

        call = direction_call(fn, *local, run.direction)
        sent: list[int] = []

        def warm() -> None:  # one call, bytes counted (it is also the first warm-up call)
            comm.reset()
            torch.distributed.barrier()
            call()
            sent.append(comm.sent_bytes)

        global_problem = problem_for(run, problem.device)
        return Built(
            call=call,
            flops=self.method.flops(global_problem, run.direction),
            check=lambda: _gate(strategy, ctx, fn, (q, k, v), local, self.method.reference),
            fields=dict(area=global_problem.area, mask_info=json.dumps(global_problem.mask.describe()),
                        kernel=strategy.kernel or self.method.name, flop_convention=self.method.flop_convention,
                        padded_seqlen=problem.seqlen if problem.padding else None),
            inputs=local, warm=warm, dtype=problem.dtype, device=problem.device,
            per_rank=lambda: {"sent": sent[-1], "area": ctx.area, "info": ctx.state.get("info")},
            summarize=lambda facts: _summary(strategy, problem, run.direction, facts),
        )


def _summary(strategy, problem: CPProblem, direction: str, facts: list[dict]) -> dict:
    areas = [f["area"] for f in facts]
    mean_area = statistics.mean(areas)
    model = strategy.comm_model(problem, direction) if strategy.comm_model else None
    return dict(
        rank_area=json.dumps(areas),
        area_imbalance=max(areas) / mean_area if mean_area > 0 else None,
        comm_bytes=json.dumps([f["sent"] for f in facts]),
        comm_bytes_model=json.dumps(model) if model is not None else None,
        cp_info=json.dumps(facts[0]["info"] or {}),
    )


def _try_prepare(strategy, ctx: CPContext) -> Optional[tuple[str, str]]:
    try:
        strategy.prepare(ctx)
    except Unsupported as e:
        return (st.UNSUPPORTED, str(e))
    except Exception as e:  # noqa: BLE001
        status, reason = classify_exception(e, ctx.problem.run)
        return (status, f"rank {ctx.rank}: prepare: {reason}")
    return None


def pad_rows(x: torch.Tensor, seqlen: int) -> torch.Tensor:
    """``[B, S, ...]`` with zero rows appended up to ``seqlen`` (the padding tokens of a laid-out problem)."""
    extra = seqlen - x.shape[1]
    return torch.cat([x, x.new_zeros((x.shape[0], extra, *x.shape[2:]))], 1) if extra else x


def _gate(strategy, ctx: CPContext, fn: Callable, global_inputs: tuple, local: tuple, reference) -> GateResult:
    """One pass on the shards, gathered and compared on rank 0 with the local method's float64 reference on the
    run's own mask and tokens (padding tokens, which attend nothing, are cut off before the comparison)."""
    q, k, v = global_inputs
    problem = ctx.problem
    mask, seqlen = mask_for(problem.run), q.shape[1]
    seed = run_seed(problem.run.key)
    rows = gate_rows(seqlen, mask, seed, batch=q.shape[0], heads_q=q.shape[2], head_dim=q.shape[3],
                     device=q.device.type)
    if problem.needs_grad:
        leaves = [t.detach().requires_grad_(True) for t in local]
        out = fn(*leaves)
        dout = upstream_gradient(q, rows, seed=seed + 1)
        grads = torch.autograd.grad(out, leaves, strategy.shard(ctx, pad_rows(dout, problem.seqlen)))
        got = {name: strategy.gather(ctx, t.detach()) for name, t in zip(("out", "dq", "dk", "dv"), (out, *grads))}
    else:
        with torch.no_grad():
            got = {"out": strategy.gather(ctx, fn(*local))}
        dout = None
    if ctx.rank != 0:
        return GateResult(ok=True, max_abs_err=0.0)
    return check_outputs({n: t[:, :seqlen].cpu() for n, t in got.items()}, q, k, v, mask, problem.scale, rows, dout,
                         reference, options=problem.options)
