"""Built-in cluster profiles and kernel rate tables, the published CP results, and `lcbench bench predict`."""

from __future__ import annotations

import math

import pytest

from harness.bench import published as pub
from harness.prediction import builtin_rates
from harness.prediction.cluster import builtin_clusters, builtin_dir, load_cluster
from harness.prediction.rates import FULL, PARTIAL, RatePoint, RateTable

CLUSTERS = builtin_clusters()
TABLE_FILES = sorted(p.name for p in (builtin_dir() / "rates").glob("*.yaml"))


def test_the_builtins_are_there():
    assert {"dgx-h100", "dgx-a100", "h200", "h800"} <= set(CLUSTERS)
    assert {"h100-sdpa.yaml", "h100-cudnn_sdpa.yaml", "h100-flex_cuda.yaml", "a100-flash_attn2.yaml",
            "h100-flash_attn2.yaml"} <= set(TABLE_FILES)


@pytest.mark.parametrize("name", CLUSTERS)
def test_profile_loads_and_cites_every_number(name):
    cluster = load_cluster(name)
    profile = cluster.profile
    keys = set(profile.numeric_keys())
    assert keys, "a profile has numbers"
    uncited = sorted(keys - set(profile.sources))
    assert not uncited, f"{name}: numbers without a source: {uncited}"
    stale = sorted(set(profile.sources) - keys)
    assert not stale, f"{name}: sources for keys the profile does not have: {stale}"
    assert all(len(text.strip()) > 20 for text in profile.sources.values())


@pytest.mark.parametrize("name", CLUSTERS)
def test_profile_rate_tables_exist_and_time_causal_bf16(name):
    cluster = load_cluster(name)
    assert cluster.rate_tables, f"{name} has no rate table"
    for method, file in cluster.profile.device.rates.items():
        assert (cluster.path.parent / file).is_file()
        table = cluster.rates_for(method)
        dtype = "bfloat16" if "bfloat16" in table.dtypes else sorted(table.dtypes)[0]  # local: float32
        assert table.supports(dtype, "fwd+bwd") is None
        ms = table.time_ms(1e9, dtype, "fwd+bwd", PARTIAL, 128)
        assert math.isfinite(ms) and ms > 0


@pytest.mark.parametrize("file", TABLE_FILES)
def test_rate_table_points_are_finite_and_sourced(file):
    table = RateTable.load(builtin_dir() / "rates" / file)
    assert table.points and table.source and table.device
    assert PARTIAL in table.kinds()
    for p in table.points:
        assert math.isfinite(p.work) and p.work > 0 and math.isfinite(p.time_ms) and p.time_ms > 0
    # a built-in table stays what its source makes (local's source is `lcbench calibrate`)
    if file in builtin_rates.tables():
        assert (builtin_dir() / "rates" / file).read_text() == builtin_rates.tables()[file].dump()


def test_own_h100_points_use_the_exact_mask_area():
    """sdpa's causal 16K forward: 16 heads x 16384 x 16385 / 2 pairs, 3.329 ms (BENCHMARKS.md section 7)."""
    table = builtin_rates.tables()["h100-sdpa.yaml"]
    point = next(p for p in table.points if (p.kind, p.direction, p.work) == ("causal", "fwd", 16 * 16384 * 16385 / 2))
    assert point.time_ms == 3.329
    # BENCHMARKS.md prints 330.3 TFLOP/s for it (4 x area x d)
    assert 4 * point.work * 128 / (point.time_ms / 1e3) / 1e12 == pytest.approx(330.3, rel=2e-3)


def test_published_flash_attention_points_give_back_the_figure():
    """FA2 on the A100, fwd+bwd causal 8K: 182 TFLOP/s under the repo's own formula (batch 2, 16 heads)."""
    table = builtin_rates.tables()["a100-flash_attn2.yaml"]
    work = 2 * 16 * 8192 * 8193 / 2
    point = next(p for p in table.points if (p.kind, p.direction, p.work) == ("causal", "fwd+bwd", work))
    flops = 3.5 * 4 * 2 * 8192 ** 2 * 16 * 128 / 2
    assert flops / (point.time_ms / 1e3) / 1e12 == pytest.approx(182)
    assert "NOT an lcbench measurement" in table.source


