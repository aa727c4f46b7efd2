"""The one communication layer of the strategies: thin wrappers over torch.distributed that count bytes.

Every strategy communicates through a :class:`Comm`, so the ``comm_bytes`` of a record is what the
strategy's code actually handed to the network, per rank:

* point-to-point (``exchange``): the exact bytes of every tensor sent;
* collectives: the bytes a bandwidth-optimal implementation sends per rank — ring all-gather and ring
  reduce-scatter send everything but one block (``(g-1)/g`` of the full tensor for equal blocks),
  all-to-all sends the chunks addressed to the other ranks. The backend's own algorithm may differ (gloo
  uses other algorithms for some sizes); the counted volume is the algorithm's, which is what papers quote.

Collectives the backend lacks are emulated with point-to-point exchanges (same counted volume): older gloo
builds have no ``all_to_all``/``reduce_scatter``; torch 2.13's gloo has both, so the fallback runs only when
a call raises "not supported" or when ``Comm(native_collectives=False)`` forces it (the run option
``collectives="p2p"``; tests exercise both).

Subgroups (``partition``) are created collectively with ``torch.distributed.new_group`` — every rank calls
``partition`` with the same argument in the same order — and cached for the life of the default group
(many runs on one group create them once). Point-to-point messages use global ranks on the default group
and a tag per logical stream (gloo matches by source and tag; NCCL by
order, which the strategies keep identical on both sides).

Third-party code that calls torch.distributed itself (the peer strategies) can be counted with
:meth:`Comm.counting_torch_distributed`, which patches the module-level functions for the duration of a
block (code that imported a function by name before the patch, or uses functional collectives, is missed).
"""

from __future__ import annotations

import contextlib
import datetime
from collections import Counter
from dataclasses import dataclass
from typing import Iterator, Optional, Sequence

import torch
import torch.distributed as dist

DEFAULT_TIMEOUT = datetime.timedelta(seconds=120)


def default_group_timeout() -> datetime.timedelta:
    """The timeout the default group was initialised with (``DEFAULT_TIMEOUT`` if it cannot be read)."""
    try:
        backend = dist.group.WORLD._get_backend(torch.device("cpu"))
        return backend.options._timeout
    except Exception:  # noqa: BLE001 — private API: fall back rather than fail
        return DEFAULT_TIMEOUT


def nbytes(t: torch.Tensor) -> int:
    return t.numel() * t.element_size()


@dataclass(frozen=True)
class Group:
    """Global ranks of a group in group order, with its process group (None: the default group when the
    group is all ranks; unused for a one-rank group, whose collectives are local copies)."""

    ranks: tuple[int, ...]
    pg: Optional[dist.ProcessGroup] = None

    @property
    def size(self) -> int:
        return len(self.ranks)

    def index(self, rank: int) -> int:
        return self.ranks.index(rank)


class Pending:
    """Outstanding point-to-point operations; ``wait()`` returns the receive buffers in request order."""

    def __init__(self, works: list, received: list[torch.Tensor]):
        self._works, self._received = works, received

    def wait(self) -> list[torch.Tensor]:
        for w in self._works:
            w.wait()
        self._works = []
        return self._received


