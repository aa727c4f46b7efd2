"""Model blocks the workloads compose: seeded weights, the attention block (QKV projections -> a registered
attention method -> output projection), its float64 and eager same-dtype twins for correctness checks, and
the FLOP counts of the projections.

An attention block is written once, against an ``attend(q, k, v) -> out`` function on ``[B, T, H, d]``
tensors, so the same code runs with a registered method (timed), with the float64 reference (exact) and with
plain eager attention in the run's dtype (the error baseline of the field's correctness rule).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterator

import torch

from harness.interfaces import reference_attention
from harness.masks import Mask

Attend = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class AttentionShape:
    heads_q: int
    heads_kv: int
    head_dim: int

    @property
    def hidden(self) -> int:
        return self.heads_q * self.head_dim

    @property
    def qkv_width(self) -> int:
        return (self.heads_q + 2 * self.heads_kv) * self.head_dim

    def projection_flops(self, tokens: int) -> float:
        """Forward FLOPs of the fused QKV and the output projections for ``tokens`` tokens."""
        return self.qkv_flops(tokens) + self.out_flops(tokens)

    def qkv_flops(self, tokens: int) -> float:
        return 2.0 * tokens * self.hidden * self.qkv_width

    def out_flops(self, tokens: int) -> float:
        return 2.0 * tokens * self.heads_q * self.head_dim * self.hidden

    def train_projection_flops(self, tokens: int) -> float:
        """Forward + backward of the projections when the block's input needs no gradient: each matmul's
        backward is one matmul for the weight gradient and one for its input's — which QKV skips."""
        return 2 * self.qkv_flops(tokens) + 3 * self.out_flops(tokens)

    def parameters(self) -> int:
        return self.hidden * (self.qkv_width + self.heads_q * self.head_dim)


@dataclass
class AttentionWeights:
    """The weights of an attention block: fused QKV ``[hidden, (Hq + 2 Hkv) d]`` and output ``[Hq d, hidden]``."""

    shape: AttentionShape
    wqkv: torch.Tensor
    wo: torch.Tensor

    @staticmethod
    def seeded(shape: AttentionShape, seed: int, dtype: torch.dtype, device: torch.device) -> "AttentionWeights":
        g = torch.Generator().manual_seed(seed)
        std = shape.hidden**-0.5
        wqkv = torch.randn(shape.hidden, shape.qkv_width, generator=g) * std
        wo = torch.randn(shape.heads_q * shape.head_dim, shape.hidden, generator=g) * std
        return AttentionWeights(shape, wqkv.to(dtype).to(device), wo.to(dtype).to(device))

    def to(self, dtype: torch.dtype, requires_grad: bool = False) -> "AttentionWeights":
        def conv(t: torch.Tensor) -> torch.Tensor:
            return t.detach().to(dtype).requires_grad_(requires_grad)

        return AttentionWeights(self.shape, conv(self.wqkv), conv(self.wo))

    def tensors(self) -> Iterator[tuple[str, torch.Tensor]]:
        yield "wqkv", self.wqkv
        yield "wo", self.wo


def project_qkv(x: torch.Tensor, w: AttentionWeights) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``x`` ``[B, T, hidden]`` -> q ``[B, T, Hq, d]``, k and v ``[B, T, Hkv, d]``."""
    s = w.shape
    qkv = x @ w.wqkv
    q, k, v = qkv.split([s.heads_q * s.head_dim, s.heads_kv * s.head_dim, s.heads_kv * s.head_dim], dim=-1)
    b, t = x.shape[:2]
    return (q.reshape(b, t, s.heads_q, s.head_dim), k.reshape(b, t, s.heads_kv, s.head_dim),
            v.reshape(b, t, s.heads_kv, s.head_dim))


def output_projection(attn: torch.Tensor, w: AttentionWeights) -> torch.Tensor:
    return attn.flatten(2) @ w.wo


def attention_block(x: torch.Tensor, w: AttentionWeights, attend: Attend) -> torch.Tensor:
    """QKV projections, ``attend``, output projection."""
    q, k, v = project_qkv(x, w)
    return output_projection(attend(q, k, v), w)


def reference_attend(mask: Mask, scale: float, rows: torch.Tensor, q_offset: int = 0) -> Attend:
    """Exact masked softmax attention in float64 for q's ``rows`` only (row i of q is mask position
    ``q_offset + i``): the output has ``len(rows)`` rows."""

    def attend(q, k, v):
        return reference_attention(q.double(), k.double(), v.double(), mask, rows, scale, q_offset=q_offset)

    return attend


def eager_attend(mask: Mask, scale: float, rows: torch.Tensor, q_offset: int = 0) -> Attend:
    """Plain attention for q's ``rows``, as an eager PyTorch user writes it, in q's dtype (softmax in float32
    for half types): the error baseline of the correctness rule."""

    def attend(q, k, v):
        group = q.shape[2] // k.shape[2]
        qt = q[:, rows].transpose(1, 2)
        kt = k.transpose(1, 2).repeat_interleave(group, dim=1)
        vt = v.transpose(1, 2).repeat_interleave(group, dim=1)
        allowed = mask.dense(q_pos=rows + q_offset).to(q.device)
        scores = (qt @ kt.transpose(-1, -2)) * scale
        scores = scores.float().masked_fill(~allowed.unsqueeze(0), float("-inf"))
        probs = torch.softmax(scores, dim=-1).nan_to_num(0.0).to(q.dtype)
        return (probs @ vt).transpose(1, 2)

    return attend


def seeded_tokens(batch: int, tokens: int, hidden: int, seed: int, dtype: torch.dtype,
                  device: torch.device) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, tokens, hidden, generator=g).to(dtype).to(device)


def rows_gradient(shape: torch.Size, rows: torch.Tensor, seed: int, dtype: torch.dtype,
                  device: torch.device) -> torch.Tensor:
    """A random upstream gradient that is zero outside ``rows`` (so the exact twin only needs those rows)."""
    g = torch.Generator().manual_seed(seed)
    dout = torch.zeros(shape)
    dout[:, rows] = torch.randn(dout[:, rows].shape, generator=g)
    return dout.to(dtype).to(device)
