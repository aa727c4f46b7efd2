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
    return _ln_l2_grad(z, target)[0]


def _ln_l2_grad(z: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """:func:`ln_l2_grad` and what its vector-Jacobian product needs: ``(g, z_hat, std)``."""
    dim = z.shape[-1]
    mu = z.mean(-1, keepdim=True)
    std = torch.sqrt(z.var(-1, unbiased=False, keepdim=True) + EPS)
    z_hat = (z - mu) / std
    residual = z_hat - target
    g = dim * residual - residual.sum(-1, keepdim=True) - z_hat * (residual * z_hat).sum(-1, keepdim=True)
    return g / (std * dim), z_hat, std


def ln_l2_grad_vjp(c: torch.Tensor, g: torch.Tensor, z_hat: torch.Tensor, std: torch.Tensor,
                   target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(dz, dtarget)`` of ``<c, ln_l2_grad(z, target)>``, from the forward's ``g``, ``z_hat``, ``std``.

    With ``P(u) = u - mean(u) - z_hat mean(u z_hat)`` (the LayerNorm backward's projection), the forward is
    ``g = P(z_hat - target) / std``; so ``<c, g> = <r, z_hat - target> / std`` with ``r = P(c)`` (``P`` is
    symmetric), which gives ``dtarget = -r / std``. Through ``z``: the gradient with respect to ``z_hat``,
    ``v = (r - c mean((z_hat - target) z_hat) - mean(c z_hat) (z_hat - target)) / std``, goes back through
    the normalisation as ``P(v) / std``, and ``std``'s own dependence on ``z`` adds ``-z_hat mean(c g) / std``.
    """
    mean = lambda t: t.mean(-1, keepdim=True)  # noqa: E731
    residual = z_hat - target
    a = mean(c * z_hat)
    r = c - mean(c) - a * z_hat
    v = (r - c * mean(residual * z_hat) - a * residual) / std
    dz = (v - mean(v) - z_hat * (mean(v * z_hat) + mean(c * g))) / std
    return dz, -r / std


class _InnerLoop(torch.autograd.Function):
    """The sequential part of the dual form, with its backward written out.

    Forward: from ``W0`` (``b0 = 0``), per mini-batch ``j`` the gradient ``G_j = ln_l2_grad(X_K,j W_j + b_j,
    T_j)`` and the step ``W_{j+1} = W_j - eta X_K,j^T G_j``, ``b_{j+1} = b_j - eta sum_rows G_j``; returns every
    ``W_j``, ``b_j`` and ``G_j`` (the batched part uses them). Backward: one loop back over the mini-batches
    carrying the gradient of ``W_{j+1}`` and ``b_{j+1}``; only what needs that carry runs in the loop, and
    ``dX_K`` (from both of the loop's matmuls) runs batched afterwards. Autograd through the loop kept every
    step's intermediates (~20 MiB per 1K tokens at H = 4, f = 64), whose traffic made the time grow faster than
    S; this saves ``z_hat`` and ``std`` besides the inputs and outputs. ``W0`` gets its gradient (the carry
    left after the first mini-batch) when it needs one.
    """

    @staticmethod
    def forward(ctx, kb: torch.Tensor, tb: torch.Tensor, w0: torch.Tensor, eta: float):
        w, bias = w0, kb.new_zeros(*kb.shape[:2], 1, kb.shape[-1])
        ws, biases, grads, z_hats, stds = [], [], [], [], []
        for kj, tj in zip(kb.unbind(2), tb.unbind(2)):
            g, z_hat, std = _ln_l2_grad(kj @ w + bias, tj)
            for out, x in ((ws, w), (biases, bias), (grads, g), (z_hats, z_hat), (stds, std)):
                out.append(x)
            w = w - eta * (kj.transpose(-1, -2) @ g)
            bias = bias - eta * g.sum(-2, keepdim=True)
        w_all, b_all, g_all = torch.stack(ws, 2), torch.stack(biases, 2), torch.stack(grads, 2)
        ctx.save_for_backward(kb, tb, w_all, g_all, torch.stack(z_hats, 2), torch.stack(stds, 2))
        ctx.eta = eta
        return w_all, b_all, g_all

    @staticmethod
    @torch.autograd.function.once_differentiable  # the saved z_hat and std carry no graph
    def backward(ctx, dw_all: torch.Tensor, db_all: torch.Tensor, dg_all: torch.Tensor):
        kb, tb, w_all, g_all, z_hat, std = ctx.saved_tensors
        eta = ctx.eta
        dw = torch.zeros_like(w_all[:, :, 0])  # the gradient of W_{j+1} (nothing after the last mini-batch)
        db = torch.zeros_like(db_all[:, :, 0])
        carried, dzs, dts = [], [], []
        steps = zip(kb.unbind(2), g_all.unbind(2), z_hat.unbind(2), std.unbind(2), tb.unbind(2),
                    dw_all.unbind(2), db_all.unbind(2), dg_all.unbind(2))
        for kj, gj, zj, sj, tj, dwj, dbj, dgj in reversed(list(steps)):
            c = dgj - eta * (kj @ dw + db)  # G_j feeds its output and the step to W_{j+1}, b_{j+1}
            dz, dt = ln_l2_grad_vjp(c, gj, zj, sj, tj)
            carried.append(dw)
            dzs.append(dz)
            dts.append(dt)
            dw = dw + dwj + kj.transpose(-1, -2) @ dz  # z_j = X_K,j W_j + b_j, and W_{j+1} = W_j - ...
            db = db + dbj + dz.sum(-2, keepdim=True)
        carried, dz, dt = (torch.stack(x[::-1], 2) for x in (carried, dzs, dts))
        dk = dz @ w_all.transpose(-1, -2) - eta * (g_all @ carried.transpose(-1, -2))
        return dk, dt, dw if ctx.needs_input_grad[2] else None, None


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
    w_all, b_all, g_all = _InnerLoop.apply(kb, tb, w, eta)
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
