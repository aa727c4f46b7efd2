"""magi_attention: MagiAttention (SandAI) distributed attention — GPU-only peer.

``magi_attention.api``: ``magi_attn_flex_dispatch(x, q_ranges, k_ranges, attn_mask_type, total_seqlen_q,
total_seqlen_k, ..., cp_group)`` plans the run (its solver chooses which chunks every rank holds and the
communication) and returns this rank's tokens plus a runtime key; ``dispatch(x, key)`` shards further
tensors the same way; ``calc_attn(q, k, v, key)`` runs the distributed flex-flash-attention forward (and
backward through autograd); ``undispatch(out, key)`` restores the global order. The mask is given as
(q range, k range, type) slices, so packed documents and causal/full masks map directly.

Shards are magi's own, not a layout of ours: ``shard`` dispatches (the first call builds the key) and
``gather`` undispatches. The nominal ``layout`` (contiguous) is only what lcbench reports for token counts.
The API's keyword set changed across releases (``cp_group`` vs ``cp_group_or_mesh``, ``head_dim`` /
``num_heads_*``, ``chunk_size``): only the keywords the installed signature accepts are passed.

Why not here: MagiAttention's kernels are CUDA (Hopper flex-flash-attention) and its communication is
NCCL group-cast; ``magi_attention`` is not installed on this CPU machine. Thin adapter, never run here.
"""

from __future__ import annotations

import inspect
from typing import Optional

import torch
import torch.distributed as dist

from context_parallel import layouts
from harness.interfaces.strategy import CPContext, CPProblem, Strategy
from context_parallel.peer_support import counted, gpu_probe
from harness.interfaces.strategy import OWN_KERNEL
from harness.masks.core import CAUSAL, VARLEN

HOMEPAGE = "https://github.com/SandAI-org/MagiAttention"
WHY = "MagiAttention runs CUDA flex-flash-attention kernels (Hopper) and NCCL group-cast communication"
probe = gpu_probe(("magi_attention",), "magi-attention", WHY)
CHUNK = 512  # dispatch granularity (tokens); sequences are required to be a multiple of W * CHUNK (no padding)


def limits(problem: CPProblem) -> Optional[str]:
    varlen = problem.mask.varlen
    if varlen is None or varlen.window != (-1, -1):
        return f"mask {problem.mask.name}: the MagiAttention adapter maps (documents of) causal or full"
    if problem.batch != 1:
        return "batch > 1 (MagiAttention takes one packed [tokens, heads, dim] sequence)"
    if problem.seqlen % (problem.world_size * CHUNK):
        return f"seqlen {problem.seqlen} not a multiple of W x chunk = {problem.world_size * CHUNK} (no padding)"
    return None


def _ranges(problem: CPProblem):
    from magi_attention.common import AttnRanges

    cu = problem.mask.varlen.cu_seqlens.tolist()
    spans = [[a, b] for a, b in zip(cu[:-1], cu[1:])]
    kind = "causal" if problem.mask.varlen.causal else "full"
    return AttnRanges.from_ranges(spans), AttnRanges.from_ranges(spans), [kind] * len(spans)


def shard(ctx: CPContext, x: torch.Tensor) -> torch.Tensor:
    from magi_attention import api

    if "key" in ctx.state:
        return api.dispatch(x[0], ctx.state["key"]).unsqueeze(0)
    p = ctx.problem
    q_ranges, k_ranges, types = _ranges(p)
    wanted = dict(
        q_ranges=q_ranges, k_ranges=k_ranges, attn_mask_type=types, total_seqlen_q=p.seqlen,
        total_seqlen_k=p.seqlen, pad_size=0, chunk_size=CHUNK, head_dim=p.head_dim, num_heads_q=p.heads_q,
        num_heads_kv=p.heads_kv, cp_group=dist.group.WORLD, cp_group_or_mesh=dist.group.WORLD,
    )
    accepted = inspect.signature(api.magi_attn_flex_dispatch).parameters
    local, key = api.magi_attn_flex_dispatch(x[0], **{k: v for k, v in wanted.items() if k in accepted})
    ctx.state["key"] = key
    return local.unsqueeze(0)


def gather(ctx: CPContext, x: torch.Tensor) -> torch.Tensor:
    from magi_attention import api

    return api.undispatch(x[0], ctx.state["key"]).unsqueeze(0)


def attention(ctx: CPContext, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    from magi_attention import api

    key = ctx.state["key"]

    def call(q_, k_, v_):
        out = api.calc_attn(q_[0], k_[0], v_[0], key)
        return (out[0] if isinstance(out, tuple) else out).unsqueeze(0)

    return counted(ctx.comm, call, q, k, v)


STRATEGY = Strategy(
    name="magi_attention",
    summary="peer (GPU): MagiAttention magi_attn_flex_dispatch/calc_attn/undispatch (its solver's shards, "
    "flex-flash-attention); documents of causal/full",
    layout=layouts.contiguous,
    shard=shard,
    gather=gather,
    attention=attention,
    mask_features=frozenset({CAUSAL, VARLEN}),
    dtypes=frozenset({"bfloat16", "float16"}),
    devices=frozenset({"cuda"}),
    local_methods=OWN_KERNEL,
    kernel="MagiAttention flex-flash-attention (its own)",
    limits=limits,
    probe=probe,
    homepage=HOMEPAGE,
)
