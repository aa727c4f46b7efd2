"""NATTEN 1-D neighborhood attention (``natten.functional.na1d``), for ``neighborhood`` masks only.

NATTEN does not take a mask: it computes generalized neighborhood attention from ``kernel_size``, ``stride``,
``dilation`` and ``is_causal``. So it can run exactly the masks built by the ``neighborhood`` pattern (whose
definition follows NATTEN's), reading those four numbers from the mask's parameters; any other mask is
unsupported. Inputs are already NATTEN's heads-last ``[B, S, H, d]`` layout. ``stride`` needs NATTEN >= 0.20.
K/V must have as many heads as Q (GQA is not assumed). CUDA only.
"""

from __future__ import annotations

from typing import Optional

import torch

from harness.masks.core import ARBITRARY, CAUSAL, WINDOW
from harness.interfaces import AttentionFn, Method, Problem
from methods._common import needs

PATTERN = "neighborhood"
PARAMS = ("window", "stride", "dilation", "causal")


def build(problem: Problem) -> AttentionFn:
    from natten.functional import na1d

    p = problem.mask.params
    kwargs = dict(
        kernel_size=int(p["window"]), stride=int(p["stride"]), dilation=int(p["dilation"]),
        is_causal=bool(p["causal"]), scale=problem.scale,
    )

    def natten_na1d(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return na1d(q, k, v, **kwargs)

    return natten_na1d


def limits(problem: Problem) -> Optional[str]:
    mask = problem.mask
    if mask.name != PATTERN or any(key not in mask.params for key in PARAMS):
        return f"mask {mask.name} is not a {PATTERN} mask with {'/'.join(PARAMS)} (NATTEN takes no other mask)"
    return None


METHOD = Method(
    name="natten",
    summary="NATTEN na1d: generalized neighborhood attention (window/stride/dilation/causal); "
    "neighborhood masks only",
    build=build,
    mask_features=frozenset({ARBITRARY, CAUSAL, WINDOW}),
    dtypes=frozenset({"float32", "bfloat16", "float16"}),
    devices=frozenset({"cuda"}),
    backward=True,
    gqa=False,
    probe=needs("natten"),
    limits=limits,
    homepage="https://natten.org",
)
