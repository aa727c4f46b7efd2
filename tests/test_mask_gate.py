"""Every mask pattern passes the float64 correctness gate with the kernels that claim to run any mask.

Small problems (S = 480, GQA 4:2, head dim 16, float32, forward + backward) with every pattern's registered
``examples`` (parameters meaningful at small lengths); the block-sparse kernel runs with small, unequal tiles
(64 x 32) and a ragged last q tile, so empty, full, causal-diagonal and arbitrary partial tiles all occur.
"""

from __future__ import annotations

import pytest
import torch

import methods.blocksparse
import methods.naive
from harness.execution.gate import check_method
from harness.masks import MASKS, build_mask
from harness.interfaces import Problem

SEQLEN = 480
HEADS_Q, HEADS_KV, HEAD_DIM = 4, 2, 16

# Each pattern's registered small-length examples (a new pattern is covered for free), plus a few variants.
EXTRA = [
    ("neighborhood", {"window": 65, "stride": 1, "dilation": 1, "causal": True}),  # varlen-expressible case
    ("s2", {"block": 16, "local_blocks": 2, "vert_stride": 4}),
    ("power", {"block": 24}),  # blocks that do not divide the tiles
]
CASES = [(name, dict(ex)) for name in sorted(MASKS) for ex in MASKS[name].examples] + EXTRA
METHODS = {"naive": methods.naive.METHOD, "blocksparse": methods.blocksparse.METHOD}


@pytest.mark.parametrize("method", sorted(METHODS))
@pytest.mark.parametrize("name,params", CASES, ids=[f"{n}-{i}" for i, (n, _) in enumerate(CASES)])
def test_pattern_passes_gate(name: str, params: dict, method: str) -> None:
    mask = build_mask(name, SEQLEN, HEADS_Q, **params)
    problem = Problem(
        mask=mask, batch=1, seqlen=SEQLEN, heads_q=HEADS_Q, heads_kv=HEADS_KV, head_dim=HEAD_DIM,
        dtype=torch.float32, device=torch.device("cpu"), needs_grad=True, options={"block_q": 64, "block_k": 32},
    )
    kernel = METHODS[method]
    assert kernel.unsupported_reason(problem, "fwd+bwd") is None
    g = torch.Generator().manual_seed(0)
    q = torch.randn(1, SEQLEN, HEADS_Q, HEAD_DIM, generator=g)
    k = torch.randn(1, SEQLEN, HEADS_KV, HEAD_DIM, generator=g)
    v = torch.randn(1, SEQLEN, HEADS_KV, HEAD_DIM, generator=g)
    result = check_method(kernel.build(problem), q, k, v, mask, problem.scale, with_grad=True)
    assert result.ok, result.reason
