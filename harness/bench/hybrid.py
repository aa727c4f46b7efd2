"""``lcbench bench hybrid``: the MiniMax-style 7:1 hybrid LM (``LLLLLLLS``) vs the same-size all-softmax model
(``SSSSSSSS``), side by side in one process, alternating A, B, A, B (issue 11).

Sections (``--sections``, default all):

- ``scaling``: prefill and train_step wall time of both patterns as the context grows, their ratio
  softmax / hybrid (> 1: the hybrid is faster), per-process CPU time, and the crossover length: the smallest
  measured S from which the hybrid is faster at every larger measured S;
- ``decode``: ms per token at growing contexts and the growth of each from the first to the last length (the
  hybrid reads 1 KV cache where all-softmax reads 8: its cost should grow ~8x slower with S);
- ``memory``: the decode cache per sequence, measured (the cache tensors' bytes) vs modelled, the measured
  peak memory of one decode call (the executor's :func:`~harness.execution.measure.peak_memory`), and the
  context length at which one softmax layer's KV cache equals one lightning layer's state;
- ``hf``: ours (``hybrid_lm`` with ``rope_dim`` 64, as the suite's ``hf`` profile) vs Hugging Face's
  ``MiniMaxForCausalLM`` (``hybrid_lm_hf``, same weights), prefill and decode, both patterns; ratio HF / ours
  (> 1: ours is faster).

Every side is the workload's own run, built by :func:`harness.bench.build.build_run` (the executor's build
step) and timed by :func:`harness.bench.build.paired_medians`; ms/token and cache bytes come from the built
step's ``metrics``.
"""

from __future__ import annotations

import os
from typing import Optional, Sequence

import torch
from rich.table import Table

from harness.bench.args import lengths, run_sections, sections, torch_threads
from harness.user_input import OneLineParser, integer
from harness.bench.build import NotRunnable, build_run, crossover, machine_line, paired_medians
from harness.execution.executor import Built
from harness.execution.measure import peak_memory
from harness.results.report import wide_console
from harness.run import DECODE, Run

HYBRID, SOFTMAX = "LLLLLLLS", "SSSSSSSS"
PATTERNS = {"hybrid": HYBRID, "softmax": SOFTMAX}  # A, B
SECTIONS = ("scaling", "decode", "memory", "hf")
BIG = 32768  # from this length on, one call takes seconds to minutes: warm-up --big-warmup
console = wide_console()


def workload_run(seqlen: int, phase: str, pattern: str, workload: str = "hybrid_lm", decode_tokens: int = 1,
                 **params) -> Run:
    """The run a suite expands to for one (workload, pattern, seqlen, phase)."""
    return Run.make(workload=workload, params={"flavor": "tiny", "pattern": pattern, **params}, mask="causal",
                    seqlen=seqlen, dtype="float32", phase=phase,
                    decode_tokens=decode_tokens if phase == DECODE else 1)


def build(run: Run) -> Built:
    built, _ = build_run(run)
    return built


def _warmup(seqlen: int, warmup: int, big_warmup: int) -> int:
    return big_warmup if seqlen >= BIG else warmup


def _ms(seconds: float) -> str:
    return f"{seconds * 1e3:,.1f}" if seconds < 10 else f"{seconds * 1e3:,.0f}"


def _mib(n: float) -> str:
    return f"{n / 2**20:,.2f} MiB"


# ----- sections -------------------------------------------------------------------------------------------

def bench_scaling(seqlens: Sequence[int], reps: int, warmup: int, big_warmup: int, train_max: int,
                  phases: Sequence[str] = ("prefill", "train_step")) -> None:
    for phase in phases:
        table = Table(title=f"{phase}: hybrid {HYBRID} vs all-softmax {SOFTMAX} (tiny, float32), alternating A/B "
                            f"x{reps}", header_style="bold")
        for col in ("S", "hybrid ms", "softmax ms", "softmax/hybrid", "hybrid cpu ms", "softmax cpu ms"):
            table.add_column(col, justify="right")
        ratios: list[tuple[int, float]] = []
        for s in seqlens:
            if phase == "train_step" and s > train_max:
                console.print(f"  {phase} S={s}: skipped (> --train-max {train_max})")
                continue
            calls = {name: build(workload_run(s, phase, pattern)).call for name, pattern in PATTERNS.items()}
            paired = paired_medians(calls, reps, _warmup(s, warmup, big_warmup))
            ratio = paired.ratio("softmax", "hybrid")
            ratios.append((s, ratio))
            h, sm = paired.median_wall("hybrid"), paired.median_wall("softmax")
            table.add_row(f"{s:,}", _ms(h), _ms(sm), f"{ratio:.2f}x", _ms(paired.median_cpu("hybrid")),
                          _ms(paired.median_cpu("softmax")))
            console.print(f"  {phase} S={s}: hybrid {_ms(h)} ms, softmax {_ms(sm)} ms ({ratio:.2f}x)")
            del calls
        if ratios:
            console.print(table)
            at = crossover({s: r > 1 for s, r in ratios})
            top = max(s for s, _ in ratios)
            console.print(f"crossover ({phase}): " + (f"the hybrid is faster from S={at:,} on (every measured S up "
                                                      f"to {top:,})" if at else f"none up to S={top:,}"))


