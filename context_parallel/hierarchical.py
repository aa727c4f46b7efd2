"""TransformerEngine-style hierarchical CP (``cp_comm_type="a2a+p2p"``): all-to-all inside a node, ring across.

Groups of ``a2a_size`` consecutive ranks (the GPUs of a node; default as ``usp``'s degree) exchange heads
by all-to-all, then a P2P ring runs across the groups. Unlike ``usp`` the layout is TransformerEngine's
load-balanced one over ALL ranks (2W chunks, rank i holds i and 2W-1-i), so each group's combined shard is
the union of its members' head-tail chunks.
"""

from context_parallel import layouts
from context_parallel.base import CPProblem, Strategy
from context_parallel.engine import Topology, engine_attention, engine_prepare, head_split
from context_parallel.family import a2a_degree, a2a_limits
from context_parallel.volumes import a2a_ring_bytes

OPTION = "a2a_size"


def comm_model(problem: CPProblem, direction: str) -> list[int]:
    u = a2a_degree(problem, OPTION)
    repeat, _ = head_split(problem, u)
    return a2a_ring_bytes(problem, u, [problem.world_size // u], repeat, direction)


STRATEGY = Strategy(
    name="hierarchical",
    summary="TransformerEngine a2a+p2p: all-to-all inside groups of a2a_size consecutive ranks, P2P ring across "
    "groups, load-balanced head-tail layout over all ranks",
    layout=layouts.zigzag,
    prepare=engine_prepare(lambda p: Topology.a2a_then_ring(p.world_size, a2a_degree(p, OPTION))),
    attention=engine_attention,
    options={OPTION: None},
    limits=lambda p: a2a_limits(p, OPTION),
    comm_model=comm_model,
    homepage="https://github.com/NVIDIA/TransformerEngine",
)
