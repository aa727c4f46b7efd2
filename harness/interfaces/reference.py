"""The references every method and strategy is checked against: masked softmax attention, exact or eager.

``reference_outputs`` computes masked softmax attention for a chosen subset of query rows, so the check stays
cheap at any sequence length: with an upstream gradient that is zero outside those rows, the gradients of the
whole problem (dq on the rows, dk and dv everywhere) are exactly the gradients of the rows alone.

By default it computes in float64 (the exact answer). With ``compute_dtype`` set it computes in that dtype:
matmuls in it, softmax in at least float32, autograd for the gradients. The correctness gate's same-dtype
yardstick is this reference computed from the run's (rounded) inputs in :func:`yardstick_dtype` — float32 for
the 16-bit dtypes, as real kernels accumulate — with its results rounded to the run's dtype: a sound
implementation of that dtype, whose error is essentially the rounding of the results. (The plain eager pass
*in* bfloat16, scores rounded to bfloat16 before the softmax, is 2-10x less accurate than that, so a multiple
of it admitted 1% errors.) The gate allows a kernel a small multiple of the eager pass's max error and of the
yardstick's RMS error, and no systematic bias (see :mod:`harness.execution.gate`).

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
# Beside the max: a tensor's RMS error against float64 may be at most this multiple of the yardstick's
# (:func:`yardstick_dtype`), with no rounding floor, so that a systematic error cannot hide under one ulp. In
# bfloat16 rounding alone has an RMS of ~0.16% of the values (the yardstick's error), a 1% systematic error
# about 6x that; eager bfloat16 (scores rounded to bfloat16 before the softmax) was seen at 2.7x, torch's CPU
# flash backward at 2.5x.
RMS_FACTOR = 4.0


def yardstick_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype the gate's same-dtype yardstick computes in: at least float32, as real kernels accumulate
    (flash-attention, cuDNN, torch's CPU flash: 16-bit inputs, float32 matmul accumulation and softmax); its
    results are then rounded to ``dtype``, as a kernel's are when stored."""
    return torch.promote_types(dtype, torch.float32)


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


# ----- the rows a check looks at (the kernel gate's and the workloads' checks) --------------------------------

# Checked rows: every row up to this length when the reference's work fits the device's budget. Work is the
# score elements of one reference pass (batch x heads x rows x keys, x head_dim / 64 beyond 64): its elementwise
# float64 passes dominate. On 2 CPU cores 2**27 is a few seconds (S=4096 with 8 heads, S=8192 with 2).
FULL_CHECK_SEQLEN = 16384
FULL_CHECK_WORK = {"cpu": 1 << 27}
FULL_CHECK_WORK_OTHER = 1 << 34  # accelerators: S=16384 with 32 heads
# ... else at least one row in every tile of this many query rows, one per document, and EXTRA_ROWS at random.
ROW_TILE = 64
EXTRA_ROWS = 64


def run_seed(key: str) -> int:
    """The checks' seed for a run: the first 32 bits of its key (fresh rows per run, reproducible per run)."""
    return int(key[:8], 16)


def full_check_affordable(batch: int, heads_q: int, rows: int, seqlen: int, head_dim: int, device: str) -> bool:
    """Whether the reference can check every one of ``rows`` query rows on ``device``."""
    work = batch * heads_q * rows * seqlen * max(1, head_dim // 64)
    return seqlen <= FULL_CHECK_SEQLEN and work <= FULL_CHECK_WORK.get(device, FULL_CHECK_WORK_OTHER)


def gate_rows(
    num_rows: int, mask: Mask, seed: int, q_offset: int = 0, *, batch: int = 1, heads_q: int = 1,
    head_dim: int = 64, device: str = "cpu",
) -> torch.Tensor:
    """Sorted rows of q (``num_rows`` rows at mask positions ``q_offset ...``) that the gate checks.

    Every row when :func:`full_check_affordable`; otherwise, drawn with ``seed``: the first and last rows, one
    row in every ``ROW_TILE``-row tile, one in every document the rows meet, and ``EXTRA_ROWS`` more."""
    if num_rows <= EXTRA_ROWS or full_check_affordable(batch, heads_q, num_rows, mask.seqlen, head_dim, device):
        return torch.arange(num_rows)
    g = torch.Generator().manual_seed(seed)
    starts = torch.arange(0, num_rows, ROW_TILE)
    sizes = (starts + ROW_TILE).clamp_max(num_rows) - starts
    picked = [starts + (torch.rand(len(starts), generator=g) * sizes).long()]
    if mask.doc_lengths is not None:
        bounds = torch.cumsum(torch.tensor([0] + list(mask.doc_lengths)), 0) - q_offset
        lo, hi = bounds[:-1].clamp(0, num_rows), bounds[1:].clamp(0, num_rows)
        met = hi > lo
        lo, hi = lo[met], hi[met]
        picked.append(lo + (torch.rand(len(lo), generator=g) * (hi - lo)).long())
    picked.append(torch.randint(0, num_rows, (EXTRA_ROWS,), generator=g))
    picked.append(torch.tensor([0, num_rows - 1]))
    return torch.unique(torch.cat(picked))  # sorted


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
