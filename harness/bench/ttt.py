"""``lcbench bench ttt``: test-time training (issue 12) — qTTT's cost vs equal-FLOP thinking tokens, and TTT-Linear.

Sections (``--sections``, default all):

- ``qttt``: the ``qttt`` workload (HF Qwen3, flavor ``tiny``, method sdpa) at each ``--contexts`` T: the
  ``ttt_step`` phase (AdamW steps on W_Q, one per span; a timed unit is all ``steps`` steps, so every span
  start counts once and contexts compare like for like) and the ``decode`` phase (ms per token at context T),
  all contexts' calls alternating in one paired round. Per T: ms per step, the N-step time, decode ms/token,
  the equal-FLOP thinking-token count, their measured time (thinking_ms = count x measured decode ms/token),
  N-step / thinking time, the attention-backward and K/V-gradient shares of a step; then t(2T)/t(T) of a step.
- ``ttt_linear``: the ``ttt_linear`` method (dual form) fwd+bwd on causal at each ``--seqlens`` S, alternating:
  times and t(2S)/t(S); at ``--peer-seqlen`` ours vs fla-core's CPU reference ``ttt_linear_fla``, fwd and
  fwd+bwd alternating: medians, CPU time, peer / ours.

Every side is built by :func:`harness.bench.build.build_run` (the call a suite run times) and timed by
:func:`harness.bench.build.paired_medians`; the figures come from the built step's own ``metrics`` and FLOPs.
"""

from __future__ import annotations

import argparse
from typing import Optional, Sequence

import torch
from rich.table import Table

from harness.bench.args import lengths, method_names, run_sections, sections, torch_threads
from harness.user_input import OneLineParser, integer
from harness.bench.build import NotRunnable, build_run, machine_line, paired_medians
from harness.results.report import wide_console
from harness.run import DECODE, Run

SECTIONS = ("qttt", "ttt_linear")
RATIO_TARGET = 2.1  # t(2x) / t(x) at most (linear in the context, with a little slack)
console = wide_console()


def _ratio_lines(what: str, label: str, sizes: Sequence[int], seconds: dict[int, float]) -> list[str]:
    """``t(2x)/t(x)`` for consecutive sizes (the ratio normalised to a doubling when they are not 2x apart)."""
    lines = []
    for small, big in zip(sizes, sizes[1:]):
        ratio = seconds[big] / seconds[small]
        verdict = "ok" if ratio <= RATIO_TARGET * big / (2 * small) else "ABOVE TARGET"
        lines.append(f"  {what} t({label}={big})/t({label}={small}) = {ratio:.3f} "
                     f"(target <= {RATIO_TARGET * big / (2 * small):.2f}: {verdict})")
    return lines


# ----- qTTT --------------------------------------------------------------------------------------------------

def qttt_runs(T: int, params: dict, decode_tokens: int) -> tuple[Run, Run]:
    """(the ttt_step run, the decode run) at context ``T``, as the suite expands them."""
    common = dict(workload="qttt", params=params, method=params["method"], mask="causal", seqlen=T,
                  dtype="float32", device="cpu")
    return (Run.make(phase="ttt_step", **common),
            Run.make(phase=DECODE, decode_tokens=decode_tokens, **common))


