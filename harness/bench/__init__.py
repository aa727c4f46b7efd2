"""Benchmarks of lcbench itself (figures for results/BENCHMARKS.md; performance is never a unit test).

``lcbench bench NAME [ARGS]`` runs ``main(argv, prog)`` of the module named here; ``lcbench bench NAME
--help`` lists its arguments. Modules are imported only when run (some import torch, one starts Ray).
Side-by-side comparisons share one paired (A, B, A, B) measurement, :mod:`harness.bench.paired`.
"""

from __future__ import annotations

import importlib
import sys
from typing import Optional, Sequence

# name -> (module with ``main(argv, prog) -> int``, one line for ``lcbench bench --help``)
BENCHES: dict[str, tuple[str, str]] = {
    "kernels": ("harness.bench.kernels", "blocksparse vs sdpa, alternating A/B in one process, per mask"),
    "overhead": ("harness.bench.overhead", "what each run costs beyond its timed work (100 tiny runs, inline)"),
    "scheduler": ("harness.bench.scheduler", "the Ray scheduler's per-run cost vs a fresh process group per run"),
    "cp": ("harness.bench.cp", "bytes sent per rank (measured vs analytic) and rank-max time, per strategy"),
    "peers": ("harness.bench.peers", "our strategies vs the peers' in one process group, alternating A/B"),
    "hybrid": ("harness.bench.hybrid", "7:1 hybrid vs all-softmax LM: prefill/train vs S, decode, cache bytes, vs HF"),
    "power": ("harness.bench.power", "PowerAttention and its baselines vs causal: prefill, decode, per-area vs SDPA"),
    "linear": ("harness.bench.linear", "lightning attention: scaling, %peak, decode, fla peers, crossover, LASP-2 bytes"),
    "predict": ("harness.bench.predict", "lcbench predict vs public CP results: ring-flash-attention, TE's CP study"),
    "ttt": ("harness.bench.ttt", "qTTT steps vs equal-FLOP thinking tokens (step, decode); TTT-Linear vs S and fla"),
}


def run_bench(name: str, argv: Optional[Sequence[str]] = None) -> int:
    """Run benchmark ``name`` with its own command-line arguments ``argv``; its exit status."""
    from harness.bench.build import NotRunnable

    module, _ = BENCHES[name]
    try:
        return importlib.import_module(module).main(list(argv or []), prog=f"lcbench bench {name}") or 0
    except NotRunnable as e:  # a side that cannot run here or fails its check: no figure, one line
        print(f"lcbench bench {name}: {e}", file=sys.stderr)
        return 1


__all__ = ["BENCHES", "run_bench"]
