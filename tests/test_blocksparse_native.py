"""The native block-sparse kernel: its plan covers every mask exactly, and its build fails clearly.

The kernel's numbers (forward and backward against float64, decode, GQA, the CP local-kernel contract) are
checked with every other method's by the registry-wide tests; these pin down what is its own (the plan, the
stacking of query heads, the build).
"""

from __future__ import annotations

import pytest
import torch

from harness.masks import MASKS, build_mask
from methods import _native
from methods.blocksparse_native import (
    KERNEL, NO_BITS, NativeBlockSparseAttention, make_native_plan, native_forward, q_block_for,
)

needs_kernel = pytest.mark.skipif(_native.unavailable_reason(KERNEL) is not None,
                                  reason=f"native kernel: {_native.unavailable_reason(KERNEL)}")


def covered(plan, sq: int, sk: int) -> torch.Tensor:
    """How many times the plan computes each (pattern, q, k) pair: [patterns, sq, sk]."""
    cover = torch.zeros(plan.num_patterns, sq, sk, dtype=torch.int64)
    for p in range(plan.num_patterns):
        for i in range(plan.num_q_blocks):
            q0 = i * plan.q_block
            lo, hi = int(plan.item_ptr[p * plan.num_q_blocks + i]), int(plan.item_ptr[p * plan.num_q_blocks + i + 1])
            for k0, k1, r0, r1, bits in plan.items[lo:hi].tolist():
                rows, keys = r1 - r0, k1 - k0
                allowed = torch.ones(rows, keys, dtype=torch.int64) if bits == NO_BITS else \
                    plan.bits[bits : bits + rows * keys].view(rows, keys).long()
                cover[p, q0 + r0 : q0 + r1, k0:k1] += allowed
    return cover


@pytest.mark.parametrize("name", sorted(MASKS))
def test_the_plan_computes_every_allowed_pair_once_and_no_other(name) -> None:
    seqlen = 1024  # what every pattern's default blocks divide; the plan's blocks below do not (ragged ends)
    mask = build_mask(name, seqlen, num_heads=2)
    plan = make_native_plan(mask.intervals, torch.arange(seqlen), torch.arange(seqlen), q_block=96, tile=96,
                            sub=40)
    dense = mask.intervals.evaluate(torch.arange(seqlen), torch.arange(seqlen))
    assert torch.equal(covered(plan, seqlen, seqlen), dense.long())
    assert plan.pairs == int(dense.sum())


def test_the_plan_follows_global_positions_of_a_shard() -> None:
    """A context-parallel shard: striped query rows against a zigzag-like, non-contiguous key block."""
    seqlen = 512
    mask = build_mask("sliding_window_causal", seqlen, window=100)
    q_pos = torch.arange(1, seqlen, 4)
    k_pos = torch.cat([torch.arange(0, 64), torch.arange(448, 512), torch.arange(128, 256, 2)])
    plan = make_native_plan(mask.intervals, q_pos, k_pos, q_block=32, tile=64, sub=16)
    dense = mask.intervals.evaluate(q_pos, k_pos)
    assert torch.equal(covered(plan, len(q_pos), len(k_pos)), dense.long())


def test_full_tiles_merge_into_one_run_per_query_block() -> None:
    """A causal mask's rows before the diagonal tile are one item (one GEMM stream), not one per tile."""
    seqlen = 1024
    mask = build_mask("causal", seqlen)
    plan = make_native_plan(mask.intervals, torch.arange(seqlen), torch.arange(seqlen), q_block=256, tile=256,
                            sub=64)
    last_block = plan.items[int(plan.item_ptr[-2]) : int(plan.item_ptr[-1])].tolist()
    assert last_block[0] == [0, 768, 0, 256, NO_BITS]  # three full tiles, merged
    assert all(k1 - k0 == 64 for k0, k1, *_ in last_block[1:])  # the diagonal tile, by sub-blocks
    assert [r0 for _, _, r0, _, _ in last_block[1:]] == [0, 64, 128, 192]  # rows above a sub-block are skipped


@needs_kernel
def test_a_row_with_no_allowed_key_gives_zeros_and_minus_infinity() -> None:
    """A CP block whose rows see none of its keys (a window long past them): zeros and lse -inf, never NaN."""
    q_pos, k_pos = torch.arange(100, 164), torch.arange(0, 64)
    mask = build_mask("sliding_window_causal", 164, window=10)
    plan = make_native_plan(mask.intervals, q_pos, k_pos, q_block=32, tile=32, sub=16)
    q, k, v = torch.randn(1, 64, 2, 8), torch.randn(1, 64, 1, 8), torch.randn(1, 64, 1, 8)
    out, lse = native_forward(q, k, v, plan, 0.3)
    assert torch.equal(out, torch.zeros_like(out)) and bool(torch.isneginf(lse).all())


def dense_attention(q, k, v, allowed, scale):
    """Float64 softmax attention under a dense mask ``[patterns, Sq, Sk]``, GQA by repeating K and V."""
    group = q.shape[2] // k.shape[2]
    k, v = (x.repeat_interleave(group, dim=2) for x in (k, v))
    scores = torch.einsum("bqhd,bkhd->bhqk", q, k) * scale
    scores = scores.masked_fill(~allowed.unsqueeze(0), float("-inf"))
    return torch.einsum("bhqk,bkhd->bqhd", torch.softmax(scores, -1), v)


@needs_kernel
@pytest.mark.parametrize("heads", [(8, 2), (6, 3), (3, 3)], ids=lambda h: f"H{h[0]}:{h[1]}")
@pytest.mark.parametrize("name,params", [("sliding_window_causal", {"window": 37}), ("causal_document", {}),
                                         ("s2", {})], ids=["window", "documents", "s2-per-head"])
def test_packed_heads_and_ragged_blocks_match_float64(name, params, heads) -> None:
    """The kernel stacks the query heads of a KV head into one task (GQA packing) when they share the mask:
    forward and all three gradients equal a dense float64 attention, on query blocks that do not divide S."""
    seqlen, (hq, hkv) = 200, heads
    mask = build_mask(name, seqlen, num_heads=hq, **params)
    pos = torch.arange(seqlen)
    plan = make_native_plan(mask.intervals, pos, pos, q_block_for(hq, hkv, mask.per_head), sub=16)
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, seqlen, h, 16, generator=g, dtype=torch.float64, requires_grad=True)
               for h in (hq, hkv, hkv))
    allowed = mask.intervals.evaluate(pos, pos).expand(hq, -1, -1)
    got = NativeBlockSparseAttention.apply(q, k, v, plan, 0.25)
    want = dense_attention(q, k, v, allowed, 0.25)
    dout = torch.randn_like(want)
    grads = torch.autograd.grad(got, (q, k, v), dout)
    want_grads = torch.autograd.grad(want, (q, k, v), dout)
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)
    for a, b in zip(grads, want_grads):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)


def test_without_a_compiler_the_reason_names_it(monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("CXX", "no-such-compiler-xyz")
    monkeypatch.setenv("LCBENCH_NATIVE_CACHE", str(tmp_path))
    with pytest.raises(_native.NativeUnavailable, match="no-such-compiler-xyz"):
        _native._build(KERNEL)


@needs_kernel
def test_a_build_is_cached_per_source_and_cpu(monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("LCBENCH_NATIVE_CACHE", str(tmp_path))
    first = _native._build(KERNEL)
    assert first.parent == tmp_path and first.exists()
    assert _native._build(KERNEL) == first and len(list(tmp_path.iterdir())) == 1  # no rebuild, no stray files