def test_a_kind_measured_only_fwd_bwd_splits_by_the_flop_shares():
    table = RateTable("m", "d", "s", [RatePoint("bfloat16", "fwd+bwd", PARTIAL, 1e6, 128, 3.5),
                                      RatePoint("bfloat16", "fwd", FULL, 1e6, 128, 1.0)])
    assert table.time_ms(1e6, "bfloat16", "fwd", PARTIAL, 128) == pytest.approx(1.0)
    assert table.time_ms(1e6, "bfloat16", "bwd", PARTIAL, 128) == pytest.approx(2.5)
    # full has only a forward: its backward falls back to the causal kind as a whole (no endless derivation)
    assert table.time_ms(1e6, "bfloat16", "bwd", FULL, 128) == pytest.approx(2.5)
    assert table.supports("bfloat16", "fwd+bwd") is None


def test_ring_flash_conversion_by_hand():
    """H800 fwd ring_attn, 38.5 iter/s on 8 GPUs of 8192 tokens: 4 x (65536 x 65537 / 2) x 32 x 128 FLOPs per
    iteration = 35,184,908,959,744; x 38.5 / 8 = 169.33 TFLOP/s per device."""
    row = next(r for r in pub.RING_FLASH if (r.gpu, r.direction, r.name) == ("H800", "fwd", "ring_attn"))
    assert (row.seqlen, row.world_size, row.strategy) == (65536, 8, "ring")
    assert pub.causal_flops(65536, "fwd") == 35_184_908_959_744
    assert row.tflops_per_device() == pytest.approx(35_184_908_959_744 * 38.5 / 8 / 1e12)
    fwd_bwd = next(r for r in pub.RING_FLASH if (r.gpu, r.direction, r.name) == ("A100", "fwd+bwd", "ideal"))
    assert (fwd_bwd.seqlen, fwd_bwd.world_size) == (8192, 1)
    assert fwd_bwd.tflops_per_device() == pytest.approx(3.5 * 4 * 8192 * 8193 / 2 * 32 * 128 * 94.7 / 1e12)


@pytest.mark.parametrize("row", [r for r in pub.RING_FLASH if r.world_size > 1], ids=str)
def test_ring_flash_rows_map_to_a_predictable_strategy(row):
    from harness.catalog import get_strategy

    assert get_strategy(row.strategy).schedule is not None
    assert pub.RING_FLASH_CLUSTERS[row.gpu] in CLUSTERS


def test_te_shapes_keep_the_token_count_and_strategies_exist():
    from harness.catalog import get_strategy

    assert all(b * s == pub.TE_TOKENS for b, s in pub.TE_SHAPES)
    assert all(get_strategy(s).schedule is not None for s in pub.TE_STRATEGIES.values())
    assert all(sum(w.values()) == pub.TE_TUPLES for w in pub.TE_WINNERS.values())


def test_bench_predict_prints_both_sides(capsys, tmp_path):
    import json

    from harness.bench import run_bench

    out = tmp_path / "p.json"
    assert run_bench("predict", ["--sections", "ring_flash,te", "--gpus", "H800", "--directions", "fwd",
                                 "--shapes", "256x2048", "--cp-sizes", "2,8", "--json", str(out)]) == 0
    captured = capsys.readouterr()
    text = captured.out
    assert "zigzag_ring" in text and "277.1" in text  # the published side (63 iter/s)
    assert "2/2 sections done" in captured.err  # a progress line per section, on stderr
    data = json.loads(out.read_text())
    rows = data["ring_flash"]["rows"]
    assert {r["strategy"] for r in rows} == {"ideal", "ring", "ring_zigzag", "ring_striped"}
    assert all(r["predicted_tflops"] and r["predicted_tflops"] > 0 for r in rows)
    assert data["ring_flash"]["median_abs_error"] is not None
    assert len(data["te"]["cells"]) == 6 and all(c["predicted_ms"] > 0 for c in data["te"]["cells"])
    assert f"{rows[1]['predicted_tflops']:.1f}" in text  # the predicted side


def test_bench_predict_skips_what_no_table_can_time(capsys):
    from harness.bench import run_bench

    assert run_bench("predict", ["--sections", "ring_flash", "--gpus", "A100", "--directions", "fwd"]) == 0
    assert "skipped: rate table of flash_attn2" in capsys.readouterr().out


def test_bench_predict_bad_cp_size_is_one_line():
    from harness.bench import run_bench
    from harness.errors import UserError

    with pytest.raises(UserError, match=r"--cp-sizes: 3 is not a CP size of the TE study \(2, 4, 8\)"):
        run_bench("predict", ["--cp-sizes", "3"])
