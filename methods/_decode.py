"""What the varlen-style adapters (flash-attn, FlashInfer) share for a decode step.

Their decode kernels take one KV cache per sequence, a ``causal`` flag and a window, both aligned to the
bottom-right corner (the last query row is the last cached key). A varlen mask (documents, each causal or
windowed alike) becomes exactly that when the cache handed to the kernel starts at the first key of the
document holding the decode rows: every decode row then sees its own document only, and its position inside
it is its position from the bottom-right corner. The rows must therefore all lie in the last document.
"""

from __future__ import annotations

from typing import Optional

from harness.interfaces import Problem


def last_document_start(problem: Problem) -> int:
    """First key of the last document (0 for a single-sequence mask): where the decode step's cache starts."""
    return int(problem.mask.varlen.cu_seqlens[-2])


def decode_limits(problem: Problem) -> Optional[str]:
    """Why a cache-slicing decode adapter cannot run ``problem`` (None when it can, or when not decoding)."""
    if not problem.is_decode:
        return None
    start = last_document_start(problem)
    if start > problem.q_offset:
        return (
            f"decode rows {problem.q_offset}..{problem.seqlen - 1} span several documents "
            f"(the last one starts at {start})"
        )
    return None
