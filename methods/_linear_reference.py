"""The references of causal linear attention with decay: the quadratic form and the token recurrence.

Quadratic form (what the gate checks against, float64 by default): ``O = ((Q K^T) * Dfull) V`` with
``Dfull[p, j] = exp(-s_h (p - j))`` for ``j <= p`` (0 above the diagonal), no 1/sqrt(d) scaling. For a
subset of rows R and the upstream gradient of those rows it is differentiated by hand:
``dQ_R = ((dO_R V^T) * D_R) K``, ``dK = ((dO_R V^T) * D_R)^T Q_R``, ``dV = ((Q_R K^T) * D_R)^T dO_R``
(dq is zero outside R), so a check costs ``|R| x S`` per head and stays cheap at any length.

The recurrence (``KV <- exp(-s) KV + k^T v``, ``o = q KV``, token by token) is the definition MiniMax's
decode runs; the tests check the two agree.
"""

from __future__ import annotations

from typing import Callable, Optional

import torch

from harness.masks.core import Mask
from methods._decay import decay_rates

CHUNK_SCORES = 1 << 24  # score elements (batch x group x rows x keys) of one chunk


def quadratic_outputs(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, rates: torch.Tensor, rows: torch.Tensor,
    dout_rows: Optional[torch.Tensor], q_offset: int = 0, compute_dtype: torch.dtype = torch.float64,
) -> dict[str, torch.Tensor]:
    """Out on ``rows`` of q (query positions ``q_offset + rows``) and, given ``dout_rows``, full dq/dk/dv,
    in ``compute_dtype`` (matmuls in it: an eager implementation of that dtype; float64 is exact)."""
    batch, _, heads_q, dim = q.shape
    seqlen, heads_kv = k.shape[1], k.shape[2]
    group = heads_q // heads_kv
    dev = q.device
    rows = rows.to(dev)
    acc = torch.promote_types(compute_dtype, torch.float32)
    out = torch.zeros(batch, len(rows), heads_q, v.shape[-1], dtype=compute_dtype, device=dev)
    grads = None
    if dout_rows is not None:
        grads = {n: torch.zeros(t.shape, dtype=acc, device=dev) for n, t in (("dq", q), ("dk", k), ("dv", v))}
    keys = torch.arange(seqlen, device=dev, dtype=torch.float64)
    per_row = max(1, batch * group * seqlen)
    for h in range(heads_kv):
        hq = slice(h * group, (h + 1) * group)
        kh = k[:, :, h].to(compute_dtype).unsqueeze(1)  # [B, 1, S, d]
        vh = v[:, :, h].to(compute_dtype).unsqueeze(1)
        s = rates[hq].double().to(dev).view(1, group, 1, 1)
        start = 0
        for chunk in rows.split(max(1, CHUNK_SCORES // per_row)):
            idx = slice(start, start + len(chunk))
            start += len(chunk)
            dist = (chunk.double() + q_offset).view(-1, 1) - keys.view(1, -1)  # [n, S]
            decay = (torch.exp(-s * dist.clamp_min(0)) * (dist >= 0)).to(compute_dtype)  # [1, g, n, S]
            qr = q[:, chunk, hq].to(compute_dtype).transpose(1, 2)  # [B, g, n, d]
            p = (qr @ kh.transpose(-1, -2)) * decay
            out[:, idx, hq] = (p @ vh).transpose(1, 2)
            if grads is not None:
                do = dout_rows[:, idx, hq].to(device=dev, dtype=compute_dtype).transpose(1, 2)
                dp = (do @ vh.transpose(-1, -2)) * decay
                grads["dq"][:, chunk, hq] += (dp @ kh).transpose(1, 2).to(acc)
                grads["dk"][:, :, h] += (dp.transpose(-1, -2) @ qr).sum(1).to(acc)
                grads["dv"][:, :, h] += (p.transpose(-1, -2) @ do).sum(1).to(acc)
    refs = {"out": out}
    if grads is not None:
        refs.update({n: t.to(compute_dtype) for n, t in grads.items()})
    return refs


def make_reference(default_decay: str) -> Callable[..., dict[str, torch.Tensor]]:
    """A ``Method.reference`` for a linear method whose schedule defaults to ``default_decay`` (the run's
    ``options`` may choose another). Same signature as :func:`harness.interfaces.reference.reference_outputs`;
    ``mask`` must be plain causal (the method's limits reject others) and ``scale`` is unused (none applied)."""

    def reference(
        q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: Mask, scale: float, rows: torch.Tensor,
        dout_rows: Optional[torch.Tensor], q_offset: int = 0, compute_dtype: torch.dtype = torch.float64,
        options: Optional[dict] = None, **_: object,
    ) -> dict[str, torch.Tensor]:
        if not mask.is_plain_causal:
            raise ValueError(f"causal linear attention has no reference for mask {mask.name}")
        rates = decay_rates(q.shape[2], options or {}, default_decay)
        return quadratic_outputs(q, k, v, rates, rows, dout_rows, q_offset, compute_dtype)

    reference.__doc__ = f"Causal linear attention (decay {default_decay!r} by default), quadratic form."
    return reference


def recurrence(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, rates: torch.Tensor) -> torch.Tensor:
    """Token-by-token float64 recurrence over the whole sequence: ``[B, S, Hq, d]`` outputs."""
    heads_q = q.shape[2]
    group = heads_q // k.shape[2]
    qd, kd, vd = (t.double() for t in (q, k, v))
    kd, vd = kd.repeat_interleave(group, dim=2), vd.repeat_interleave(group, dim=2)
    decay = torch.exp(-rates.double()).view(1, -1, 1, 1)
    state = qd.new_zeros(q.shape[0], heads_q, q.shape[-1], v.shape[-1])
    out = torch.empty(q.shape[0], q.shape[1], heads_q, v.shape[-1], dtype=torch.float64)
    for t in range(q.shape[1]):
        state = decay * state + kd[:, t].unsqueeze(-1) * vd[:, t].unsqueeze(-2)
        out[:, t] = (qd[:, t].unsqueeze(-1) * state).sum(-2)
    return out
