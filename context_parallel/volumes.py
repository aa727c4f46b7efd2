"""Analytic communication volumes: bytes each rank sends, from the algorithms' definitions (closed forms).

These are the ``comm_model`` of the built-in strategies: tests check the measured ``comm_bytes`` (what the
code handed to :mod:`harness.interfaces.comm`) against them, and the bench prints both side by side.
Conventions: K and V travel in the input dtype; dK/dV accumulators travel in float32 (as in
ring-flash-attention); all-to-all outputs and gradients travel in the input dtype.

Notation: ``kv(n)`` = bytes of K and V for n tokens = 2·B·n·Hkv·d·itemsize. A ring of n members sends n-1
K/V blocks per pass; its backward sends n-1 K/V blocks and n dK/dV accumulators (the last hop returns each
accumulator to its owner). A nested ring runs its inner passes once per outer step.
"""

from __future__ import annotations

import torch

from harness.interfaces.strategy import CPProblem

FP32 = 4


def itemsize(problem: CPProblem) -> int:
    return torch.empty((), dtype=problem.dtype).element_size()


def tensor_bytes(problem: CPProblem, tokens: int, heads: int, size: int | None = None) -> int:
    return problem.batch * tokens * heads * problem.head_dim * (size or itemsize(problem))


def kv_bytes(problem: CPProblem, tokens: int, heads: int | None = None, size: int | None = None) -> int:
    return 2 * tensor_bytes(problem, tokens, problem.heads_kv if heads is None else heads, size)


def directions(fwd: list[int], bwd: list[int], direction: str) -> list[int]:
    """Per-rank totals for ``direction`` given the forward and backward volumes."""
    if direction == "fwd":
        return fwd
    if direction == "bwd":
        return bwd
    return [a + b for a, b in zip(fwd, bwd)]


def ring_bytes(problem: CPProblem, sizes: list[int], direction: str) -> list[int]:
    """One ring over all ranks in rank order; ``sizes`` = tokens per rank (shards may differ in size).

    Forward: rank r sends the blocks of ranks r, r-1, ..., r-W+2 (all but r+1's). Backward: the same K/V
    blocks plus one float32 accumulator of every block.
    """
    w = len(sizes)
    blocks = [kv_bytes(problem, n) for n in sizes]
    fwd = [sum(blocks) - blocks[(r + 1) % w] if w > 1 else 0 for r in range(w)]  # all blocks but r+1's
    acc = sum(kv_bytes(problem, n, size=FP32) for n in sizes) if w > 1 else 0
    return directions(fwd, [f + acc for f in fwd], direction)


def nested_ring_sends(ring_sizes: list[int]) -> tuple[int, int]:
    """(K/V block sends, accumulator sends) per rank for nested rings of the given sizes, outer first."""
    kv_sends = acc_sends = 0
    passes = 1
    for n in ring_sizes:
        kv_sends += passes * (n - 1)
        acc_sends += passes * (n if n > 1 else 0)
        passes *= n
    return kv_sends, acc_sends


def a2a_ring_bytes(problem: CPProblem, a2a_size: int, ring_sizes: list[int], kv_repeat: int,
                   direction: str) -> list[int]:
    """All-to-all groups of ``a2a_size`` around nested rings; equal shards of S/W tokens on every rank.

    Forward: q, k, v (k, v with kv heads repeated ``kv_repeat`` times) seq->heads and the output heads->seq
    each send (u-1)/u of the local tensor; then the rings' K/V blocks (same bytes as the local K/V).
    Backward: dout seq->heads and dq, dk, dv heads->seq, then the rings' K/V blocks and accumulators.
    """
    u, w = a2a_size, problem.world_size
    tokens = problem.seqlen // w
    q = tensor_bytes(problem, tokens, problem.heads_q)
    kv = kv_bytes(problem, tokens, problem.heads_kv * kv_repeat)
    kv32 = kv_bytes(problem, tokens, problem.heads_kv * kv_repeat, size=FP32)
    kv_sends, acc_sends = nested_ring_sends(ring_sizes)
    a2a = (u - 1) * (2 * q + kv) // u
    fwd = a2a + kv_sends * kv
    bwd = a2a + kv_sends * kv + acc_sends * kv32
    return directions([fwd] * w, [bwd] * w, direction)


def all_gather_bytes(problem: CPProblem, sizes: list[int], direction: str) -> list[int]:
    """Forward: ring all-gather of K and V ((W-1) local blocks, padded to the largest shard).
    Backward: ring reduce-scatter of the float32 dK/dV (everything but one's own block)."""
    w = len(sizes)
    fwd = [(w - 1) * kv_bytes(problem, max(sizes))] * w
    total = sum(kv_bytes(problem, n, size=FP32) for n in sizes)
    bwd = [total - kv_bytes(problem, n, size=FP32) for n in sizes]
    return directions(fwd, bwd, direction)
