"""The MiniMax-style hybrid language model the ``hybrid_lm`` workloads run, as plain functions over a dict
of weights.

A layer ``pattern`` of ``L`` (lightning) and ``S`` (softmax) letters sets the decoder layers (MiniMax-01/M1:
``LLLLLLLS`` repeated). Each layer: a residual attention sub-block, then a residual SwiGLU MLP sub-block
(:func:`~workloads.models.decoder_layers.residual_step`). The two attention sub-blocks:

* ``S`` — softmax GQA: fused QKV projection, partial RoPE (the first ``rope_dim`` dims of each head), an
  attention function, output projection;
* ``L`` — lightning (MiniMax): ``q, k, v = silu(x W_qkv)`` (per layer H heads each, no 1/sqrt(d) scaling), an
  attention function, RMSNorm over all heads, times ``sigmoid(x W_gate)``, output projection.

The attention itself is passed in per layer (:data:`Attend`): a registered method's callable when timed, a
cache-reading step when decoding, a context-parallel strategy on a rank's rows, or the float64 references
below. So one :func:`forward` serves training, prefill, decode, CP and the correctness twins.

Weight layout: ``x @ W`` (``W`` is ``[in, out]``); a lightning layer's fused QKV is ``[q | k | v]`` (HF's
MiniMax interleaves them per head: :mod:`workloads.hybrid_hf` maps between the two).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Optional, Sequence

import torch
import torch.nn.functional as F

from workloads.models.decoder_layers import (
    apply_partial_rope, lm_head_train_flops, residual_step, rms_norm, rope_tables, swiglu, swiglu_flops,
)

Attend = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]
"""``attend(q, k, v) -> out`` on ``[B, T, H, d]`` tensors (k/v: heads_kv heads for S layers, H for L layers)."""

LIGHTNING, SOFTMAX = "L", "S"
HEAD_NORM_EPS = 1e-6  # MiniMax's RMSNorm over the lightning heads (HF: MiniMaxRMSNorm default eps)


@dataclass(frozen=True)
class HybridShape:
    """The model's widths and layer pattern (``pattern`` is the full per-layer string)."""

    vocab: int
    hidden: int
    heads: int
    heads_kv: int
    head_dim: int
    intermediate: int
    pattern: str
    rope_dim: int
    rope_base: float
    eps: float
    residual: str
    alpha: float

    @property
    def layers(self) -> int:
        return len(self.pattern)

    @property
    def width(self) -> int:
        return self.heads * self.head_dim

    def count(self, kind: str) -> int:
        return self.pattern.count(kind)

    def layer_shapes(self, i: int) -> dict[str, tuple[int, ...]]:
        """Weight name (without the layer prefix) -> shape, for layer ``i``."""
        h, w, d = self.hidden, self.width, self.head_dim
        mlp = {"norm1": (h,), "norm2": (h,), "w_gate_up": (h, 2 * self.intermediate), "w_down": (self.intermediate, h)}
        if self.pattern[i] == LIGHTNING:
            return {**mlp, "wqkv": (h, 3 * w), "wgate": (h, w), "head_norm": (w,), "wo": (w, h)}
        return {**mlp, "wqkv": (h, w + 2 * self.heads_kv * d), "wo": (w, h)}

    def shapes(self) -> dict[str, tuple[int, ...]]:
        out = {"embed": (self.vocab, self.hidden), "final_norm": (self.hidden,), "lm_head": (self.hidden, self.vocab)}
        for i in range(self.layers):
            out.update({f"{i}.{k}": s for k, s in self.layer_shapes(i).items()})
        return out

    def parameters(self) -> dict[str, int]:
        """Parameter counts: total, per layer kind (summed over the layers of that kind), embeddings + head."""
        counts = {"parameters": 0, "parameters_lightning": 0, "parameters_softmax": 0, "parameters_embedding": 0}
        for name, shape in self.shapes().items():
            n = math.prod(shape)
            counts["parameters"] += n
            if "." not in name:
                counts["parameters_embedding"] += n
            else:
                kind = self.pattern[int(name.split(".")[0])]
                counts["parameters_lightning" if kind == LIGHTNING else "parameters_softmax"] += n
        return counts

    # ----- FLOPs of everything but the attention calls (matmuls only) ------------------------------------
    def dense_flops(self, tokens: int) -> float:
        """Forward matmul FLOPs of the projections and MLPs of every layer for ``tokens`` tokens."""
        h, w, d = self.hidden, self.width, self.head_dim
        lightning = 2.0 * tokens * h * (3 * w + w) + 2.0 * tokens * w * h
        softmax = 2.0 * tokens * h * (w + 2 * self.heads_kv * d) + 2.0 * tokens * w * h
        mlp = swiglu_flops(tokens, h, self.intermediate)
        return self.count(LIGHTNING) * lightning + self.count(SOFTMAX) * softmax + self.layers * mlp

    def head_flops(self, tokens: int) -> float:
        return 2.0 * tokens * self.hidden * self.vocab

    def train_flops(self, tokens: int, recompute: bool) -> float:
        """Forward + backward (x3) of the dense part (+1 forward when layers are recomputed) and the fused head."""
        return self.dense_flops(tokens) * (4 if recompute else 3) + lm_head_train_flops(tokens, self.hidden, self.vocab)


