"""USP (Unified Sequence Parallelism, yunchang): Ulysses inside groups x a ring across groups (2-D).

Ranks ``j*u .. j*u+u-1`` form Ulysses group j (u = option ``ulysses_degree``; default the largest divisor
of W with u*u <= W that the heads allow, e.g. 2x2 at W=4); ranks with the same index in their groups form
the ring (R = W/u members). Layout as yunchang's ``extract_local`` for the zigzag ring: the sequence is cut
into 2R chunks, ring rank j's group holds chunks j and 2R-1-j, split contiguously over its u members, so
after the all-to-all each group holds a balanced head-tail shard.
"""

import torch

from harness.interfaces.strategy import CPProblem, Unsupported
from context_parallel.family import a2a_degree, a2a_ring_strategy
from context_parallel.layouts import split_head_tail

OPTION = "ulysses_degree"


def layout(problem: CPProblem) -> list[torch.Tensor]:
    u = a2a_degree(problem, OPTION)
    r = problem.world_size // u
    per_group = split_head_tail(torch.arange(problem.seqlen), r)
    if len(per_group[0]) % u:
        raise Unsupported(f"seqlen {problem.seqlen}: a ring shard of {len(per_group[0])} tokens is not "
                          f"divisible by {OPTION}={u}")
    return [piece for group in per_group for piece in group.chunk(u)]


STRATEGY = a2a_ring_strategy(
    "usp",
    "2-D: Ulysses all-to-all inside groups of ulysses_degree ranks x zigzag P2P ring across groups",
    layout,
    OPTION,
    homepage="https://arxiv.org/abs/2405.07719",
)
