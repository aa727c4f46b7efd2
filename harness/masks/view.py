"""Looking at a mask: a plain-data summary, a picture, and the ``lcbench mask`` command behind the CLI.

Everything is computed from the row intervals, so it works at benchmark lengths: the picture of a long mask
is its block-density map (the fraction of allowed pairs in each pixel's block), never an S×S matrix.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Optional

import torch

from harness.errors import UserError
from harness.masks.core import EMPTY, FULL, PARTIAL, Mask
from harness.masks.registry import get_mask_pattern

MAX_PANELS = 16  # per-head masks: at most this many heads are drawn


def describe_mask(mask: Mask, block: int = 64) -> dict[str, Any]:
    """Area, density, documents, features and block statistics (empty/partial/full tiles at ``block``)."""
    if block < 1:
        raise UserError(f"block={block} is not allowed; expected an integer >= 1")
    info = mask.describe()
    heads = mask.intervals.num_heads
    info["area"] = int(mask.head_areas().sum())  # summed over the head patterns (one head when shared)
    info["heads_in_mask"] = heads
    classes = mask.block_map(block, block)
    total = classes.numel()
    info["blocks"] = {
        "block": block,
        "empty": int((classes == EMPTY).sum()),
        "partial": int((classes == PARTIAL).sum()),
        "full": int((classes == FULL).sum()),
        "nonempty_fraction": round(float((classes != EMPTY).sum()) / total, 6),
    }
    return info


def mask_image(mask: Mask, max_pixels: int = 1024) -> tuple[torch.Tensor, int]:
    """``[Hm, n, n]`` float image in [0, 1] (density of allowed pairs) and the tokens per pixel."""
    if mask.seqlen <= max_pixels:
        return mask.dense().float(), 1
    block = math.ceil(mask.seqlen / max_pixels)
    counts = mask.block_counts(block, block).double()
    sizes = torch.full((counts.shape[-1],), block, dtype=torch.float64)
    sizes[-1] = mask.seqlen - block * (len(sizes) - 1)
    return (counts / (sizes.view(-1, 1) * sizes.view(1, -1))).float(), block


def save_mask_png(mask: Mask, path: str, max_pixels: int = 1024) -> None:
    """Draw the mask (black = attended) to ``path``; long masks are downsampled by block density.

    A per-head mask is drawn as a row of panels, one per head (at most ``MAX_PANELS``).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    image, per_pixel = mask_image(mask, max_pixels)
    heads = min(image.shape[0], MAX_PANELS)
    fig, axes = plt.subplots(1, heads, figsize=(4.2 * heads, 4.6), squeeze=False)
    scale = f", {per_pixel} tokens/pixel" if per_pixel > 1 else ""
    areas = mask.head_areas()
    for h, ax in enumerate(axes[0]):
        ax.imshow(image[h].numpy(), cmap="Greys", vmin=0.0, vmax=1.0, interpolation="nearest",
                  extent=(0, mask.seqlen, mask.seqlen, 0))
        label = f"head {h}: " if mask.per_head else ""
        ax.set_title(f"{label}density {float(areas[h]) / mask.seqlen**2:.3f}", fontsize=9)
        ax.set_xlabel("key")
        if h == 0:
            ax.set_ylabel("query")
    more = f" (first {heads} of {image.shape[0]} heads)" if image.shape[0] > heads else ""
    fig.suptitle(f"{mask.name}  S={mask.seqlen}{scale}{more}", fontsize=10)
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def coerce_params(name: str, params: dict[str, Any]) -> dict[str, Any]:
    """Turn CLI strings (``k=v``) into the types of the pattern's defaults (ints, floats, bools, lists)."""
    defaults = get_mask_pattern(name).defaults
    return {k: _coerce(name, k, v, defaults.get(k)) for k, v in params.items()}


def _coerce(name: str, key: str, value: Any, default: Any) -> Any:
    if not isinstance(value, str) or isinstance(default, str):
        return value
    text = value.strip()
    try:
        if isinstance(default, bool):
            if text.lower() not in {"true", "false", "1", "0", "yes", "no"}:
                raise ValueError(text)
            return text.lower() in {"true", "1", "yes"}
        if isinstance(default, int):
            return int(text)
        if isinstance(default, float):
            return float(text)
        if isinstance(default, (list, tuple)):
            return [int(x) for x in text.strip("[]()").split(",") if x.strip()]
        if default is None:  # optional integer parameters (e.g. prefix)
            return None if text.lower() == "none" else int(text)
    except ValueError:
        kind = "true/false" if isinstance(default, bool) else type(default).__name__ if default is not None else "int"
        raise UserError(f"mask {name}: parameter {key}={value!r} is not a valid {kind}") from None
    return value


def mask_command(name: str, seqlen: int, params: dict, png: Optional[str], num_heads: int, block: int) -> None:
    """``lcbench mask NAME --seqlen N [--param k=v ...] [--png FILE]``: summary table, optional picture."""
    from rich.console import Console
    from rich.table import Table

    from harness.masks.registry import build_mask

    pattern = get_mask_pattern(name)
    mask = build_mask(name, seqlen, num_heads, **coerce_params(name, params))
    info = describe_mask(mask, block)
    table = Table(title=f"mask {name}", show_header=False, title_justify="left")
    table.add_column(style="bold")
    table.add_column()
    table.add_row("summary", pattern.summary)
    table.add_row("seqlen", str(seqlen))
    table.add_row("params", ", ".join(f"{k}={v}" for k, v in mask.params.items()) or "-")
    table.add_row("features", ", ".join(info["features"]) or "none (full)")
    areas = info["area_per_head"]
    area_text = f"{info['area']:,}"
    if len(areas) > 1:
        area_text += f" over {len(areas)} heads (per head {min(areas):,}..{max(areas):,})"
    table.add_row("area", area_text)
    table.add_row("density", f"{info['density']:.4f}")
    if "documents" in info:
        d = info["documents"]
        table.add_row("documents", f"{d['count']} (min {d['min']}, median {d['median']:g}, max {d['max']})")
    b = info["blocks"]
    table.add_row(
        f"blocks {b['block']}x{b['block']}",
        f"{b['empty']} empty, {b['partial']} partial, {b['full']} full ({b['nonempty_fraction']:.1%} non-empty)",
    )
    if png:
        save_mask_png(mask, png)
        table.add_row("picture", png)
    Console().print(table)
