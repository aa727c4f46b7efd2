"""``lcbench bench kernels``: blocksparse vs sdpa side by side, alternating A, B, A, B in one process.

On causal, sliding_window_causal(1024) and causal_document, fwd and bwd: median wall time, per-process CPU
time, per-area throughput and the ratios. Both sides are built by the harness's own method case (the
executor's build step: the method's ``build``, seeded inputs, the measured call of the direction), warmed up
once, then timed by :func:`harness.bench.paired.alternate`.
"""

from __future__ import annotations

from typing import Optional, Sequence

import torch
from rich.console import Console
from rich.table import Table

from harness.bench.build import built_call
from harness.bench.paired import alternate
from harness.user_input import OneLineParser, integer
from harness.progress import ProgressLines
from harness.results.report import wide_console
from harness.run import Run

MASKS = (("causal", {}), ("sliding_window_causal", {"window": 1024}), ("causal_document", {}))
SIDES = ("sdpa", "blocksparse")  # A, B: the reference kernel first, the ratio is A / B
console = wide_console()


def bench_kernels(seqlen: int, reps: int, heads_q: int, heads_kv: int, head_dim: int,
                  masks: Sequence[tuple[str, dict]] = MASKS, directions: Sequence[str] = ("fwd", "bwd")) -> Table:
    """The comparison table (printed as it goes, one line per mask and direction)."""
    table = Table(title=f"blocksparse vs sdpa, S={seqlen}, H={heads_q}:{heads_kv}, d={head_dim}, float32, "
                        f"{torch.get_num_threads()} threads, alternating A/B x{reps}", header_style="bold")
    for col in ("mask", "dir", "density", "sdpa ms", "blocksparse ms", "speed-up", "sdpa cpu ms", "bs cpu ms",
                "sdpa TFLOP/s", "bs TFLOP/s"):
        table.add_column(col, justify="right" if col not in ("mask", "dir") else "left")
    err = Console(stderr=True)
    report = ProgressLines("bench kernels", len(masks) * len(directions),
                           lambda text: err.print(text, markup=False, highlight=False), unit="pairs done")
    for mask, params in masks:
        for direction in directions:
            calls, flops, density = {}, 0.0, 0.0
            for name in SIDES:
                run = Run.make(method=name, mask=mask, mask_params=params, seqlen=seqlen, heads_q=heads_q,
                               heads_kv=heads_kv, head_dim=head_dim, direction=direction)
                calls[name], flops, density = built_call(run)  # same mask: same FLOPs and density
                calls[name]()  # warm-up
            paired = alternate(calls, reps)
            sdpa, bs = (paired.median_wall(n) for n in SIDES)
            cpu_sdpa, cpu_bs = (paired.median_cpu(n) for n in SIDES)
            # Same mask, same area: the per-area throughput ratio is the time ratio. TFLOP/s use the exact area,
            # so blocksparse's column staying level as the density falls means its time falls with the area.
            ratio = paired.ratio("sdpa", "blocksparse")
            table.add_row(mask, direction, f"{density:.3f}", f"{sdpa * 1e3:.0f}", f"{bs * 1e3:.0f}", f"{ratio:.2f}x",
                          f"{cpu_sdpa * 1e3:.0f}", f"{cpu_bs * 1e3:.0f}", f"{flops / sdpa / 1e12:.3f}",
                          f"{flops / bs / 1e12:.3f}")
            console.print(f"  {mask} {direction}: sdpa {sdpa * 1e3:.0f} ms, blocksparse {bs * 1e3:.0f} ms "
                          f"({ratio:.2f}x)")
            report.update(len(table.rows))
    return table


def main(argv: Optional[Sequence[str]] = None, prog: str = "lcbench bench kernels") -> int:
    p = OneLineParser(prog=prog, description=__doc__.split("\n\n")[0])
    p.add_argument("--seqlen", type=integer(1), default=16384, help="tokens per sequence")
    p.add_argument("--reps", type=integer(1), default=5, help="alternating A/B rounds per mask and direction")
    p.add_argument("--heads-q", type=integer(1), default=8, help="query heads")
    p.add_argument("--heads-kv", type=integer(1), default=2, help="key/value heads (GQA when fewer than --heads-q)")
    p.add_argument("--head-dim", type=integer(1), default=64, help="head dimension")
    a = p.parse_args(argv)
    console.print(bench_kernels(a.seqlen, a.reps, a.heads_q, a.heads_kv, a.head_dim))
    return 0
