"""Public context-parallel results, as data, with the configuration and the source of each (what
``lcbench bench predict`` checks the performance model against; nothing here is fitted to them).

Sources and every figure: /work/notes/published.md sections 1 and 2 (REFERENCE.md section 7).

* :data:`RING_FLASH` — ring-flash-attention's README "batch api" table (zhuzilin/ring-flash-attention, HEAD
  899628238f2f, table since 556ddaa / 1342b84, 2024-10-30): iterations per second on 8 GPUs of one node,
  Llama-3.1-8B attention (32 q / 8 kv heads, head dim 128), **8192 tokens per GPU** (65,536 in all: the
  benchmark's per-rank ``seqlen = 1024 * 8``), causal, bf16, batch 1, FlashAttention-2 per block. The
  README's ``ring_attn`` / ``zigzag_ring`` / ``stripe_attn`` are lcbench's ``ring`` / ``ring_zigzag`` /
  ``ring_striped``; ``ideal`` is ``flash_attn_kvpacked_func`` on one GPU's 8192 tokens (the README's
  "theoretic flash_attn" x 8).
* :data:`TE_*` — TransformerEngine's CP study (NVIDIA/TransformerEngine ``benchmarks/attention/README.md`` at
  commit 426017b46ea7 and ``tests/pytorch/attention/benchmark_cp.py``): BF16 THD fwd+bwd, 32 q / 8 kv heads,
  d 128, causal, B x S = 524,288 tokens, CP 2/4/8 in one node, P2P / all-gather / A2A. The README states only
  text statistics (its 324 rows are in WebP figures), so those are what is encoded.
"""

from __future__ import annotations

from dataclasses import dataclass

# ----- ring-flash-attention (published.md section 1) ----------------------------------------------------------
RING_FLASH_SOURCE = ("ring-flash-attention README 'Performance Summary', batch api (github.com/zhuzilin/"
                     "ring-flash-attention HEAD 899628238f2f; benchmark/benchmark_kvpacked_func.py)")
RING_FLASH_SHAPE = dict(heads_q=32, heads_kv=8, head_dim=128, dtype="bfloat16", batch=1, mask="causal")
RING_FLASH_TOKENS_PER_GPU = 8192
RING_FLASH_WORLD = 8
# the README's names -> lcbench strategies ("ideal": one GPU, no communication)
RING_FLASH_STRATEGIES = {"ring_attn": "ring", "zigzag_ring": "ring_zigzag", "stripe_attn": "ring_striped"}
IDEAL = "ideal"


@dataclass(frozen=True)
class RingFlashRow:
    gpu: str  # "H800" or "A100" (the README names nothing more)
    direction: str  # "fwd" or "fwd+bwd"
    name: str  # the README's column: ideal, ring_attn, zigzag_ring, stripe_attn
    iter_per_s: float  # as printed (the ideal: the single-GPU rate, before the README's / 8)

    @property
    def strategy(self) -> str:
        return RING_FLASH_STRATEGIES.get(self.name, IDEAL)

    @property
    def world_size(self) -> int:
        return 1 if self.name == IDEAL else RING_FLASH_WORLD

    @property
    def seqlen(self) -> int:
        return RING_FLASH_TOKENS_PER_GPU * self.world_size

    def tflops_per_device(self) -> float:
        """TFLOP/s per device under lcbench's convention: 4 x exact causal area x Hq x d per forward (S(S+1)/2
        pairs per head), 3.5x for fwd+bwd; x iterations/s / devices."""
        return causal_flops(self.seqlen, self.direction) * self.iter_per_s / self.world_size / 1e12


def causal_flops(seqlen: int, direction: str) -> float:
    s = RING_FLASH_SHAPE
    area = seqlen * (seqlen + 1) // 2
    return 4.0 * area * s["heads_q"] * s["head_dim"] * s["batch"] * {"fwd": 1.0, "fwd+bwd": 3.5}[direction]


