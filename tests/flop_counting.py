"""``torch.utils.flop_counter`` as the FLOP tests use it: torch's counter, plus the ops it does not register on CPU
counted by the same rules — torch's CPU flash-attention op by torch's own sdpa formulas (it registers them for
the CUDA ops only), the matrix-vector product (``aten.mv``: 2*m*n, as ``mm`` counts 2*m*n*k) and the grouped
matmul of mixture-of-experts layers (``aten._grouped_mm`` of rows ``[M, K]`` by per-group ``[G, K, N]``: each row
goes through one group, 2*M*K*N)."""

from __future__ import annotations

import torch
from torch.utils import flop_counter as fc
from torch.utils.flop_counter import FlopCounterMode

aten = torch.ops.aten


def _sdpa_forward(q, k, v, *args, out_shape=None, **kwargs) -> int:
    return fc.sdpa_flop_count(q, k, v)


def _sdpa_backward(grad_out, q, k, v, *args, out_shape=None, **kwargs) -> int:
    return fc.sdpa_backward_flop_count(grad_out, q, k, v)


def _mv(matrix, vector, *args, out_shape=None, **kwargs) -> int:
    m, n = matrix
    return 2 * m * n


def _grouped_mm(a, b, *args, out_shape=None, **kwargs) -> int:
    if len(a) != 2 or len(b) != 3:
        raise NotImplementedError(f"_grouped_mm of shapes {a} x {b}: only rows x per-group matrices are counted")
    (m, k), n = a, b[-1]
    return 2 * m * k * n


def counter() -> FlopCounterMode:
    return FlopCounterMode(display=False, custom_mapping={
        aten._scaled_dot_product_flash_attention_for_cpu: _sdpa_forward,
        aten._scaled_dot_product_flash_attention_for_cpu_backward: _sdpa_backward,
        aten.mv: _mv,
        aten._grouped_mm: _grouped_mm,
    })
