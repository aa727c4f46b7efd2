"""FlexAttention on CUDA: the same adapter as ``flex`` (compiled ``flex_attention`` + a ``BlockMask`` from the
exact block map), run by Inductor's Triton kernels — any mask, per-head masks, forward and backward.

The pattern's mask_mod closes over CPU index tensors; ``flex.mask_mod_on`` moves them to the GPU.
"""

from __future__ import annotations

from harness.masks.core import ALL_FEATURES
from harness.interfaces import Method
from methods import flex
from methods._common import needs

METHOD = Method(
    name="flex_cuda",
    summary="FlexAttention on CUDA (torch.compile, Triton), BlockMask from the exact block map; any mask",
    build=flex.build,
    mask_features=ALL_FEATURES,
    dtypes=frozenset({"float32", "bfloat16", "float16"}),
    devices=frozenset({"cuda"}),
    backward=True,
    gqa=True,
    probe=needs("triton"),
    limits=flex.limits,
    homepage="https://pytorch.org/docs/stable/nn.attention.flex_attention.html",
)
