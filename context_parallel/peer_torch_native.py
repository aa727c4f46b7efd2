"""torch_ring / torch_ring_alltoall: PyTorch's native context parallelism, run on CPU through its own ring.

PyTorch's public API (``torch.distributed.tensor.experimental.context_parallel``) shards buffers and patches
SDPA so that DTensor dispatches ``aten._scaled_dot_product_{flash,efficient,cudnn}_attention`` (and their
backwards) to its ring (``_templated_ring_attention`` / ``_templated_ring_attention_backward``). On CPU,
SDPA calls ``aten._scaled_dot_product_flash_attention_for_cpu``, which is not in that dispatch table, so
the public API cannot run here. What the table's entries do is small: call the templated ring with the
aten op as the per-step kernel (``_scaled_dot_product_ring_flash_attention`` passes
``aten._scaled_dot_product_flash_attention``; its backward passes the matching ``_backward`` op with
``grad_out_name="grad_out"``). This adapter makes exactly those two calls with the CPU twins of the ops —
``aten._scaled_dot_product_flash_attention_for_cpu`` and ``..._for_cpu_backward`` — inside an autograd
Function that plays the role the DTensor dispatch plays on GPU. Everything else is torch's code, unchanged:

* the ring loop, its load-balance branches and the LSE merge (``_SDPAMerger``, float32 accumulation:
  ``_cp_options.convert_to_f32``);
* the K/V rotation (``_cp_options.rotate_method``): all-gather once (torch's default; ``torch_ring``) or a
  true ring pass with one ``permute_tensor`` all-to-all per step (``torch_ring_alltoall``); the backward
  rotates K/V the same way and always passes the dK/dV accumulators with all-to-all;
* head-tail load balancing for causal masks (``_cp_options.enable_load_balance``): the layout is torch's
  ``_HeadTailLoadBalancer`` order (rank r holds chunks r and 2W-1-r). Torch refuses load balancing for a
  non-causal mask, so ``full`` runs on contiguous shards without it.

Supported: the two masks torch's ring has — full and plain causal — in float32/bfloat16/float64 (CPU flash
dtypes), with GQA (the CPU flash op broadcasts kv heads). The per-step kernel is torch's CPU flash op, the
same kernel our ``blocksparse`` tiles; ``Run.method`` (``blocksparse`` or ``sdpa``) does not change it, and the
record's ``kernel`` says so (:data:`KERNEL`).
Bytes: torch's ring uses functional collectives, counted by
:func:`context_parallel.peer_support.counting_functional_collectives` around torch's calls.
``_cp_options`` is process-global: it is set for each call and restored after.
"""

from __future__ import annotations

import contextlib
from typing import Iterator, Optional

import torch
import torch.distributed as dist

from context_parallel import layouts
from harness.interfaces.strategy import CPContext, CPProblem, Strategy, Unsupported
from context_parallel.peer_support import counting_functional_collectives
from context_parallel.volumes import FP32, kv_bytes
from harness.masks.core import CAUSAL

KERNEL = (
    "aten._scaled_dot_product_flash_attention_for_cpu (+ _backward) per ring step "
    "(torch's _templated_ring_attention)"
)


def _cp():
    """torch's private context-parallel module (its location moved between releases)."""
    try:
        from torch.distributed.tensor.experimental._context_parallel import _attention as cp
    except ImportError:  # torch < 2.9 kept it in one file
        from torch.distributed.tensor.experimental import _attention as cp
    return cp


def probe() -> Optional[str]:
    cp = _cp()
    for name in ("_templated_ring_attention", "_templated_ring_attention_backward", "_cp_options", "_RotateMethod"):
        if not hasattr(cp, name):
            return f"this torch ({torch.__version__}) has no {cp.__name__}.{name}"
    aten = torch.ops.aten
    if not hasattr(aten, "_scaled_dot_product_flash_attention_for_cpu_backward"):
        return f"this torch ({torch.__version__}) has no CPU flash attention backward op"
    from torch.distributed.tensor.experimental._context_parallel._load_balancer import _HeadTailLoadBalancer  # noqa: F401

    return None


def limits(problem: CPProblem) -> Optional[str]:
    if not (problem.mask.is_full or problem.mask.is_plain_causal):
        return f"mask {problem.mask.name}: torch's ring supports full and causal masks only"
    return None


