"""``lcbench bench power``: PowerAttention and its equal-budget baselines against full causal (issue 13's figures).

Sections (``--sections``, default all); every side is built by the harness (:mod:`harness.bench.build`) and the
patterns of one length and direction are timed alternately (A, B, C, ...) in one process:

* ``speed`` — on each of ``--kernels`` in turn (default both block-sparse kernels): prefill fwd, fwd+bwd and
  decode (ms per generated token at context S, reading only the allowed key tiles) of every pattern and full
  causal at each length; the exact density, the speed-up over causal, and the per-area throughput relative to
  causal (work proportional to area: >= 1/1.5).
* ``sdpa`` — the kernel goal: each kernel's per-area throughput on every mask against SDPA's on causal (the CPU
  flash kernel), fwd and bwd, at one length (>= 0.9x wanted); SDPA and the kernels alternate in one process.

Patterns use their registered defaults (the paper's: block 256, power window 5 + 1 sink, ...).
"""

from __future__ import annotations

from typing import Optional, Sequence

from rich.table import Table

from harness.bench.args import heads_pair, lengths, method_names, run_sections, sections
from harness.user_input import OneLineParser, integer
from harness.bench.build import built_call, machine_line, paired_medians
from harness.bench.kernels import MASKS as KERNEL_MASKS
from harness.results.report import wide_console
from harness.run import Run

SECTIONS = ("speed", "sdpa")
KERNELS = ("blocksparse", "blocksparse_native")  # lcbench's two block-sparse kernels: aten per tile, native C++
PATTERNS = ("power", "sliding_window_sink", "stride_slash", "dilated", "longnet")
# the sdpa section also covers the masks the kernels benchmark studies (issue 13 quotes them)
EXTRA_MASKS = tuple(m for m in KERNEL_MASKS if m[0] != "causal")
console = wide_console()


def _run(method: str, mask: str, params: dict, seqlen: int, direction: str, heads: tuple[int, int], head_dim: int,
         decode_tokens: int = 1) -> Run:
    return Run.make(method=method, mask=mask, mask_params=params, seqlen=seqlen, heads_q=heads[0],
                    heads_kv=heads[1], head_dim=head_dim, direction=direction, decode_tokens=decode_tokens)


def speed(seqlens: Sequence[int], heads, head_dim: int, reps: int, decode_tokens: int, kernel: str) -> None:
    masks = [*PATTERNS, "causal"]
    for s in seqlens:
        table = Table(title=f"{kernel}, S={s}, H={heads[0]}:{heads[1]}, d={head_dim}: every pattern vs causal "
                            f"(alternating x{reps}); decode: ms per token, {decode_tokens} tokens per call")
        for col in ("pattern", "density", "fwd ms", "fwd+bwd ms", "decode ms/tok", "speed-up fwd", "fwd+bwd",
                    "decode", "per-area vs causal fwd", "fwd+bwd"):
            table.add_column(col, justify="left" if col == "pattern" else "right")
        times, rates, density = {}, {}, {}
        for direction in ("fwd", "fwd+bwd", "decode"):
            built = {m: built_call(_run(kernel, m, {}, s, direction, heads, head_dim, decode_tokens)) for m in masks}
            p = paired_medians({m: b[0] for m, b in built.items()}, reps)
            for m, (_, flops, dens) in built.items():
                times[m, direction] = p.median_wall(m)
                rates[m, direction] = flops / p.median_wall(m)
                if direction == "fwd":
                    density[m] = dens
        for m in masks:
            row = [m, f"{density[m]:.4f}", f"{times[m, 'fwd'] * 1e3:.0f}", f"{times[m, 'fwd+bwd'] * 1e3:.0f}",
                   f"{times[m, 'decode'] * 1e3 / decode_tokens:.3f}"]
            row += [f"{times['causal', d] / times[m, d]:.1f}x" for d in ("fwd", "fwd+bwd", "decode")]
            row += [f"{rates[m, d] / rates['causal', d]:.2f}" for d in ("fwd", "fwd+bwd")]
            table.add_row(*row)
        console.print(table)


def sdpa(seqlen: int, heads, head_dim: int, reps: int, kernels: Sequence[str]) -> None:
    masks = [(m, {}) for m in PATTERNS] + list(EXTRA_MASKS) + [("causal", {})]
    table = Table(title=f"per-area throughput on each mask vs SDPA's on causal, S={seqlen}, H={heads[0]}:{heads[1]}, "
                        f"d={head_dim} (SDPA causal and {', '.join(kernels)} alternating x{reps})")
    for col in ("mask", "density", "dir", "sdpa causal ms", *(f"{k} ms" for k in kernels), *kernels):
        table.add_column(col, justify="left" if col in ("mask", "dir") else "right")
    for direction in ("fwd", "bwd"):
        reference, ref_flops, _ = built_call(_run("sdpa", "causal", {}, seqlen, direction, heads, head_dim))
        for mask, params in masks:
            built = {k: built_call(_run(k, mask, params, seqlen, direction, heads, head_dim)) for k in kernels}
            p = paired_medians({"sdpa": reference, **{k: b[0] for k, b in built.items()}}, reps)
            sdpa_rate = ref_flops / p.median_wall("sdpa")
            density = next(iter(built.values()))[2]
            table.add_row(mask, f"{density:.4f}", direction, f"{p.median_wall('sdpa') * 1e3:.0f}",
                          *(f"{p.median_wall(k) * 1e3:.0f}" for k in kernels),
                          *(f"{b[1] / p.median_wall(k) / sdpa_rate:.2f}x" for k, b in built.items()))
    console.print(table)


def main(argv: Optional[Sequence[str]] = None, prog: str = "lcbench bench power") -> int:
    p = OneLineParser(prog=prog, description=__doc__.split("\n\n")[0])
    p.add_argument("--sections", type=sections(SECTIONS), default=list(SECTIONS),
                   help=f"comma-separated, of {', '.join(SECTIONS)}")
    p.add_argument("--seqlens", type=lengths, default="32768,65536", help="speed: lengths")
    p.add_argument("--heads", type=heads_pair, default="2:1",
                   help="speed: heads_q:heads_kv (CPU: a 64K causal fwd+bwd is ~40 s)")
    p.add_argument("--head-dim", type=integer(1), default=64, help="head dimension")
    p.add_argument("--decode-tokens", type=integer(1), default=8, help="speed: tokens per timed decode call")
    p.add_argument("--sdpa-seqlen", type=integer(1), default=16384,
                   help="sdpa: the length of the per-area comparison with SDPA")
    p.add_argument("--sdpa-heads", type=heads_pair, default="8:2", help="sdpa: heads_q:heads_kv")
    p.add_argument("--reps", type=integer(1), default=3, help="alternating rounds per length and direction")
    p.add_argument("--kernels", type=method_names, default=",".join(KERNELS),
                   help="methods measured (speed: each in turn; sdpa: side by side)")
    a = p.parse_args(argv)
    console.print(f"{machine_line()}; float32, batch 1; masks at their registered (paper) defaults")
    jobs = {
        "speed": lambda: [speed(a.seqlens, a.heads, a.head_dim, a.reps, a.decode_tokens, k) for k in a.kernels],
        "sdpa": lambda: sdpa(a.sdpa_seqlen, a.sdpa_heads, a.head_dim, a.reps, a.kernels),
    }
    run_sections(jobs, a.sections, console, label=prog)
    return 0