class Comm:
    """Byte-counting communication for one rank (see the module docstring)."""

    def __init__(self, native_collectives: bool = True, timeout: Optional[datetime.timedelta] = None):
        self.rank = dist.get_rank()
        self.world_size = dist.get_world_size()
        self.world = Group(tuple(range(self.world_size)), None)
        self.native = native_collectives
        self.timeout = timeout or default_group_timeout()  # subgroups time out like the default group
        self.sent_bytes = 0
        self.ops: Counter = Counter()  # op name -> bytes sent

    # ----- accounting ---------------------------------------------------------------------------------
    def reset(self) -> None:
        self.sent_bytes = 0
        self.ops = Counter()

    def count(self, op: str, sent: int) -> None:
        """Record the bytes one operation sends (also for code that communicates by other means)."""
        self.sent_bytes += sent
        self.ops[op] += sent

    # ----- groups -------------------------------------------------------------------------------------
    def partition(self, parts: Sequence[Sequence[int]]) -> Group:
        """Create one group per part (collective: same ``parts`` on every rank); return this rank's."""
        parts_key = tuple(tuple(int(r) for r in p) for p in parts)
        key = (id(dist.group.WORLD), parts_key)  # groups live as long as the default group: reuse across runs
        if key not in _GROUPS:
            covered = sorted(r for p in parts_key for r in p)
            if covered != list(range(self.world_size)):
                raise ValueError(f"partition {parts_key} does not cover ranks 0..{self.world_size - 1} once each")
            mine = None
            for part in parts_key:
                if len(part) == self.world_size or len(part) == 1:  # the default group / no group needed
                    group = Group(part, None)
                else:
                    group = Group(part, dist.new_group(list(part), timeout=self.timeout))
                if self.rank in part:
                    mine = group
            _GROUPS[key] = mine
        return _GROUPS[key]

    # ----- point to point ------------------------------------------------------------------------------
    def exchange(
        self,
        sends: Sequence[tuple[torch.Tensor, int]],
        recvs: Sequence[tuple[torch.Tensor, int]],
        tag: int = 0,
    ) -> Pending:
        """Post sends ``(tensor, dst)`` and receives ``(buffer, src)`` (global ranks) without waiting.

        Tensors being sent must not be modified until ``wait()``; receives fill the given buffers.
        """
        works = []
        for buf, src in recvs:
            works.append(dist.irecv(buf, src=src, tag=tag))
        for t, dst in sends:
            works.append(dist.isend(t, dst=dst, tag=tag))
            self.count("p2p", nbytes(t))
        return Pending(works, [b for b, _ in recvs])

    # ----- collectives ---------------------------------------------------------------------------------
    def all_gather(self, x: torch.Tensor, group: Optional[Group] = None) -> list[torch.Tensor]:
        """Every member's ``x`` (same shape everywhere), in group order."""
        group = group or self.world
        x = x.contiguous()
        self.count("all_gather", (group.size - 1) * nbytes(x))
        if group.size == 1:
            return [x]
        out = [torch.empty_like(x) for _ in range(group.size)]
        dist.all_gather(out, x, group=group.pg)
        return out

    def all_gather_varlen(self, x: torch.Tensor, dim: int, sizes: Sequence[int],
                          group: Optional[Group] = None) -> list[torch.Tensor]:
        """All-gather of tensors that differ only in size along ``dim`` (padded to the largest, then cut)."""
        longest = max(sizes)
        pad_shape = list(x.shape)
        pad_shape[dim] = longest - x.shape[dim]
        padded = torch.cat([x, x.new_zeros(pad_shape)], dim=dim) if pad_shape[dim] else x
        parts = self.all_gather(padded, group)
        return [p.narrow(dim, 0, n) for p, n in zip(parts, sizes)]

    def all_to_all(self, chunks: Sequence[torch.Tensor], group: Optional[Group] = None,
                   recv_shapes: Optional[Sequence[torch.Size]] = None) -> list[torch.Tensor]:
        """Send ``chunks[j]`` to member j; return what each member sent here (shapes default to ``chunks``')."""
        group = group or self.world
        me = group.index(self.rank)
        chunks = [c.contiguous() for c in chunks]
        shapes = recv_shapes or [c.shape for c in chunks]
        out = [chunks[me] if j == me else chunks[me].new_empty(shapes[j]) for j in range(group.size)]
        sent = sum(nbytes(c) for j, c in enumerate(chunks) if j != me)
        self.count("all_to_all", sent)
        if group.size == 1:
            return out
        if self.native:
            try:
                native_out = list(out)
                native_out[me] = torch.empty_like(chunks[me])  # the backend writes it: never into the input
                dist.all_to_all(native_out, chunks, group=group.pg)
                return native_out
            except RuntimeError as e:
                if "support" not in str(e).lower():
                    raise
                self.native = False  # the backend lacks it: same result and volume over P2P from now on
        _p2p_exchange(chunks, out, group, me, _A2A_TAG)
        return out

    def reduce_scatter(self, chunks: Sequence[torch.Tensor], group: Optional[Group] = None) -> torch.Tensor:
        """Sum over members of ``chunks[j]``, delivered to member j (chunk shapes may differ per member)."""
        group = group or self.world
        me = group.index(self.rank)
        chunks = [c.contiguous() for c in chunks]
        total = sum(nbytes(c) for c in chunks)
        self.count("reduce_scatter", total - nbytes(chunks[me]))
        if group.size == 1:
            return chunks[0].clone()
        same = all(c.shape == chunks[0].shape for c in chunks)
        if self.native and same:
            out = torch.empty_like(chunks[me])
            try:
                dist.reduce_scatter(out, list(chunks), group=group.pg)
                return out
            except RuntimeError as e:
                if "support" not in str(e).lower():
                    raise
                self.native = False
        # P2P: everyone sends chunk j to member j, each member sums what it receives (same counted volume
        # as a ring: every chunk but one's own leaves the rank once).
        recv = [torch.empty_like(chunks[me]) for _ in range(group.size)]
        recv[me] = chunks[me]
        _p2p_exchange(chunks, recv, group, me, _RS_TAG)
        return torch.stack(recv).sum(0)

    def barrier(self, group: Optional[Group] = None) -> None:
        dist.barrier(group=(group or self.world).pg)

    # ----- third-party code -----------------------------------------------------------------------------
    @contextlib.contextmanager
    def counting_torch_distributed(self) -> Iterator[None]:
        """Count the bytes of torch.distributed calls made inside the block (for peers' library code)."""
        originals = {name: getattr(dist, name) for name in _COUNTED if hasattr(dist, name)}

        def size_of(group) -> int:
            return dist.get_world_size(group)

        def wrap(name, fn):
            def counted(*args, **kwargs):
                sent = _bytes_of_call(name, args, kwargs, size_of(kwargs.get("group")))
                self.count(name, sent)
                return fn(*args, **kwargs)
            return counted

        try:
            for name, fn in originals.items():
                setattr(dist, name, wrap(name, fn))
            yield
        finally:
            for name, fn in originals.items():
                setattr(dist, name, fn)