def layout(problem: CPProblem) -> list[torch.Tensor]:
    """Causal: torch's head-tail load-balancer order; full: contiguous shards (torch has no balancing there)."""
    if problem.mask.is_full:
        return layouts.contiguous(problem)
    s, w = problem.seqlen, problem.world_size
    if s % (2 * w):
        raise Unsupported(f"seqlen {s} is not divisible by 2 x {w} (torch's head-tail load balancer)")
    from torch.distributed.tensor.experimental._context_parallel._load_balancer import _HeadTailLoadBalancer

    order = _HeadTailLoadBalancer(s, w, torch.device("cpu"))._generate_indices()[0].long()
    return list(order.view(w, s // w))


@contextlib.contextmanager
def _options(rotate_method: str, load_balance: bool) -> Iterator[None]:
    cp = _cp()
    opts = cp._cp_options
    saved = (opts.rotate_method, opts.enable_load_balance, opts.convert_to_f32)
    opts.rotate_method = cp._RotateMethod.ALL_TO_ALL if rotate_method == "alltoall" else cp._RotateMethod.ALL_GATHER
    opts.enable_load_balance = load_balance
    opts.convert_to_f32 = True  # torch's default
    try:
        yield
    finally:
        opts.rotate_method, opts.enable_load_balance, opts.convert_to_f32 = saved


class _TorchRing(torch.autograd.Function):
    """torch's templated ring forward/backward with the CPU flash ops; tensors are [B, H, S, d] (seq dim 2)."""

    @staticmethod
    def forward(fctx, q, k, v, st: dict):
        cp = _cp()
        with _options(st["rotate"], st["balance"]), counting_functional_collectives(st["comm"]):
            out, lse = cp._templated_ring_attention(
                st["group"], 2, torch.ops.aten._scaled_dot_product_flash_attention_for_cpu,
                q, k, v, is_causal=st["causal"], dropout_p=0.0, scale=st["scale"],
            )
        fctx.save_for_backward(q, k, v, out, lse)
        fctx.st = st
        return out

    @staticmethod
    def backward(fctx, dout):
        cp = _cp()
        q, k, v, out, lse = fctx.saved_tensors
        st = fctx.st
        with _options(st["rotate"], st["balance"]), counting_functional_collectives(st["comm"]):
            dq, dk, dv = cp._templated_ring_attention_backward(
                st["group"], 2, torch.ops.aten._scaled_dot_product_flash_attention_for_cpu_backward.default,
                grad_out=dout.contiguous(), grad_out_name="grad_out", query=q, key=k, value=v, out=out,
                logsumexp=lse, is_causal=st["causal"], dropout_p=0.0, scale=st["scale"],
            )[:3]
        return dq, dk, dv, None


def _prepare(rotate: str):
    def prepare(ctx: CPContext) -> None:
        causal = ctx.problem.mask.is_plain_causal
        ctx.state["ring"] = {
            "group": dist.group.WORLD, "rotate": rotate, "causal": causal, "balance": causal,
            "scale": ctx.scale, "comm": ctx.comm,
        }
        # per call, every rank computes the same causal area as the head-tail split's share
        ctx.area = int(ctx.problem.mask.area(ctx.problem.heads_q) * ctx.problem.batch // ctx.world_size)
        ctx.state["info"] = {"rotate_method": rotate, "load_balance": causal}

    return prepare


def attention(ctx: CPContext, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    out = _TorchRing.apply(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), ctx.state["ring"])
    return out.transpose(1, 2)


def _comm_model(rotate: str):
    def comm_model(problem: CPProblem, direction: str) -> list[int]:
        """Per rank: fwd K/V all-gather once ((W-1) copies) or W-1 ring steps (same bytes); bwd: the same K/V
        again, plus W dK/dV float32 accumulator passes (torch sends one after every step, the last one home)."""
        w = problem.world_size
        kv = kv_bytes(problem, problem.seqlen // w)
        acc = kv_bytes(problem, problem.seqlen // w, size=FP32)
        fwd = (w - 1) * kv if w > 1 else 0
        bwd = fwd + (w * acc if w > 1 else 0)
        total = {"fwd": fwd, "bwd": bwd, "fwd+bwd": fwd + bwd}[direction]
        return [total] * w

    return comm_model


def _strategy(name: str, rotate: str, summary: str) -> Strategy:
    return Strategy(
        name=name,
        summary=summary,
        layout=layout,
        prepare=_prepare(rotate),
        attention=attention,
        mask_features=frozenset({CAUSAL}),
        local_methods=frozenset({"blocksparse", "sdpa"}),  # either way: torch's CPU flash op per ring step
        kernel=KERNEL,
        limits=limits,
        comm_model=_comm_model(rotate),
        probe=probe,
        homepage="https://docs.pytorch.org/tutorials/prototype/context_parallel.html",
    )


STRATEGY = _strategy(
    "torch_ring", "allgather",
    "peer: PyTorch native context parallel ring (torch.distributed.tensor.experimental), K/V all-gathered once "
    "(torch's default rotate_method), head-tail balance for causal; full/causal only; CPU flash op per step",
)
STRATEGY_ALLTOALL = _strategy(
    "torch_ring_alltoall", "alltoall",
    "peer: PyTorch native context parallel ring with rotate_method='alltoall' (K/V passed one step per "
    "iteration), head-tail balance for causal; full/causal only; CPU flash op per step",
)
STRATEGIES = [STRATEGY, STRATEGY_ALLTOALL]
