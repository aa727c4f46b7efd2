"""Decode as a direction of the attention methods: q = the last ``n`` rows against the whole KV cache.

Every method that claims decode and runs here is checked against the float64 reference at the decode rows'
global positions, on the mask patterns' small examples, GQA, batch 2, float32 and bfloat16, n = 1 and 4. The
decode FLOPs and the KV bytes a block-skipping kernel reads are checked against independent counts, methods
without a decode path must say so, and the GPU adapters' decode plumbing (cache span, page table, and the
bottom-right aligned causal/window semantics of their kernels) is checked against the mask IR.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch
from torch.nn.attention.flex_attention import create_block_mask

from harness.catalog import methods
from harness.execution.gate import check_method
from harness.interfaces import Method, Problem
from harness.interfaces.method import dense_cache_bytes, softmax_flops
from harness.masks import MASKS, build_mask
from harness.masks.core import CAUSAL, VARLEN, WINDOW, Mask
from methods import blocksparse, flashinfer, flex
from methods._decode import decode_limits, last_document_start

S, B, HQ, HKV, D = 512, 2, 4, 2, 16
DECODE_TOKENS = (1, 4)
DTYPES = ("float32", "bfloat16")
# Tiles that do not divide S, so the planners meet partial tiles and a short tail.
OPTIONS = {"block_q": 96, "block_k": 80, "block_size": 128}
MASK_NAMES = [
    "full", "causal", "sliding_window", "sliding_window_causal", "prefix_lm_causal", "full_document",
    "causal_document", "block_causal_document", "s2", "neighborhood", "power", "streaming", "dilated",
    "longnet", "global_sliding_window",
]
MASK_CASES = [(name, params) for name in MASK_NAMES for params in MASKS[name].examples]
# Methods whose compile step makes the full matrix slow on 2 cores: the full matrix only with -m slow.
QUICK_MASKS = {"causal_document", "s2"}
COMPILED = {"flex"}

ALL = methods()
DECODING = sorted(n for n, m in ALL.items() if m.decode)
# Methods that count softmax attention's FLOPs (linear and TTT methods state their own, tested with them).
SOFTMAX_DECODING = [n for n in DECODING if ALL[n].flops is softmax_flops]


def case_id(name: str, params: dict) -> str:
    return name + "".join(f"-{k}{v}" for k, v in params.items())


def decode_problem(mask: Mask, dtype: str = "float32", n: int = 1, **options) -> Problem:
    return Problem(
        mask=mask, batch=B, seqlen=S, heads_q=HQ, heads_kv=HKV, head_dim=D, dtype=getattr(torch, dtype),
        device=torch.device("cpu"), options={**OPTIONS, **options}, direction="decode", decode_tokens=n,
    )


def decode_inputs(problem: Problem, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The last ``n`` rows of a random q, and the whole K/V cache."""
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(B, S, HQ, D, generator=g)[:, problem.q_offset:].contiguous()
    k, v = (torch.randn(B, S, HKV, D, generator=g) for _ in range(2))
    return tuple(x.to(problem.dtype) for x in (q, k, v))


def gate_params():
    for method in DECODING:
        for name, params in MASK_CASES:
            slow = method in COMPILED and name not in QUICK_MASKS
            for dtype in DTYPES:
                for n in DECODE_TOKENS:
                    yield pytest.param(
                        method, name, params, dtype, n, id=f"{method}-{case_id(name, params)}-{dtype}-n{n}",
                        marks=[pytest.mark.slow] if slow else [],
                    )


# ----- every method that claims decode, against float64 ------------------------------------------------

@pytest.mark.parametrize("method_name, mask_name, params, dtype, n", gate_params())
def test_decode_matches_the_float64_reference(method_name: str, mask_name: str, params: dict, dtype: str, n: int):
    method = ALL[method_name]
    if method.unavailable_reason():
        pytest.skip(f"unavailable here: {method.unavailable_reason()}")
    problem = decode_problem(build_mask(mask_name, S, HQ, **params), dtype, n)
    forward = dataclasses.replace(problem, direction="fwd")
    reason = method.unsupported_reason(problem)
    assert reason == method.unsupported_reason(forward)  # decode runs every mask the forward runs
    if reason:
        pytest.skip(reason)
    q, k, v = decode_inputs(problem)
    fn = method.build(problem)
    with torch.no_grad():
        assert fn(q, k, v).shape == (B, n, HQ, D)
    result = check_method(
        fn, q, k, v, problem.mask, problem.scale, with_grad=False, reference=method.reference,
        q_offset=problem.q_offset,
    )
    assert result.ok, result.reason


