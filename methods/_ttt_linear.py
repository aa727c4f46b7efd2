"""TTT-Linear (arXiv 2407.04620) as attention: the mini-batch dual form, the sequential primal form, FLOPs.

Per q head the hidden state is a linear model ``f(x) = x W + b`` of dimension ``f`` (the head dim). Tokens are
processed in mini-batches of ``b`` (16). Within a mini-batch every token's gradient is taken at the weights
the mini-batch started with (``W0``, ``b0``), on the self-supervised loss ``0.5 ||LN(x_k W0 + b0) - (x_v - x_k)||^2``
(LN without affine, eps 1e-6). Token ``i`` of the mini-batch then reads out with the weights after the
gradients of tokens ``j <= i`` (learning rate ``eta``)::

    W_i = W0 - eta sum_{j<=i} x_k,j^T G_j        b_i = b0 - eta sum_{j<=i} G_j
    out_i = x_q,i + LN(x_q,i W_i + b_i)

The **primal** form (:func:`primal`) computes exactly that, with an explicit ``f x f`` matrix per token — the
definition, used as the float64 reference. The **dual** form (:func:`dual`, ttt-lm-pytorch's
``compute_mini_batch``) never forms ``W_i``: ``Zbar = X_Q W0 - eta (tril(X_Q X_K^T) + tril(1)) G + b0`` and
``W <- W0 - eta X_K^T G``. Only the two matmuls that carry ``W`` from one mini-batch to the next (``X_K W0``
and ``X_K^T G``) run in the sequential loop; ``X_Q X_K^T``, ``X_Q W0`` and ``(.) G`` run batched over all
mini-batches afterwards (the per-mini-batch ``W0`` are kept).

``q_scale`` and ``residual`` select fla's conventions (q scaled by ``1/sqrt(f)``; the output residual is
``Zbar`` instead of ``x_q``) so the tests can compare with fla-core's ``chunk_ttt_linear_ref``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

MINI_BATCH = 16
EPS = 1e-6
INIT_STD = 0.02  # ttt-lm-pytorch's initialisation of W1
QUERY, INNER = "query", "inner"  # the output residual: x_q (ttt-lm-pytorch) or Zbar (fla-core)


def initial_weights(heads: int, dim: int, seed: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """The seeded initial inner weights ``W0`` ``[H, f, f]`` (normal, std 0.02; ``b0`` is zero)."""
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(heads, dim, dim, generator=g, dtype=torch.float64) * INIT_STD).to(dtype=dtype, device=device)


def layer_norm(x: torch.Tensor) -> torch.Tensor:
    mu = x.mean(-1, keepdim=True)
    var = x.var(-1, unbiased=False, keepdim=True)
    return (x - mu) / torch.sqrt(var + EPS)


def ln_l2_grad(z: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``d/dz 0.5 ||LN(z) - target||^2`` (ttt-lm-pytorch's ``ln_fused_l2_bwd`` with gamma 1, beta 0)."""
    dim = z.shape[-1]
    mu = z.mean(-1, keepdim=True)
    std = torch.sqrt(z.var(-1, unbiased=False, keepdim=True) + EPS)
    z_hat = (z - mu) / std
    g = z_hat - target
    return (dim * g - g.sum(-1, keepdim=True) - z_hat * (g * z_hat).sum(-1, keepdim=True)) / (std * dim)


