"""PyTorch scaled_dot_product_attention pinned to a fused kernel: flash (CPU flash on a CPU machine).

Full and causal masks use the kernel's native paths; any other mask is passed as a dense boolean mask,
which the kernel applies without skipping masked blocks — that cost is what this method measures. CUDA's
flash kernel takes no mask, so on CUDA a masked run uses the memory-efficient kernel instead; that kernel
takes no ``enable_gqa`` in every torch release (torch's docs: GQA "works only for Flash_attention and math
kernel on CUDA"), so there the kv heads are repeated first, as a user of that kernel would.

Decode: q holds the last ``decode_tokens`` rows. SDPA's ``is_causal`` is aligned top-left (row i sees keys
``<= i``), which is wrong for q rows at positions ``q_offset + i``, so a decode step passes the mask's rows for
those positions as a small ``[Hm, n, S]`` boolean mask (none for a full mask).
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

from harness.masks.core import ALL_FEATURES
from harness.interfaces import Method, Problem
from harness.interfaces.method import dense_matmul_flops

MAX_MASK_BYTES = 4 << 30


def build(problem: Problem):
    mask = problem.mask
    attn_mask = None
    native_causal = mask.is_plain_causal and not problem.is_decode  # SDPA's causal is top-left aligned
    if not (mask.is_full or native_causal):
        attn_mask = mask.dense(q_pos=problem.q_positions).to(problem.device).unsqueeze(0)  # [1, Hm, rows, S]
        if problem.is_decode and bool(attn_mask.all()):
            attn_mask = None  # the decode rows see every key (e.g. the last row of a causal mask): no mask
    is_causal = native_causal
    gqa = problem.heads_q != problem.heads_kv
    scale = problem.scale
    backend = SDPBackend.FLASH_ATTENTION
    repeat = 1
    if attn_mask is not None and problem.device.type == "cuda":
        backend = SDPBackend.EFFICIENT_ATTENTION
        repeat, gqa = problem.heads_q // problem.heads_kv, False

    def sdpa(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        if repeat > 1:
            k, v = k.repeat_interleave(repeat, dim=2), v.repeat_interleave(repeat, dim=2)
        with sdpa_kernel(backend):
            out = F.scaled_dot_product_attention(
                q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2),
                attn_mask=attn_mask, is_causal=is_causal, scale=scale, enable_gqa=gqa,
            )
        return out.transpose(1, 2)

    return sdpa


def limits(problem: Problem) -> Optional[str]:
    mask = problem.mask
    if problem.device.type == "cuda" and problem.dtype not in (torch.float16, torch.bfloat16):
        return f"dtype {str(problem.dtype).removeprefix('torch.')} on CUDA (its flash kernel takes float16/bfloat16)"
    if mask.is_full or mask.is_plain_causal:
        return None
    need = mask.intervals.num_heads * problem.q_rows * problem.seqlen
    if need > MAX_MASK_BYTES:
        return f"dense boolean mask needs {need / 2**30:.1f} GiB (limit {MAX_MASK_BYTES / 2**30:.0f} GiB)"
    return None


def executed_flops(problem: Problem, part: str, kv_grad: bool) -> float:
    """What the fused kernel executes, as torch's own flop formulas count it (``sdpa_flop_count``,
    ``sdpa_backward_flop_count``): forward QK^T and PV over the score rectangle; backward recomputes the scores,
    then dP, dV, dQ and dK — dK and dV although K and V may need no gradient (one fused op returns all three).
    (Its CPU flash forward skips key blocks wholly above a native causal diagonal; torch's formula, like this
    one, counts the rectangle.)"""
    return (2 if part == "fwd" else 5) * dense_matmul_flops(problem)


METHOD = Method(
    name="sdpa",
    summary="torch SDPA, flash backend (CUDA: memory-efficient when masked); dense boolean mask unless full/causal",
    build=build,
    mask_features=ALL_FEATURES,
    devices=frozenset({"cpu", "cuda"}),
    dtypes=frozenset({"float32", "bfloat16", "float16", "float64"}),
    decode=True,
    limits=limits,
    executed_flops=executed_flops,
    homepage="https://pytorch.org/docs/stable/generated/torch.nn.functional.scaled_dot_product_attention.html",
)
