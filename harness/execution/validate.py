"""``lcbench validate``: every method on every mask, dtype and direction it claims, against float64.

Each mask pattern is checked with each of its small-length examples, with tiles that do not divide the
length (partial tiles and tails), GQA shape, float32 and bfloat16, forward and forward+backward.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, Optional

import torch

from harness.execution.gate import GateResult, check_method
from harness.masks import MASKS, build_mask
from harness.catalog import methods
from harness.interfaces import Method, Problem

SEQLEN = 1024
SHAPE = dict(batch=1, heads_q=4, heads_kv=2, head_dim=32)
DTYPES = ("float32", "bfloat16")
DIRECTIONS = ("fwd", "fwd+bwd", "decode")
DECODE_TOKENS = 4  # decode rows checked: the last ones of the sequence
# Small tiles so the block-sparse planners meet empty, partial and full tiles at this length.
OPTIONS = {"block_q": 96, "block_k": 80, "block_size": 128}


@dataclass
class Check:
    method: str
    mask: str
    params: dict
    dtype: str
    direction: str
    status: str  # ok | invalid | unsupported | unavailable
    detail: Optional[str] = None
    gate: Optional[GateResult] = None


def cases(mask_names: Optional[list[str]] = None) -> Iterator[tuple[str, dict]]:
    for name in mask_names or sorted(MASKS):
        for params in MASKS[name].examples:
            yield name, dict(params)


def validate_method(method: Method, mask_names: Optional[list[str]] = None, seqlen: int = SEQLEN) -> Iterator[Check]:
    why = method.unavailable_reason()
    for mask_name, params in cases(mask_names):
        mask = build_mask(mask_name, seqlen, SHAPE["heads_q"], **params)
        for dtype in DTYPES:
            for direction in DIRECTIONS:
                check = Check(method.name, mask_name, params, dtype, direction, "ok")
                if why:
                    check.status, check.detail = "unavailable", why
                    yield check
                    continue
                problem = Problem(
                    mask=mask, seqlen=seqlen, dtype=getattr(torch, dtype), device=torch.device("cpu"),
                    options=OPTIONS, direction=direction, decode_tokens=DECODE_TOKENS, **SHAPE,
                )
                reason = method.unsupported_reason(problem, direction)
                if reason:
                    check.status, check.detail = "unsupported", reason
                    yield check
                    continue
                g = torch.Generator().manual_seed(0)
                q = torch.randn(1, seqlen, SHAPE["heads_q"], SHAPE["head_dim"], generator=g).to(problem.dtype)
                k = torch.randn(1, seqlen, SHAPE["heads_kv"], SHAPE["head_dim"], generator=g).to(problem.dtype)
                v = torch.randn(1, seqlen, SHAPE["heads_kv"], SHAPE["head_dim"], generator=g).to(problem.dtype)
                q = q[:, problem.q_offset:]  # the decode rows (all rows otherwise)
                gate = check_method(
                    method.build(problem), q, k, v, mask, problem.scale, problem.needs_grad, method.reference,
                    q_offset=problem.q_offset, options=problem.options,
                )
                check.gate = gate
                check.status = "ok" if gate.ok else "invalid"
                check.detail = ", ".join(f"{k} {v:.1e}" for k, v in gate.errors.items())
                yield check


def count_checks(method_names: Optional[list[str]] = None, mask_names: Optional[list[str]] = None) -> int:
    """How many checks :func:`validate_all` yields for these methods and masks (its progress total)."""
    return len(method_names or methods()) * len(list(cases(mask_names))) * len(DTYPES) * len(DIRECTIONS)


def validate_all(method_names: Optional[list[str]] = None, mask_names: Optional[list[str]] = None) -> Iterator[Check]:
    """Every check of the methods (default: all registered) on the mask patterns (default: all)."""
    registry = methods()
    for name in method_names or list(registry):
        yield from validate_method(registry[name], mask_names)
