"""The built-in kernel rate tables (``harness/prediction/clusters/rates/*.yaml``), made from their sources.

Two kinds of source, each said in its table's ``source``:

* **lcbench's own H100 measurements**: the GPU self-check of ``results/BENCHMARKS.md`` section 7 (first run,
  2026-11-26, commit 2b2540f, one NVIDIA H100 80GB HBM3, torch 2.11.0+cu130, CUDA 13.0): bf16, batch 1,
  16 query heads, 8 kv heads, head dim 128; causal, ``sliding_window_causal`` (window 1024) and
  ``causal_document`` (the mask's defaults: pile lengths, seed 0, max_doc_fraction 0.25), S = 4096 and 16384,
  fwd and fwd+bwd (``harness/gpu_check.py``'s SUITE_MASKS). The work of a point is the mask's exact area over
  the 16 heads (``build_mask(name, S, 16, **params).area(16)``).
* **FlashAttention-2's published figures** (Dao-AILab/flash-attention README, HEAD 0251105a2fb1: the
  ``flash2_a100_fwd_bwd_benchmark.png``, ``flash2_h100_fwd_bwd_benchmark.png`` and ``flash3_fp16_fwd.png``
  bar labels; batch 16384 / S, 16 heads of dim 128), turned into times with the repository's own FLOP formula
  (``benchmarks/benchmark_flash_attention.py``: ``f = 4 * batch * S**2 * heads * d // (2 if causal else 1)``,
  3.5 f for fwd+bwd), and the work from the exact area (``S (S + 1) / 2`` per head for causal). These are NOT
  lcbench measurements: lcbench has none on an A100.

``python -m harness.prediction.builtin_rates`` rewrites the files; a test checks that they equal what this
module makes, so a table never drifts from its source.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from harness.prediction.rates import FULL, RatePoint, RateTable

DTYPE = "bfloat16"
HEAD_DIM = 128

# ----- lcbench's own H100 runs (BENCHMARKS.md section 7): (mask, S, direction) -> median ms ---------------
BENCH_RUN = ("lcbench GPU self-check, results/BENCHMARKS.md section 7, first run 2026-11-26, commit 2b2540f, "
             "one NVIDIA H100 80GB HBM3 (torch 2.11.0+cu130, CUDA 13.0): bf16, batch 1, 16 q / 8 kv heads, "
             "head dim 128, median of 5-20 samples after 2 warm-ups, every run passed the float64 gate; "
             "work = exact mask area x 16 heads (harness.masks.build_mask(...).area(16))")
BENCH_HEADS = 16
BENCH_MASK_PARAMS = {"causal": {}, "sliding_window_causal": {"window": 1024}, "causal_document": {}}
BENCH_H100: dict[str, dict[tuple[str, int, str], float]] = {
    "sdpa": {
        ("causal", 4096, "fwd"): 0.316, ("causal", 4096, "fwd+bwd"): 1.099,
        ("causal", 16384, "fwd"): 3.329, ("causal", 16384, "fwd+bwd"): 12.059,
        ("sliding_window_causal", 4096, "fwd"): 1.160, ("sliding_window_causal", 4096, "fwd+bwd"): 4.057,
        ("sliding_window_causal", 16384, "fwd"): 17.490, ("sliding_window_causal", 16384, "fwd+bwd"): 62.416,
        ("causal_document", 4096, "fwd"): 1.151, ("causal_document", 4096, "fwd+bwd"): 4.027,
        ("causal_document", 16384, "fwd"): 17.369, ("causal_document", 16384, "fwd+bwd"): 62.355,
    },
    "cudnn_sdpa": {  # cuDNN claims no window or document mask: causal only
        ("causal", 4096, "fwd"): 0.150, ("causal", 4096, "fwd+bwd"): 0.611,
        ("causal", 16384, "fwd"): 1.832, ("causal", 16384, "fwd+bwd"): 7.158,
    },
    "flex_cuda": {
        ("causal", 4096, "fwd"): 0.236, ("causal", 4096, "fwd+bwd"): 0.916,
        ("causal", 16384, "fwd"): 2.765, ("causal", 16384, "fwd+bwd"): 9.917,
        ("sliding_window_causal", 4096, "fwd"): 0.126, ("sliding_window_causal", 4096, "fwd+bwd"): 0.496,
        ("sliding_window_causal", 16384, "fwd"): 0.459, ("sliding_window_causal", 16384, "fwd+bwd"): 1.879,
        ("causal_document", 4096, "fwd"): 0.100, ("causal_document", 4096, "fwd+bwd"): 0.638,
        ("causal_document", 16384, "fwd"): 0.595, ("causal_document", 16384, "fwd+bwd"): 2.319,
    },
}

# ----- FlashAttention-2's published TFLOP/s (published.md section 5) ------------------------------------------
FA_SEQLENS = (512, 1024, 2048, 4096, 8192, 16384)
FA_TOKENS = 16384  # "Batch size set to 16k / seqlen"
FA_HEADS = 16  # "hidden dimension 2048", head dim 128


@dataclass(frozen=True)
class Published:
    """One bar series of a published figure: TFLOP/s per seqlen (None: not readable)."""

    kind: str  # "causal" or FULL
    direction: str
    tflops: tuple[Optional[float], ...]
    figure: str


FA2_A100 = (
    Published("causal", "fwd+bwd", (99, 133, 155, 173, 182, 189),
              "flash2_a100_fwd_bwd_benchmark.png panel (d) 'With causal mask, head dimension 128'"),
    Published(FULL, "fwd+bwd", (None, None, 187, 196, 201, 203),
              "flash2_a100_fwd_bwd_benchmark.png panel (b), non-causal d128 (512 and 1k hidden by the legend)"),
)
FA2_H100 = (
    Published("causal", "fwd+bwd", (163, 221, 265, 294, 308, 328),
              "flash2_h100_fwd_bwd_benchmark.png panel (d), causal d128"),
    Published(FULL, "fwd+bwd", (248, 294, 320, 326, 335, 338),
              "flash2_h100_fwd_bwd_benchmark.png panel (b), non-causal d128"),
    Published("causal", "fwd", (191, 260, 298, 319, 333, 335),
              "flash3_fp16_fwd.png panel (d) 'Forward, with causal mask, head dim 128', its FlashAttention-2 row "
              "(FP16; taken as bf16: the same tensor-core rate)"),
)
FA_SOURCE = ("PUBLISHED figures of the flash-attention README (github.com/Dao-AILab/flash-attention, HEAD "
             "0251105a2fb1, README section Performance), NOT an lcbench measurement; {device}; bar labels read "
             "from {figures}; batch 16k/seqlen, 16 heads, head dim 128; time = the repo's FLOPs "
             "(benchmarks/benchmark_flash_attention.py: 4*batch*S^2*heads*d, /2 causal, x3.5 fwd+bwd) / TFLOP/s; "
             "work = exact area (S(S+1)/2 per head causal) x heads x batch")


def fa_flops(seqlen: int, causal: bool, direction: str) -> float:
    """The flash-attention benchmark's FLOP count of one call at ``seqlen`` (its own formula)."""
    batch = FA_TOKENS // seqlen
    f = 4 * batch * seqlen ** 2 * FA_HEADS * HEAD_DIM // (2 if causal else 1)
    return {"fwd": 1.0, "bwd": 2.5, "fwd+bwd": 3.5}[direction] * f


