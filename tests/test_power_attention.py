"""PowerAttention's receptive-field claims (arXiv 2503.03588, REFERENCE.md §5b), the exact block-graph analysis
against brute force and against real stacked attention layers, the paper-default budgets, the CLI and the
suite."""

from __future__ import annotations

import math
from typing import Optional

import pytest
import torch

from harness.catalog import get_method, get_strategy, get_workload
from harness.cli import main
from harness.interfaces import Unsupported, WorkloadProblem
from harness.masks import MASKS, build_mask
from harness.masks.reach import (
    block_graph, default_layers, pattern_receptive_field, reached_tokens, token_reach,
)
from harness.run import Run
from workloads.power_reach import EMPIRICAL, EXACT
from suites.loader import load_suite

PAPER_S, PAPER_BLOCKS = 32768, 128  # 32K tokens in blocks of 256
BUDGET_BASELINES = ("power", "sliding_window_sink", "stride_slash", "dilated")


def first_depth(field) -> torch.Tensor:
    """Per block: the first depth that reaches it (a large number when none does)."""
    reached = field.reached.long()
    return torch.where(reached.any(0), reached.argmax(0) + 1, torch.full((field.blocks,), 10**9))


# ----- the paper's statements, exactly -------------------------------------------------------------------------

def test_distance_d_is_reached_in_popcount_d_hops() -> None:
    """Pure power-of-two jumps (no window, no sink): the fewest hops to distance d is popcount(d), for every d;
    with the paper's window and sink it is at most popcount(d)."""
    blocks = 256
    pure = first_depth(pattern_receptive_field("power", blocks, {"block": 1, "window_blocks": 1, "sink_blocks": 0}))
    paper = first_depth(pattern_receptive_field("power", blocks, {"block": 1}))
    for d in range(1, blocks):
        assert int(pure[blocks - 1 - d]) == bin(d).count("1"), d
        assert int(paper[blocks - 1 - d]) <= bin(d).count("1"), d


def test_paper_defaults_give_every_baseline_the_same_ten_block_budget_at_32k() -> None:
    for name in BUDGET_BASELINES:
        field = pattern_receptive_field(name, PAPER_S)
        assert (field.block, field.blocks) == (256, PAPER_BLOCKS)
        assert field.count(1) == 10, name
    window = pattern_receptive_field("sliding_window_sink", PAPER_S)
    assert window.coverage(1) == 10 / 128  # REFERENCE 5b: the window baseline's single-layer coverage
    assert window.counts()[:4] == [10, 18, 26, 34]  # ... which grows linearly: 8 blocks per layer


def test_power_coverage_at_32k_and_its_brute_force_twin() -> None:
    field = pattern_receptive_field("power", PAPER_S)
    assert field.counts()[:6] == [10, 35, 75, 110, 126, 128]  # REFERENCE 5b
    assert field.layers_to_full == 6 == math.ceil(math.log2(PAPER_BLOCKS)) - 1
    # The same block graph with one token per block, by brute force on the pattern's dense definition.
    tokens = build_mask("power", PAPER_BLOCKS, block=1)
    brute = token_reach(tokens, field.layers).sum(-1).tolist()
    assert brute == field.counts()
    assert torch.equal(tokens.dense_from_definition()[0], tokens.dense()[0])


def test_longnet_has_holes_at_any_depth() -> None:
    field = pattern_receptive_field("longnet", PAPER_S, layers=12)
    assert field.layers_to_full is None and field.holes_limit > 0 and field.holes(12) == field.holes_limit
    tokens = build_mask("longnet", PAPER_BLOCKS, block=1)
    assert token_reach(tokens, 12).sum(-1).tolist() == field.counts()
    for name in ("power", "sliding_window_sink", "stride_slash"):
        full = pattern_receptive_field(name, 8192, layers=1)
        assert full.layers_to_full is not None and full.holes_limit == 0, name


