"""Context-parallel rank groups as Megatron-Core builds them (``megatron.core.parallel_state``).

A Megatron user's CP ranks come from ``parallel_state.initialize_model_parallel(context_parallel_size=W,
hierarchical_context_parallel_sizes=[a2a, ring])``: one CP group of W ranks and, for TransformerEngine's
``a2a+p2p`` communication, one sub-group per level (level 0: ``a2a`` consecutive ranks, the all-to-all
inside a node; level 1: the ranks with the same index in their level-0 groups, the ring across nodes).

:func:`megatron_cp_groups` builds those groups inside an initialised default process group (gloo on CPU,
NCCL on GPU) and returns them as :class:`~harness.interfaces.comm.Group` values (global ranks in group order
plus the process group), the type our strategies' communication uses. tests/test_megatron_groups checks that
they are the groups our ``ring``/``hierarchical``/``usp`` strategies build, so a run of lcbench at world size
W with ``a2a_size=a`` communicates over the same ranks as Megatron-Core with ``hierarchical_context_parallel_sizes
= [a, W/a]``.

Megatron's parallel state is process-global: the groups live until the context manager exits
(``destroy_model_parallel``), and only one set can exist at a time.
"""

from __future__ import annotations

import contextlib
import importlib.util
import warnings
from dataclasses import dataclass
from typing import Iterator, Optional, Sequence

import torch.distributed as dist

from harness.errors import UserError
from harness.interfaces.comm import Group


@dataclass(frozen=True)
class CPGroups:
    """This rank's Megatron context-parallel groups."""

    cp: Group  # all ranks of this rank's CP group
    levels: tuple[Group, ...] = ()  # hierarchical sub-groups, level 0 (innermost: all-to-all) first; () if flat

    @property
    def ranks_by_level(self) -> tuple[tuple[int, ...], ...]:
        return tuple(g.ranks for g in self.levels)


def _parallel_state():
    """``megatron.core.parallel_state``, imported quietly (it warns that TransformerEngine/Apex are absent)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from megatron.core import parallel_state

    return parallel_state


def _check_sizes(world_size: int, cp_size: int, hierarchical: Optional[Sequence[int]]) -> None:
    if cp_size < 1 or world_size % cp_size:
        raise UserError(f"context_parallel_size={cp_size}: must divide the world size {world_size}")
    if hierarchical:
        product = 1
        for s in hierarchical:
            product *= int(s)
        if product != cp_size or any(int(s) < 1 for s in hierarchical):
            raise UserError(f"hierarchical_context_parallel_sizes={list(hierarchical)}: positive sizes whose "
                            f"product is context_parallel_size={cp_size} (e.g. [{2 if cp_size % 2 == 0 else 1}, "
                            f"{cp_size // 2 if cp_size % 2 == 0 else cp_size}])")


@contextlib.contextmanager
def megatron_cp_groups(context_parallel_size: Optional[int] = None,
                       hierarchical_sizes: Optional[Sequence[int]] = None) -> Iterator[CPGroups]:
    """Build Megatron-Core's CP groups (size ``context_parallel_size``, default the world size; hierarchical
    levels ``hierarchical_sizes``, innermost first) and yield this rank's. Collective: every rank of the
    default group must enter with the same arguments. Tensor/pipeline parallel sizes are 1; the remaining
    factor is data parallel."""
    if not dist.is_initialized():
        raise RuntimeError("megatron_cp_groups needs an initialised default process group")
    world, rank = dist.get_world_size(), dist.get_rank()
    cp_size = world if context_parallel_size is None else int(context_parallel_size)
    _check_sizes(world, cp_size, hierarchical_sizes)
    if hierarchical_sizes and importlib.util.find_spec("einops") is None:
        raise UserError("hierarchical_context_parallel_sizes: Megatron-Core builds hierarchical groups with einops, "
                        "which is not installed (pip install einops)")
    ps = _parallel_state()
    if ps.model_parallel_is_initialized():
        raise RuntimeError("Megatron-Core's model parallel state is already initialised in this process")
    ps.initialize_model_parallel(
        context_parallel_size=cp_size,
        hierarchical_context_parallel_sizes=list(hierarchical_sizes) if hierarchical_sizes else None,
        create_gloo_process_groups=False,
    )
    try:
        cp = Group(tuple(ps.get_context_parallel_global_ranks()), ps.get_context_parallel_group())
        levels: tuple[Group, ...] = ()
        if hierarchical_sizes:
            levels = tuple(Group(tuple(dist.get_process_group_ranks(pg)), pg)
                           for pg in ps.get_hierarchical_context_parallel_groups())
        assert rank in cp.ranks and all(rank in g.ranks for g in levels)
        yield CPGroups(cp, levels)
    finally:
        ps.destroy_model_parallel()