def test_the_gate_catches_a_decode_that_ignores_the_row_offset() -> None:
    """A decode kernel that masks q as rows 0..n-1 (not the last rows) must fail the gate."""
    mask = build_mask("sliding_window_causal", S, **MASKS["sliding_window_causal"].examples[0])
    problem = decode_problem(mask, n=4)
    wrong_rows = mask.dense(q_pos=torch.arange(problem.decode_tokens))  # [1, n, S]

    def wrong_offset(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        out = torch.nn.functional.scaled_dot_product_attention(
            q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), attn_mask=wrong_rows.unsqueeze(0),
            enable_gqa=True, scale=problem.scale,
        )
        return out.transpose(1, 2)

    result = check_method(
        wrong_offset, *decode_inputs(problem), mask, problem.scale, with_grad=False, q_offset=problem.q_offset
    )
    assert not result.ok


# ----- what a decode step counts ------------------------------------------------------------------------

def area_from_definition(mask: Mask, n: int) -> int:
    """Allowed (q, k) pairs of the last ``n`` rows, from the pattern's mask_mod, over q heads and batch."""
    rows = mask.dense_from_definition()[:, S - n:]  # [Hm, n, S]
    per_batch = int(rows.sum()) if mask.per_head else int(rows.sum()) * HQ
    return per_batch * B


@pytest.mark.parametrize("method_name", SOFTMAX_DECODING)
@pytest.mark.parametrize("mask_name, params", MASK_CASES, ids=[case_id(*c) for c in MASK_CASES])
@pytest.mark.parametrize("n", DECODE_TOKENS)
def test_decode_flops_are_four_area_of_the_rows_times_head_dim(method_name, mask_name, params, n) -> None:
    problem = decode_problem(build_mask(mask_name, S, HQ, **params), n=n)
    area = area_from_definition(problem.mask, n)
    assert problem.area == area
    assert ALL[method_name].flops(problem, "decode") == 4 * area * D


@pytest.mark.parametrize("mask_name, params", MASK_CASES, ids=[case_id(*c) for c in MASK_CASES])
@pytest.mark.parametrize("n", DECODE_TOKENS)
def test_blocksparse_decode_reads_at_most_the_cache(mask_name: str, params: dict, n: int) -> None:
    problem = decode_problem(build_mask(mask_name, S, HQ, **params), n=n)
    assert 0 < blocksparse.METHOD.decode_bytes(problem) <= dense_cache_bytes(problem)


@pytest.mark.parametrize("block_k", [80, 128])
@pytest.mark.parametrize("n", DECODE_TOKENS)
def test_blocksparse_decode_reads_only_the_window_tiles(block_k: int, n: int) -> None:
    """Causal window w: the decode rows see keys ``S - n - w .. S - 1``; the tiles holding them are read."""
    window = MASKS["sliding_window_causal"].examples[0]["window"]
    problem = decode_problem(build_mask("sliding_window_causal", S, window=window), n=n, block_k=block_k)
    first_key = S - n - window
    first_tile = first_key // block_k * block_k
    keys_read = S - first_tile  # the tiles [first_tile, S), the last one short when block_k does not divide S
    assert keys_read < S
    assert blocksparse.METHOD.decode_bytes(problem) == 2 * B * keys_read * HKV * D * problem.element_bytes
    plan = blocksparse.make_plan(
        problem.mask.intervals, problem.q_positions, torch.arange(S), problem.dtype,
        block_q=OPTIONS["block_q"], block_k=block_k,
    )
    spans = [(item.k0, item.k1) for row in plan.items for item in row]
    assert sum(k1 - k0 for k0, k1 in spans) == keys_read  # the kernel's own plan skips the other tiles
    assert min(k0 for k0, _ in spans) == first_tile


def test_dense_decode_reads_the_whole_cache() -> None:
    problem = decode_problem(build_mask("sliding_window_causal", S, window=100))
    assert ALL["sdpa"].decode_bytes(problem) == 2 * B * S * HKV * D * problem.element_bytes


# ----- methods without a decode path ------------------------------------------------------------------

def throwaway_forward_only() -> Method:
    return Method(name="no_decode", summary="throwaway", build=lambda problem: None)


NO_DECODE = [ALL[n] for n in sorted(ALL) if not ALL[n].decode] + [throwaway_forward_only()]


@pytest.mark.parametrize("method", NO_DECODE, ids=[m.name for m in NO_DECODE])
def test_a_method_without_decode_reports_unsupported(method: Method) -> None:
    problem = dataclasses.replace(
        decode_problem(build_mask("full", S)), device=torch.device(sorted(method.devices)[0]),
        dtype=getattr(torch, sorted(method.dtypes)[0]),
    )
    reason = method.unsupported_reason(problem)
    assert reason is not None and "decode" in reason, reason
    assert "decode" not in method.directions


# ----- flex: the decode BlockMask ----------------------------------------------------------------------

