"""The one engine behind every built-in strategy except all-gather: head all-to-all groups x nested P2P rings.

A :class:`Topology` is two things, both partitions of the ranks:

* ``a2a`` — head-parallel groups. Inside a group of size u an all-to-all turns the members' sequence
  shards of all heads into the group's whole sequence of 1/u of the heads (DeepSpeed-Ulysses), and back
  after attention. Size-1 groups mean no all-to-all.
* ``levels`` — nested rings, outermost first (one level: a ring; two: LoongTrain's double ring). K/V
  blocks travel around each ring with isend/irecv of the next block posted before the current one is
  computed (communication overlapped with compute); at the innermost level each held block is attended
  with the local kernel (``ctx.kernel``: the LocalKernel of ``Run.method``) on GLOBAL positions and merged
  by log-sum-exp.

So: ring/zigzag/striped/doc_zigzag = one level, no a2a (they differ only in layout); double_ring = two
levels; ulysses = one a2a group of all ranks and singleton rings; usp/hierarchical = a2a groups x one ring
level across them (they differ in layout). Ring members must hold the same head slice (same index in
their a2a groups), which every built-in topology satisfies by construction.

The backward is ring-flash-attention's: K/V travel around again while a dK/dV accumulator (float32)
travels with each block, every rank adding its share; the last hop brings the finished accumulator home.
Nested rings do this per level: a child ring returns the sum of its members' shares of the block the rank
held when the child started, which the parent level then passes on. dQ stays local.

Block identity (whose K/V a rank holds at each step) is computed, not communicated: at ring level L and
step s a rank holds what the member s places before it held when the level started, composed over levels.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Optional

import numpy as np
import torch

from context_parallel import layouts
from harness.interfaces.schedule import (ALL_TO_ALL, BWD, FWD, SEND_RECV, Compute, Placement, ProgramBuilder,
                                         Schedule, Transfer)
from harness.interfaces.strategy import CPContext, CPProblem, Unsupported
from harness.interfaces.comm import Comm, Group
from harness.interfaces.local_kernel import LocalKernel, Plan
from context_parallel.local import build_plan, kernel_of, merge_into, plan_area

Partition = tuple[tuple[int, ...], ...]


def singletons(world: int) -> Partition:
    return tuple((r,) for r in range(world))


def consecutive(world: int, size: int) -> Partition:
    """Groups of ``size`` consecutive ranks (e.g. the GPUs of a node)."""
    return tuple(tuple(range(g, g + size)) for g in range(0, world, size))


def strided(world: int, size: int) -> Partition:
    """Groups taking one rank from each block of ``size`` consecutive ranks: the complement of ``consecutive``."""
    return tuple(tuple(range(i, world, size)) for i in range(size))


@dataclass(frozen=True)
class Topology:
    a2a: Partition
    levels: tuple[Partition, ...]

    @staticmethod
    def ring(world: int) -> "Topology":
        return Topology(singletons(world), (tuple([tuple(range(world))]),))

    @staticmethod
    def double_ring(world: int, inner: int) -> "Topology":
        """Outer rings across windows of ``inner`` consecutive ranks, inner rings within each window."""
        return Topology(singletons(world), (strided(world, inner), consecutive(world, inner)))

    @staticmethod
    def a2a_then_ring(world: int, a2a_size: int) -> "Topology":
        """All-to-all inside groups of ``a2a_size`` consecutive ranks, one ring across the groups."""
        return Topology(consecutive(world, a2a_size), (strided(world, a2a_size),))

    def validate(self, world: int) -> None:
        for part in (self.a2a, *self.levels):
            if sorted(r for g in part for r in g) != list(range(world)):
                raise ValueError(f"{part} is not a partition of ranks 0..{world - 1}")
        if len({len(g) for g in self.a2a}) != 1:
            raise ValueError(f"all-to-all groups of different sizes: {self.a2a}")
        slot = {r: g.index(r) for g in self.a2a for r in g}
        for part in self.levels:
            for ring in part:
                if len({slot[r] for r in ring}) != 1:
                    raise ValueError(f"ring {ring} mixes head slices of all-to-all groups {self.a2a}")


def _lookup(part: Partition) -> dict[int, tuple[tuple[int, ...], int]]:
    return {r: (g, i) for g in part for i, r in enumerate(g)}


@dataclass
class EngineState:
    """One rank's prepared engine (``ctx.state['engine']``): groups, head slices, plans, buffer shapes."""

    comm: Comm
    problem: CPProblem
    kernel: LocalKernel
    me: int
    topology: Topology
    a2a_group: Group
    a2a_sizes: list[int]  # token counts of the a2a group's members, group order
    kv_repeat: int  # kv heads repeated before the all-to-all (GQA with more a2a ranks than kv heads)
    heads_kv_local: int
    positions_of_group: dict[tuple[int, ...], torch.Tensor]  # a2a group -> its combined positions
    plans: dict[tuple[int, ...], Plan]  # a2a group of the K/V origin -> the kernel's plan for my q rows
    rings: list[dict[int, tuple[tuple[int, ...], int]]] = field(default_factory=list)  # per level

    def a2a_of(self, rank: int) -> tuple[int, ...]:
        return next(g for g in self.topology.a2a if rank in g)

    def back(self, level: int, rank: int, steps: int) -> int:
        ring, i = self.rings[level][rank]
        return ring[(i - steps) % len(ring)]

    def kv_shape(self, origin: int) -> tuple[int, ...]:
        p = self.problem
        return (2, p.batch, len(self.positions_of_group[self.a2a_of(origin)]), self.heads_kv_local, p.head_dim)


