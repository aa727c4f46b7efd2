"""cuDNN attention through PyTorch SDPA, pinned with ``sdpa_kernel(SDPBackend.CUDNN_ATTENTION)``.

Only what the SDPA interface expresses without a dense mask: full and causal (``is_causal``). GQA via
``enable_gqa``. CUDA only, fp16/bf16.
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

from harness.masks.core import CAUSAL
from harness.interfaces import AttentionFn, Method, Problem
from methods._common import all_of, needs


def build(problem: Problem) -> AttentionFn:
    is_causal = problem.mask.is_plain_causal
    gqa = problem.heads_q != problem.heads_kv
    scale = problem.scale

    def cudnn_sdpa(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        with sdpa_kernel(SDPBackend.CUDNN_ATTENTION):
            out = F.scaled_dot_product_attention(
                q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2),
                is_causal=is_causal, scale=scale, enable_gqa=gqa,
            )
        return out.transpose(1, 2)

    return cudnn_sdpa


def cudnn_probe() -> Optional[str]:
    if not hasattr(SDPBackend, "CUDNN_ATTENTION"):
        return f"torch {torch.__version__} has no SDPBackend.CUDNN_ATTENTION"
    if not torch.backends.cudnn.is_available():
        return "cuDNN is not available in this torch build"
    return None


METHOD = Method(
    name="cudnn_sdpa",
    summary="cuDNN attention via torch SDPA (SDPBackend.CUDNN_ATTENTION); full and causal only",
    build=build,
    mask_features=frozenset({CAUSAL}),
    dtypes=frozenset({"bfloat16", "float16"}),
    devices=frozenset({"cuda"}),
    backward=True,
    gqa=True,
    probe=all_of(needs(), cudnn_probe),
    homepage="https://pytorch.org/docs/stable/generated/torch.nn.attention.sdpa_kernel.html",
)