@pytest.mark.parametrize("case", ["sliding_window_causal", "causal_document", "s2"])
@pytest.mark.parametrize("n", DECODE_TOKENS)
def test_flex_decode_block_mask_equals_create_block_mask(case: str, n: int) -> None:
    mask = build_mask(case, S, HQ, **MASKS[case].examples[0])
    problem = decode_problem(mask, n=n)
    block = OPTIONS["block_size"]
    ours = flex.block_mask_from_ir(mask, block, torch.device("cpu"), problem.q_positions)
    definition = mask.flex_mask_mod()

    def last_rows(b, h, q_idx, kv_idx):
        return definition(b, h, q_idx + problem.q_offset, kv_idx)

    heads = mask.intervals.num_heads if mask.per_head else None
    theirs = create_block_mask(last_rows, None, heads, n, S, device="cpu", BLOCK_SIZE=block)
    assert torch.equal(ours.to_dense(), theirs.to_dense())  # the same non-empty key blocks
    assert ours.seq_lengths == (n, S)
    # create_block_mask pads q to a whole block and so never calls a block of n < 128 rows full; ours calls a
    # block full when every real row sees every key of it (the kernel then skips the mask_mod): check that
    # against the dense rows.
    rows = mask.dense(q_pos=problem.q_positions)  # [Hm, n, S]
    for h in range(rows.shape[0]):
        full = set(ours.full_kv_indices[0, h, 0, : int(ours.full_kv_num_blocks[0, h, 0])].tolist())
        partial = set(ours.kv_indices[0, h, 0, : int(ours.kv_num_blocks[0, h, 0])].tolist())
        for j in range(-(-S // block)):
            tile = rows[h, :, j * block : (j + 1) * block]
            assert (j in full) == bool(tile.all()), (h, j)
            assert (j in partial) == (bool(tile.any()) and not bool(tile.all())), (h, j)


# ----- the GPU adapters' decode plumbing (the kernels themselves need a GPU) -----------------------------

VARLEN_CASES = [c for c in MASK_CASES if build_mask(c[0], S, **c[1]).features <= {CAUSAL, WINDOW, VARLEN}]


def kvcache_allowed(cache_len: int, n: int, causal: bool, window: tuple[int, int]) -> torch.Tensor:
    """flash_attn_with_kvcache's documented mask: query ``i`` of ``n`` sits at ``i + cache_len - n`` (causal
    and window aligned bottom-right) and attends keys ``[pos - left, pos + right]`` (-1: unbounded), and no key
    after ``pos`` when causal. ``[n, cache_len]``."""
    pos = torch.arange(n).view(-1, 1) + cache_len - n
    key = torch.arange(cache_len).view(1, -1)
    allowed = torch.ones(n, cache_len, dtype=torch.bool)
    left, right = window
    if causal:
        allowed &= key <= pos
    if left >= 0:
        allowed &= key >= pos - left
    if right >= 0:
        allowed &= key <= pos + right
    return allowed


@pytest.mark.parametrize("mask_name, params", VARLEN_CASES, ids=[case_id(*c) for c in VARLEN_CASES])
@pytest.mark.parametrize("n", DECODE_TOKENS)
def test_kvcache_arguments_express_the_decode_rows(mask_name: str, params: dict, n: int) -> None:
    """Cache = the last document, the mask's causal flag and window as they are: exactly the mask's rows."""
    mask = build_mask(mask_name, S, **params)
    problem = decode_problem(mask, n=n)
    if decode_limits(problem):
        pytest.skip(decode_limits(problem))
    start = last_document_start(problem)
    rows = mask.dense(q_pos=problem.q_positions)[0]  # [n, S]
    assert not rows[:, :start].any()
    varlen = mask.varlen
    assert torch.equal(rows[:, start:], kvcache_allowed(S - start, n, varlen.causal, varlen.window))
    if flashinfer.limits(dataclasses.replace(problem, head_dim=64)) is None:  # window_left only, causal flag
        assert torch.equal(rows[:, start:], kvcache_allowed(S - start, n, varlen.causal, (varlen.window[0], -1)))
    else:
        assert n > 1 and not varlen.causal and varlen.window[1] > 0  # a later key in sight: refused, not wrong


def test_decode_rows_spanning_documents_are_unsupported_by_the_cache_adapters() -> None:
    mask = build_mask("causal_document", S)
    last_doc = S - last_document_start(decode_problem(mask))
    problem = decode_problem(mask, n=last_doc + 1)
    reason = decode_limits(problem)
    assert reason and "documents" in reason
    assert decode_limits(decode_problem(mask, n=last_doc)) is None
    assert decode_limits(dataclasses.replace(problem, direction="fwd")) is None


def test_flashinfer_page_table_lists_each_sequences_last_document() -> None:
    mask = build_mask("causal_document", S)
    problem = decode_problem(mask)
    start = last_document_start(problem)
    indptr, indices, last_page_len = flashinfer.decode_page_table(problem)
    _, k, _ = decode_inputs(problem)
    pages = k.view(B * S, 1, HKV, D)  # the adapter's view: one-token pages
    for b in range(B):
        gathered = pages[indices[indptr[b]: indptr[b + 1]].long(), 0]
        assert torch.equal(gathered, k[b, start:])
    assert last_page_len.tolist() == [1] * B