RING_FLASH = (
    RingFlashRow("H800", "fwd", IDEAL, 591.5), RingFlashRow("H800", "fwd", "ring_attn", 38.5),
    RingFlashRow("H800", "fwd", "zigzag_ring", 63.0), RingFlashRow("H800", "fwd", "stripe_attn", 55.0),
    RingFlashRow("H800", "fwd+bwd", IDEAL, 154.7), RingFlashRow("H800", "fwd+bwd", "ring_attn", 10.4),
    RingFlashRow("H800", "fwd+bwd", "zigzag_ring", 17.4), RingFlashRow("H800", "fwd+bwd", "stripe_attn", 16.0),
    RingFlashRow("A100", "fwd", IDEAL, 373.4), RingFlashRow("A100", "fwd", "ring_attn", 24.0),
    RingFlashRow("A100", "fwd", "zigzag_ring", 38.2), RingFlashRow("A100", "fwd", "stripe_attn", 32.5),
    RingFlashRow("A100", "fwd+bwd", IDEAL, 94.7), RingFlashRow("A100", "fwd+bwd", "ring_attn", 6.2),
    RingFlashRow("A100", "fwd+bwd", "zigzag_ring", 10.6), RingFlashRow("A100", "fwd+bwd", "stripe_attn", 9.75),
)
RING_FLASH_CLUSTERS = {"H800": "h800", "A100": "dgx-a100"}  # the built-in profile each GPU is predicted on
RING_FLASH_METHOD = "flash_attn2"

# ----- TransformerEngine's CP study (published.md section 2) ------------------------------------------------
TE_SOURCE = ("TransformerEngine benchmarks/attention/README.md at commit 426017b46ea7 (index id 70299398920; "
             "configs: tests/pytorch/attention/benchmark_cp.py)")
TE_SHAPE = dict(heads_q=32, heads_kv=8, head_dim=128, dtype="bfloat16", direction="fwd+bwd")
TE_TOKENS = 524288
TE_SHAPES = ((1, 524288), (2, 262144), (4, 131072), (8, 65536), (16, 32768), (32, 16384), (64, 8192),
             (128, 4096), (256, 2048))  # B x S, "nine uniform shapes with fixed B*S=524288"
TE_CP_SIZES = (2, 4, 8)
TE_SWA_SHAPES = TE_SHAPES[:5]  # "the first five fixed-token shapes and a causal left window of (1024, 0)"
TE_SWA_WINDOW = 1024
# TE's cp_comm_type -> lcbench strategy. p2p: TE's THD load balancing cuts every sequence into 2 x CP chunks
# and gives rank i chunks i and 2CP-1-i of each (the per-document head-tail split of ring_doc_zigzag); with
# uniform sequences that is exactly B sequences of S on the zigzag layout, i.e. ring_zigzag at batch B
# (same pairs and bytes on every rank). a2a: DeepSpeed-Ulysses' head all-to-all = ulysses. all_gather: K/V
# gathered, local queries attend = all_gather.
TE_STRATEGIES = {"p2p": "ring_zigzag", "all_gather": "all_gather", "a2a": "ulysses"}
# "the winning communication counts are P2P 19, all-gather 13, and A2A 4 at CP2; A2A 30 and P2P 6 at CP4; and
# A2A 33 and P2P 3 at CP8" — over "the 36 hardware/backend/shape tuples at each CP size"
TE_WINNERS = {2: {"p2p": 19, "all_gather": 13, "a2a": 4}, 4: {"a2a": 30, "p2p": 6, "all_gather": 0},
              8: {"a2a": 33, "p2p": 3, "all_gather": 0}}
TE_TUPLES = 36
# "Using the best communication method independently at CP2 and CP8, 1x512k improves by 3.98x--4.23x across
# the four hardware/backend scopes, while 256x2k improves by only 3.03x--3.41x."
TE_SPEEDUP = {(1, 524288): (3.98, 4.23), (256, 2048): (3.03, 3.41)}
# SWA, H100/FA3: "At CP2, A2A is 4.9%--9.5% slower than all-gather"; "At CP4, A2A is 17.5%--20.5% ... faster";
# "at CP8 its advantage grows to 45.6%--46.9%". Encoded as t_all_gather / t_a2a - 1 (negative: A2A slower).
TE_SWA_ADVANTAGE = {2: (-0.095, -0.049), 4: (0.175, 0.205), 8: (0.456, 0.469)}
# H100 FusedAttention is cuDNN's fused attention: lcbench's cudnn_sdpa table (causal). TE's H100 SWA runs used
# FA3; lcbench has no FA3 table and cuDNN (as lcbench wraps it) claims no window, so the SWA rows use
# flex_cuda, the one H100 table with a measured window-1024 kind.
TE_CLUSTER = "dgx-h100"
TE_METHOD = "cudnn_sdpa"
TE_SWA_METHOD = "flex_cuda"