def bench_decode(seqlens: Sequence[int], reps: int, warmup: int, big_warmup: int, decode_tokens: int) -> None:
    table = Table(title=f"decode: {decode_tokens} tokens per call, ms/token, alternating A/B x{reps}",
                  header_style="bold")
    for col in ("S", "hybrid ms/token", "softmax ms/token", "softmax/hybrid", "hybrid cpu ms", "softmax cpu ms"):
        table.add_column(col, justify="right")
    per_token: dict[str, list[float]] = {name: [] for name in PATTERNS}
    for s in seqlens:
        built = {name: build(workload_run(s, DECODE, pattern, decode_tokens=decode_tokens))
                 for name, pattern in PATTERNS.items()}
        paired = paired_medians({n: b.call for n, b in built.items()}, reps, _warmup(s, warmup, big_warmup))
        ms = {n: b.metrics(paired.median_wall(n))["ms_per_token"] for n, b in built.items()}
        for n in PATTERNS:
            per_token[n].append(ms[n])
        table.add_row(f"{s:,}", f"{ms['hybrid']:.2f}", f"{ms['softmax']:.2f}", f"{ms['softmax'] / ms['hybrid']:.2f}x",
                      _ms(paired.median_cpu("hybrid")), _ms(paired.median_cpu("softmax")))
        console.print(f"  decode S={s}: hybrid {ms['hybrid']:.2f} ms/token, softmax {ms['softmax']:.2f} ms/token")
        del built
    console.print(table)
    if len(seqlens) > 1:
        grow = {n: v[-1] / v[0] for n, v in per_token.items()}
        console.print(f"decode growth S={seqlens[0]:,} -> {seqlens[-1]:,} ({seqlens[-1] / seqlens[0]:.0f}x longer): "
                      f"hybrid {grow['hybrid']:.2f}x, softmax {grow['softmax']:.2f}x per token; extra ms/token: "
                      f"hybrid {per_token['hybrid'][-1] - per_token['hybrid'][0]:.2f}, softmax "
                      f"{per_token['softmax'][-1] - per_token['softmax'][0]:.2f} (ratio "
                      f"{_extra_ratio(per_token):.1f}x; the model: ~8x)")


def _extra_ratio(per_token: dict[str, list[float]]) -> float:
    extra = {n: v[-1] - v[0] for n, v in per_token.items()}
    return extra["softmax"] / extra["hybrid"] if extra["hybrid"] > 0 else float("inf")


def bench_memory(seqlen: int, decode_tokens: int) -> None:
    table = Table(title=f"decode cache per sequence at S={seqlen:,} (float32), and one decode call's peak",
                  header_style="bold")
    for col in ("pattern", "cache measured", "cache modelled", "measured/model", "KV (model)", "state (model)",
                "decode peak"):
        table.add_column(col, justify="left" if col == "pattern" else "right")
    crossover_tokens, how = None, ""
    for name, pattern in PATTERNS.items():
        built = build(workload_run(seqlen, DECODE, pattern, decode_tokens=decode_tokens))
        built.call()  # warm-up: the peak of a steady-state call
        m = built.metrics(1.0)
        f = built.fields["facts"]  # the workload step's own facts (cache model, ...)
        peak, how = peak_memory(built.call, built.inputs, built.device)
        crossover_tokens = f["cache_crossover_tokens"]
        table.add_row(f"{name} {pattern}", _mib(m["cache_bytes"]), _mib(m["cache_bytes_model"]),
                      f"{m['cache_bytes'] / m['cache_bytes_model']:.3f}", _mib(f["kv_cache_bytes_model"]),
                      _mib(f["state_bytes_model"]), _mib(peak))
        del built
    console.print(table)
    console.print(f"decode peak: {how} (harness.execution.measure.peak_memory)")
    console.print(f"KV/state crossover: one softmax layer's KV cache equals one lightning layer's state at "
                  f"{crossover_tokens:,.0f} tokens (cache_model.cache_crossover_tokens)")


