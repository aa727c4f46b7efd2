"""TransformerEngine context parallelism (what Megatron-Core's ``TEDotProductAttention`` uses): GPU-only peers.

``transformer_engine.pytorch.DotProductAttention(num_attention_heads, kv_channels, num_gqa_groups,
qkv_format="bshd", attn_mask_type=...)`` with ``set_context_parallel_group(cp_group, cp_global_ranks,
cp_stream, cp_comm_type)``, one strategy per ``cp_comm_type``:

* ``te_cp_p2p`` — "p2p": ring of K/V send/recv overlapped with the fused attention kernels;
* ``te_cp_all_gather`` — "all_gather": K/V all-gathered, local attention per chunk;
* ``te_cp_a2a`` — "a2a": Ulysses-style all-to-all over heads (heads divisible by W);
* ``te_cp_a2a_p2p`` — "a2a+p2p": hierarchical, ``cp_group`` = [all-to-all group, ring group]; the
  all-to-all groups are ``ulysses_degree`` consecutive ranks (option shared with ``usp``).

Layout: TE (and Megatron's ``get_batch_on_this_cp_rank``) expect the sequence in 2W chunks with rank r
holding chunks r and 2W-1-r — our ``zigzag`` layout — for every comm type. Masks: "causal" and
"no_mask" (full). Megatron-Core is installed here but its CP is TE's (it asserts CP needs
TEDotProductAttention), so these four cover it.

Why not here: TE's attention runs cuDNN fused attention or flash-attn CUDA kernels (no CPU backend), and
``transformer_engine`` is not installed on this CPU machine. Thin adapters, never run on this machine.
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.distributed as dist

from context_parallel import layouts, usp
from harness.interfaces.strategy import CPContext, CPProblem, Strategy
from context_parallel.engine import consecutive, strided
from context_parallel.family import a2a_degree
from context_parallel.peer_support import counted, gpu_probe
from harness.interfaces.strategy import OWN_KERNEL
from harness.masks.core import CAUSAL

HOMEPAGE = "https://docs.nvidia.com/deeplearning/transformer-engine/user-guide/api/pytorch.html"
WHY = "TransformerEngine attention runs cuDNN fused / flash-attn CUDA kernels (no CPU backend)"
probe = gpu_probe(("transformer_engine",), "transformer-engine[pytorch]", WHY)


def _limits(comm_type: str):
    def limits(problem: CPProblem) -> Optional[str]:
        if not (problem.mask.is_full or problem.mask.is_plain_causal):
            return f"mask {problem.mask.name}: the TE adapter maps causal and full (no_mask) only"
        w = problem.world_size
        if comm_type == "a2a" and (problem.heads_q % w or problem.heads_kv % w):
            return f"cp_comm_type a2a: heads {problem.heads_q}:{problem.heads_kv} not divisible by W={w}"
        if comm_type == "a2a+p2p":
            u = a2a_degree(problem, usp.OPTION)
            if w % u or problem.heads_q % u or problem.heads_kv % u:
                return f"cp_comm_type a2a+p2p: {usp.OPTION}={u} must divide W={w} and heads " \
                       f"{problem.heads_q}:{problem.heads_kv}"
        return None

    return limits


def _prepare(comm_type: str):
    def prepare(ctx: CPContext) -> None:
        import transformer_engine.pytorch as te

        p, w = ctx.problem, ctx.world_size
        attn = te.DotProductAttention(
            num_attention_heads=p.heads_q, kv_channels=p.head_dim, num_gqa_groups=p.heads_kv,
            attention_dropout=0.0, qkv_format="bshd",
            attn_mask_type="causal" if p.mask.is_plain_causal else "no_mask", softmax_scale=p.scale,
        )
        if comm_type == "a2a+p2p":
            u = a2a_degree(p, usp.OPTION)
            groups = [ctx.comm.partition(consecutive(w, u)), ctx.comm.partition(strided(w, u))]
            cp_group = [g.pg if g.pg is not None else dist.group.WORLD for g in groups]
        else:
            cp_group = dist.group.WORLD
        attn.set_context_parallel_group(cp_group, list(range(w)), torch.cuda.Stream(), comm_type)
        ctx.state["attn"] = attn

    return prepare


def attention(ctx: CPContext, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    attn = ctx.state["attn"]
    out = counted(ctx.comm, lambda q_, k_, v_: attn(q_, k_, v_), q, k, v)  # [B, S_r, H*d]
    return out.view(q.shape)


def _strategy(name: str, comm_type: str, summary: str) -> Strategy:
    return Strategy(
        name=name,
        summary=summary,
        layout=layouts.zigzag,
        prepare=_prepare(comm_type),
        attention=attention,
        mask_features=frozenset({CAUSAL}),
        dtypes=frozenset({"bfloat16", "float16"}),
        devices=frozenset({"cuda"}),
        local_methods=OWN_KERNEL,
        kernel="TransformerEngine DotProductAttention's own (cuDNN fused / flash-attn, per CP step)",
        options={usp.OPTION: None} if comm_type == "a2a+p2p" else {},
        limits=_limits(comm_type),
        probe=probe,
        homepage=HOMEPAGE,
    )


STRATEGY_P2P = _strategy("te_cp_p2p", "p2p", "peer (GPU): TransformerEngine CP, cp_comm_type p2p (K/V ring)")
STRATEGY_A2A = _strategy("te_cp_a2a", "a2a", "peer (GPU): TransformerEngine CP, cp_comm_type a2a (Ulysses)")
STRATEGY_ALL_GATHER = _strategy(
    "te_cp_all_gather", "all_gather", "peer (GPU): TransformerEngine CP, cp_comm_type all_gather (K/V all-gather)"
)
STRATEGY_A2A_P2P = _strategy(
    "te_cp_a2a_p2p", "a2a+p2p", "peer (GPU): TransformerEngine CP, cp_comm_type a2a+p2p (hierarchical)"
)
STRATEGY = STRATEGY_P2P
STRATEGIES = [STRATEGY_P2P, STRATEGY_A2A, STRATEGY_ALL_GATHER, STRATEGY_A2A_P2P]