def bench_qttt(contexts: Sequence[int], params: dict, decode_tokens: int, reps: int) -> tuple[Table, list[str]]:
    built = {}
    for T in contexts:
        step_run, decode_run = qttt_runs(T, params, decode_tokens)
        built[("step", T)] = build_run(step_run)[0]
        built[("decode", T)] = build_run(decode_run)[0]
        console.print(f"  built qttt ttt_step and decode at T={T}")
    n = params["steps"]

    def cycle(call):  # one timed unit: all ``steps`` steps, so every span start is timed once per round
        return lambda: [call() for _ in range(n)]

    calls = {f"{kind}@{T}": cycle(b.call) if kind == "step" else b.call for (kind, T), b in built.items()}
    paired = paired_medians(calls, reps)
    table = Table(title=f"qTTT vs equal-FLOP thinking tokens: Qwen3 {params['flavor']}, {params['method']}, "
                        f"{n} steps x span {params['span']} (span_at {params['span_at']}; timed unit: all {n} "
                        f"steps), decode "
                        f"{decode_tokens} tokens, float32, {torch.get_num_threads()} threads, paired x{reps}",
                  header_style="bold")
    for col in ("T", "ms/step", "step cpu ms", f"{params['steps']}-step ms", "decode ms/tok", "thinking tok",
                "thinking ms", "N-step/thinking", "attn bwd share", "K/V-grad share", "step GFLOP/s"):
        table.add_column(col, justify="right")
    step_s = {}
    for T in contexts:
        step, decode = built[("step", T)], built[("decode", T)]
        s_step, s_dec = paired.median_wall(f"step@{T}") / n, paired.median_wall(f"decode@{T}")
        step_s[T] = s_step
        ms, md = step.metrics(s_step), decode.metrics(s_dec)
        ratio = ms["n_steps_ms"] / md["thinking_ms"]
        table.add_row(str(T), f"{ms['ms_per_step']:.1f}", f"{paired.median_cpu(f'step@{T}') * 1e3 / n:.1f}",
                      f"{ms['n_steps_ms']:.0f}", f"{md['ms_per_token']:.2f}", f"{ms['thinking_tokens']:.0f}",
                      f"{md['thinking_ms']:.0f}", f"{ratio:.3f}", f"{ms['attention_bwd_share']:.3f}",
                      f"{ms['attention_kv_grad_share']:.3f}", f"{step.flops / s_step / 1e9:.2f}")
        console.print(f"  T={T}: ttt_step {ms['ms_per_step']:.1f} ms, decode {md['ms_per_token']:.2f} ms/token, "
                      f"N-step/thinking {ratio:.3f}")
    return table, _ratio_lines("ttt_step", "T", list(contexts), step_s)


# ----- TTT-Linear --------------------------------------------------------------------------------------------

def linear_run(method: str, seqlen: int, direction: str, heads: int, head_dim: int) -> Run:
    return Run.make(method=method, mask="causal", seqlen=seqlen, heads_q=heads, heads_kv=heads, head_dim=head_dim,
                    dtype="float32", direction=direction)


def bench_ttt_linear(seqlens: Sequence[int], heads: int, head_dim: int, reps: int) -> tuple[Table, list[str]]:
    built = {S: build_run(linear_run("ttt_linear", S, "fwd+bwd", heads, head_dim))[0] for S in seqlens}
    paired = paired_medians({f"S={S}": b.call for S, b in built.items()}, reps)
    table = Table(title=f"ttt_linear fwd+bwd, causal, H={heads}, d={head_dim}, float32, "
                        f"{torch.get_num_threads()} threads, paired x{reps}", header_style="bold")
    for col in ("S", "ms", "cpu ms", "us/token", "GFLOP/s"):
        table.add_column(col, justify="right")
    seconds = {}
    for S in seqlens:
        s = seconds[S] = paired.median_wall(f"S={S}")
        table.add_row(str(S), f"{s * 1e3:.1f}", f"{paired.median_cpu(f'S={S}') * 1e3:.1f}", f"{s * 1e6 / S:.2f}",
                      f"{built[S].flops / s / 1e9:.2f}")
        console.print(f"  ttt_linear fwd+bwd S={S}: {s * 1e3:.1f} ms")
    return table, _ratio_lines("ttt_linear fwd+bwd", "S", list(seqlens), seconds)