_GROUPS: dict[tuple, Group] = {}  # (default group, partition) -> this rank's group

_A2A_TAG = 1 << 20
_RS_TAG = (1 << 20) + 1

_COUNTED = (
    "isend", "irecv", "send", "recv", "batch_isend_irecv", "all_gather", "all_gather_into_tensor",
    "reduce_scatter", "reduce_scatter_tensor", "all_to_all", "all_to_all_single", "all_reduce",
)


def _bytes_of_call(name: str, args: tuple, kwargs: dict, group_size: int) -> int:
    """Bytes one rank sends in a torch.distributed call, by the conventions of the module docstring."""
    def arg(i: int, key: str):
        return args[i] if len(args) > i else kwargs.get(key)

    g = max(group_size, 1)
    if name in ("isend", "send"):
        return nbytes(arg(0, "tensor"))
    if name in ("irecv", "recv"):
        return 0
    if name == "batch_isend_irecv":
        return sum(nbytes(op.tensor) for op in arg(0, "p2p_op_list") if op.op in (dist.isend, dist.send))
    if name == "all_gather":
        return (g - 1) * nbytes(arg(1, "tensor"))
    if name == "all_gather_into_tensor":
        return (g - 1) * nbytes(arg(1, "input_tensor"))
    if name == "reduce_scatter":
        return (g - 1) * nbytes(arg(0, "output"))
    if name == "reduce_scatter_tensor":
        return (g - 1) * nbytes(arg(0, "output"))
    if name == "all_to_all":
        inputs = arg(1, "input_tensor_list")
        return sum(nbytes(t) for t in inputs) * (g - 1) // g
    if name == "all_to_all_single":
        return nbytes(arg(1, "input")) * (g - 1) // g
    if name == "all_reduce":
        return 2 * (g - 1) * nbytes(arg(0, "tensor")) // g  # ring all-reduce
    return 0


def _p2p_exchange(chunks: Sequence[torch.Tensor], out: list[torch.Tensor], group: Group, me: int, tag: int) -> None:
    """Member j receives ``chunks[j]`` from every member into ``out[sender]`` (all pairs at once, over P2P)."""
    works = []
    for j, peer in enumerate(group.ranks):
        if j != me:
            works.append(dist.irecv(out[j], src=peer, tag=tag))
            works.append(dist.isend(chunks[j], dst=peer, tag=tag))
    for w in works:
        w.wait()
