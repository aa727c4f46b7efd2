"""The context-parallel strategy interface.

A strategy is one file that defines ``STRATEGY = Strategy(...)``: what it supports, how it lays the global
sequence out over the ranks of a torch.distributed group, and four steps that run on every rank::

    local = strategy.shard(ctx, x_global)          # [B, S, H, d] -> [B, S_r, H, d]: the rows ctx.positions[rank]
    strategy.prepare(ctx)                          # plans, subgroups, buffers: OUTSIDE the timed region
    out_local = strategy.attention(ctx, q, k, v)   # differentiable (explicit communication in fwd and bwd)
    out_global = strategy.gather(ctx, out_local)   # for the correctness gate only (never timed)

The layout is a function ``layout(problem) -> list of LongTensor``: the GLOBAL token positions of the local
rows of every rank, in local row order (any order, any sizes). The default ``shard``/``gather`` use it, so a
strategy normally only supplies ``layout``, ``prepare`` and ``attention``. The local attention is the
:class:`~harness.interfaces.local_kernel.LocalKernel` of the method ``Run.method`` (``ctx.kernel``): it takes
global positions, so any mask is exact on any layout, and returns log-sum-exps, so partial results merge
exactly. Where a strategy's per-step attention comes from is a :class:`KernelSource` (``local_methods``): a
built-in strategy runs whichever method has a local kernel (:data:`WITH_LOCAL_KERNEL`); a peer that runs its
library's own kernel declares :data:`OWN_KERNEL` or :class:`NamedMethods` and names it in ``kernel``.

Everything a step needs is in the :class:`CPContext`: the problem (plain data, no process group: it is also
what :meth:`Strategy.unsupported_reason` sees before any process starts), the rank, ``comm`` (the
byte-counting communication wrapper of :mod:`harness.interfaces.comm` that every strategy must use, so that
``comm_bytes`` is measured, not estimated), the positions of every rank and ``state`` (a dict ``prepare``
fills). A combination a strategy cannot run exactly (head or sequence divisibility, world-size
factorisation) is reported by ``limits`` or by raising :class:`Unsupported` from ``layout``/``prepare``:
the run is then recorded as ``unsupported`` with the reason, never as a wrong result.

Strategies run inside an initialised process group (gloo on CPU, NCCL on GPU): see
:func:`harness.execution.distributed.execute_distributed` (rank side) and :func:`harness.cluster.launch.run_local`.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Callable, Mapping, Optional, Union

import torch

from harness.masks.core import ALL_FEATURES, Mask
from harness.interfaces.capability import Capabilities
from harness.interfaces.comm import Comm
from harness.interfaces.linear_kernel import LinearKernel
from harness.interfaces.local_kernel import LocalKernel
from harness.interfaces.schedule import Placement, Schedule
from harness.run import Run, needs_grad


Layout = Callable[["CPProblem"], list[torch.Tensor]]
"""``layout(problem) -> [positions of rank 0, ..., positions of rank W-1]`` (int64 global token indices)."""


class Unsupported(Exception):
    """A combination the strategy cannot run exactly; the message is the one-line reason stored with the run."""


class Unavailable(Exception):
    """Raised by a plugin's build or prepare when something it needs is not usable here after all (a library's
    op that cannot be built, a build lock held past the wait): the run is ``unavailable`` with the message."""


@dataclass(frozen=True)
class CPProblem:
    """One context-parallel problem as plain data (no process group): what limits and layouts see."""

    run: Run
    mask: Mask
    dtype: torch.dtype
    device: torch.device
    # Every method that has a local kernel, by name (from the catalog; what ``unsupported_reason`` checks
    # ``Run.method`` against and lists). Empty: no method can be a local kernel here.
    local_kernels: Mapping[str, LocalKernel] = field(default_factory=dict, compare=False, repr=False)
    # Every causal linear-attention method, by name (``Method.linear_kernel``): what linear strategies run.
    linear_kernels: Mapping[str, LinearKernel] = field(default_factory=dict, compare=False, repr=False)
    # The options the methods declare (``Method.options``, e.g. blocksparse's tiles): accepted beside the
    # strategy's own, as on one device (where a method ignores another method's options).
    method_options: frozenset[str] = field(default_factory=frozenset, compare=False, repr=False)

    @classmethod
    def of(cls, run: Run, mask: Mask, device: torch.device, methods: Mapping[str, Any]) -> "CPProblem":
        """The problem of ``run`` on ``mask``, the one way to build it: ``methods`` (name -> Method: the
        catalog's, or the ones a workload chose) give every local and linear kernel and the methods' options."""
        return cls(
            run=run, mask=mask, dtype=getattr(torch, run.dtype), device=device,
            local_kernels={n: m.local_kernel for n, m in methods.items() if m.local_kernel is not None},
            linear_kernels={n: m.linear_kernel for n, m in methods.items() if m.linear_kernel is not None},
            method_options=frozenset(name for m in methods.values() for name in m.options),
        )

    @property
    def kernel(self) -> Optional[LocalKernel]:
        """The local kernel of ``Run.method`` (None when that method has none)."""
        return self.local_kernels.get(self.run.method)

    @property
    def linear_kernel(self) -> Optional[LinearKernel]:
        """The linear kernel of ``Run.method`` (None when it is not a linear-attention method)."""
        return self.linear_kernels.get(self.run.method)

    @property
    def world_size(self) -> int:
        return self.run.world_size

    @property
    def seqlen(self) -> int:
        """The tokens the strategy lays out: the run's, plus any padding (:meth:`Strategy.laid_out`)."""
        return self.mask.seqlen

    @property
    def padding(self) -> int:
        """Trailing tokens padded onto the run's sequence so that the layout's chunks divide it (0: none)."""
        return self.mask.padding

    @property
    def batch(self) -> int:
        return self.run.batch

    @property
    def heads_q(self) -> int:
        return self.run.heads_q

    @property
    def heads_kv(self) -> int:
        return self.run.heads_kv

    @property
    def head_dim(self) -> int:
        return self.run.head_dim

    @property
    def options(self) -> dict:
        return self.run.option_kwargs

    @property
    def scale(self) -> float:
        return self.run.head_dim**-0.5

    @property
    def needs_grad(self) -> bool:
        return needs_grad(self.run.direction)


@dataclass
class CPContext:
    """Per-rank state of one run: the problem, this rank, the communication wrapper, the layout, prepared state."""

    problem: CPProblem
    rank: int
    comm: Comm
    positions: list[torch.Tensor]  # global positions of every rank's local rows (from the strategy's layout)
    state: dict[str, Any] = field(default_factory=dict)  # filled by ``prepare`` (plans, groups, buffers)
    area: int = 0  # (q, k, head) pairs this rank's kernel computes per call (x batch); set by ``prepare``
    # The local method's kernel (Method.local_kernel of Run.method, or Method.linear_kernel for a linear
    # method); None: the problem's own (problem.kernel, else problem.linear_kernel).
    kernel: Optional[Union[LocalKernel, LinearKernel]] = None

    def __post_init__(self) -> None:
        if self.kernel is None:
            self.kernel = self.problem.kernel or self.problem.linear_kernel

    @property
    def world_size(self) -> int:
        return self.problem.world_size

    @property
    def local_positions(self) -> torch.Tensor:
        return self.positions[self.rank]

    @property
    def options(self) -> dict:
        return self.problem.options

    @property
    def scale(self) -> float:
        return self.problem.scale


def index_rows(x: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """Rows ``positions`` of a ``[B, S, ...]`` tensor (a contiguous copy)."""
    return x.index_select(1, positions.to(x.device)).contiguous()


def shard_by_layout(ctx: CPContext, x: torch.Tensor) -> torch.Tensor:
    """Default ``shard``: this rank's rows of the global tensor, in layout order."""
    return index_rows(x, ctx.local_positions)


def gather_by_layout(ctx: CPContext, x: torch.Tensor) -> torch.Tensor:
    """Default ``gather``: every rank's rows put back at their global positions (all ranks get the result)."""
    parts = ctx.comm.all_gather_varlen(x, dim=1, sizes=[len(p) for p in ctx.positions])
    out = x.new_empty((x.shape[0], ctx.problem.seqlen, *x.shape[2:]))
    for pos, part in zip(ctx.positions, parts):
        out[:, pos.to(x.device)] = part
    return out


class KernelSource:
    """Where a strategy's per-step attention comes from (``Strategy.local_methods``), and so which ``Run.method``
    values it runs: :meth:`reason` says why not for a problem (None: it runs it)."""

    # Its kernel honours the mask at global positions (or is causal), so trailing padding tokens that attend
    # nothing change no real token's output or gradient: :meth:`Strategy.laid_out` may pad for it.
    pads_exactly: bool = False
    # The methods it prefers as ``Run.method`` when a suite names none, fastest first (see :meth:`default_method`).
    preferred: tuple[str, ...] = ()

    def runs(self, method: Any) -> bool:
        """Whether ``method`` (a Method) can be its ``Run.method``."""
        return True

    def default_method(self, device: str, methods: Mapping[str, Any]) -> Optional[str]:
        """The method a strategy runs when a suite names no ``local_method``: the first of :attr:`preferred`
        that is in ``methods`` (name -> Method), runs on ``device`` and is usable here, else the first such
        method it can run by name; None when none is."""
        def usable(name: str) -> bool:
            m = methods.get(name)
            return m is not None and self.runs(m) and device in m.devices and m.unavailable_reason() is None

        return next((n for n in (*self.preferred, *sorted(methods)) if usable(n)), None)

    def reason(self, problem: CPProblem) -> Optional[str]:
        raise NotImplementedError


@dataclass(frozen=True)
class AnyLocalKernel(KernelSource):
    """Any method with a :class:`LocalKernel` (``Method.local_kernel``), which runs as ``ctx.kernel``."""

    pads_exactly = True  # the local kernel takes the (padded) mask at global positions
    # lcbench's native kernel is 1.06-1.13x faster per area than the aten CPU flash kernel per tile on every
    # mask at 16K tokens (results/BENCHMARKS.md section 1).
    preferred = ("blocksparse_native", "blocksparse")

    def runs(self, method: Any) -> bool:
        return method.local_kernel is not None

    def reason(self, problem: CPProblem) -> Optional[str]:
        if problem.kernel is None:
            have = ", ".join(sorted(problem.local_kernels)) or "none"
            return f"local method {problem.run.method} has no local kernel (methods with one: {have})"
        return None


@dataclass(frozen=True)
class AnyLinearKernel(KernelSource):
    """Any causal linear-attention method (``Method.linear_kernel``): what the linear CP strategies run."""

    pads_exactly = True  # causal: tokens padded at the end never reach a real one
    preferred = ("lightning",)

    def runs(self, method: Any) -> bool:
        return method.linear_kernel is not None

    def reason(self, problem: CPProblem) -> Optional[str]:
        if problem.linear_kernel is None:
            have = ", ".join(sorted(problem.linear_kernels)) or "none"
            return f"local method {problem.run.method} is not causal linear attention (linear methods: {have})"
        return None


@dataclass(frozen=True)
class NamedMethods(KernelSource):
    """These methods only: a peer whose kernel is the library's own, chosen by the method's name."""

    names: frozenset[str]

    def runs(self, method: Any) -> bool:
        return method.name in self.names

    def reason(self, problem: CPProblem) -> Optional[str]:
        if problem.run.method not in self.names:
            return f"local method {problem.run.method} (uses {', '.join(sorted(self.names))})"
        return None


@dataclass(frozen=True)
class OwnKernel(KernelSource):
    """The library's own kernel whatever ``Run.method`` says (a GPU peer: TE, MagiAttention, ring-flash-attn);
    ``Strategy.kernel`` names it in the record."""

    preferred = ("blocksparse",)  # Run.method only gives the FLOP convention and the reference here

    def reason(self, problem: CPProblem) -> Optional[str]:
        return None


WITH_LOCAL_KERNEL = AnyLocalKernel()
"""Default ``local_methods``: any ``Run.method`` whose ``Method.local_kernel`` is set."""
WITH_LINEAR_KERNEL = AnyLinearKernel()
"""``local_methods`` of the linear CP strategies: any ``Run.method`` whose ``Method.linear_kernel`` is set."""
OWN_KERNEL = OwnKernel()
"""``local_methods`` of a peer whose per-step kernel is built in."""


def _no_limits(problem: CPProblem) -> Optional[str]:
    return None


def _nothing(ctx: CPContext) -> None:
    return None


@dataclass(frozen=True)
class Strategy(Capabilities):
    """A context-parallel strategy (see the module docstring)."""

    name: str
    summary: str
    layout: Layout
    attention: Callable[[CPContext, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]
    prepare: Callable[[CPContext], None] = _nothing
    shard: Callable[[CPContext, torch.Tensor], torch.Tensor] = shard_by_layout
    gather: Callable[[CPContext, torch.Tensor], torch.Tensor] = gather_by_layout
    # ----- capabilities ----------------------------------------------------------------------------
    mask_features: frozenset[str] = ALL_FEATURES  # harness.masks.core features it handles exactly
    backward: bool = True
    dtypes: frozenset[str] = frozenset({"float32", "bfloat16", "float64"})
    devices: frozenset[str] = frozenset({"cpu"})
    # Where its per-step attention comes from (a KernelSource): WITH_LOCAL_KERNEL (default: any method with a
    # LocalKernel, run as ``ctx.kernel``), WITH_LINEAR_KERNEL, NamedMethods (a plain set of names is taken as
    # one), or OWN_KERNEL (the library's own, whatever the method).
    local_methods: KernelSource = WITH_LOCAL_KERNEL
    # The kernel a peer really runs per step, when it is the library's own (recorded as the run's ``kernel``;
    # None: the local method ``Run.method`` is what runs).
    kernel: Optional[str] = None
    options: dict[str, Any] = field(default_factory=dict)  # option name -> default (None: chosen per run)
    limits: Callable[[CPProblem], Optional[str]] = _no_limits  # world size / heads / seqlen -> why not
    # Analytic bytes each rank sends for a direction ("fwd", "bwd", "fwd+bwd"): tests and the bench compare
    # it with the measured ``comm_bytes``. None: no model (the comparison is skipped).
    comm_model: Optional[Callable[[CPProblem, str], list[int]]] = None
    # Its program per rank for ``lcbench predict`` (harness.interfaces.schedule): stages of exact areas and
    # bytes on the real layout. None: not predictable (``lcbench predict`` says so in one line).
    schedule: Optional[Callable[[CPProblem, Placement], Schedule]] = None
    probe: Callable[[], Optional[str]] = lambda: None  # None when usable here, else why not
    homepage: str = ""

    def __post_init__(self) -> None:
        if not isinstance(self.local_methods, KernelSource):  # a set of names (0.1.0 plugins wrote one)
            object.__setattr__(self, "local_methods", NamedMethods(frozenset(self.local_methods)))

    def __hash__(self) -> int:  # options is a dict: hash by name (names are unique in the registry)
        return hash(self.name)

    def unsupported_reason(self, problem: CPProblem) -> Optional[str]:
        """Why this strategy cannot run ``problem`` exactly (None when it can). Cheap; no process group."""
        run = problem.run
        why = self.local_methods.reason(problem)
        if why:
            return why
        why = self.capability_reason(run.dtype, problem.device.type, problem.mask, run.direction)
        if why:
            return why
        known = set(self.options) | COMMON_OPTIONS | problem.method_options
        unknown_opts = set(problem.options) - known
        if unknown_opts:
            return f"unknown option {', '.join(sorted(unknown_opts))} (known: {', '.join(sorted(known))})"
        if problem.heads_q % problem.heads_kv:
            return f"heads_q={problem.heads_q} is not a multiple of heads_kv={problem.heads_kv}"
        why = self.limits(problem)
        if why:
            return why
        try:
            self.layout(problem)
        except Unsupported as e:
            return str(e)
        return None

    def laid_out(self, problem: CPProblem) -> CPProblem:
        """``problem`` at a length this strategy's layout cuts exactly: itself when the layout takes the run's
        length, else (when its kernel pads exactly) padded at the end to the next multiple of W, then of 2W, as
        Megatron and TransformerEngine pad a sequence whose length the CP chunks do not divide. The padding
        tokens attend nothing and are attended by none: they are outside FLOPs, areas and the check (they are
        sent, as they are on a cluster). Where neither length is cut, ``problem`` itself (``unsupported_reason``
        then says why)."""
        if not self.local_methods.pads_exactly or problem.padding:
            return problem
        try:
            self.layout(problem)
            return problem
        except Unsupported:
            pass
        s, w = problem.seqlen, problem.world_size
        for multiple in (w, 2 * w):
            candidate = replace(problem, mask=problem.mask.padded(-(-s // multiple) * multiple))
            if candidate.seqlen == s:
                continue
            try:
                self.layout(candidate)
                return candidate
            except Unsupported:
                continue
        return problem


COMMON_OPTIONS = frozenset({"collectives"})
"""Options every strategy accepts (beside its own and its local method's): ``collectives`` = ``"native"``
(default: the backend's all-to-all / reduce-scatter) or ``"p2p"`` (:class:`~harness.interfaces.comm.Comm`'s
point-to-point emulation, what a backend without them would run)."""
