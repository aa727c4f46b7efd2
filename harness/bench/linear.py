"""``lcbench bench linear``: lightning attention against itself, its peers and softmax (issue 10's figures).

Sections (``--sections``, default all), every side built by the harness (:mod:`harness.bench.build`) and timed
alternately (A, B, A, B) in one process:

* ``scaling`` — ``lightning`` fwd+bwd at each length, all lengths alternating; t(2S)/t(S) (linear: <= 2.1), with
  the process's CPU time, its system part (page faults of fresh memory) and the ratio of the user part. Under
  glibc's default allocator every output of 32 MiB and more faults in afresh on each call (from 16K at the CPU
  shape); ``lcbench --malloc keep bench linear`` measures the kernel without that (:mod:`harness.execution.allocator`).
* ``peak`` — ``lightning`` fwd and bwd at one length: TFLOP/s on the method's own FLOP count against this
  machine's calibrated GEMM peak (the best of 5 timed 1024^3 matmuls).
* ``decode`` — ms per generated token at context S of ``lightning`` (the d x d state) vs ``sdpa`` (the KV cache).
* ``peers`` — ours vs flash-linear-attention's CPU references (same inputs, same decay) at one length.
* ``crossover`` — ``lightning`` vs ``blocksparse`` causal softmax, fwd and fwd+bwd: the length from which the
  linear method is faster at every larger measured length.
* ``cp`` — the linear CP strategies (``lasp2``, ``lasp``, ``linear_all_gather``, local method ``lightning``) and
  softmax ring attention (``ring_zigzag`` on ``blocksparse``) on W local gloo ranks through the real launcher and
  rank executor (gate included): bytes each rank sends per call, measured and analytic, and CPU time per rank.
"""

from __future__ import annotations

import json
from typing import Optional, Sequence

from rich.table import Table

from harness.bench.args import lengths, method_names, run_sections, sections
from harness.user_input import OneLineParser, integer, positive
from harness.bench.build import NotRunnable, build_run, crossover, machine_line, paired_medians
from harness.cluster.launch import run_local_many
from harness.execution import allocator
from harness.execution.machine import calibrate_peak
from harness.results.report import wide_console
from harness.run import Run, Timing

SECTIONS = ("scaling", "peak", "decode", "peers", "crossover", "cp")
console = wide_console()


def _run(method: str, seqlen: int, direction: str, shape: tuple[int, int], **kw) -> Run:
    heads, head_dim = shape
    return Run.make(method=method, mask="causal", seqlen=seqlen, heads_q=heads, heads_kv=heads, head_dim=head_dim,
                    direction=direction, **kw)


def _ms(seconds: float) -> str:
    return f"{seconds * 1e3:.1f}"


def scaling(seqlens: Sequence[int], shape, reps: int) -> None:
    calls = {s: build_run(_run("lightning", s, "fwd+bwd", shape))[0].call for s in seqlens}
    paired = paired_medians({str(s): c for s, c in calls.items()}, reps)
    table = Table(title=f"lightning fwd+bwd vs S (alternating x{reps}; sys: the page faults of fresh memory; "
                        f"allocator {allocator.describe()})")
    for col in ("S", "ms", "cpu ms", "of which sys", "t(S)/t(S/2)", "user cpu t(S)/t(S/2)"):
        table.add_column(col, justify="right")
    previous = None
    for s in seqlens:
        t, cpu, system, user = (f(str(s)) for f in (paired.median_wall, paired.median_cpu, paired.median_sys,
                                                     paired.median_user))
        ratios = ("-", "-") if previous is None else (f"{t / previous[0]:.2f}", f"{user / previous[1]:.2f}")
        table.add_row(str(s), _ms(t), _ms(cpu), _ms(system), *ratios)
        previous = (t, user)
    console.print(table)


def peak(seqlen: int, shape, reps: int) -> None:
    gemm = calibrate_peak("float32", "cpu")
    table = Table(title=f"lightning at S={seqlen}: fraction of the measured GEMM peak ({gemm * 1e3:.0f} GFLOP/s fp32)")
    for col in ("direction", "ms", "GFLOP (own count)", "GFLOP/s", "% of peak"):
        table.add_column(col, justify="right")
    for direction in ("fwd", "bwd"):
        built, _ = build_run(_run("lightning", seqlen, direction, shape))
        t = paired_medians({direction: built.call}, reps).median_wall(direction)
        rate = built.flops / t / 1e12
        table.add_row(direction, _ms(t), f"{built.flops / 1e9:.2f}", f"{rate * 1e3:.1f}", f"{100 * rate / gemm:.0f}%")
    console.print(table)


