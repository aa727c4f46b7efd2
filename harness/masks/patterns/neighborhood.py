"""Generalized Neighborhood Attention (NATTEN's GNA), 1-D: window, stride, dilation, causal (REFERENCE §3).

Dilation ``d`` splits the tokens into ``d`` interleaved groups (same residue mod ``d``); inside a group,
coordinates are divided by ``d`` and the plain rule applies with the group's own length. A query's keys are
therefore one dilated interval ``lo, lo + d, ... < hi`` — exactly ``RowIntervals.step``.

* non-causal: every query sees exactly ``window`` keys, centred on the leader of its stride group and shifted
  inwards at the edges;
* causal: keys ``k <= q`` with ``leader - k < window``.

``stride = 1`` is a sliding window, ``stride = window`` blocked (HaloNet-style) attention. Like NATTEN we
require ``stride <= window`` and ``window * dilation <= seqlen``.
"""

from __future__ import annotations

import dataclasses

import torch

from harness.masks.core import Mask, RowIntervals
from harness.masks.patterns.common import arbitrary_mask, banded_documents
from harness.masks.registry import register_mask, require


def _leader(qq: torch.Tensor, length: torch.Tensor, stride: int, causal: bool) -> torch.Tensor:
    """The query that represents ``qq``'s stride group (group coordinates; ``length`` = group size)."""
    offset = stride - 1 if causal else stride // 2
    return torch.minimum((qq // stride) * stride + offset, length - 1)


def _center(leader: torch.Tensor, length: torch.Tensor, window: int) -> torch.Tensor:
    upper = length - 1 - (window // 2 + window % 2 - 1)
    return torch.minimum(torch.maximum(leader, torch.full_like(leader, window // 2)), upper)


@register_mask(
    "neighborhood",
    "generalized neighborhood attention (1-D): window keys around the stride-group leader, same residue mod "
    "dilation; optionally causal",
    examples=(
        {"window": 100, "stride": 8, "dilation": 3},
        {"window": 64, "stride": 16, "dilation": 2, "causal": True},
    ),
    window=256,
    stride=1,
    dilation=1,
    causal=False,
)
def neighborhood(seqlen: int, num_heads: int, window: int, stride: int, dilation: int, causal: bool) -> Mask:
    name = "neighborhood"
    require(window >= 1, name, "window", window, "expected an integer >= 1")
    require(dilation >= 1, name, "dilation", dilation, "expected an integer >= 1")
    require(
        window * dilation <= seqlen, name, "window", window,
        f"expected window * dilation ({dilation}) <= seqlen ({seqlen})",
    )
    require(1 <= stride <= window, name, "stride", stride, f"expected 1 <= stride <= window ({window})")
    d = dilation

    def group(pos: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Residue, coordinate inside the residue group, and that group's length."""
        residue = pos % d
        return residue, pos // d, (seqlen - residue + d - 1) // d

    q = torch.arange(seqlen)
    residue, qq, length = group(q)
    leader = _leader(qq, length, stride, causal)
    if causal:
        first, last = (leader - window + 1).clamp_min(0), qq
    else:
        center = _center(leader, length, window)
        first, last = center - window // 2, center + window // 2 + window % 2 - 1
    intervals = RowIntervals.build(first * d + residue, last * d + residue + 1, torch.full_like(q, d))

    def definition(b, h, q_idx, k_idx):
        q_res, q_co, q_len = group(q_idx)
        k_res, k_co, _ = group(k_idx)
        lead = _leader(q_co, q_len, stride, causal)
        if causal:
            inside = (k_co <= q_co) & (lead - k_co < window)
        else:
            mid = _center(lead, q_len, window)
            inside = (k_co >= mid - window // 2) & (k_co <= mid + window // 2 + window % 2 - 1)
        return (q_res == k_res) & inside

    if causal and stride == 1 and dilation == 1:  # a causal sliding window: varlen-expressible
        plain = banded_documents(name, seqlen, causal=True, left=window - 1)
        return dataclasses.replace(plain, intervals=intervals, definition=definition)
    return arbitrary_mask(name, seqlen, intervals, definition)
