"""Plots of a result store: TFLOP/s and time vs sequence length, one line per method, one panel per
(mask, direction). Only validated (``ok``) runs are plotted."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from harness.results.report import FLOP_CONVENTION, mask_label, shape_label, who  # noqa: E402


def plot_records(records: list[dict], out_dir: str | Path) -> list[Path]:
    """Write ``tflops.png`` and ``time.png`` into ``out_dir``; returns the paths written."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    ok = [r for r in records if r["status"] == "ok"]
    if not ok:
        return []
    panels: dict[tuple, dict[str, list[dict]]] = defaultdict(lambda: defaultdict(list))
    for r in ok:
        panel = (mask_label(r), r["direction"])
        line = f"{who(r)} {shape_label(r)} {r['dtype']}" + (f" ws{r['world_size']}" if r["world_size"] > 1 else "")
        panels[panel][line].append(r)
    written = []
    for metric, ylabel, fname in (
        ("tflops", "TFLOP/s per device", "tflops.png"),
        ("time_ms_median", "time (ms, median; bars p20-p80)", "time.png"),
    ):
        keys = sorted(panels)
        cols = min(3, len(keys))
        rows = (len(keys) + cols - 1) // cols
        fig, axes = plt.subplots(rows, cols, figsize=(5.5 * cols, 4 * rows), squeeze=False)
        for ax, key in zip(axes.flat, keys):
            for line, recs in sorted(panels[key].items()):
                recs = sorted(recs, key=lambda r: r["seqlen"])
                xs = [r["seqlen"] for r in recs]
                ys = [r[metric] for r in recs]
                if metric == "time_ms_median":
                    err = [[y - r["time_ms_p20"] for y, r in zip(ys, recs)], [r["time_ms_p80"] - y for y, r in zip(ys, recs)]]
                    ax.errorbar(xs, ys, yerr=err, marker="o", capsize=3, label=line)
                    ax.set_yscale("log")
                else:
                    ax.plot(xs, ys, marker="o", label=line)
            ax.set_xscale("log", base=2)
            ax.set_title(f"{key[0]} · {key[1]}", fontsize=9)
            ax.set_xlabel("sequence length")
            ax.set_ylabel(ylabel)
            ax.grid(True, alpha=0.3)
            ax.legend(fontsize=7)
        for ax in list(axes.flat)[len(keys):]:
            ax.axis("off")
        fig.suptitle(FLOP_CONVENTION, fontsize=8)
        fig.tight_layout()
        path = out_dir / fname
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)
    return written
