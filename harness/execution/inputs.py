"""The inputs of an attention run: its mask (cached), seeded q/k/v, and the measured call of a direction."""

from __future__ import annotations

import functools
from typing import Callable

import torch

from harness.interfaces import AttentionFn, Problem, torch_dtype
from harness.masks import Mask, build_mask
from harness.run import DECODE, Run


@functools.lru_cache(maxsize=16)
def cached_mask(name: str, seqlen: int, num_heads: int, params: tuple) -> Mask:
    return build_mask(name, seqlen, num_heads, **dict(params))


def mask_for(run: Run) -> Mask:
    return cached_mask(run.mask, run.seqlen, run.heads_q, run.mask_params)


def problem_for(run: Run, device: torch.device) -> Problem:
    """The single-device attention problem of a method or strategy run (the whole sequence)."""
    return Problem(
        mask=mask_for(run), batch=run.batch, seqlen=run.seqlen, heads_q=run.heads_q, heads_kv=run.heads_kv,
        head_dim=run.head_dim, dtype=torch_dtype(run.dtype), device=device, options=run.option_kwargs,
        direction=run.direction, decode_tokens=run.decode_tokens,
    )


def make_inputs(run: Run, device: torch.device, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Seeded q, k, v of shape [B, S, H, d] (identical on every rank and machine for the same run)."""
    g = torch.Generator().manual_seed(seed)
    dtype = torch_dtype(run.dtype)

    def rnd(heads: int) -> torch.Tensor:
        return torch.randn(run.batch, run.seqlen, heads, run.head_dim, generator=g).to(dtype).to(device)

    return rnd(run.heads_q), rnd(run.heads_kv), rnd(run.heads_kv)


def direction_call(fn: AttentionFn, q, k, v, direction: str) -> Callable[[], object]:
    """The measured call for a direction; the forward of a ``bwd`` run happens here, outside the timing.

    ``decode`` is a forward without autograd, like ``fwd``: q then holds the decode rows only."""
    if direction in ("fwd", DECODE):
        def forward():
            with torch.no_grad():
                return fn(q, k, v)
        return forward
    leaves = tuple(t.detach().requires_grad_(True) for t in (q, k, v))
    if direction == "bwd":
        out = fn(*leaves)
        dout = torch.randn_like(out)
        return lambda: torch.autograd.grad(out, leaves, dout, retain_graph=True)
    dout = torch.randn(q.shape, dtype=q.dtype, device=q.device)
    return lambda: torch.autograd.grad(fn(*leaves), leaves, dout)
