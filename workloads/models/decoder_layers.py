"""Transformer building blocks shared by the model-level workloads: RMSNorm, the SwiGLU MLP, partial rotary
embeddings, the residual wiring of a decoder layer, and the LM head fused with cross-entropy.

Everything is a plain function over tensors (weights are passed in, not owned by modules), so a workload
can run the same code with its float64 twin, with gradients, or on one rank's rows of a sequence. The
conventions follow Hugging Face transformers' Llama/MiniMax code (norms in float32, ``rotate_half`` RoPE), so
weights map one to one onto a Hugging Face model for a peer comparison.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

RESIDUALS = ("minimax", "pre_norm")
"""How a decoder layer wires its residual (see :func:`residual_step`)."""


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """``weight * x / sqrt(mean(x^2) + eps)`` over the last dim, computed in at least float32 (as HF does)."""
    acc = torch.promote_types(x.dtype, torch.float32)
    xf = x.to(acc)
    normed = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps)
    return weight * normed.to(x.dtype)


def swiglu(x: torch.Tensor, w_gate_up: torch.Tensor, w_down: torch.Tensor) -> torch.Tensor:
    """The SwiGLU MLP: ``(silu(x W_gate) * (x W_up)) W_down`` with ``W_gate_up = [W_gate | W_up]``."""
    gate, up = (x @ w_gate_up).chunk(2, dim=-1)
    return (F.silu(gate) * up) @ w_down


def swiglu_flops(tokens: int, hidden: int, intermediate: int) -> float:
    """Forward matmul FLOPs of :func:`swiglu` for ``tokens`` tokens."""
    return 2.0 * tokens * hidden * 3 * intermediate


def residual_step(x: torch.Tensor, norm_weight: torch.Tensor, eps: float, inner: Callable[[torch.Tensor], torch.Tensor],
                  residual: str, alpha: float) -> torch.Tensor:
    """One residual sub-block around ``inner`` (attention or MLP), normalised before ``inner``:

    * ``pre_norm`` (Llama): ``x + inner(norm(x))``;
    * ``minimax`` (MiniMax-01/M1 and HF's ``MiniMaxDecoderLayer``): the residual is the NORMALISED stream,
      ``alpha * norm(x) + inner(norm(x))`` (MiniMax-M1 uses ``alpha = (2 * 80) ** 0.25``, HF defaults to 1).
    """
    normed = rms_norm(x, norm_weight, eps)
    out = inner(normed)
    if residual == "pre_norm":
        return x + out
    return normed * alpha + out if alpha != 1.0 else normed + out


# ----- rotary position embeddings (partial) ---------------------------------------------------------------

def rope_tables(positions: torch.Tensor, rope_dim: int, base: float, dtype: torch.dtype,
                device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """cos, sin ``[T, rope_dim]`` of the global ``positions`` (HF's layout: the frequencies repeated twice)."""
    inv_freq = 1.0 / (base ** (torch.arange(0, rope_dim, 2, dtype=torch.float64) / rope_dim))
    freqs = positions.to(torch.float64).view(-1, 1) * inv_freq.view(1, -1)
    emb = torch.cat([freqs, freqs], dim=-1)
    return emb.cos().to(dtype=dtype, device=device), emb.sin().to(dtype=dtype, device=device)


def apply_partial_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate the first ``rope_dim`` dims of each head of ``x`` ``[B, T, H, d]`` (``rotate_half`` convention);
    the remaining ``d - rope_dim`` dims pass through (MiniMax: rotary_dim = d / 2)."""
    rope_dim = cos.shape[-1]
    rot, rest = x[..., :rope_dim], x[..., rope_dim:]
    c, s = cos.view(1, -1, 1, rope_dim), sin.view(1, -1, 1, rope_dim)
    half = rope_dim // 2
    rotated = torch.cat([-rot[..., half:], rot[..., :half]], dim=-1)
    out = rot * c + rotated * s
    return torch.cat([out, rest], dim=-1) if rest.shape[-1] else out


# ----- LM head fused with cross-entropy ---------------------------------------------------------------------

LOSS_CHUNK = 4096  # tokens per chunk: the [chunk, vocab] logits are the only vocab-sized tensor alive


class _LinearCrossEntropy(torch.autograd.Function):
    """``sum over tokens of CE(h W, labels) * scale`` computed chunk by chunk, with the gradients of ``h`` and
    ``W`` formed during the forward (as fused kernels such as Liger's do): memory O(chunk x vocab) instead of
    O(tokens x vocab), and the same 6 x tokens x hidden x vocab matmul FLOPs as an unfused head + loss."""

    @staticmethod
    def forward(ctx, h: torch.Tensor, w: torch.Tensor, labels: torch.Tensor, scale: float, chunk: int):
        acc = torch.promote_types(h.dtype, torch.float32)
        hs = h.reshape(-1, h.shape[-1])
        flat = labels.reshape(-1)
        loss = torch.zeros((), dtype=acc, device=h.device)
        need = ctx.needs_input_grad[0] or ctx.needs_input_grad[1]
        dh = torch.empty_like(hs) if need else None
        dw = torch.zeros(w.shape, dtype=acc, device=w.device) if need else None
        for start in range(0, hs.shape[0], chunk):
            hc, lc = hs[start:start + chunk], flat[start:start + chunk]
            logits = (hc @ w).to(acc)
            lse = torch.logsumexp(logits, dim=-1)
            loss = loss + (lse - logits.gather(1, lc.view(-1, 1)).squeeze(1)).sum()
            if need:
                grad = torch.softmax(logits, dim=-1)
                grad[torch.arange(len(lc), device=h.device), lc] -= 1.0
                grad = (grad * scale).to(h.dtype)
                dh[start:start + chunk] = grad @ w.transpose(0, 1)
                dw += (hc.transpose(0, 1) @ grad).to(acc)
        ctx.save_for_backward(dh.view_as(h) if need else None, dw.to(w.dtype) if need else None)
        return (loss * scale).to(h.dtype)

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        dh, dw = ctx.saved_tensors
        return (None if dh is None else dh * grad_out, None if dw is None else dw * grad_out, None, None, None)


def linear_cross_entropy(h: torch.Tensor, w: torch.Tensor, labels: torch.Tensor, scale: float = 1.0,
                         chunk: int = LOSS_CHUNK) -> torch.Tensor:
    """``scale * sum CE(h @ w, labels)`` (``h`` ``[..., hidden]``, ``w`` ``[hidden, vocab]``), chunked and fused."""
    return _LinearCrossEntropy.apply(h, w, labels, scale, chunk)


def lm_head_train_flops(tokens: int, hidden: int, vocab: int) -> float:
    """Matmul FLOPs of :func:`linear_cross_entropy` with gradients: logits, dh and dW (2 each)."""
    return 6.0 * tokens * hidden * vocab
