"""The study benchmarks (``lcbench bench linear|power``) run end to end at toy sizes and say what they measured.

Their figures are for results/BENCHMARKS.md (performance is never a unit test); these tests pin that every
section runs through the harness's own build of each side, and the crossover rule."""

from __future__ import annotations

import pytest

from harness.bench.linear import crossover_length
from harness.cli import main

pytestmark = pytest.mark.integration  # real Ray / process groups / the CLI end to end


@pytest.mark.parametrize("faster, expected", [
    ({512: False, 1024: True, 2048: True}, "lightning faster from S=1024 (slower at S=512)"),
    ({512: True, 1024: False, 2048: True}, "lightning faster from S=2048 (slower at S=1024)"),
    ({512: True, 1024: True}, "lightning faster from S=512 (every length)"),
    ({512: False, 1024: False}, "none up to S=1024"),
])
def test_crossover_is_where_the_linear_method_stays_faster(faster, expected) -> None:
    assert crossover_length(faster) == expected


def test_lcbench_bench_linear_runs_every_section(capsys) -> None:
    rc = main(["bench", "linear", "--heads", "2", "--head-dim", "16", "--reps", "1", "--seqlens", "256,512",
               "--peak-seqlen", "256", "--decode-seqlens", "256", "--decode-tokens", "2", "--peer-seqlen", "128",
               "--peers", "fla_chunk_naive", "--crossover-seqlens", "128,256", "--cp-seqlens", "256",
               "--world-size", "2", "--cp-samples", "1"])
    out = capsys.readouterr().out
    assert rc == 0
    for section in ("scaling", "peak", "decode", "peers", "crossover", "cp"):
        assert f"{section}: " in out
    assert "crossover (fwd+bwd): " in out and "fla_chunk_naive" in out and "% of peak" in out
    for strategy in ("lasp2", "lasp", "linear_all_gather", "ring_zigzag"):
        assert strategy in out
    assert "Intel" in out or "AMD" in out or "cores" in out  # the machine line


def test_lcbench_bench_power_runs_every_section(capsys) -> None:
    rc = main(["bench", "power", "--seqlens", "1024", "--heads", "2:1", "--head-dim", "16", "--reps", "1",
               "--decode-tokens", "2", "--sdpa-seqlen", "1024", "--sdpa-heads", "2:1"])
    out = capsys.readouterr().out
    assert rc == 0
    for pattern in ("power", "sliding_window_sink", "stride_slash", "dilated", "longnet", "causal_document"):
        assert pattern in out
    assert "speed: " in out and "sdpa: " in out
    for kernel in ("blocksparse", "blocksparse_native"):  # both kernels, side by side
        assert f"{kernel} ms" in out


@pytest.mark.parametrize("bench", ["linear", "power"])
def test_an_unknown_section_is_a_one_line_error(bench, capsys) -> None:
    assert main(["bench", bench, "--sections", "speeed"]) == 2
    assert "speeed" in capsys.readouterr().err


@pytest.mark.parametrize("argv,named", [
    (["linear", "--heads", "0"], "--heads"), (["linear", "--reps", "x"], "--reps"),
    (["linear", "--peers", "fla_chunk_naiv"], "fla_chunk_naive"), (["linear", "--timeout", "nan"], "--timeout"),
    (["power", "--heads", "2:3"], "--heads"), (["power", "--sdpa-heads", "8"], "--sdpa-heads"),
    (["power", "--kernels", "blocksparse,blocksparce_native"], "'blocksparse_native'"),
    (["hybrid", "--warmup", "-1"], "--warmup"), (["hybrid", "--threads", "0"], "--threads"),
    (["ttt", "--threads", "-1"], "--threads"), (["ttt", "--method", "sdpaa"], "'sdpa'"),
    (["ttt", "--seqlens", "0"], "--seqlens"),
    (["cp", "--heads", "8x4"], "--heads"), (["cp", "--strategies", "ringg"], "'ring'"),
    (["cp", "--mask", "causl"], "'causal'"), (["cp", "--dtype", "f32"], "--dtype"),
    (["cp", "--json", "/nonexistent/dir/x.json"], "--json"), (["kernels", "--seqlen", "abc"], "--seqlen"),
    (["peers", "--world-size", "1"], "--world-size"), (["peers", "--pairs", "ulysses"], "--pairs"),
    (["scheduler", "--runs", "0"], "--runs"), (["overhead", "--points", "x"], "--points"),
])
def test_a_bad_value_is_one_line_naming_it_before_anything_runs(argv, named, capsys) -> None:
    assert main(["bench", *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert named in err and "\n" not in err and "Traceback" not in err
