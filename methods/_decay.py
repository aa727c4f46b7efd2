"""Per-head decay schedules of causal linear attention: the rate ``s_h >= 0`` (row p keeps ``exp(-s_h)`` of
the state per step), for q head h of H in layer l of L.

* ``minimax`` — MiniMax-01/M1 lightning attention (modeling_minimax_m1.py, ``_build_slope_tensor``):
  ``s_h = m_h * (1 - l / (L - 1) + 1e-5)`` with ALiBi's head slopes ``m_h`` (:func:`alibi_slopes`:
  ``2^(-8 (h + 1) / H)`` when H is a power of two; otherwise the slopes of the closest power of two P < H,
  then every other slope of 2P — MiniMax's ``get_slopes``); a single layer (L = 1) takes the factor of layer 0
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


def alibi_slopes(heads: int) -> torch.Tensor:
    """ALiBi's per-head slopes (float64 ``[heads]``), as MiniMax's ``get_slopes`` builds them: the geometric
    series ``2^(-8 (h + 1) / H)`` for a power of two H; otherwise the series of the closest power of two
    ``P = 2^floor(log2 H)`` followed by the first ``H - P`` of every other slope of ``2P`` (slopes 0, 2, 4, ...)."""
    if heads < 1:
        raise UserError(f"heads={heads!r}: expected a positive integer (decay slopes are per head)")
    power = 1 << (heads.bit_length() - 1)
    series = torch.pow(2.0, -8.0 * torch.arange(1, power + 1, dtype=torch.float64) / power)
    if power == heads:
        return series
    return torch.cat([series, alibi_slopes(2 * power)[0::2][: heads - power]])


def minimax(heads: int, layer: int, layers: int) -> torch.Tensor:
    depth = 1.0 - (layer / (layers - 1) if layers > 1 else 0.0) + 1e-5
    return alibi_slopes(heads) * depth


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
