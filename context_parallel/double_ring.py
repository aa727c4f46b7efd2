"""LoongTrain's double ring: an inner ring within windows of ranks, an outer ring across windows.

Ranks ``j*w .. j*w+w-1`` form window j (w = option ``inner_size``; default the smallest divisor of W that
is >= sqrt(W), e.g. 2 at W=4). At each outer step every rank holds a K/V block received over the outer
ring (from the same position in the previous window) — the next outer block is already in flight — and the
window's blocks circulate on the inner ring. The same bytes as one ring (W-1 K/V blocks forward), but
the outer (inter-node) hops are W/w - 1 per rank instead of W-1 neighbour hops crossing nodes.
Layout: zigzag (head-tail) over all ranks.
"""

from typing import Optional

from context_parallel import layouts
from harness.interfaces.strategy import CPProblem, Strategy
from context_parallel.engine import Topology, engine_attention, engine_prepare, engine_schedule
from context_parallel.family import divisors
from context_parallel.volumes import FP32, directions, kv_bytes, nested_ring_sends

OPTION = "inner_size"


def inner_size(problem: CPProblem) -> int:
    value = problem.options.get(OPTION)
    if value is not None:
        return int(value)
    w = problem.world_size
    return min(d for d in divisors(w) if d * d >= w)


def limits(problem: CPProblem) -> Optional[str]:
    w = inner_size(problem)
    if w < 1 or problem.world_size % w:
        return f"{OPTION}={w} does not divide world size {problem.world_size}"
    return None


def comm_model(problem: CPProblem, direction: str) -> list[int]:
    w = inner_size(problem)
    kv_sends, acc_sends = nested_ring_sends([problem.world_size // w, w])
    tokens = problem.seqlen // problem.world_size
    fwd = kv_sends * kv_bytes(problem, tokens)
    bwd = fwd + acc_sends * kv_bytes(problem, tokens, size=FP32)
    return directions([fwd] * problem.world_size, [bwd] * problem.world_size, direction)


STRATEGY = Strategy(
    name="double_ring",
    summary="LoongTrain double ring: inner P2P ring inside windows of inner_size ranks, outer ring across "
    "windows (next outer block in flight during the inner ring); zigzag layout",
    layout=layouts.zigzag,
    prepare=engine_prepare(lambda p: Topology.double_ring(p.world_size, inner_size(p))),
    attention=engine_attention,
    options={OPTION: None},
    limits=limits,
    comm_model=comm_model,
    schedule=engine_schedule(lambda p: Topology.double_ring(p.world_size, inner_size(p)), layouts.zigzag),
    homepage="https://arxiv.org/abs/2406.18485",
)