@pytest.mark.parametrize("name,params", [
    ("power", {"block": 16}), ("sliding_window_sink", {"block": 24}), ("stride_slash", {"block": 16, "stride": 3}),
    ("dilated", {"block": 16}), ("longnet", {"block": 8}), ("causal", {}), ("sliding_window_causal", {"window": 100}),
    ("neighborhood", {"window": 20, "stride": 1, "dilation": 24, "causal": True}),  # step 24 > block 16
    ("s2", {"block": 16, "local_blocks": 2, "vert_stride": 4}),
])
def test_block_graph_equals_the_block_counts(name: str, params: dict) -> None:
    mask = build_mask(name, 700, 4, **params)
    assert torch.equal(block_graph(mask, 16), mask.block_counts(16, 16).gt(0).any(0))


# ----- the empirical receptive field: real attention layers -----------------------------------------------------

def reach_problem(mask: str, seqlen: int, phase: str, dtype: str = "float32", mask_params: Optional[dict] = None,
                  **params) -> WorkloadProblem:
    """A ``power_reach`` run of ``mask`` (block-defined patterns in blocks of 16 unless ``mask_params``)."""
    workload = get_workload("power_reach")
    if mask_params is None:
        mask_params = {"block": 16} if "block" in MASKS[mask].defaults else {}
    run = Run.make(workload="power_reach", params=params, mask=mask, mask_params=mask_params,
                   seqlen=seqlen, dtype=dtype, phase=phase, device="cpu")
    return WorkloadProblem(run=run, params=workload.resolve_params(params), dtype=getattr(torch, dtype),
                           device=torch.device("cpu"), method=get_method, strategy=get_strategy)


@pytest.mark.parametrize("mask,method", [
    ("power", "blocksparse"), ("power", "naive"), ("sliding_window_sink", "blocksparse"),
    ("stride_slash", "blocksparse"), ("longnet", "naive"),
])
def test_empirical_reach_equals_the_exact_analysis_token_for_token(mask: str, method: str) -> None:
    """S=512 in blocks of 16, at the run's own length: the positions with a non-zero gradient of the last
    token's output after L layers are exactly the tokens of the blocks reached within L hops, for every L."""
    problem = reach_problem(mask, 512, EMPIRICAL, method=method, tokens_per_block=0)
    workload = get_workload("power_reach")
    assert workload.unsupported_reason(problem) is None
    step = workload.build(problem)
    result = step.check()
    assert result.ok, result.detail
    metrics = step.metrics(0.01)
    field = pattern_receptive_field(mask, 512, {"block": 16})
    layers = default_layers(32)
    assert metrics["coverage_empirical"] == metrics["coverage_exact"] == field.coverage(layers)
    assert [metrics[f"coverage_L{i}"] for i in range(1, layers + 1)] == [r["coverage"] for r in field.rows()]
    brute = token_reach(build_mask(mask, 512, 2, block=16), layers)  # the token graph, brute force
    assert torch.equal(brute, torch.stack([reached_tokens(field, i) for i in range(1, layers + 1)]))


def test_the_empirical_dependence_tells_patterns_apart() -> None:
    """The check can fail: the layers of one pattern against the analysis of another differ."""
    from workloads import power_reach as pr

    problem = reach_problem("sliding_window_sink", 512, EMPIRICAL, tokens_per_block=0)
    mask = pr.run_mask(problem)
    attn = pr.attention_problem(problem, mask)
    shape = pr._shape(problem)
    stack = pr.Stack([pr.AttentionWeights.seeded(shape, i, torch.float32, torch.device("cpu")) for i in range(3)],
                     get_method("blocksparse").build(attn))
    x = pr.seeded_tokens(1, 512, shape.hidden, 0, torch.float32, torch.device("cpu"))
    measured = pr.empirical_reach(stack, x, 0)
    power = pattern_receptive_field("power", 512, {"block": 16}, layers=3)
    window = pattern_receptive_field("sliding_window_sink", 512, {"block": 16}, layers=3)
    assert torch.equal(measured[2], reached_tokens(window, 3))
    assert not torch.equal(measured[2], reached_tokens(power, 3))


