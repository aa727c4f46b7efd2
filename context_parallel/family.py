"""Builders shared by the strategy files: the ring family, the 2-D family and the all-to-all degree rules.

The four ring strategies differ only in their layout, so each file is one call to :func:`ring_strategy`; the
two 2-D ones (all-to-all groups x a ring across them: ``usp``, ``hierarchical``) likewise differ only in their
layout and option name (:func:`a2a_ring_strategy`).
"""

from __future__ import annotations

import math
from typing import Optional

from harness.interfaces.strategy import CPProblem, Layout, Strategy
from context_parallel.engine import (Topology, check_heads, engine_attention, engine_prepare, engine_schedule,
                                     head_split)
from context_parallel.volumes import a2a_ring_bytes, ring_bytes


def ring_strategy(name: str, summary: str, layout: Layout, homepage: str = "") -> Strategy:
    """A single P2P ring over all ranks (see :mod:`context_parallel.engine`) on ``layout``."""

    def comm_model(problem: CPProblem, direction: str) -> list[int]:
        return ring_bytes(problem, [len(p) for p in layout(problem)], direction)

    return Strategy(
        name=name,
        summary=summary,
        layout=layout,
        prepare=engine_prepare(lambda p: Topology.ring(p.world_size)),
        attention=engine_attention,
        comm_model=comm_model,
        schedule=engine_schedule(lambda p: Topology.ring(p.world_size), layout),
        homepage=homepage,
    )


def divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]


def default_a2a_degree(problem: CPProblem) -> int:
    """The largest divisor u of W with u*u <= W that the heads allow (2-D: u x W/u, e.g. 2x2 at W=4)."""
    w = problem.world_size
    fits = [d for d in divisors(w) if d <= math.isqrt(w) and check_heads(problem, d) is None]
    return max(fits) if fits else 1


def a2a_degree(problem: CPProblem, option: str) -> int:
    value = problem.options.get(option)
    return default_a2a_degree(problem) if value is None else int(value)


def a2a_limits(problem: CPProblem, option: str) -> Optional[str]:
    """World size factorisation and head divisibility for an a2a degree option."""
    u = a2a_degree(problem, option)
    if u < 1 or problem.world_size % u:
        return f"{option}={u} does not divide world size {problem.world_size}"
    return check_heads(problem, u)


def a2a_ring_strategy(name: str, summary: str, layout: Layout, option: str, homepage: str = "") -> Strategy:
    """All-to-all inside groups of ``option`` consecutive ranks x a P2P ring across the groups, on ``layout``."""

    def comm_model(problem: CPProblem, direction: str) -> list[int]:
        u = a2a_degree(problem, option)
        repeat, _ = head_split(problem, u)
        return a2a_ring_bytes(problem, u, [problem.world_size // u], repeat, direction)

    return Strategy(
        name=name,
        summary=summary,
        layout=layout,
        prepare=engine_prepare(lambda p: Topology.a2a_then_ring(p.world_size, a2a_degree(p, option))),
        attention=engine_attention,
        options={option: None},
        limits=lambda p: a2a_limits(p, option),
        comm_model=comm_model,
        schedule=engine_schedule(lambda p: Topology.a2a_then_ring(p.world_size, a2a_degree(p, option)), layout),
        homepage=homepage,
    )
