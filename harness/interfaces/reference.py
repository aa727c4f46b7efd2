"""The references every method and strategy is checked against: masked softmax attention, exact or eager.

``reference_outputs`` computes masked softmax attention for a chosen subset of query rows, so the check stays
cheap at any sequence length: with an upstream gradient that is zero outside those rows, the gradients of the
whole problem (dq on the rows, dk and dv everywhere) are exactly the gradients of the rows alone.

By default it computes in float64 (the exact answer). With ``compute_dtype`` set to the run's dtype it is the
plain eager implementation an eager PyTorch user would write in that dtype (flash-attention's ``attention_ref``
with ``upcast=False``): matmuls in the dtype, softmax in at least float32 and cast back, autograd for the
gradients. The correctness gate measures how far *that* lands from float64 and allows a kernel a small multiple
of it (see :mod:`harness.execution.gate`).

Work is split into chunks of rows (bounded score memory at any length) and, inside each, of the query heads
sharing one KV head; gradients of row chunks are summed in at least float32 (one chunk at test sizes, where the
eager reference is then exactly one eager pass).
"""

from __future__ import annotations

from typing import Optional

import torch

from harness.masks.core import Mask

# The field's correctness rule (flash-attention's tests): a kernel's error against float64 is at most this multiple
# of an eager implementation's error in the same dtype, plus a floor for rounding (:func:`ulp_floor` for kernels,
# :func:`rounding_floor` for workloads). Gradients get 3x. Used by the gate (harness.execution.gate) and the
# workloads' checks.
OUTPUT_FACTOR = 2.0
GRADIENT_FACTOR = 3.0


def ulp_floor(ref: torch.Tensor, dtype: torch.dtype) -> float:
    """One unit in the last place of ``ref``'s largest value in ``dtype`` (``eps x max |ref|``): what storing the
    result in that dtype may cost, whoever computes it. The kernel gate's floor: without it the rule fails right
    kernels in the low dtypes, where one that rounds in a different order is a few ulp off — torch's own CPU
    flash backward in bfloat16 had dv 2.6 ulp off where the eager error was 0.56 ulp ("4.7x", S=512). Zero
    for an exactly zero reference, whose check stays as tight as before."""
    return torch.finfo(dtype).eps * float(ref.abs().max()) if ref.numel() else 0.0


def rounding_floor(ref: torch.Tensor, dtype: torch.dtype) -> float:
    """flash-attention's absolute floor (its tests' ``atol``): twice the rounding error of ``ref + 0.3 - 0.3``
    in ``dtype`` (what merely storing values of that size costs), and at least one unit in the last place of
    the largest value (:func:`ulp_floor`): a right model's scalar loss was 1.3 ulp off where eager happened to
    land nearer. The workloads' checks use it."""
    rounded = (ref + 0.3).to(dtype).double() - 0.3
    return max(2.0 * float((rounded - ref).abs().max()), ulp_floor(ref, dtype))


# Score elements (batch x heads x rows x keys) of one chunk: ~128 MiB of float64 scores, a few copies in autograd.
CHUNK_SCORES = 1 << 24


def _softmax_dtype(dtype: torch.dtype) -> torch.dtype:
    """Softmax runs in float32 for 16-bit dtypes (what eager users and every kernel do), else in the dtype."""
    return torch.promote_types(dtype, torch.float32)


def _attend(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, allowed: torch.Tensor, scale: float
) -> torch.Tensor:
    """Eager masked softmax attention in q's dtype: q ``[B, H, n, d]``, k/v ``[B, H, S, d]``, allowed
    broadcastable to ``[B, H, n, S]``. Rows with no keys give 0."""
    scores = (q @ k.transpose(-1, -2)).to(_softmax_dtype(q.dtype)) * scale
    scores = scores.masked_fill(~allowed, float("-inf"))
    probs = torch.softmax(scores, dim=-1).nan_to_num(0.0).to(q.dtype)  # fully masked rows -> 0
    return probs @ v