def bench_hf(seqlens: Sequence[int], reps: int, warmup: int, decode_tokens: int) -> None:
    table = Table(title=f"ours (hybrid_lm, rope_dim 64) vs HF MiniMaxForCausalLM (hybrid_lm_hf), same weights, "
                        f"alternating A/B x{reps}", header_style="bold")
    for col in ("pattern", "phase", "S", "ours ms", "HF ms", "HF/ours", "ours cpu ms", "HF cpu ms"):
        table.add_column(col, justify="left" if col in ("pattern", "phase") else "right")
    for phase in ("prefill", DECODE):
        for s in seqlens:
            for name, pattern in PATTERNS.items():
                try:
                    built = {"ours": build(workload_run(s, phase, pattern, decode_tokens=decode_tokens, rope_dim=64)),
                             "hf": build(workload_run(s, phase, pattern, "hybrid_lm_hf", decode_tokens=decode_tokens))}
                except NotRunnable as e:
                    console.print(f"  hf {phase} S={s} {pattern}: not runnable here ({e})")
                    continue
                paired = paired_medians({n: b.call for n, b in built.items()}, reps, warmup)
                ratio = paired.ratio("hf", "ours")
                ours, hf = paired.median_wall("ours"), paired.median_wall("hf")
                table.add_row(f"{name} {pattern}", phase, f"{s:,}", _ms(ours), _ms(hf), f"{ratio:.2f}x",
                              _ms(paired.median_cpu("ours")), _ms(paired.median_cpu("hf")))
                extra = ""
                if phase == DECODE:
                    copy_ms = built["hf"].metrics(hf).get("cache_copy_ms", 0.0)
                    extra = f" (HF's call includes its cache copy, {copy_ms:.1f} ms)"
                console.print(f"  hf {phase} S={s} {name}: ours {_ms(ours)} ms, HF {_ms(hf)} ms "
                              f"({ratio:.2f}x){extra}")
                del built
    console.print(table)


# ----- command line ----------------------------------------------------------------------------------------

def main(argv: Optional[Sequence[str]] = None, prog: str = "lcbench bench hybrid") -> int:
    p = OneLineParser(prog=prog, description=__doc__.split("\n\n")[0])
    p.add_argument("--sections", type=sections(SECTIONS), default=list(SECTIONS), help=f"comma-separated: {','.join(SECTIONS)}")
    p.add_argument("--seqlens", type=lengths, default=[1024, 2048, 4096, 8192, 16384, 32768],
                   help="scaling lengths (65536 allowed)")
    p.add_argument("--train-max", type=integer(1), default=32768, help="train_step is skipped above this length")
    p.add_argument("--phases", type=sections(("prefill", "train_step")), default=["prefill", "train_step"],
                   help="scaling: which phases (comma-separated)")
    p.add_argument("--reps", type=integer(1), default=3, help="paired rounds per length (A, B alternating)")
    p.add_argument("--warmup", type=integer(0), default=1, help="warm-up calls per side")
    p.add_argument("--big-warmup", type=integer(0), default=0, help=f"warm-up calls at lengths >= {BIG}")
    p.add_argument("--decode-seqlens", type=lengths, default=[8192, 32768, 131072],
                   help="decode: context lengths (comma-separated)")
    p.add_argument("--decode-tokens", type=integer(1), default=8,
                   help="decode: tokens per timed call (ms/token = time / this)")
    p.add_argument("--memory-seqlen", type=integer(1), default=131072,
                   help="memory: context length of the cache and peak-memory figures")
    p.add_argument("--hf-seqlens", type=lengths, default=[1024, 4096],
                   help="hf: lengths of the comparison with Hugging Face's MiniMax (comma-separated)")
    p.add_argument("--threads", type=integer(1), default=None,
                   help="torch threads (default: as set). On a shared machine, more threads than free cores make "
                        "every OpenMP region wait on a descheduled thread: calls run many times slower")
    a = p.parse_args(argv)
    if min([*a.decode_seqlens, a.memory_seqlen, *a.hf_seqlens]) <= a.decode_tokens:
        p.error(f"decode lengths must exceed --decode-tokens {a.decode_tokens}")
    jobs = {
        "scaling": lambda: bench_scaling(a.seqlens, a.reps, a.warmup, a.big_warmup, a.train_max, a.phases),
        "decode": lambda: bench_decode(a.decode_seqlens, a.reps, a.warmup, a.big_warmup, a.decode_tokens),
        "memory": lambda: bench_memory(a.memory_seqlen, a.decode_tokens),
        "hf": lambda: bench_hf(a.hf_seqlens, a.reps, a.warmup, a.decode_tokens),
    }
    with torch_threads(a.threads):
        console.print(f"lcbench bench hybrid: {machine_line()}; float32, flavor tiny; sections {','.join(a.sections)}")
        _warn_if_contended()
        run_sections(jobs, a.sections, console, label=prog)
    return 0


def _warn_if_contended() -> None:
    load, cores = os.getloadavg()[0], os.cpu_count() or 1
    if max(0.0, load - 1.0) + torch.get_num_threads() > cores + 0.5:  # others' load beside our threads
        console.print(f"[yellow]warning: 1-minute load average {load:.1f} on {cores} cores; with "
                      f"{torch.get_num_threads()} threads the timings are contended (--threads 1 is steadier)[/]")
