"""Looking at a mask: a plain-data summary, a picture, its receptive field through stacked layers
(:mod:`harness.masks.reach`), and the ``lcbench mask`` command behind the CLI.

Everything is computed from the row intervals, so it works at benchmark lengths: the picture of a long mask
is its block-density map (the fraction of allowed pairs in each pixel's block), never an S×S matrix.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

import torch

from harness.errors import UserError
from harness.masks.core import EMPTY, FULL, PARTIAL, Mask
from harness.masks.reach import ReceptiveField, pattern_block, receptive_field
from harness.masks.registry import get_mask_pattern

if TYPE_CHECKING:
    from rich.table import Table

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
    _save(fig, path, "mask --png")


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


def reach_table(field: ReceptiveField) -> "Table":
    """The receptive field of the last query block per depth: layers -> blocks reached, coverage, holes."""
    from rich.table import Table

    full = (f"complete after {field.layers_to_full} layers" if field.layers_to_full is not None
            else f"never complete: {field.holes_limit} holes remain at any depth")
    table = Table(title=f"receptive field of the last block: {field.blocks} blocks of {field.block}",
                  caption=full, title_justify="left", caption_justify="left", header_style="bold")
    for col in ("layers", "blocks reached", "coverage", "holes"):
        table.add_column(col, justify="right")
    for row in field.rows():
        table.add_row(str(row["layers"]), f"{row['reached']}/{field.blocks}", f"{row['coverage']:.4f}",
                      str(row["holes"]))
    return table


def save_reach_png(field: ReceptiveField, path: str) -> None:
    """Draw coverage vs layers (the last block's receptive field) to ``path``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = field.rows()
    fig, ax = plt.subplots(figsize=(5.5, 4.0))
    ax.plot([r["layers"] for r in rows], [r["coverage"] for r in rows], marker="o", label=field.mask)
    ax.set_xlabel("layers")
    ax.set_ylabel(f"coverage (fraction of {field.blocks} blocks)")
    ax.set_ylim(0, 1.05)
    ax.grid(alpha=0.3)
    ax.legend()
    ax.set_title(f"{field.mask}  S={field.seqlen}, block {field.block}", fontsize=10)
    _save(fig, path, "mask --png")


def _save(fig, path: str, what: str) -> None:
    """The figure as a PNG at ``path`` (its directory created): rendered in memory, then written by
    :func:`harness.user_input.write_output`, so a failed write (a full device) is an error, not a silent success."""
    import io

    import matplotlib.pyplot as plt

    from harness.user_input import write_output

    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    plt.close(fig)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    write_output(path, buffer.getvalue(), what)


def mask_command(name: str, seqlen: int, params: dict, png: Optional[str], num_heads: int, block: int,
                 layers: Optional[int] = None) -> None:
    """``lcbench mask NAME --seqlen N [--param k=v ...] [--layers L] [--png FILE]``: summary table, optional
    picture. With ``layers``, also the receptive field through 1..L layers (on the pattern's own block, or
    ``block`` for a pattern without one), and the picture is coverage vs layers instead of the mask."""
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
    field = receptive_field(mask, pattern_block(mask, block), layers) if layers is not None else None
    if png is not None:
        if field is not None:
            save_reach_png(field, png)
        else:
            save_mask_png(mask, png)
        table.add_row("picture", png)
    console = Console()
    console.print(table)
    if field is not None:
        console.print(reach_table(field))