def test_scaled_layers_keep_the_block_graph_and_the_coverage() -> None:
    """The suite measures the empirical field with 4 tokens per block: same block graph, same coverage."""
    workload = get_workload("power_reach")
    full = workload.build(reach_problem("power", 512, EMPIRICAL, tokens_per_block=0)).metrics(0.01)
    scaled_step = workload.build(reach_problem("power", 512, EMPIRICAL))
    assert scaled_step.check().ok and scaled_step.fields["reach_tokens"] == 32 * 4
    scaled = scaled_step.metrics(0.01)
    assert {k: v for k, v in scaled.items() if k.startswith("coverage")} == \
        {k: v for k, v in full.items() if k.startswith("coverage")}
    with pytest.raises(Unsupported, match="tokens_per_block: 0"):  # a window in tokens does not scale
        workload.build(reach_problem("sliding_window_causal", 1024, EMPIRICAL, mask_params={"window": 100}))


def test_exact_phase_metrics() -> None:
    step = get_workload("power_reach").build(reach_problem("power", 2048, EXACT))
    assert step.check().ok
    m = step.metrics(0.001)
    assert m["blocks"] == 128 and m["layers_to_full"] == 6 and m["coverage_L1"] == 10 / 128
    assert m["holes"] == 0 and "coverage_L9" in m and "coverage_L10" not in m  # log2(128) + 2 layers


def test_bad_parameters_are_one_line_user_errors() -> None:
    from harness.errors import UserError

    with pytest.raises(UserError, match="tokens_per_block=-1 is not allowed; expected an integer >= 0"):
        get_workload("power_reach").unsupported_reason(reach_problem("power", 512, EMPIRICAL, tokens_per_block=-1))


# ----- CLI and suite ---------------------------------------------------------------------------------------------

def test_cli_mask_prints_the_receptive_field(capsys, tmp_path) -> None:
    assert main(["mask", "power", "--layers", "5"]) == 0  # the paper's 32K is the default, block 256 the mask's own
    out = capsys.readouterr().out
    for layers, reached, holes in [(1, 10, 118), (2, 35, 93), (3, 75, 53), (4, 110, 18), (5, 126, 2)]:
        assert any(line.split("│")[1:5] and [c.strip() for c in line.split("│")[1:5]] ==
                   [str(layers), f"{reached}/128", f"{reached / 128:.4f}", str(holes)] for line in out.splitlines())
    assert "complete after 6 layers" in out
    png = tmp_path / "reach.png"
    assert main(["mask", "longnet", "--seqlen", "8192", "--layers", "3", "--png", str(png)]) == 0
    assert png.stat().st_size > 0 and "never complete" in capsys.readouterr().out


def test_suite_profiles_load() -> None:
    suite = load_suite("power_attention", "smoke")
    kinds = {(r.kind, r.timed) for r in suite.runs}
    assert {("workload", EMPIRICAL), ("workload", EXACT), ("method", "fwd"), ("method", "decode")} <= kinds
    assert {r.mask for r in suite.runs} == {"power", "sliding_window_sink", "causal"}


@pytest.mark.slow
def test_exact_reach_at_128k_for_every_pattern() -> None:
    """At 128K (512 blocks of 256) power is complete within log2(512) layers, the window is not."""
    power = pattern_receptive_field("power", 131072)
    assert power.layers_to_full <= 9 and power.count(1) == 12  # 4 -> 6 power-of-two blocks beyond the window
    window = pattern_receptive_field("sliding_window_sink", 131072)
    assert window.layers_to_full == math.ceil(511 / 8) and window.counts()[:3] == [10, 18, 26]
    assert pattern_receptive_field("longnet", 131072).holes_limit > 0