def head_split(problem: CPProblem, u: int) -> tuple[int, int]:
    """(kv repeat factor, local kv heads) for an all-to-all over ``u`` ranks; Unsupported when impossible."""
    hq, hkv = problem.heads_q, problem.heads_kv
    if hq % u:
        raise Unsupported(f"heads_q={hq} is not divisible by the all-to-all (Ulysses) degree {u}")
    if hkv % u == 0:
        return 1, hkv // u
    if u % hkv == 0:
        return u // hkv, 1  # DeepSpeed's GQA rule: repeat kv heads up to the degree
    raise Unsupported(f"heads_kv={hkv} and the all-to-all (Ulysses) degree {u} do not divide one another")


def check_heads(problem: CPProblem, u: int) -> Optional[str]:
    try:
        head_split(problem, u)
    except Unsupported as e:
        return str(e)
    return None


def prepare_engine(ctx: CPContext, topology: Topology) -> EngineState:
    """Groups, head slices and one plan per K/V origin this rank meets; sets ``ctx.area``. Not timed."""
    problem, world, me = ctx.problem, ctx.world_size, ctx.rank
    topology.validate(world)
    a2a_group = ctx.comm.partition(topology.a2a)
    # rings use P2P on the default group with global ranks: no subgroups needed for them
    u = a2a_group.size
    repeat, heads_kv_local = head_split(problem, u)
    slot = a2a_group.index(me)
    hq_local = problem.heads_q // u
    heads = (slot * hq_local, (slot + 1) * hq_local)
    combined = {g: torch.cat([ctx.positions[r] for r in g]) for g in topology.a2a}
    state = EngineState(
        comm=ctx.comm, problem=problem, kernel=kernel_of(ctx), me=me, topology=topology, a2a_group=a2a_group,
        a2a_sizes=[len(ctx.positions[r]) for r in a2a_group.ranks], kv_repeat=repeat,
        heads_kv_local=heads_kv_local, positions_of_group=combined, plans={},
        rings=[_lookup(part) for part in topology.levels],
    )
    q_pos = combined[a2a_group.ranks]
    ctx.state["info"] = {
        "a2a_size": u, "rings": [len(part[0]) for part in topology.levels], "kv_repeat": repeat,
        "tokens": [len(p) for p in ctx.positions],
    }
    ctx.area = 0
    for origin in visit_order(state):
        key = state.a2a_of(origin)
        if key in state.plans:
            raise AssertionError(f"K/V of a2a group {key} visited twice on rank {me}")
        state.plans[key] = build_plan(ctx, q_pos, combined[key], heads)
        ctx.area += plan_area(problem, state.kernel, state.plans[key])
    return state