def reference_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: Mask, rows: torch.Tensor, scale: float,
    q_offset: int = 0, compute_dtype: torch.dtype = torch.float64,
) -> torch.Tensor:
    """Output rows ``[B, len(rows), Hq, d]`` in ``compute_dtype``; q is ``[B, Sq, Hq, d]``, k/v ``[B, S, Hkv, d]``.

    Row ``i`` of q is query position ``q_offset + i`` of the mask (a decode step's q holds the last rows only).
    Rows with no keys give 0. Differentiable with respect to q, k and v."""
    group = q.shape[2] // k.shape[2]
    qr = q[:, rows].to(compute_dtype).transpose(1, 2)  # [B, Hq, n, d]
    kd = k.to(compute_dtype).transpose(1, 2).repeat_interleave(group, dim=1)  # [B, Hq, S, d]
    vd = v.to(compute_dtype).transpose(1, 2).repeat_interleave(group, dim=1)
    allowed = mask.dense(q_pos=rows.cpu() + q_offset).to(q.device)  # [Hm, n, S]
    return _attend(qr, kd, vd, allowed.unsqueeze(0), scale).transpose(1, 2)


def sample_rows(seqlen: int, count: int = 64, seed: int = 0) -> torch.Tensor:
    """Sorted query rows: first and last rows plus a seeded random sample (see ``harness.execution.gate``
    for the rows the gate checks, which also cover every tile and document)."""
    if seqlen <= count:
        return torch.arange(seqlen)
    g = torch.Generator().manual_seed(seed)
    picked = torch.randperm(seqlen - 2, generator=g)[: count - 2] + 1
    return torch.cat([torch.tensor([0, seqlen - 1]), picked]).sort().values


def _chunks(rows: torch.Tensor, per_row: int) -> list[torch.Tensor]:
    """Row chunks of at most ``CHUNK_SCORES`` elements, each row holding ``per_row`` of them."""
    return list(rows.split(max(1, CHUNK_SCORES // max(1, per_row))))


def reference_outputs(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    mask: Mask,
    scale: float,
    rows: torch.Tensor,
    dout_rows: Optional[torch.Tensor],
    q_offset: int = 0,
    compute_dtype: torch.dtype = torch.float64,
) -> dict[str, torch.Tensor]:
    """Masked softmax attention in ``compute_dtype`` (float64: exact): out on ``rows`` and, given the upstream
    gradient of those rows (``[B, len(rows), Hq, d]``), full dq/dk/dv in ``compute_dtype``.

    The default ``Method.reference``; other methods (linear attention, TTT) bring their own with this signature,
    ``compute_dtype`` included (the gate calls it once in float64 and once in the run's dtype)."""
    batch, _, heads_q, _ = q.shape
    heads_kv, seqlen = k.shape[2], k.shape[1]
    group = heads_q // heads_kv
    want_grad = dout_rows is not None
    acc = torch.promote_types(compute_dtype, torch.float32)  # row-chunk gradients are summed in this
    out = torch.empty(batch, len(rows), heads_q, v.shape[-1], dtype=compute_dtype, device=q.device)
    grads = {name: torch.zeros(t.shape, dtype=acc, device=q.device) for name, t in (("dq", q), ("dk", k), ("dv", v))}
    leaves = [  # per KV head: its group of query heads, its key and value head
        [t.detach().to(compute_dtype).requires_grad_(want_grad)
         for t in (q[:, :, h * group : (h + 1) * group], k[:, :, h : h + 1], v[:, :, h : h + 1])]
        for h in range(heads_kv)
    ]
    start = 0
    for chunk in _chunks(rows.cpu(), seqlen * max(batch * group, mask.intervals.num_heads)):
        idx = slice(start, start + len(chunk))
        start += len(chunk)
        allowed_heads = mask.dense(q_pos=chunk + q_offset).to(q.device)  # [Hm, n, S]
        for h, (qh, kh, vh) in enumerate(leaves):
            hq = slice(h * group, (h + 1) * group)
            allowed = allowed_heads[hq] if allowed_heads.shape[0] > 1 else allowed_heads
            kd, vd = (t.transpose(1, 2).expand(batch, group, seqlen, t.shape[-1]) for t in (kh, vh))
            with torch.set_grad_enabled(want_grad):
                o = _attend(qh[:, chunk.to(q.device)].transpose(1, 2), kd, vd, allowed.unsqueeze(0), scale)
                o = o.transpose(1, 2)  # [B, n, group, d]
            out[:, idx, hq] = o.detach()
            if want_grad:
                g = dout_rows[:, idx, hq].to(device=q.device, dtype=compute_dtype)
                dq, dk, dv = torch.autograd.grad(o, (qh, kh, vh), g)
                grads["dq"][:, :, hq] += dq
                grads["dk"][:, :, h : h + 1] += dk
                grads["dv"][:, :, h : h + 1] += dv
    refs = {"out": out}
    if want_grad:
        refs.update({name: t.to(compute_dtype) for name, t in grads.items()})
    return refs