def decode(seqlens: Sequence[int], shape, reps: int, tokens: int) -> None:
    table = Table(title=f"decode: ms per generated token at context S ({tokens} tokens per call, alternating x{reps})")
    for col in ("S", "lightning ms/token", "sdpa ms/token", "sdpa / lightning"):
        table.add_column(col, justify="right")
    for s in seqlens:
        calls = {m: build_run(_run(m, s, "decode", shape, decode_tokens=tokens))[0].call for m in ("lightning", "sdpa")}
        p = paired_medians(calls, reps)
        lin, soft = (p.median_wall(m) / tokens for m in ("lightning", "sdpa"))
        table.add_row(str(s), f"{lin * 1e3:.3f}", f"{soft * 1e3:.3f}", f"{soft / lin:.1f}x")
    console.print(table)


def peers(seqlen: int, shape, reps: int, names: Sequence[str]) -> None:
    table = Table(title=f"ours vs flash-linear-attention's CPU references, S={seqlen} (alternating x{reps})")
    for col in ("direction", "side", "ms", "cpu ms", "peer / lightning"):
        table.add_column(col, justify="right")
    for direction in ("fwd", "fwd+bwd"):
        calls = {}
        for m in ("lightning", *names):
            try:
                calls[m] = build_run(_run(m, seqlen, direction, shape))[0].call
            except NotRunnable as e:  # a peer not installed here: say so, measure the rest
                console.print(f"  {direction}: skipped {e}", markup=False)
        p = paired_medians(calls, reps)
        for m in calls:
            table.add_row(direction, m, _ms(p.median_wall(m)), _ms(p.median_cpu(m)),
                          "-" if m == "lightning" else f"{p.ratio(m, 'lightning'):.2f}x")
    console.print(table)


def crossover_study(seqlens: Sequence[int], shape, reps: int) -> None:
    for direction in ("fwd", "fwd+bwd"):
        table = Table(title=f"lightning vs blocksparse causal softmax, {direction} (alternating x{reps})")
        for col in ("S", "lightning ms", "blocksparse ms", "blocksparse / lightning"):
            table.add_column(col, justify="right")
        faster = {}
        for s in seqlens:
            calls = {m: build_run(_run(m, s, direction, shape))[0].call for m in ("lightning", "blocksparse")}
            p = paired_medians(calls, reps)
            ratio = p.ratio("blocksparse", "lightning")
            faster[s] = ratio > 1
            table.add_row(str(s), _ms(p.median_wall("lightning")), _ms(p.median_wall("blocksparse")), f"{ratio:.2f}x")
        console.print(table)
        console.print(f"crossover ({direction}): {crossover_length(faster)}")


def crossover_length(faster: dict[int, bool]) -> str:
    """Where ``lightning`` becomes faster for good (:func:`harness.bench.build.crossover`), in words."""
    at, lengths = crossover(faster), sorted(faster)
    if at is None:
        return f"none up to S={lengths[-1]}"
    before = [s for s in lengths if s < at]
    return f"lightning faster from S={at}" + (f" (slower at S={before[-1]})" if before else " (every length)")


def _mb(values) -> str:
    values = json.loads(values) if isinstance(values, str) else values
    return " ".join(f"{v / 2**20:.2f}" for v in values) if values else "-"