def fa_work(seqlen: int, causal: bool) -> float:
    batch = FA_TOKENS // seqlen
    per_head = seqlen * (seqlen + 1) // 2 if causal else seqlen * seqlen
    return float(per_head * FA_HEADS * batch)


def fa_points(series: tuple[Published, ...]) -> list[RatePoint]:
    points = []
    for s in series:
        causal = s.kind != FULL
        for seqlen, tflops in zip(FA_SEQLENS, s.tflops):
            if tflops is None:
                continue
            ms = fa_flops(seqlen, causal, s.direction) / (tflops * 1e12) * 1e3
            points.append(RatePoint(DTYPE, s.direction, s.kind, fa_work(seqlen, causal), HEAD_DIM, ms))
    return points


def bench_work(mask: str, seqlen: int) -> float:
    from harness.masks import build_mask

    return float(build_mask(mask, seqlen, BENCH_HEADS, **BENCH_MASK_PARAMS[mask]).area(BENCH_HEADS))


def bench_table(method: str) -> RateTable:
    points = [RatePoint(DTYPE, direction, mask, bench_work(mask, seqlen), HEAD_DIM, ms)
              for (mask, seqlen, direction), ms in BENCH_H100[method].items()]
    return RateTable(method, "NVIDIA H100 80GB HBM3", BENCH_RUN, points)


def fa_table(device: str, series: tuple[Published, ...]) -> RateTable:
    figures = "; ".join(s.figure for s in series)
    return RateTable("flash_attn2", device, FA_SOURCE.format(device=device, figures=figures), fa_points(series))


def tables() -> dict[str, RateTable]:
    """File name -> table, for every built-in rate table."""
    out = {f"h100-{m}.yaml": bench_table(m) for m in BENCH_H100}
    out["a100-flash_attn2.yaml"] = fa_table("NVIDIA A100 80GB SXM4", FA2_A100)
    out["h100-flash_attn2.yaml"] = fa_table("NVIDIA H100 80GB SXM5", FA2_H100)
    return out


def rates_dir() -> Path:
    from harness.prediction.cluster import builtin_dir

    return builtin_dir() / "rates"


def main() -> int:
    for name, table in tables().items():
        (rates_dir() / name).write_text(table.dump())
        print(rates_dir() / name)
    return 0


if __name__ == "__main__":
    sys.exit(main())
