"""``lcbench validate``: every method on every mask, dtype and direction it claims, against float64.

Each mask pattern is checked with each of its small-length examples, with tiles that do not divide the
length (partial tiles and tails), GQA shape, float32 and bfloat16, forward and forward+backward.
"""

from __future__ import annotations

import functools
import hashlib
from collections import OrderedDict
from dataclasses import dataclass
from typing import Callable, Iterator, Optional

import torch

from harness.execution.gate import GateResult, check_method
from harness.masks import MASKS, Mask, build_mask
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


class SharedReferences:
    """The references of one validation, shared between the methods that use the same reference function.

    Every method is checked on the same seeded inputs per (mask case, dtype, direction), and most use the
    default masked-softmax reference, so its float64, eager and yardstick results are the same for all of them:
    computed once, they are most of a check's time. A result is reused only for the same reference function on
    the same arguments (every tensor by its shape, dtype and a digest of its bytes; every other argument by its
    repr), so a method whose outputs change the upstream gradient gets its own. Bounded (least recently used out)."""

    def __init__(self, size: int = 512) -> None:
        self.size, self.cache = size, OrderedDict()

    def wrap(self, reference: Callable[..., dict]) -> Callable[..., dict]:
        @functools.wraps(reference)  # keeps the signature the gate inspects (compute_dtype, options)
        def shared(*args, **kwargs):
            key = (reference, tuple(map(_fingerprint, args)),
                   tuple((name, _fingerprint(value)) for name, value in sorted(kwargs.items())))
            if key in self.cache:
                self.cache.move_to_end(key)
                return self.cache[key]
            self.cache[key] = computed = reference(*args, **kwargs)
            if len(self.cache) > self.size:
                self.cache.popitem(last=False)
            return computed

        return shared


def _fingerprint(value) -> object:
    if isinstance(value, torch.Tensor):
        raw = value.detach().cpu().contiguous().reshape(-1).view(torch.uint8)
        return (tuple(value.shape), str(value.dtype), hashlib.blake2b(raw.numpy().tobytes(), digest_size=16).digest())
    if isinstance(value, Mask):
        return (value.name, repr(value.params), value.seqlen, value.intervals.num_heads)
    return repr(value)


SHARED = SharedReferences()


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
                reference = SHARED.wrap(method.reference)
                gate = check_method(
                    method.build(problem), q, k, v, mask, problem.scale, problem.needs_grad, reference,
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