def bench_peer(seqlen: int, heads: int, head_dim: int, reps: int) -> tuple[Optional[Table], list[str]]:
    calls, flops = {}, {}
    for direction in ("fwd", "fwd+bwd"):
        for side, method in (("ours", "ttt_linear"), ("peer", "ttt_linear_fla")):
            try:
                b = build_run(linear_run(method, seqlen, direction, heads, head_dim))[0]
            except NotRunnable as e:
                return None, [f"  peer skipped: {e}"]
            calls[f"{side} {direction}"], flops[direction] = b.call, b.flops
    paired = paired_medians(calls, reps)
    table = Table(title=f"ttt_linear (ours) vs fla-core chunk_ttt_linear_ref (peer), S={seqlen}, H={heads}, "
                        f"d={head_dim}, float32, {torch.get_num_threads()} threads, alternating x{reps}",
                  header_style="bold")
    for col in ("dir", "ours ms", "peer ms", "ours cpu ms", "peer cpu ms", "peer/ours", "ours GFLOP/s"):
        table.add_column(col, justify="right" if col != "dir" else "left")
    lines = []
    for d in ("fwd", "fwd+bwd"):
        ours, peer = paired.median_wall(f"ours {d}"), paired.median_wall(f"peer {d}")
        ratio = paired.ratio(f"peer {d}", f"ours {d}")
        table.add_row(d, f"{ours * 1e3:.1f}", f"{peer * 1e3:.1f}", f"{paired.median_cpu(f'ours {d}') * 1e3:.1f}",
                      f"{paired.median_cpu(f'peer {d}') * 1e3:.1f}", f"{ratio:.2f}x", f"{flops[d] / ours / 1e9:.2f}")
        lines.append(f"  peer/ours {d} at S={seqlen}: {ratio:.2f}x "
                     f"(ours {ours * 1e3:.1f} ms, peer {peer * 1e3:.1f} ms)")
    return table, lines


# ----- command line ------------------------------------------------------------------------------------------

def main(argv: Optional[Sequence[str]] = None, prog: str = "lcbench bench ttt") -> int:
    p = OneLineParser(prog=prog, description=__doc__.split("\n\n")[0])
    p.add_argument("--sections", type=sections(SECTIONS), default=list(SECTIONS), help="qttt,ttt_linear (default both)")
    p.add_argument("--reps", type=integer(1), default=3, help="paired rounds (after one warm-up call of each side)")
    p.add_argument("--threads", type=integer(0), default=0,
                   help="torch threads (default: as set; 1 keeps a loaded shared machine from stalling the many "
                        "tiny parallel regions of a decode step)")
    g = p.add_argument_group("qttt")
    g.add_argument("--contexts", type=lengths, default=[8192, 16384, 32768],
                   help="qttt: context lengths T (comma-separated)")
    g.add_argument("--flavor", default="tiny", help="qttt: model flavor of the workload")
    g.add_argument("--method", type=lambda t: method_names(t)[0], default="sdpa",
                   help="qttt: attention method of the model")
    g.add_argument("--steps", type=integer(1), default=32, help="qttt: AdamW steps on W_Q (one per span)")
    g.add_argument("--span", type=integer(1), default=128, help="qttt: tokens per step's span")
    g.add_argument("--span-at", choices=("random", "end"), default="random",
                   help="qttt: where the spans start (random, or the end)")
    g.add_argument("--decode-tokens", type=integer(1), default=8,
                   help="tokens per timed decode call (ms/token = / this)")
    g = p.add_argument_group("ttt_linear")
    g.add_argument("--seqlens", type=lengths, default=[4096, 8192, 16384, 32768],
                   help="ttt_linear: lengths S (comma-separated)")
    g.add_argument("--peer-seqlen", type=integer(0), default=8192, help="0: skip the fla-core comparison")
    g.add_argument("--heads", type=integer(1), default=4, help="ttt_linear: heads")
    g.add_argument("--head-dim", type=integer(1), default=64, help="ttt_linear: head dimension")
    a = p.parse_args(argv)
    qttt_params = {"flavor": a.flavor, "method": a.method, "steps": a.steps, "span": a.span, "span_at": a.span_at}
    jobs = {
        "qttt": lambda: _show(bench_qttt(a.contexts, qttt_params, a.decode_tokens, a.reps)),
        "ttt_linear": lambda: _ttt_linear_section(a),
    }
    with torch_threads(a.threads):
        console.print(f"lcbench bench ttt: {machine_line()}")
        run_sections(jobs, a.sections, console, label=prog)
    return 0


def _ttt_linear_section(a: argparse.Namespace) -> None:
    _show(bench_ttt_linear(a.seqlens, a.heads, a.head_dim, a.reps))
    if a.peer_seqlen:
        _show(bench_peer(a.peer_seqlen, a.heads, a.head_dim, a.reps))


def _show(result: tuple[Optional[Table], list[str]]) -> None:
    table, lines = result
    if table is not None:
        console.print(table)
    for line in lines:
        console.print(line)
