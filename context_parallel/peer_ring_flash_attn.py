"""ring-flash-attention (zhuzilin/ring-flash-attention, package ``ring_flash_attn``): GPU-only peers.

* ``ring_flash_attn`` — ``ring_flash_attn_func(q, k, v, ..., group=)``: P2P ring on contiguous shards;
* ``ring_flash_attn_zigzag`` — ``zigzag_ring_flash_attn_func``: the same ring on zigzag (head-tail) shards;
* ``ring_flash_attn_llama3`` — ``llama3_flash_attn_varlen_func`` with ``llama3_flash_attn_prepare_cu_seqlens``:
  Llama-3 style all-gather of K/V on contiguous shards, varlen, so packed documents (``cu_seqlens``) run.

Why not here: every function calls flash_attn's CUDA kernels (``_flash_attn_forward``/``_backward``,
``_flash_attn_varlen_*``) for each step — there is no CPU path, and neither ``ring_flash_attn`` nor
``flash_attn`` is installed on this CPU machine. Thin adapters against the documented APIs above, never
run on this machine; the probe reports why they are unavailable.
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.distributed as dist

from context_parallel import layouts
from harness.interfaces.strategy import CPContext, CPProblem, Strategy
from context_parallel.peer_support import counted, gpu_probe
from harness.interfaces.strategy import OWN_KERNEL
from context_parallel.volumes import ring_bytes
from harness.masks.core import CAUSAL, VARLEN

HOMEPAGE = "https://github.com/zhuzilin/ring-flash-attention"
WHY = "ring_flash_attn calls flash_attn's CUDA kernels at every ring step (no CPU path)"
probe = gpu_probe(("ring_flash_attn", "flash_attn"), "ring-flash-attn (+ flash-attn)", WHY)

GPU_DTYPES = frozenset({"bfloat16", "float16"})
KERNEL = "flash-attn _flash_attn_forward/_backward (ring-flash-attn's own, per ring step)"


def _causal_or_full(problem: CPProblem) -> Optional[str]:
    if not (problem.mask.is_full or problem.mask.is_plain_causal):
        return f"mask {problem.mask.name}: ring_flash_attn_func takes causal or full only"
    return None


def _ring_attention(fn_name: str):
    def attention(ctx: CPContext, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        import ring_flash_attn

        fn = getattr(ring_flash_attn, fn_name)
        causal = ctx.problem.mask.is_plain_causal
        return counted(
            ctx.comm,
            lambda q_, k_, v_: fn(q_, k_, v_, dropout_p=0.0, softmax_scale=ctx.scale, causal=causal,
                                  group=dist.group.WORLD),
            q, k, v,
        )

    return attention


def _ring_model(problem: CPProblem, direction: str) -> list[int]:
    return ring_bytes(problem, [problem.seqlen // problem.world_size] * problem.world_size, direction)


def _gpu_strategy(name: str, summary: str, **kw) -> Strategy:
    return Strategy(
        name=name, summary=summary, dtypes=GPU_DTYPES, devices=frozenset({"cuda"}), local_methods=OWN_KERNEL,
        probe=probe, homepage=HOMEPAGE, **{"kernel": KERNEL, **kw},
    )


STRATEGY = _gpu_strategy(
    "ring_flash_attn",
    "peer (GPU): ring-flash-attention ring_flash_attn_func, P2P ring on contiguous shards; causal/full",
    layout=layouts.contiguous, attention=_ring_attention("ring_flash_attn_func"),
    mask_features=frozenset({CAUSAL}), limits=_causal_or_full, comm_model=_ring_model,
)

STRATEGY_ZIGZAG = _gpu_strategy(
    "ring_flash_attn_zigzag",
    "peer (GPU): ring-flash-attention zigzag_ring_flash_attn_func, P2P ring on zigzag shards; causal/full",
    layout=layouts.zigzag, attention=_ring_attention("zigzag_ring_flash_attn_func"),
    mask_features=frozenset({CAUSAL}), limits=_causal_or_full, comm_model=_ring_model,
)


# ----- Llama-3 all-gather, varlen ----------------------------------------------------------------------------

def _llama3_limits(problem: CPProblem) -> Optional[str]:
    varlen = problem.mask.varlen
    if varlen is None or varlen.window != (-1, -1):
        return f"mask {problem.mask.name}: llama3_flash_attn_varlen_func takes (documents of) causal or full"
    if problem.batch != 1:
        return "batch > 1 (the varlen API packs one sequence; use documents instead)"
    return None


def _llama3_prepare(ctx: CPContext) -> None:
    from ring_flash_attn import llama3_flash_attn_prepare_cu_seqlens

    p = ctx.problem
    cu = p.mask.varlen.cu_seqlens.to(device=p.device, dtype=torch.int32)
    causal = bool(p.mask.varlen.causal)
    cu_q, cu_k, max_q, max_k, k_slice = llama3_flash_attn_prepare_cu_seqlens(
        cu, causal=causal, rank=ctx.rank, world_size=ctx.world_size
    )
    ctx.state["llama3"] = dict(
        cu_seqlens_q=cu_q, cu_seqlens_k=cu_k, max_seqlen_q=max_q, max_seqlen_k=max_k, local_k_slice=k_slice,
        heads_k_stride=p.heads_kv, causal=causal,
    )


def _llama3_attention(ctx: CPContext, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    from ring_flash_attn import llama3_flash_attn_varlen_func

    st = ctx.state["llama3"]

    def call(q_, k_, v_):
        out = llama3_flash_attn_varlen_func(
            q_[0], k_[0], v_[0], st["cu_seqlens_q"], st["cu_seqlens_k"], st["max_seqlen_q"], st["max_seqlen_k"],
            heads_k_stride=st["heads_k_stride"], local_k_slice=st["local_k_slice"], dropout_p=0.0,
            softmax_scale=ctx.scale, causal=st["causal"], group=dist.group.WORLD,
        )
        return (out[0] if isinstance(out, tuple) else out).unsqueeze(0)

    return counted(ctx.comm, call, q, k, v)


STRATEGY_LLAMA3 = _gpu_strategy(
    "ring_flash_attn_llama3",
    "peer (GPU): ring-flash-attention llama3_flash_attn_varlen_func, K/V all-gather (Llama 3), varlen documents",
    kernel="flash-attn _flash_attn_varlen_forward/_backward (ring-flash-attn's own)",
    layout=layouts.contiguous, prepare=_llama3_prepare, attention=_llama3_attention,
    mask_features=frozenset({CAUSAL, VARLEN}), limits=_llama3_limits,
)

STRATEGIES = [STRATEGY, STRATEGY_ZIGZAG, STRATEGY_LLAMA3]