def seeded_weights(shape: HybridShape, seed: int, dtype: torch.dtype, device: torch.device) -> dict[str, torch.Tensor]:
    """Random weights (norm gains near 1, projections ~ N(0, 1/fan_in)), the same for every dtype of a seed."""
    g = torch.Generator().manual_seed(seed)
    out = {}
    for name, s in shape.shapes().items():
        if len(s) == 1:
            t = 1.0 + 0.1 * torch.randn(s, generator=g)
        elif name == "embed":
            t = torch.randn(s, generator=g)
        else:
            t = torch.randn(s, generator=g) * s[0] ** -0.5
        out[name] = t.to(dtype=dtype, device=device)
    return out


def cast(weights: dict[str, torch.Tensor], dtype: torch.dtype, requires_grad: bool = False) -> dict[str, torch.Tensor]:
    return {k: v.detach().to(dtype).requires_grad_(requires_grad) for k, v in weights.items()}


# ----- the attention sub-blocks -------------------------------------------------------------------------

def softmax_qkv(x: torch.Tensor, w: dict, i: int, shape: HybridShape, rope: tuple[torch.Tensor, torch.Tensor]):
    """q ``[B, T, H, d]``, k and v ``[B, T, Hkv, d]`` of softmax layer ``i`` (RoPE applied to q and k)."""
    b, t, _ = x.shape
    d, hq, hkv = shape.head_dim, shape.heads, shape.heads_kv
    q, k, v = (x @ w[f"{i}.wqkv"]).split([hq * d, hkv * d, hkv * d], dim=-1)
    q, k, v = q.view(b, t, hq, d), k.view(b, t, hkv, d), v.view(b, t, hkv, d)
    cos, sin = rope
    return apply_partial_rope(q, cos, sin), apply_partial_rope(k, cos, sin), v


def lightning_qkv(x: torch.Tensor, w: dict, i: int, shape: HybridShape):
    """``silu(x W_qkv)`` split into q, k, v ``[B, T, H, d]`` of lightning layer ``i``."""
    b, t, _ = x.shape
    q, k, v = F.silu(x @ w[f"{i}.wqkv"]).chunk(3, dim=-1)
    return tuple(z.reshape(b, t, shape.heads, shape.head_dim) for z in (q, k, v))


def lightning_output(x: torch.Tensor, attn: torch.Tensor, w: dict, i: int) -> torch.Tensor:
    """RMSNorm over the heads, times ``sigmoid(x W_gate)``, output projection."""
    normed = rms_norm(attn.flatten(2), w[f"{i}.head_norm"], HEAD_NORM_EPS)
    return (torch.sigmoid(x @ w[f"{i}.wgate"]) * normed) @ w[f"{i}.wo"]