def visit_order(state: EngineState) -> list[int]:
    """Origins of the K/V blocks this rank attends to, in compute order."""
    order: list[int] = []

    def walk(level: int, f: Callable[[int], int]) -> None:
        if level == len(state.rings):
            order.append(f(state.me))
            return
        ring, _ = state.rings[level][state.me]
        for s in range(len(ring)):
            walk(level + 1, _shift(state, f, level, s))

    walk(0, lambda x: x)
    return order


def _shift(state: EngineState, f: Callable[[int], int], level: int, s: int) -> Callable[[int], int]:
    return lambda x: f(state.back(level, x, s))


_KV, _DKV = 0, 1


def _tag(level: int, stream: int) -> int:
    return 16 + 2 * level + stream


# ----- forward -------------------------------------------------------------------------------------------

def ring_forward(state: EngineState, q: torch.Tensor, kv: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Merged output ``[B, Sq, H, d]`` (q's dtype) and log-sum-exp ``[B, H, Sq]`` (float32)."""
    b, sq, h, d = q.shape
    acc: list[torch.Tensor] = []  # the merged (out float32, lse) of the blocks attended so far

    def leaf(origin: int, block: torch.Tensor) -> None:
        plan = state.plans[state.a2a_of(origin)]
        if state.kernel.area(plan) == 0:
            return
        out, lse = state.kernel.forward(q, block[0], block[1], plan, state.problem.scale)
        if acc:
            merge_into(acc[0], acc[1], out, lse)
        else:  # the first block is the accumulator as the kernel returned it (no merge pass; Ulysses: the only one)
            acc.extend((out.float().contiguous(), lse))

    def level_fwd(level: int, block: torch.Tensor, f: Callable[[int], int]) -> None:
        if level == len(state.rings):
            leaf(f(state.me), block)
            return
        ring, i = state.rings[level][state.me]
        n = len(ring)
        nxt, prv = ring[(i + 1) % n], ring[(i - 1) % n]
        cur = block
        for s in range(n):
            pending = None
            if s < n - 1:
                buf = cur.new_empty(state.kv_shape(f(state.back(level, state.me, s + 1))))
                pending = state.comm.exchange([(cur, nxt)], [(buf, prv)], tag=_tag(level, _KV))
            level_fwd(level + 1, cur, _shift(state, f, level, s))
            if pending is not None:
                cur = pending.wait()[0]

    level_fwd(0, kv, lambda x: x)
    if not acc:  # no allowed key in any block
        acc.extend((torch.zeros((b, sq, h, d), dtype=torch.float32, device=q.device),
                    torch.full((b, h, sq), float("-inf"), dtype=torch.float32, device=q.device)))
    return acc[0].to(q.dtype), acc[1]


# ----- backward ------------------------------------------------------------------------------------------

def ring_backward(
    state: EngineState, dout: torch.Tensor, q: torch.Tensor, kv: torch.Tensor, out: torch.Tensor, lse: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """dq (q's dtype) and the stacked ``[2, ...]`` dK/dV of this rank's own K/V (kv's dtype)."""
    dq = torch.zeros(q.shape, dtype=torch.float32, device=q.device)

    def leaf(origin: int, block: torch.Tensor) -> Optional[torch.Tensor]:
        plan = state.plans[state.a2a_of(origin)]
        if state.kernel.area(plan) == 0:
            return None
        gq, gk, gv = state.kernel.backward(dout, q, block[0], block[1], out, lse, plan, state.problem.scale)
        dq.add_(gq)
        return torch.stack([gk, gv]).float()

    def level_bwd(level: int, block: torch.Tensor, f: Callable[[int], int]) -> Optional[torch.Tensor]:
        """The summed share of this level's rings (and their children) in ``block``'s dK/dV."""
        if level == len(state.rings):
            return leaf(f(state.me), block)
        ring, i = state.rings[level][state.me]
        n = len(ring)
        nxt, prv = ring[(i + 1) % n], ring[(i - 1) % n]
        cur, acc, acc_pending = block, None, None
        for s in range(n):
            kv_pending = None
            if s < n - 1:
                buf = cur.new_empty(state.kv_shape(f(state.back(level, state.me, s + 1))))
                kv_pending = state.comm.exchange([(cur, nxt)], [(buf, prv)], tag=_tag(level, _KV))
            share = level_bwd(level + 1, cur, _shift(state, f, level, s))
            if acc_pending is not None:  # the accumulator of ``cur`` from the previous member
                acc = acc_pending.wait()[0]
                if share is not None:
                    acc.add_(share)
            else:
                acc = share
            if n > 1:
                if acc is None:
                    shape = state.kv_shape(f(state.back(level, state.me, s)))
                    acc = torch.zeros(shape, dtype=torch.float32, device=cur.device)
                shape = state.kv_shape(f(state.back(level, state.me, (s + 1) % n)))
                buf = torch.empty(shape, dtype=torch.float32, device=cur.device)
                acc_pending = state.comm.exchange([(acc, nxt)], [(buf, prv)], tag=_tag(level, _DKV))
            if kv_pending is not None:
                cur = kv_pending.wait()[0]
        return acc_pending.wait()[0] if n > 1 else acc

    dkv = level_bwd(0, kv, lambda x: x)
    if dkv is None:
        dkv = torch.zeros(kv.shape, dtype=torch.float32, device=kv.device)
    return dq.to(q.dtype), dkv.to(kv.dtype)


class RingAttention(torch.autograd.Function):
    """Attention of the local q rows against every K/V block of the rings (explicit P2P in fwd and bwd)."""

    @staticmethod
    def forward(fctx, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, state: EngineState) -> torch.Tensor:
        q = q.contiguous()
        kv = torch.stack([k, v])
        out, lse = ring_forward(state, q, kv)
        fctx.save_for_backward(q, kv, out, lse)
        fctx.state = state
        return out

    @staticmethod
    def backward(fctx, dout: torch.Tensor):
        q, kv, out, lse = fctx.saved_tensors
        dq, dkv = ring_backward(fctx.state, dout.contiguous(), q, kv, out, lse)
        return dq, dkv[0], dkv[1], None


# ----- all-to-all (Ulysses) ------------------------------------------------------------------------------

def _seq_to_heads(state: EngineState, x: torch.Tensor) -> torch.Tensor:
    """[B, S_me, H, d] -> [B, S_group, H/u, d]: my tokens of all heads -> the group's tokens of my heads."""
    u = state.a2a_group.size
    b, _, h, d = x.shape
    shapes = [torch.Size((b, n, h // u, d)) for n in state.a2a_sizes]
    parts = state.comm.all_to_all(list(x.chunk(u, dim=2)), state.a2a_group, shapes)
    return torch.cat(parts, dim=1)


def _heads_to_seq(state: EngineState, y: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`_seq_to_heads`."""
    mine = state.a2a_sizes[state.a2a_group.index(state.me)]
    b, _, h, d = y.shape
    shapes = [torch.Size((b, mine, h, d))] * state.a2a_group.size
    parts = state.comm.all_to_all(list(y.split(state.a2a_sizes, dim=1)), state.a2a_group, shapes)
    return torch.cat(parts, dim=2)


class SeqToHeads(torch.autograd.Function):
    @staticmethod
    def forward(fctx, x: torch.Tensor, state: EngineState) -> torch.Tensor:
        fctx.state = state
        return _seq_to_heads(state, x)

    @staticmethod
    def backward(fctx, grad: torch.Tensor):
        return _heads_to_seq(fctx.state, grad.contiguous()), None


class HeadsToSeq(torch.autograd.Function):
    @staticmethod
    def forward(fctx, y: torch.Tensor, state: EngineState) -> torch.Tensor:
        fctx.state = state
        return _heads_to_seq(state, y)

    @staticmethod
    def backward(fctx, grad: torch.Tensor):
        return _seq_to_heads(fctx.state, grad.contiguous()), None


# ----- the strategy steps ---------------------------------------------------------------------------------

def engine_prepare(topology_of: Callable[[CPProblem], Topology]) -> Callable[[CPContext], None]:
    """A strategy's ``prepare`` step for the topology ``topology_of(problem)``."""

    def prepare(ctx: CPContext) -> None:
        ctx.state["engine"] = prepare_engine(ctx, topology_of(ctx.problem))

    return prepare


def engine_attention(ctx: CPContext, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """A strategy's ``attention`` step: a2a (if any) -> nested rings -> a2a back (if any), differentiable."""
    state: EngineState = ctx.state["engine"]
    if state.a2a_group.size == 1:
        return RingAttention.apply(q, k, v, state)
    if state.kv_repeat > 1:
        k = k.repeat_interleave(state.kv_repeat, dim=2)
        v = v.repeat_interleave(state.kv_repeat, dim=2)
    q, k, v = (SeqToHeads.apply(t.contiguous(), state) for t in (q, k, v))
    out = RingAttention.apply(q, k, v, state)
    return HeadsToSeq.apply(out.contiguous(), state)


# ----- the schedule (for `lcbench predict`) ---------------------------------------------------------------
def engine_schedule(topology_of: Callable[[CPProblem], Topology], layout) -> Callable[[CPProblem, Placement], Schedule]:
    """A strategy's ``schedule``: the program :func:`ring_forward` / :func:`ring_backward` run, rank by rank,
    with the exact areas of ``layout`` on the problem's mask and the exact bytes of every transfer."""

    def schedule(problem: CPProblem, placement: Placement) -> Schedule:
        topology = topology_of(problem)
        topology.validate(problem.world_size)
        return EngineProgram(problem, topology, layout).schedule()

    return schedule


class EngineProgram:
    """The engine's program for every rank at once: origins and sizes as ``[W]`` arrays (ranks are symmetric in
    structure, so one walk of the levels describes them all)."""

    def __init__(self, problem: CPProblem, topology: Topology, layout) -> None:
        w = problem.world_size
        self.problem, self.topology = problem, topology
        positions = layout(problem)
        self.tokens = np.array([len(p) for p in positions], dtype=np.int64)
        self.group = np.empty(w, dtype=np.int64)  # a2a group index of every rank
        for g, members in enumerate(topology.a2a):
            self.group[list(members)] = g
        self.u = len(topology.a2a[0])
        self.repeat, self.heads_kv_local = head_split(problem, self.u)
        self.heads_local = problem.heads_q // self.u
        self.group_tokens = np.bincount(self.group, weights=self.tokens).astype(np.int64)
        rank_areas = layouts.rank_pair_areas(problem, layout, positions)
        onehot = np.zeros((len(topology.a2a), w))
        onehot[self.group, np.arange(w)] = 1.0
        self.group_areas = np.rint(onehot @ rank_areas @ onehot.T).astype(np.int64)
        self.heads_in_mask = problem.mask.intervals.num_heads
        self.itemsize = torch.empty((), dtype=problem.dtype).element_size()
        self.rings = [_ring_arrays(part, w) for part in topology.levels]

    # -- sizes -------------------------------------------------------------------------------------------
    def kv_block_bytes(self, origin: np.ndarray, size: int) -> np.ndarray:
        p = self.problem
        return 2 * p.batch * self.group_tokens[self.group[origin]] * self.heads_kv_local * p.head_dim * size

    def a2a_bytes(self, heads: int) -> np.ndarray:
        """Bytes each rank sends in one seq->heads (or heads->seq) all-to-all of a tensor with ``heads`` heads."""
        p = self.problem
        if self.u == 1:
            return np.zeros_like(self.tokens)
        return p.batch * self.tokens * (self.u - 1) * (heads // self.u) * p.head_dim * self.itemsize

    def leaf(self, origin: np.ndarray, direction: str) -> Compute:
        p = self.problem
        me = np.arange(p.world_size)
        area = self.group_areas[self.group[me], self.group[origin]] * self.heads_local * p.batch // self.heads_in_mask
        return Compute.of(area, self.group_tokens[self.group[me]], self.group_tokens[self.group[origin]],
                          self.heads_local, p.batch, direction)

    # -- the program ---------------------------------------------------------------------------------------
    def schedule(self) -> Schedule:
        b = ProgramBuilder()
        direction = self.problem.run.direction
        kv_heads = self.problem.heads_kv * self.repeat
        if direction in ("fwd", "fwd+bwd"):
            self._a2a(b, "q, k, v seq->heads", self.problem.heads_q + 2 * kv_heads)
            self._level_fwd(b, 0, np.arange(self.problem.world_size))
            self._a2a(b, "out heads->seq", self.problem.heads_q)
        if direction in ("bwd", "fwd+bwd"):
            self._a2a(b, "dout seq->heads", self.problem.heads_q)
            self._level_bwd(b, 0, np.arange(self.problem.world_size))
            self._a2a(b, "dq, dk, dv heads->seq", self.problem.heads_q + 2 * kv_heads)
        return b.build(self.peak_bytes(direction), {"a2a_size": self.u, "rings": [len(part[0]) for part in
                                                                                 self.topology.levels]})

    def _a2a(self, b: ProgramBuilder, name: str, heads: int) -> None:
        if self.u > 1:
            b.wait(b.post(name, Transfer(ALL_TO_ALL, self.a2a_bytes(heads), groups=self.topology.a2a)))

    def _level_fwd(self, b: ProgramBuilder, level: int, origin_of: np.ndarray) -> None:
        if level == len(self.rings):
            b.compute("attention", self.leaf(origin_of, FWD))
            return
        _, prv, _, n = self.rings[level]
        for s in range(n):
            shifted = origin_of[_back(self.rings[level], s)]
            handle = None
            if s < n - 1:
                handle = b.post(f"K/V ring {level} step {s}",
                                Transfer(SEND_RECV, self.kv_block_bytes(shifted, self.itemsize), peer=prv))
            self._level_fwd(b, level + 1, shifted)
            if handle is not None:
                b.wait(handle)

    def _level_bwd(self, b: ProgramBuilder, level: int, origin_of: np.ndarray) -> None:
        if level == len(self.rings):
            b.compute("attention backward", self.leaf(origin_of, BWD))
            return
        _, prv, _, n = self.rings[level]
        acc = None
        for s in range(n):
            shifted = origin_of[_back(self.rings[level], s)]
            kv = None
            if s < n - 1:
                kv = b.post(f"K/V ring {level} step {s}",
                            Transfer(SEND_RECV, self.kv_block_bytes(shifted, self.itemsize), peer=prv))
            self._level_bwd(b, level + 1, shifted)
            if acc is not None:
                b.wait(acc)
            if n > 1:
                acc = b.post(f"dK/dV ring {level} step {s}",
                             Transfer(SEND_RECV, self.kv_block_bytes(shifted, 4), peer=prv))
            if kv is not None:
                b.wait(kv)
        if acc is not None:
            b.wait(acc)

    def peak_bytes(self, direction: str) -> np.ndarray:
        """Inputs and output, the head-layout copies, two K/V blocks (one in flight), the float32 output
        accumulator; the backward adds float32 dq and two float32 dK/dV accumulators."""
        p = self.problem
        d, bsz, item = p.head_dim, p.batch, self.itemsize
        local = bsz * self.tokens * (2 * p.heads_q + 2 * p.heads_kv) * d * item
        rows = self.group_tokens[self.group]
        heads_layout = bsz * rows * (2 * self.heads_local + 2 * self.heads_kv_local) * d * item if self.u > 1 else 0
        blocks = 2 * self.kv_block_bytes(np.arange(p.world_size), item)
        acc = bsz * rows * self.heads_local * (d + 1) * 4
        total = local + heads_layout + blocks + acc
        if direction != "fwd":
            total = total + bsz * rows * self.heads_local * d * 4 + 2 * self.kv_block_bytes(np.arange(p.world_size), 4)
        return total


def _ring_arrays(part: Partition, world: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """(members of each rank's ring ``[W, n]``, previous member, index in its ring, ring size) of one level."""
    members = np.empty((world, len(part[0])), dtype=np.int64)
    prv, index = np.empty(world, dtype=np.int64), np.empty(world, dtype=np.int64)
    for ring in part:
        n = len(ring)
        for i, r in enumerate(ring):
            members[r], prv[r], index[r] = ring, ring[(i - 1) % n], i
    return members, prv, index, len(part[0])


def _back(ring: tuple[np.ndarray, np.ndarray, np.ndarray, int], steps: int) -> np.ndarray:
    """For every rank, the member ``steps`` places before it on its ring (what :meth:`EngineState.back` gives)."""
    members, _, index, n = ring
    return members[np.arange(len(index)), (index - steps) % n]
