"""Megatron-Core's context-parallel groups (harness.cluster.megatron_groups) are the groups our strategies use.

W gloo processes each build Megatron's CP groups (flat, and hierarchical [a2a, W/a2a] like TransformerEngine's
a2a+p2p) and prepare our ``ring`` and ``hierarchical`` strategies; rank 0 reports what every rank saw.
"""

from __future__ import annotations

import queue as queue_mod
import socket
import time

import pytest
import torch.multiprocessing as mp

pytestmark = pytest.mark.integration  # real Ray / process groups / the CLI end to end

pytest.importorskip("megatron.core")

A2A = 2  # hierarchical: all-to-all groups of 2 consecutive ranks (the GPUs of a node), a ring across


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _our_groups(strategy_name: str, world: int, rank: int, options: dict) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """(this rank's all-to-all group, its ring) as our strategy's ``prepare`` builds them."""
    import torch

    from harness.catalog import get_method, get_strategy
    from harness.interfaces import CPContext, CPProblem
    from harness.interfaces.comm import Comm
    from harness.masks import build_mask
    from harness.run import Run

    run = Run.make(method="blocksparse", strategy=strategy_name, mask="causal", seqlen=64, heads_q=4, heads_kv=4,
                   head_dim=8, world_size=world, direction="fwd", options=options)
    strategy = get_strategy(strategy_name)
    problem = CPProblem(run=run, mask=build_mask("causal", 64, 4), dtype=torch.float32, device=torch.device("cpu"))
    ctx = CPContext(problem=problem, rank=rank, comm=Comm(), positions=strategy.layout(problem),
                    kernel=get_method(run.method).local_kernel)
    strategy.prepare(ctx)
    topology = ctx.state["engine"].topology
    a2a = next(g for g in topology.a2a if rank in g)
    ring = next(g for g in topology.levels[-1] if rank in g)  # the outermost ring: across the a2a groups
    return a2a, ring


def _rank_main(rank: int, world: int, port: int, results) -> None:
    import torch.distributed as dist

    from harness.cluster.megatron_groups import megatron_cp_groups

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        seen: dict = {}
        with megatron_cp_groups() as flat:
            seen["megatron_cp"] = flat.cp.ranks
            seen["megatron_cp_size"] = dist.get_world_size(flat.cp.pg)
        seen["ring"] = _our_groups("ring", world, rank, {})
        if world > A2A:
            with megatron_cp_groups(hierarchical_sizes=[A2A, world // A2A]) as hier:
                seen["megatron_levels"] = hier.ranks_by_level
                seen["megatron_level_sizes"] = tuple(dist.get_world_size(g.pg) for g in hier.levels)
            seen["hierarchical"] = _our_groups("hierarchical", world, rank, {"a2a_size": A2A})
        everyone: list = [None] * world
        dist.all_gather_object(everyone, seen)
        if rank == 0:
            results.put(everyone)
    finally:
        dist.destroy_process_group()


def _run_ranks(world: int) -> list[dict]:
    ctx = mp.get_context("spawn")
    results = ctx.Queue()
    port = _free_port()
    procs = [ctx.Process(target=_rank_main, args=(r, world, port, results)) for r in range(world)]
    for p in procs:
        p.start()
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                return results.get(timeout=1.0)
            except queue_mod.Empty:
                if any(p.exitcode not in (None, 0) for p in procs):
                    break  # a rank died: its traceback is on stderr
        pytest.fail(f"ranks of world size {world} gave no answer (exit codes {[p.exitcode for p in procs]})")
    finally:
        for p in procs:
            p.join(timeout=30)
            if p.is_alive():
                p.kill()


@pytest.mark.parametrize("world", [2, pytest.param(4, marks=pytest.mark.slow)])  # 4 ranks on 2 cores: ~16 s
def test_megatron_cp_groups_are_our_strategy_groups(world: int) -> None:
    per_rank = _run_ranks(world)
    everyone = tuple(range(world))
    for rank, seen in enumerate(per_rank):
        # flat CP (tp=pp=1, cp=W): one group of all ranks, our single ring over all ranks
        assert seen["megatron_cp"] == everyone and seen["megatron_cp_size"] == world
        assert seen["ring"] == ((rank,), everyone)
        if world > A2A:
            # hierarchical [A2A, W/A2A]: level 0 = our all-to-all group, level 1 = our ring across them
            inner, outer = seen["megatron_levels"]
            assert (inner, outer) == seen["hierarchical"], f"rank {rank}"
            assert seen["megatron_level_sizes"] == (A2A, world // A2A)
            assert rank in inner and rank in outer and len(set(inner) & set(outer)) == 1


def test_sizes_that_do_not_divide_are_a_user_error() -> None:
    from harness.cluster.megatron_groups import _check_sizes
    from harness.errors import UserError

    with pytest.raises(UserError, match="context_parallel_size=3"):
        _check_sizes(4, 3, None)
    with pytest.raises(UserError, match="hierarchical_context_parallel_sizes"):
        _check_sizes(4, 4, [2, 3])
    _check_sizes(8, 4, [2, 2])
