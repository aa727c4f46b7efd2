"""yunchang (long-context-attention, USP): ``yunchang_ulysses`` runs here; ``yunchang_ring``/``yunchang_usp`` are GPU-only.

yunchang_ulysses — ``yunchang.UlyssesAttention(group, scatter_idx=2, gather_idx=1)``: yunchang's own four
``SeqAllToAll4D`` all-to-alls (q, k, v sequence -> heads; output heads -> sequence) and their backward.
Its local attention is chosen by ``attn_type`` and NONE of yunchang 0.6.4's types runs on CPU:

* ``FA``/``FA3``/``FLASHINFER``/``AITER``/``SAGE_*``/``NPU`` need CUDA (or NPU) packages (flash_attn, ...);
* ``TORCH_FLASH``/``TORCH_EFFICIENT``/``TORCH_MATH``/``TORCH_CUDNN`` select, for the fwd-bwd stage,
  ``ring_pytorch_attn_func`` — (a) whose forward calls ``aten._scaled_dot_product_flash_attention``
  whatever the type (no CPU kernel: "Could not run ... with arguments from the 'CPU' backend"), (b) whose
  backward calls ``pytorch_attn_backward``, which raises "Not implemented backward for PyTorch attention
  types", and (c) which UlyssesAttention calls without a group, i.e. as a ring over the WORLD group on
  already head-scattered tensors — wrong results whenever W > 1 even where the op exists.

So this adapter constructs UlyssesAttention with ``AttnType.TORCH_FLASH`` (constructs on CPU) and sets the
instance's ``attn_fn`` — the callable its ``forward`` invokes between the all-to-alls — to OUR local kernel
of ``Run.method`` (``ctx.kernel``, e.g. blocksparse) on global positions, the one our ``ulysses`` and
``deepspeed_ulysses`` use (DeepSpeed takes
it as its documented ``local_attention`` argument; yunchang has no such argument). yunchang's forward and
communication code run unchanged; this is a substitution of its local kernel, not of its algorithm.
:func:`probe` checks that the attribute still exists, so a yunchang release that changes it reports
"unavailable" instead of running something else.

yunchang_ring / yunchang_usp — ``zigzag_ring_flash_attn_func`` and ``LongContextAttention(ring_impl_type=
"zigzag")``: the ring kernels call flash_attn's ``_flash_attn_forward``/``_flash_attn_backward`` per step
(their torch attn_types have the same CUDA-only forward and missing backward as above), so they need CUDA
and flash_attn. Thin adapters against the documented APIs; never run on this machine.
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.distributed as dist

from context_parallel import layouts, usp
from harness.interfaces.strategy import CPContext, CPProblem, Strategy
from context_parallel.family import a2a_degree, a2a_limits
from context_parallel.peer_support import counted, missing_package, ulysses_limits, ulysses_local_kernel
from harness.interfaces.strategy import OWN_KERNEL
from context_parallel.volumes import a2a_ring_bytes, ring_bytes
from harness.masks.core import CAUSAL

HOMEPAGE = "https://github.com/feifeibear/long-context-attention"
GPU_REASON = (
    "yunchang's ring kernels call flash_attn per step (CUDA); its torch attn_types call "
    "aten._scaled_dot_product_flash_attention (no CPU kernel) and have no backward"
)


# ----- yunchang_ulysses (CPU) -----------------------------------------------------------------------------

def probe_ulysses() -> Optional[str]:
    if missing_package("yunchang"):
        return "package yunchang not installed"
    from yunchang import UlyssesAttention
    from yunchang.kernels import AttnType

    if not hasattr(AttnType, "TORCH_FLASH"):
        return "this yunchang has no AttnType.TORCH_FLASH to construct UlyssesAttention on CPU"
    import inspect

    if "self.attn_fn(" not in inspect.getsource(UlyssesAttention.forward):
        return "this yunchang's UlyssesAttention.forward no longer calls self.attn_fn (local kernel not substitutable)"
    return None


def prepare_ulysses(ctx: CPContext) -> None:
    from yunchang import UlyssesAttention
    from yunchang.kernels import AttnType

    attn = UlyssesAttention(dist.group.WORLD, scatter_idx=2, gather_idx=1, attn_type=AttnType.TORCH_FLASH)
    attn.attn_fn = ulysses_local_kernel(ctx)  # see the module docstring: no attn_type runs on CPU
    ctx.state["attn"] = attn


def attention_ulysses(ctx: CPContext, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    attn, scale = ctx.state["attn"], ctx.scale
    return counted(ctx.comm, lambda q_, k_, v_: attn(q_, k_, v_, softmax_scale=scale, causal=False), q, k, v)


def comm_model_ulysses(problem: CPProblem, direction: str) -> list[int]:
    return a2a_ring_bytes(problem, problem.world_size, [1], 1, direction)


STRATEGY = Strategy(
    name="yunchang_ulysses",
    summary="peer: yunchang UlyssesAttention (SeqAllToAll4D seq->heads, local, heads->seq) with our local kernel "
    "(Run.method) as its attn_fn (no yunchang attn_type runs on CPU); contiguous shards",
    layout=layouts.contiguous,
    prepare=prepare_ulysses,
    attention=attention_ulysses,
    limits=ulysses_limits,
    comm_model=comm_model_ulysses,
    probe=probe_ulysses,
    homepage=HOMEPAGE,
)


# ----- yunchang_ring / yunchang_usp (GPU) ------------------------------------------------------------------

def probe_flash() -> Optional[str]:
    if missing_package("yunchang"):
        return "package yunchang not installed"
    if missing_package("flash_attn"):
        return f"package flash_attn not installed: {GPU_REASON}"
    if not torch.cuda.is_available():
        return f"needs CUDA: {GPU_REASON}"
    return None


def _causal_or_full(problem: CPProblem) -> Optional[str]:
    if not (problem.mask.is_full or problem.mask.is_plain_causal):
        return f"mask {problem.mask.name}: yunchang's rings take causal or full only"
    return None


def attention_ring(ctx: CPContext, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    from yunchang import zigzag_ring_flash_attn_func

    causal = ctx.problem.mask.is_plain_causal
    return counted(
        ctx.comm,
        lambda q_, k_, v_: zigzag_ring_flash_attn_func(
            q_, k_, v_, dropout_p=0.0, softmax_scale=ctx.scale, causal=causal, group=dist.group.WORLD
        ),
        q, k, v,
    )


STRATEGY_RING = Strategy(
    name="yunchang_ring",
    summary="peer (GPU): yunchang zigzag_ring_flash_attn_func (flash_attn per step), zigzag shards; causal/full",
    layout=layouts.zigzag,
    attention=attention_ring,
    mask_features=frozenset({CAUSAL}),
    dtypes=frozenset({"bfloat16", "float16"}),
    devices=frozenset({"cuda"}),
    local_methods=OWN_KERNEL,
    kernel="flash-attn _flash_attn_forward/_backward (yunchang's zigzag ring, per step)",
    limits=_causal_or_full,
    comm_model=lambda p, d: ring_bytes(p, [p.seqlen // p.world_size] * p.world_size, d),
    probe=probe_flash,
    homepage=HOMEPAGE,
)


def prepare_usp(ctx: CPContext) -> None:
    from yunchang import LongContextAttention, set_seq_parallel_pg
    from yunchang.kernels import AttnType

    u = a2a_degree(ctx.problem, usp.OPTION)
    set_seq_parallel_pg(u, ctx.world_size // u, ctx.rank, ctx.world_size)  # collective: every rank, same args
    ctx.state["attn"] = LongContextAttention(ring_impl_type="zigzag", attn_type=AttnType.FA)


def attention_usp(ctx: CPContext, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    attn, causal = ctx.state["attn"], ctx.problem.mask.is_plain_causal
    return counted(ctx.comm, lambda q_, k_, v_: attn(q_, k_, v_, softmax_scale=ctx.scale, causal=causal), q, k, v)


STRATEGY_USP = Strategy(
    name="yunchang_usp",
    summary="peer (GPU): yunchang LongContextAttention (Ulysses groups x zigzag flash ring), layout of its "
    "extract_local; causal/full",
    layout=usp.layout,  # the same layout as yunchang's zigzag_extract_local (see context_parallel/usp.py)
    prepare=prepare_usp,
    attention=attention_usp,
    mask_features=frozenset({CAUSAL}),
    dtypes=frozenset({"bfloat16", "float16"}),
    devices=frozenset({"cuda"}),
    local_methods=OWN_KERNEL,
    kernel="flash-attn (yunchang LongContextAttention, attn_type FA)",
    options={usp.OPTION: None},
    limits=lambda p: _causal_or_full(p) or a2a_limits(p, usp.OPTION),
    probe=probe_flash,
    homepage=HOMEPAGE,
)

STRATEGIES = [STRATEGY, STRATEGY_RING, STRATEGY_USP]
