"""The method interface: an attention kernel, what it supports, its FLOP count and its float64 reference.

A method is one small file in ``methods/`` that defines ``METHOD = Method(...)``. ``build(problem)`` runs
outside the timed region and returns ``fn(q, k, v) -> out`` on ``[batch, rows, heads, head_dim]`` tensors
(q: heads_q; k, v: heads_kv). For the directions ``fwd``, ``bwd`` and ``fwd+bwd`` q holds every row of the
sequence; for ``decode`` it holds the last ``problem.decode_tokens`` rows (query positions
``problem.q_offset ...``) against a KV cache of the whole sequence, under the mask's rows for those positions.

What a method computes is its own: ``flops(problem, direction)`` and ``reference`` (masked softmax attention,
the field's FLOP convention, by default; linear attention or TTT layers bring theirs).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Callable, Optional

import torch

from harness.errors import unknown
from harness.interfaces.capability import Capabilities
from harness.interfaces.linear_kernel import LinearKernel
from harness.interfaces.local_kernel import LocalKernel
from harness.interfaces.reference import reference_outputs
from harness.masks.core import Mask
from harness.run import DECODE, DTYPES, needs_grad

AttentionFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]
"""``fn(q, k, v) -> out`` on ``[batch, rows, heads, head_dim]`` tensors (q: heads_q, k/v: heads_kv)."""

# The field's convention for softmax attention: backward = 2.5 x forward (5 matmuls incl. recompute).
SOFTMAX_DIRECTION_FACTOR = {"fwd": 1.0, "bwd": 2.5, "fwd+bwd": 3.5, DECODE: 1.0}


@dataclass(frozen=True)
class Problem:
    """One attention problem, as a method sees it when it builds its callable (outside the timed region)."""

    mask: Mask
    batch: int
    seqlen: int
    heads_q: int
    heads_kv: int
    head_dim: int
    dtype: torch.dtype
    device: torch.device
    needs_grad: bool = False
    options: dict = field(default_factory=dict)
    direction: str = ""  # fwd | bwd | fwd+bwd | decode; "" = fwd, or fwd+bwd when needs_grad (older callers)
    decode_tokens: int = 1  # query rows of a decode step: the last ones of the sequence

    def __post_init__(self) -> None:
        if not self.direction:
            object.__setattr__(self, "direction", "fwd+bwd" if self.needs_grad else "fwd")
        object.__setattr__(self, "needs_grad", needs_grad(self.direction))

    @property
    def scale(self) -> float:
        return self.head_dim**-0.5

    @property
    def is_decode(self) -> bool:
        return self.direction == DECODE

    @property
    def q_offset(self) -> int:
        """Query position of q's first row (0, or ``seqlen - decode_tokens`` for a decode step)."""
        return self.seqlen - self.decode_tokens if self.is_decode else 0

    @property
    def q_rows(self) -> int:
        return self.decode_tokens if self.is_decode else self.seqlen

    @property
    def q_positions(self) -> torch.Tensor:
        return torch.arange(self.q_offset, self.seqlen)

    @property
    def area(self) -> int:
        """Exact (q, k) pairs summed over query heads and batch, for the rows q holds."""
        if not self.is_decode:
            return self.mask.area(self.heads_q) * self.batch
        counts = self.mask.intervals.select_rows(self.q_positions).counts()  # [mask heads, rows]
        per_batch = int(counts.sum()) if self.mask.per_head else int(counts[0].sum()) * self.heads_q
        return per_batch * self.batch

    @property
    def element_bytes(self) -> int:
        return torch.empty((), dtype=self.dtype).element_size()


def softmax_forward_flops(problem: Problem) -> float:
    """The field's convention: forward FLOPs = 4 * exact mask area * head_dim (summed over heads, batch)."""
    return 4.0 * problem.area * problem.head_dim


def softmax_flops(problem: Problem, direction: str) -> float:
    """Softmax attention FLOPs of ``direction``: 4 * area * d forward, 2.5x backward, 3.5x both; a decode step
    counts the forward of its rows."""
    return softmax_forward_flops(problem) * SOFTMAX_DIRECTION_FACTOR[direction]


def dense_matmul_flops(problem: Problem) -> float:
    """FLOPs of one (q rows x keys x head_dim) matmul of every q head: ``2 B Hq rows S d``, rows the problem's q
    rows (a decode step's rows). What a kernel that computes the whole score rectangle spends per matmul, and
    what torch.utils.flop_counter counts for one (its sdpa formulas count the rectangle, mask or not)."""
    return 2.0 * problem.batch * problem.heads_q * problem.q_rows * problem.seqlen * problem.head_dim


def dense_cache_bytes(problem: Problem) -> int:
    """KV bytes a decode step reads when the kernel streams the whole cache (a dense kernel with a mask)."""
    return 2 * problem.batch * problem.seqlen * problem.heads_kv * problem.head_dim * problem.element_bytes


def allowed_block_bytes(problem: Problem, block: int) -> int:
    """KV bytes a decode step reads when the kernel skips the key blocks of ``block`` tokens that no decode
    row may attend to (averaged over the mask's heads; each KV head reads its blocks once)."""
    starts = torch.arange(0, problem.seqlen, block)
    ends = (starts + block).clamp_max(problem.seqlen)
    hits = problem.mask.intervals.count_in_ranges(problem.q_positions, starts, ends).sum(1) > 0  # [Hm, blocks]
    keys_per_head = float(((ends - starts) * hits).sum()) / hits.shape[0]
    return int(2 * problem.batch * keys_per_head * problem.heads_kv * problem.head_dim * problem.element_bytes)


