"""DeepSpeed-Ulysses: all-to-all from sequence shards to head shards, full-sequence attention, and back.

Every rank ends up with the whole sequence for H/W of the heads, so the mask never crosses a shard and
the local kernel sees one (q, k) problem. The degree is the world size: it must divide heads_q, and
either divide heads_kv or be a multiple of it — then K/V heads are repeated W/heads_kv times before the
all-to-all (DeepSpeed's GQA rule), which costs the repeated bytes; anything else is ``unsupported``.
On gloo the all-to-all is torch's (gloo has it since torch 2.x); :class:`harness.interfaces.comm.Comm` falls
back to P2P exchanges of the same volume when a backend lacks it.
"""

from context_parallel import layouts
from harness.interfaces.strategy import CPProblem, Strategy
from context_parallel.engine import (Topology, check_heads, engine_attention, engine_prepare, engine_schedule,
                                     head_split, singletons)
from context_parallel.volumes import a2a_ring_bytes


def topology(problem: CPProblem) -> Topology:
    w = problem.world_size
    return Topology(a2a=(tuple(range(w)),), levels=(singletons(w),))


def comm_model(problem: CPProblem, direction: str) -> list[int]:
    repeat, _ = head_split(problem, problem.world_size)
    return a2a_ring_bytes(problem, problem.world_size, [1], repeat, direction)


STRATEGY = Strategy(
    name="ulysses",
    summary="all-to-all sequence->heads, full-sequence attention on H/W heads, all-to-all back (GQA: kv heads "
    "repeated when W > heads_kv)",
    layout=layouts.contiguous,
    prepare=engine_prepare(topology),
    attention=engine_attention,
    limits=lambda p: check_heads(p, p.world_size),
    comm_model=comm_model,
    schedule=engine_schedule(topology, layouts.contiguous),
    homepage="https://arxiv.org/abs/2309.14509",
)
