"""lcbench's block-sparse kernel: work follows the mask, and any positions (shards) are exact."""

import torch

from harness.execution.gate import check_method
from harness.masks import build_mask
from methods.blocksparse import blocksparse_attention, make_plan


def test_plan_skips_empty_tiles_and_uses_causal_diagonal():
    mask = build_mask("causal", 1024)
    pos = torch.arange(1024)
    plan = make_plan(mask.intervals, pos, pos, torch.float32, block_q=128, block_k=128)
    # each q tile: one merged call for the full tiles left of the diagonal (none for the first) + the diagonal
    assert plan.num_calls == 8 + 7
    assert all(row[-1].causal for row in plan.items)
    assert plan.area == mask.area()


def test_sliding_window_work_is_proportional_to_the_window():
    s = 4096
    pos = torch.arange(s)
    narrow = make_plan(build_mask("sliding_window_causal", s, window=256).intervals, pos, pos, torch.float32)
    keys = sum(it.k1 - it.k0 for row in narrow.items for it in row)
    assert keys <= (s // 256) * (256 + 2 * 256)


def test_shards_with_global_positions_are_exact():
    """A striped shard of queries against a zigzag shard of keys: the mask is evaluated at global positions."""
    s, world = 512, 4
    mask = build_mask("causal_document", s)
    q_pos = torch.arange(1, s, world)
    chunks = torch.arange(s).chunk(2 * world)
    k_pos = torch.cat([chunks[1], chunks[2 * world - 2]])
    g = torch.Generator().manual_seed(0)
    q = torch.randn(1, s, 4, 16, generator=g)
    k = torch.randn(1, s, 2, 16, generator=g)
    v = torch.randn(1, s, 2, 16, generator=g)
    plan = make_plan(mask.intervals, q_pos, k_pos, torch.float32, block_q=32, block_k=48)
    out = blocksparse_attention(q[:, q_pos], k[:, k_pos], v[:, k_pos], plan, 16**-0.5)
    allowed = mask.dense(q_pos, k_pos)[0]
    scores = torch.einsum("bqhd,bkhd->bhqk", q[:, q_pos].double(), k[:, k_pos].double().repeat_interleave(2, 2))
    probs = torch.softmax((scores * 16**-0.5).masked_fill(~allowed, float("-inf")), -1).nan_to_num(0)
    ref = torch.einsum("bhqk,bkhd->bqhd", probs, v[:, k_pos].double().repeat_interleave(2, 2))
    assert torch.allclose(out.double(), ref, atol=1e-5)


def test_rows_without_keys_give_zero_output_and_gradient():
    s = 256
    mask = build_mask("sliding_window_causal", s, window=8)
    q_pos = torch.arange(0, 64)
    k_pos = torch.arange(128, 256)  # every query is before every key: nothing allowed
    plan = make_plan(mask.intervals, q_pos, k_pos, torch.float32, block_q=32, block_k=32)
    assert plan.num_calls == 0
    q = torch.randn(1, 64, 2, 8, requires_grad=True)
    k = torch.randn(1, 128, 2, 8, requires_grad=True)
    v = torch.randn(1, 128, 2, 8, requires_grad=True)
    out = blocksparse_attention(q, k, v, plan, 0.3)
    out.sum().backward()
    assert out.abs().max() == 0 and q.grad.abs().max() == 0 and k.grad.abs().max() == 0


def test_bfloat16_gate_at_length_not_divisible_by_tiles():
    from methods.blocksparse import METHOD
    from harness.interfaces import Problem

    mask = build_mask("causal_document", 777)
    p = Problem(mask, 2, 777, 4, 1, 32, torch.bfloat16, torch.device("cpu"), True, {"block_q": 100, "block_k": 60})
    q, k, v = (torch.randn(2, 777, h, 32).bfloat16() for h in (4, 1, 1))
    assert check_method(METHOD.build(p), q, k, v, mask, p.scale, True).ok


def test_masks_exact_at_a_larger_tile_get_it_and_the_others_keep_the_default():
    """Causal needs no additive mask at 1024 x 1024 tiles (full tiles and causal diagonals): it gets them; a
    pattern whose 1024-tiles would be partly masked (PowerAttention) keeps 256; tiles set in the options are
    kept as given."""
    from methods.blocksparse import _plan
    from harness.interfaces import Problem

    def plan(mask, options=None):
        return _plan(Problem(build_mask(mask, 4096), 1, 4096, 2, 1, 16, torch.float32, torch.device("cpu"), True,
                             options or {}))

    assert plan("causal").q_tiles[0] == (0, 1024) and plan("causal").num_calls == 4 + 3
    assert plan("power").q_tiles[0] == (0, 256)
    assert plan("causal", {"block_q": 128}).q_tiles[0] == (0, 128)

