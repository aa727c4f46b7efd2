"""Shared plumbing of the peer strategies (other libraries' context parallelism registered beside ours).

A peer adapter is thin: it builds the library's own object in ``prepare`` and calls it in ``attention``.
What the adapters share lives here:

* :func:`ulysses_local_kernel` — the local attention a Ulysses peer (DeepSpeed, yunchang) runs on the
  gathered-heads full sequence: OUR local kernel of ``Run.method`` (``ctx.kernel``) with a plan on global
  positions, exactly what our ``ulysses`` runs locally, so the comparison isolates the communication scheme;
* :func:`counted` — third-party autograd code calls ``torch.distributed`` itself, in the forward and again
  in its backward, long after ``attention`` returned. Two identity autograd nodes placed around the library
  call switch :meth:`Comm.counting_torch_distributed` on for the library's backward too, so ``comm_bytes``
  covers fwd and bwd without touching the library's code path;
* :func:`counting_functional_collectives` — the same for code that uses functional collectives
  (``torch.distributed._functional_collectives``, which torch's own context parallelism uses);
* :func:`gpu_probe` — the probe of a GPU-only peer: "unavailable: <package> not installed" / "needs CUDA";
"""

from __future__ import annotations

import contextlib
import importlib.util
from typing import Callable, Iterator, Optional, Sequence

import torch

from harness.interfaces.strategy import CPContext, CPProblem
from harness.interfaces.comm import Comm, nbytes
from harness.interfaces.local_kernel import local_attention
from context_parallel.local import build_plan, kernel_of, plan_area


# ----- probes ---------------------------------------------------------------------------------------------

def missing_package(*modules: str) -> Optional[str]:
    """The first of ``modules`` that cannot be imported, as a reason (None when all are importable)."""
    for name in modules:
        try:
            found = importlib.util.find_spec(name) is not None
        except (ImportError, ValueError):
            found = False
        if not found:
            return name
    return None


def gpu_probe(modules: Sequence[str], pip_name: str, why_cuda: str) -> Callable[[], Optional[str]]:
    """Probe of a GPU-only peer: the package must import and CUDA must be present. Never raises."""

    def probe() -> Optional[str]:
        missing = missing_package(*modules)
        if missing:
            return f"package {pip_name} not installed (import {missing} failed); {why_cuda}"
        if not torch.cuda.is_available():
            return f"needs CUDA: {why_cuda}"
        return None

    return probe


# ----- Ulysses peers: the shared local kernel ---------------------------------------------------------------

def ulysses_limits(problem: CPProblem) -> Optional[str]:
    """Head all-to-all over all W ranks: q and kv heads must split evenly (GQA groups stay whole)."""
    w = problem.world_size
    if problem.heads_q % w or problem.heads_kv % w:
        return (
            f"heads {problem.heads_q}:{problem.heads_kv} not divisible by world size {w} "
            "(Ulysses scatters heads evenly over the ranks)"
        )
    return None


def ulysses_local_kernel(ctx: CPContext) -> Callable[..., torch.Tensor]:
    """Our local kernel (``ctx.kernel``) on the full sequence of this rank's head slice (after the all-to-all).

    The all-to-all concatenates the ranks' shards in rank order, so the gathered rows are the global
    positions ``cat(ctx.positions)``; rank r holds q heads ``[r Hq/W, (r+1) Hq/W)`` (and the matching kv
    heads), which selects the right per-head mask rows. The plan is built here, outside the timed region.
    """
    problem = ctx.problem
    w, r = ctx.world_size, ctx.rank
    hq = problem.heads_q // w
    rows = torch.cat(ctx.positions)
    kernel = kernel_of(ctx)
    plan = build_plan(ctx, rows, rows, heads=(r * hq, (r + 1) * hq))
    ctx.area = plan_area(problem, kernel, plan)
    scale = problem.scale

    def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        return local_attention(kernel, q, k, v, plan, scale)

    return attend


# ----- counting bytes of third-party code ------------------------------------------------------------------

class _CountState:
    """The counting patch of one peer call graph, entered/exited by the two identity nodes below."""

    def __init__(self, comm: Comm):
        self.comm = comm
        self.active: Optional[contextlib.AbstractContextManager] = None

    def start(self) -> None:
        if self.active is None:
            self.active = self.comm.counting_torch_distributed()
            self.active.__enter__()

    def stop(self) -> None:
        if self.active is not None:
            active, self.active = self.active, None
            active.__exit__(None, None, None)


class _StopCountingInBackward(torch.autograd.Function):
    """Identity on the library's inputs: its backward runs after the library's backward finished."""

    @staticmethod
    def forward(ctx, state: _CountState, *xs: torch.Tensor):
        ctx.state = state
        return tuple(x.view_as(x) for x in xs)

    @staticmethod
    def backward(ctx, *grads):
        ctx.state.stop()
        return (None, *grads)


class _StartCountingInBackward(torch.autograd.Function):
    """Identity on the library's output: its backward runs right before the library's backward."""

    @staticmethod
    def forward(ctx, state: _CountState, x: torch.Tensor):
        ctx.state = state
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        ctx.state.start()
        return None, grad


def counted(comm: Comm, fn: Callable[..., torch.Tensor], *inputs: torch.Tensor) -> torch.Tensor:
    """``fn(*inputs)`` with its torch.distributed calls counted by ``comm``, in the forward and the backward."""
    state = _CountState(comm)
    grad = torch.is_grad_enabled() and any(t.requires_grad for t in inputs)
    if grad:
        inputs = _StopCountingInBackward.apply(state, *inputs)
    with comm.counting_torch_distributed():
        out = fn(*inputs)
    if grad and out.requires_grad:
        out = _StartCountingInBackward.apply(state, out)
    return out


@contextlib.contextmanager
def counting_functional_collectives(comm: Comm) -> Iterator[None]:
    """Count the functional collectives torch's context parallelism uses (``permute_tensor``, ``all_gather_single``).

    ``permute_tensor`` is one all-to-all in which every rank sends its whole buffer to one peer;
    ``all_gather_single`` sends (g-1) copies of the local buffer (ring algorithm), as in :mod:`comm`.
    The module attributes are patched for the block only and call the originals unchanged.
    """
    import torch.distributed as dist
    import torch.distributed._functional_collectives as ft_c

    permute, gather = ft_c.permute_tensor, ft_c.all_gather_single

    def counted_permute(x: torch.Tensor, *args, **kwargs):
        group = kwargs["group"] if "group" in kwargs else args[1]
        sent = nbytes(x) if dist.get_world_size(group) > 1 else 0  # a group of one sends to itself
        comm.count("permute_tensor", sent)
        return permute(x, *args, **kwargs)

    def counted_gather(x: torch.Tensor, *args, **kwargs):
        group = kwargs["group"] if "group" in kwargs else args[1]
        g = dist.get_world_size(group)
        comm.count("all_gather_single", (g - 1) * nbytes(x))
        return gather(x, *args, **kwargs)

    ft_c.permute_tensor, ft_c.all_gather_single = counted_permute, counted_gather
    try:
        yield
    finally:
        ft_c.permute_tensor, ft_c.all_gather_single = permute, gather
