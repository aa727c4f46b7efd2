"""Per-head decay schedules of causal linear attention: the rate ``s_h >= 0`` (row p keeps ``exp(-s_h)`` of
the state per step), for q head h of H in layer l of L.

* ``minimax`` — MiniMax-01/M1 lightning attention (modeling_minimax_m1.py):
  ``s_h = 2^(-8 (h + 1) / H) * (1 - l / (L - 1) + 1e-5)``; a single layer (L = 1) takes the factor of layer 0
  (``1 + 1e-5``), where MiniMax's formula would divide by zero.
* ``transnormer`` — TransNormerLLM, what flash-linear-attention's ``chunk_lightning_attn`` uses:
  ``s_h = (8 / H) (1 - l / L) h`` (head 0 undecayed).
* ``none`` — plain causal linear attention (``s_h = 0``).

Options of the linear methods: ``decay`` (one of :data:`SCHEDULES`), ``layer`` (l, default 0) and
``layers`` (L, default 1).
"""

from __future__ import annotations

from typing import Callable

import torch

from harness.errors import UserError, unknown


def minimax(heads: int, layer: int, layers: int) -> torch.Tensor:
    h = torch.arange(heads, dtype=torch.float64)
    depth = 1.0 - (layer / (layers - 1) if layers > 1 else 0.0) + 1e-5
    return torch.pow(2.0, -8.0 * (h + 1) / heads) * depth


def transnormer(heads: int, layer: int, layers: int) -> torch.Tensor:
    return (8.0 / heads) * (1.0 - layer / layers) * torch.arange(heads, dtype=torch.float64)


def none(heads: int, layer: int, layers: int) -> torch.Tensor:
    return torch.zeros(heads, dtype=torch.float64)


SCHEDULES: dict[str, Callable[[int, int, int], torch.Tensor]] = {
    "minimax": minimax, "transnormer": transnormer, "none": none,
}

OPTION_NAMES = ("decay", "layer", "layers", "block")


def decay_rates(heads: int, options: dict, default: str) -> torch.Tensor:
    """``s_h`` (float64 ``[heads]``) of the options' ``decay``/``layer``/``layers`` (``default`` schedule)."""
    name = options.get("decay", default)
    if name not in SCHEDULES:
        raise unknown("option decay", name, SCHEDULES)
    layer, layers = options.get("layer", 0), options.get("layers", 1)
    if not (isinstance(layers, int) and layers >= 1):
        raise UserError(f"option layers={layers!r}: expected an integer >= 1 (the model's number of layers)")
    if not (isinstance(layer, int) and 0 <= layer < layers):
        raise UserError(f"option layer={layer!r}: expected an integer in [0, layers={layers})")
    return SCHEDULES[name](heads, layer, layers)


def block_option(options: dict, default: int) -> int:
    block = options.get("block", default)
    if not (isinstance(block, int) and block >= 1):
        raise UserError(f"option block={block!r}: expected a positive integer (rows per block)")
    return block