def _heads_first(x: torch.Tensor, heads: int, dtype: torch.dtype, length: int) -> torch.Tensor:
    """``[B, S, Hkv, f]`` -> ``[B, H, S', f]`` in ``dtype``, kv heads repeated for GQA, zero-padded to ``length``."""
    x = x.transpose(1, 2).to(dtype)
    if heads != x.shape[1]:
        x = x.repeat_interleave(heads // x.shape[1], dim=1)
    if length > x.shape[2]:
        x = F.pad(x, (0, 0, 0, length - x.shape[2]))
    return x


def padded_length(seqlen: int, mini_batch: int = MINI_BATCH) -> int:
    return -(-seqlen // mini_batch) * mini_batch


def _prepare(q, k, v, w0, mini_batch: int, dtype: torch.dtype, q_scale: float):
    """Heads-first, padded, mini-batched ``[B, H, n, b, f]`` views of q, k, v and the target ``v - k``."""
    b_, s, h, f = q.shape
    length = padded_length(s, mini_batch)
    qh, kh, vh = (_heads_first(t, h, dtype, length) for t in (q, k, v))
    qh = qh * q_scale if q_scale != 1.0 else qh
    n = length // mini_batch
    split = lambda t: t.reshape(b_, h, n, mini_batch, f)  # noqa: E731
    return split(qh), split(kh), split(vh - kh), w0.to(dtype).unsqueeze(0).expand(b_, h, f, f)


def _finish(zbar: torch.Tensor, qb: torch.Tensor, residual: str, seqlen: int, out_dtype: torch.dtype):
    base = qb if residual == QUERY else zbar
    out = base + layer_norm(zbar)  # [B, H, n, b, f]
    return out.flatten(2, 3)[:, :, :seqlen].transpose(1, 2).to(out_dtype)


def dual(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, w0: torch.Tensor, eta: float,
         mini_batch: int = MINI_BATCH, q_scale: float = 1.0, residual: str = QUERY) -> torch.Tensor:
    """The dual form on ``[B, S, H, f]`` q (k, v may have fewer heads); computes in at least float32; output in
    q's dtype. ``w0`` ``[H, f, f]``: the initial inner weights. Differentiable (autograd)."""
    acc = torch.promote_types(q.dtype, torch.float32)
    qb, kb, tb, w = _prepare(q, k, v, w0, mini_batch, acc, q_scale)
    bias = qb.new_zeros(*qb.shape[:2], 1, qb.shape[-1])
    befores_w, befores_b, grads = [], [], []
    # one split before the loop: its backward stacks the slices' gradients once (indexing kb[:, :, j] inside
    # the loop would, per slice, add a zero tensor the size of kb into the gradient — quadratic in S)
    for kj, tj in zip(kb.unbind(2), tb.unbind(2)):  # the sequential part: W and b carried mini-batch to mini-batch
        g = ln_l2_grad(kj @ w + bias, tj)
        befores_w.append(w)
        befores_b.append(bias)
        grads.append(g)
        w = w - eta * (kj.transpose(-1, -2) @ g)
        bias = bias - eta * g.sum(-2, keepdim=True)
    w_all, b_all, g_all = torch.stack(befores_w, 2), torch.stack(befores_b, 2), torch.stack(grads, 2)
    tril = torch.ones(mini_batch, mini_batch, dtype=acc, device=q.device).tril()
    attn = (qb @ kb.transpose(-1, -2)) * tril + tril  # tril(X_Q X_K^T) + tril(1)
    zbar = qb @ w_all + b_all - eta * (attn @ g_all)
    return _finish(zbar, qb, residual, q.shape[1], q.dtype)


def primal(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, w0: torch.Tensor, eta: float,
           mini_batch: int = MINI_BATCH, q_scale: float = 1.0, residual: str = QUERY,
           compute_dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """The sequential primal form in ``compute_dtype``: an explicit ``W_i`` (``f x f``) and ``b_i`` per token
    (cumulative sums of the per-token gradient steps within each mini-batch). Output in ``compute_dtype``."""
    qb, kb, tb, w = _prepare(q, k, v, w0, mini_batch, compute_dtype, q_scale)
    bias = qb.new_zeros(*qb.shape[:2], 1, qb.shape[-1])
    zbars = []
    for kj, qj, tj in zip(kb.unbind(2), qb.unbind(2), tb.unbind(2)):
        g = ln_l2_grad(kj @ w + bias, tj)  # [B, H, b, f], all at the mini-batch's initial weights
        steps = kj.unsqueeze(-1) * g.unsqueeze(-2)  # per-token x_k^T G: [B, H, b, f, f]
        w_tok = w.unsqueeze(2) - eta * steps.cumsum(2)
        b_tok = bias - eta * g.cumsum(2)  # [B, H, b, f]
        zbars.append((qj.unsqueeze(-2) @ w_tok).squeeze(-2) + b_tok)
        w, bias = w_tok[:, :, -1], b_tok[:, :, -1:]
    zbar = torch.stack(zbars, 2)
    return _finish(zbar, qb, residual, q.shape[1], compute_dtype)


# ----- FLOPs (matmuls, what torch.utils.flop_counter counts) -------------------------------------------------

def forward_flops(seqlen: int, dim: int, mini_batch: int = MINI_BATCH) -> float:
    """Matmul FLOPs of the dual form per (batch, head): per mini-batch of b rows ``X_K W0``, ``X_K^T G``,
    ``X_Q W0`` (``6 b f^2``) and ``X_Q X_K^T``, ``(.) G`` (``4 b^2 f``): ``6 f^2 + 4 b f`` per (padded) token."""
    return padded_length(seqlen, mini_batch) * (6.0 * dim * dim + 4.0 * mini_batch * dim)


BACKWARD_FACTOR = 2.0  # autograd: two matmuls per forward matmul (every operand of each matmul needs a gradient)