@dataclass(frozen=True)
class Method(Capabilities):
    """An attention kernel: what it supports, whether it is available here, and how to build it."""

    name: str
    summary: str
    build: Callable[[Problem], AttentionFn]
    mask_features: frozenset[str] = frozenset()  # features beyond a full mask (harness.masks.core)
    dtypes: frozenset[str] = frozenset({"float32", "bfloat16", "float16", "float64"})
    devices: frozenset[str] = frozenset({"cpu"})
    backward: bool = True
    decode: bool = False  # runs the decode direction (q = the last rows against the whole KV cache)
    gqa: bool = True
    probe: Callable[[], Optional[str]] = lambda: None  # None when usable, else why not
    limits: Callable[[Problem], Optional[str]] = lambda p: None  # shape limits -> why unsupported
    # What the method computes: FLOPs per direction and the float64 reference (masked softmax by default).
    flops: Callable[[Problem, str], float] = softmax_flops
    reference: Callable[..., dict] = reference_outputs
    flop_convention: str = "softmax: fwd 4*area*Hq*d (exact mask area), bwd 2.5x, fwd+bwd 3.5x, decode 4*area(rows)*Hq*d"
    # KV-cache bytes one decode step reads (the whole cache by default: a dense kernel streams all of it).
    decode_bytes: Callable[[Problem], int] = dense_cache_bytes
    # The state a decode step carries per sequence, in bytes (the KV cache by default; a linear method's d x d).
    cache_bytes: Callable[[Problem], int] = dense_cache_bytes
    options: dict[str, Any] = field(default_factory=dict)  # option name -> default (documented, validated)
    # What a context-parallel strategy needs of this method as its local kernel (partial attention + LSE on
    # global positions; see harness.interfaces.local_kernel). None: the method cannot be a CP local kernel.
    local_kernel: Optional[LocalKernel] = None
    # The same for causal linear attention (a d x d state instead of an LSE; harness.interfaces.linear_kernel):
    # what the linear CP strategies (lasp2, lasp, linear_all_gather) run. None: not a linear method.
    linear_kernel: Optional[LinearKernel] = None
    homepage: str = ""
    # lcbench 0.1.0's hook (forward FLOPs, softmax factors for the other directions): kept for its plugins.
    forward_flops: Optional[Callable[[Problem], float]] = None
    # The FLOPs the kernel really executes in one call, as torch.utils.flop_counter counts them:
    # ``executed_flops(problem, part, kv_grad)`` with part "fwd" (a decode problem's forward is its step) or
    # "bwd", kv_grad False when K and V need no gradient (a frozen cache). None: ``flops``' convention, whose
    # backward includes dK and dV (see :meth:`executed`). Workloads that account for what they spend use it.
    executed_flops: Optional[Callable[[Problem, str, bool], float]] = None

    def __post_init__(self) -> None:
        if self.forward_flops is not None and self.flops is softmax_flops:
            forward = self.forward_flops
            object.__setattr__(self, "flops", lambda p, d: forward(p) * SOFTMAX_DIRECTION_FACTOR[d])

    def executed(self, problem: Problem, part: str, kv_grad: bool = True) -> float:
        """FLOPs the kernel executes for ``part`` ("fwd" or "bwd") of ``problem`` (:attr:`executed_flops`, else
        the convention: the forward of ``problem``'s direction, and for "bwd" that times the backward/forward
        ratio of the full-rows problem, dK and dV included whatever ``kv_grad``)."""
        if self.executed_flops is not None:
            return self.executed_flops(problem, part, kv_grad)
        fwd = self.flops(problem, DECODE if problem.is_decode else "fwd")
        if part == "fwd":
            return fwd
        full = replace(problem, direction="fwd", decode_tokens=1)
        full_fwd = self.flops(full, "fwd")
        return fwd * (self.flops(full, "fwd+bwd") - full_fwd) / full_fwd if full_fwd else 0.0

    def executed_call(self, problem: Problem, direction: str, kv_grad: bool = True) -> float:
        """FLOPs one call in ``direction`` executes (:meth:`executed`): its forward (a decode problem's: its
        step), plus its backward when the direction needs one (``bwd``: the backward alone). What a workload that
        states the work it really does (its FLOPs equal torch.utils.flop_counter's count) adds per attention."""
        if direction == "bwd":
            return self.executed(problem, "bwd", kv_grad)
        forward = self.executed(problem, "fwd")
        return forward + (self.executed(problem, "bwd", kv_grad) if needs_grad(direction) else 0.0)

    def __hash__(self) -> int:  # options is a dict: hash by name (names are unique in the catalog)
        return hash(self.name)

    @property
    def directions(self) -> tuple[str, ...]:
        return ("fwd",) + (("bwd", "fwd+bwd") if self.backward else ()) + ((DECODE,) if self.decode else ())

    def unsupported_reason(self, problem: Problem, direction: Optional[str] = None) -> Optional[str]:
        """Why this method cannot run ``problem`` (None when it can)."""
        why = self.capability_reason(str(problem.dtype).removeprefix("torch."), problem.device.type, problem.mask,
                                     direction or problem.direction)
        if why:
            return why
        if problem.heads_q != problem.heads_kv and not self.gqa:
            return "GQA (heads_q != heads_kv)"
        return self.limits(problem)


def torch_dtype(name: str) -> torch.dtype:
    if name not in DTYPES:
        raise unknown("dtype", name, DTYPES)
    return getattr(torch, name)