def cp(seqlens: Sequence[int], shape, world_size: int, samples: int, timeout_s: float) -> None:
    heads, head_dim = shape
    timing = Timing(warmup=1, min_samples=samples, min_run_time=0.0, max_samples=samples)
    from harness.catalog import strategies
    from harness.interfaces.strategy import AnyLinearKernel

    linear = [n for n, st in strategies().items()  # the registry's linear CP strategies that run here
              if isinstance(st.local_methods, AnyLinearKernel) and not st.unavailable_reason()]
    sides = [(name, "lightning") for name in linear] + [("ring_zigzag", "blocksparse")]
    runs = [Run.make(method=method, strategy=name, mask="causal", seqlen=s, heads_q=heads, heads_kv=heads,
                     head_dim=head_dim, direction="fwd+bwd", world_size=world_size, timing=timing)
            for s in seqlens for name, method in sides]
    records = run_local_many(runs, timeout_s=timeout_s)
    table = Table(title=f"CP at W={world_size}, fwd+bwd: MB sent per call by rank 0..W-1 (measured; analytic), "
                        "rank-max ms and the slowest rank's CPU ms per call")
    for col in ("strategy", "S", "status", "sent MB/rank", "analytic", "rank-max ms", "cpu ms"):
        table.add_column(col, justify="right" if col in ("S", "rank-max ms", "cpu ms") else "left")
    for r in sorted(records, key=lambda r: (r["strategy"], r["seqlen"])):
        if r["status"] != "ok":
            table.add_row(r["strategy"], str(r["seqlen"]), r["status"], str(r.get("reason"))[:80], "", "", "")
            continue
        table.add_row(r["strategy"], str(r["seqlen"]), "ok", _mb(r["comm_bytes"]), _mb(r.get("comm_bytes_model")),
                      f"{r['time_ms_median']:.0f}", f"{r['cpu_ms']:.0f}")
    console.print(table)


def main(argv: Optional[Sequence[str]] = None, prog: str = "lcbench bench linear") -> int:
    p = OneLineParser(prog=prog, description=__doc__.split("\n\n")[0])
    p.add_argument("--sections", type=sections(SECTIONS), default=list(SECTIONS),
                   help=f"comma-separated, of {', '.join(SECTIONS)}")
    p.add_argument("--heads", type=integer(1), default=4, help="heads (K/V heads = heads)")
    p.add_argument("--head-dim", type=integer(1), default=128, help="head dimension")
    p.add_argument("--reps", type=integer(1), default=3, help="alternating rounds per point")
    p.add_argument("--seqlens", type=lengths, default="8192,16384,32768,65536", help="scaling: lengths (fwd+bwd)")
    p.add_argument("--peak-seqlen", type=integer(1), default=32768, help="peak: the length of the %%peak figure")
    p.add_argument("--decode-seqlens", type=lengths, default="1024,4096,16384,65536",
                   help="decode: context lengths (comma-separated)")
    p.add_argument("--decode-tokens", type=integer(1), default=8, help="decode: tokens per timed call")
    p.add_argument("--peer-seqlen", type=integer(1), default=8192, help="peers: the length of the comparison")
    p.add_argument("--peers", type=method_names, default="fla_chunk_naive,fla_naive_recurrent",
                   help="peers: fla methods compared with ours (comma-separated)")
    p.add_argument("--crossover-seqlens", type=lengths, default="128,256,512,1024,2048,4096,8192,16384",
                   help="crossover: lengths where lightning and blocksparse alternate")
    p.add_argument("--cp-seqlens", type=lengths, default="4096,8192,16384,32768", help="cp: sequence lengths")
    p.add_argument("--world-size", type=integer(1), default=4, help="cp: ranks (gloo processes)")
    p.add_argument("--cp-samples", type=integer(1), default=2, help="cp: timed calls per run")
    p.add_argument("--timeout", type=positive, default=1800.0, help="seconds per CP run")
    a = p.parse_args(argv)
    shape = (a.heads, a.head_dim)
    console.print(f"{machine_line()}; causal, "
                  f"H={a.heads} (K/V heads = H), d={a.head_dim}, float32, batch 1; lightning = MiniMax decay, layer 0")
    jobs = {
        "scaling": lambda: scaling(a.seqlens, shape, a.reps),
        "peak": lambda: peak(a.peak_seqlen, shape, a.reps),
        "decode": lambda: decode(a.decode_seqlens, shape, a.reps, a.decode_tokens),
        "peers": lambda: peers(a.peer_seqlen, shape, a.reps, a.peers),
        "crossover": lambda: crossover_study(a.crossover_seqlens, shape, a.reps),
        "cp": lambda: cp(a.cp_seqlens, shape, a.world_size, a.cp_samples, a.timeout),
    }
    run_sections(jobs, a.sections, console, label=prog)
    return 0
