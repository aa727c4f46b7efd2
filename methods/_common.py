"""Small helpers shared by the adapter methods: availability probes and packed (varlen) batch layouts.

Probes must be cheap and must never import the library they probe (importing flash-attn or xformers
initialises CUDA extensions, which on a machine without a GPU can fail loudly or take seconds): they look
the package up with ``importlib.util.find_spec`` and ask torch whether a CUDA device is present.
"""

from __future__ import annotations

import importlib.util
from typing import Callable, Optional

import torch

from harness.masks.core import Varlen

Probe = Callable[[], Optional[str]]


def needs(*packages: str, cuda: bool = True, min_capability: Optional[tuple[int, int]] = None) -> Probe:
    """A probe: every missing package, then the missing CUDA device (or too old a GPU), in one reason."""

    def probe() -> Optional[str]:
        reasons = [f"{pkg} not installed" for pkg in packages if importlib.util.find_spec(pkg) is None]
        if cuda and not torch.cuda.is_available():
            reasons.append("needs a CUDA device (torch.cuda.is_available() is False)")
        elif cuda and min_capability is not None and torch.cuda.get_device_capability() < min_capability:
            found = ".".join(map(str, torch.cuda.get_device_capability()))
            wanted = ".".join(map(str, min_capability))
            reasons.append(f"needs a GPU of compute capability >= {wanted} (found {found})")
        return "; ".join(reasons) or None

    return probe


def all_of(*probes: Probe) -> Probe:
    """A probe that reports the reasons of every failing probe."""

    def probe() -> Optional[str]:
        reasons = [r for r in (p() for p in probes) if r]
        return "; ".join(reasons) or None

    return probe


def packed_cu_seqlens(varlen: Varlen, batch: int, seqlen: int, device: torch.device) -> tuple[torch.Tensor, int]:
    """``cu_seqlens`` (int32, on ``device``) of ``batch`` copies of the packed sequence, and the longest document.

    ``[B, S, H, d]`` inputs reshaped to ``[B * S, H, d]`` are then ``B * num_docs`` documents.
    """
    cu = varlen.cu_seqlens.to(torch.int64)
    starts = (cu[:-1].unsqueeze(0) + seqlen * torch.arange(batch).unsqueeze(1)).flatten()
    packed = torch.cat([starts, torch.tensor([batch * seqlen])]).to(torch.int32)
    return packed.to(device), varlen.max_seqlen


def doc_lengths(varlen: Varlen, batch: int) -> list[int]:
    """Document lengths of ``batch`` copies of the packed sequence (for libraries that take a list)."""
    cu = varlen.cu_seqlens.tolist()
    return [b - a for a, b in zip(cu[:-1], cu[1:])] * batch


def first(result):
    """The output of a call that returns ``out`` or ``(out, lse, ...)`` depending on the library version."""
    return result[0] if isinstance(result, (tuple, list)) else result
