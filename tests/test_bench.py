"""The benchmarks of lcbench: the paired (A, B, A, B) measurement and ``lcbench bench`` as a subcommand."""

from __future__ import annotations

import time

import re

import pytest

from harness.bench import BENCHES
from harness.bench.paired import Paired, alternate, measure, rank_max_wall
from harness.cli import main


def test_alternate_interleaves_and_records_the_order() -> None:
    calls_made: list[str] = []
    before_made: list[int] = []
    calls = {name: (lambda n=name: calls_made.append(n)) for name in ("a", "b", "c")}
    paired = alternate(calls, reps=3, before=lambda: before_made.append(len(calls_made)))
    assert calls_made == ["a", "b", "c"] * 3
    assert paired.order == calls_made
    assert before_made == list(range(9))  # once ahead of every call, never inside one
    assert paired.names == ["a", "b", "c"] and all(len(paired.wall_s[n]) == 3 for n in "abc")
    with pytest.raises(ValueError):
        alternate(calls, reps=0)


def test_measure_separates_wall_from_process_cpu() -> None:
    wall, cpu, _ = measure(lambda: time.sleep(0.05))
    assert wall >= 0.05 and cpu < wall / 2  # sleeping costs wall time, not CPU

    def spin() -> None:  # busy for 0.05 s of this process's CPU time
        end = time.process_time() + 0.05
        while time.process_time() < end:
            pass

    wall, cpu, _ = measure(spin)
    assert cpu >= 0.05 and wall >= cpu * 0.9


def test_measure_counts_the_page_faults_of_fresh_memory_as_system_time() -> None:
    import mmap

    def fault_in() -> None:  # 256 MiB of fresh anonymous pages, each touched once
        with mmap.mmap(-1, 256 << 20) as m:
            for page in range(0, len(m), mmap.PAGESIZE):
                m[page] = 1

    _, cpu, system = measure(fault_in)
    assert 0 < system <= cpu


def test_medians_and_ratios() -> None:
    p = Paired()
    for wall_a, wall_b in ((1.0, 2.0), (9.0, 4.0), (3.0, 6.0)):
        p.add("a", wall_a, wall_a / 2)
        p.add("b", wall_b, wall_b / 4)
    assert p.order == ["a", "b"] * 3
    assert p.median_wall("a") == 3.0 and p.median_wall("b") == 4.0
    assert p.ratio("a", "b") == pytest.approx(0.75)
    assert p.median_cpu("a") == 1.5 and p.median_cpu("b") == 1.0
    assert p.ratio("a", "b", metric="cpu") == pytest.approx(1.5)
    with pytest.raises(ValueError):
        p.ratio("a", "b", metric="flops")


def test_rank_max_is_per_call() -> None:
    r0, r1 = Paired(), Paired()
    for w0, w1 in ((1.0, 3.0), (5.0, 2.0)):
        r0.add("x", w0, 0.0)
        r1.add("x", w1, 0.0)
    assert rank_max_wall([r0, r1], "x") == [3.0, 5.0]
    r1.add("x", 1.0, 0.0)
    with pytest.raises(ValueError, match="different numbers"):
        rank_max_wall([r0, r1], "x")


def test_every_bench_is_a_module_with_main() -> None:
    import importlib
    import inspect

    for name, (module, doc) in BENCHES.items():
        main_fn = importlib.import_module(module).main
        assert list(inspect.signature(main_fn).parameters)[:2] == ["argv", "prog"], name
        assert doc


def test_lcbench_bench_kernels_runs(capsys) -> None:
    rc = main(["bench", "kernels", "--seqlen", "128", "--reps", "2", "--heads-q", "2", "--heads-kv", "1",
               "--head-dim", "16"])
    out, err = capsys.readouterr()
    assert rc == 0
    assert "bench kernels: 6/6 pairs done (100%)" in err  # not a terminal: progress lines on stderr
    for mask in ("causal", "sliding_window_causal", "causal_document"):
        assert f"{mask} fwd: sdpa" in out and f"{mask} bwd: sdpa" in out
    assert "speed-up" in out and "alternating A/B x2" in out


def test_lcbench_bench_peers_rejects_a_bad_pair(capsys) -> None:
    assert main(["bench", "peers", "--pairs", "ulysses"]) == 2
    assert "ours:peer" in capsys.readouterr().err


@pytest.mark.slow  # ~15 s: two ranks, one pair, both directions
def test_lcbench_bench_peers_runs_with_a_progress_line_per_pair(capfd) -> None:
    rc = main(["bench", "peers", "--seqlen", "256", "--reps", "2", "--pairs", "ulysses:yunchang_ulysses"])
    out, err = capfd.readouterr()
    assert rc == 0
    assert "bench peers: 2/2 pairs timed (100%)" in err  # rank 0's line after each timed pair, on stderr
    for ours in ("ulysses@blocksparse", "ulysses@blocksparse_native"):  # ours with each local kernel, beside the peer
        assert re.search(rf"{ours} vs yunchang_ulysses +fwd", out) and re.search(rf"{ours} vs yunchang_ulysses +bwd", out)
    assert "FAILED" not in out  # every side passed its gate


def test_lcbench_bench_peers_rejects_a_method_without_a_local_kernel(capsys) -> None:
    assert main(["bench", "peers", "--ours-kernels", "sdpa"]) == 2
    assert "sdpa has no local kernel" in capsys.readouterr().err


@pytest.mark.slow  # ~30 s: every section of the hybrid study end to end (the workloads it times have their own tests)
def test_lcbench_bench_hybrid_runs(capsys) -> None:
    rc = main(["bench", "hybrid", "--seqlens", "64,128", "--reps", "1", "--warmup", "0", "--decode-seqlens",
               "64,128", "--decode-tokens", "2", "--memory-seqlen", "128", "--hf-seqlens", "64", "--threads", "1"])
    out = capsys.readouterr().out
    assert rc == 0
    assert "crossover (prefill):" in out and "crossover (train_step):" in out
    assert "decode growth S=64 -> 128" in out and "KV/state crossover" in out
    assert "HF/ours" in out and "softmax/hybrid" in out
    # one phase only (the long end of the study is run phase by phase)
    assert main(["bench", "hybrid", "--sections", "scaling", "--phases", "train_step", "--seqlens", "64",
                 "--reps", "1", "--warmup", "0", "--threads", "1"]) == 0
    out = capsys.readouterr().out
    assert "crossover (train_step):" in out and "crossover (prefill):" not in out


@pytest.mark.integration
def test_lcbench_bench_ttt_runs(capsys) -> None:
    pytest.importorskip("transformers")
    rc = main(["bench", "ttt", "--contexts", "256,512", "--steps", "2", "--span", "16", "--decode-tokens", "2",
               "--seqlens", "256,512", "--peer-seqlen", "0", "--reps", "1"])
    out, err = capsys.readouterr()
    assert rc == 0
    assert "lcbench bench ttt: 1/2 sections done (50%)" in err and "lcbench bench ttt: 2/2 sections done" in err
    assert "ttt_step t(T=512)/t(T=256) = " in out and "ttt_linear fwd+bwd t(S=512)/t(S=256) = " in out
    assert "N-step/thinking" in out and "torch " in out