def attention_sub_block(x: torch.Tensor, w: dict, i: int, shape: HybridShape, attend: Attend,
                        rope: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """Layer ``i``'s attention on its (normalised) input ``x``."""
    if shape.pattern[i] == LIGHTNING:
        q, k, v = lightning_qkv(x, w, i, shape)
        return lightning_output(x, attend(q, k, v), w, i)
    q, k, v = softmax_qkv(x, w, i, shape, rope)
    return attend(q, k, v).flatten(2) @ w[f"{i}.wo"]


def decoder_layer(x: torch.Tensor, w: dict, i: int, shape: HybridShape, attend: Attend,
                  rope: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    def attention(n: torch.Tensor) -> torch.Tensor:
        return attention_sub_block(n, w, i, shape, attend, rope)

    def mlp(n: torch.Tensor) -> torch.Tensor:
        return swiglu(n, w[f"{i}.w_gate_up"], w[f"{i}.w_down"])

    x = residual_step(x, w[f"{i}.norm1"], shape.eps, attention, shape.residual, shape.alpha)
    return residual_step(x, w[f"{i}.norm2"], shape.eps, mlp, shape.residual, shape.alpha)


def forward(w: dict, shape: HybridShape, tokens: torch.Tensor, positions: torch.Tensor,
            attends: Sequence[Attend], recompute: bool = False) -> torch.Tensor:
    """The final normalised hidden states ``[B, T, hidden]`` of ``tokens`` ``[B, T]`` at global ``positions``
    (``[T]``), with ``attends[i]`` as layer i's attention. ``recompute``: checkpoint every layer (activation
    recomputation, what long-context training does to fit)."""
    x = F.embedding(tokens, w["embed"])
    rope = rope_tables(positions, shape.rope_dim, shape.rope_base, x.dtype, x.device)
    for i, attend in enumerate(attends):
        if recompute and torch.is_grad_enabled():
            x = torch.utils.checkpoint.checkpoint(decoder_layer, x, w, i, shape, attend, rope, use_reentrant=False)
        else:
            x = decoder_layer(x, w, i, shape, attend, rope)
    return rms_norm(x, w["final_norm"], shape.eps)


def logits(w: dict, hidden: torch.Tensor) -> torch.Tensor:
    return hidden @ w["lm_head"]


# ----- float64 / eager references of the two attentions (the workload's own math) -------------------------

def lightning_quadratic(rates: torch.Tensor, state_in: Optional[torch.Tensor] = None) -> Attend:
    """Causal decayed linear attention in its quadratic form, ``O = ((Q K^T) * D) V`` with
    ``D[i, j] = exp(-s (i - j))`` for ``i >= j``, in the inputs' dtype (float64: the exact reference), plus
    ``exp(-s (i + 1)) q_i KV_in`` for an incoming state ``[B, H, d, d]``."""

    def attend(q, k, v):
        t = q.shape[1]
        i = torch.arange(t, dtype=torch.float64)
        diff = i.view(-1, 1) - i.view(1, -1)
        s = rates.double().view(-1, 1, 1)
        decay = (torch.exp(-s * diff.clamp_min(0)) * (diff >= 0)).to(q.dtype)
        scores = torch.einsum("bihd,bjhd->bhij", q, k) * decay
        out = torch.einsum("bhij,bjhd->bihd", scores, v)
        if state_in is not None:
            a = torch.exp(-s.view(1, 1, -1, 1) * (i + 1).view(1, -1, 1, 1)).to(q.dtype)
            out = out + torch.einsum("bihd,bhde->bihe", q * a, state_in.to(q.dtype))
        return out

    return attend


def softmax_causal(q_offset: int = 0) -> Attend:
    """Causal GQA softmax attention, eager, in the inputs' dtype (float64: the exact reference); q's rows are
    positions ``q_offset ...`` of k's (the decode rows when ``q_offset > 0``)."""

    def attend(q, k, v):
        group = q.shape[2] // k.shape[2]
        kk, vv = (t.repeat_interleave(group, dim=2) for t in (k, v))
        scores = torch.einsum("bihd,bjhd->bhij", q, kk) * q.shape[-1] ** -0.5
        rows = torch.arange(q.shape[1], device=q.device).view(-1, 1) + q_offset
        allowed = torch.arange(k.shape[1], device=q.device).view(1, -1) <= rows
        scores = scores.float().masked_fill(~allowed, float("-inf")) if q.dtype != torch.float64 else \
            scores.masked_fill(~allowed, float("-inf"))
        probs = torch.softmax(scores, dim=-1).to(q.dtype)
        return torch.einsum("bhij,bjhd->bihd", probs, vv)

    return attend
