"""The performance model against public context-parallel results: ``lcbench bench predict``.

Every public configuration of :mod:`harness.bench.published` is predicted with ``lcbench predict``'s own
machinery (:class:`harness.prediction.predict.Predictor` on :class:`~harness.run.Run` objects, the built-in
cluster profiles and kernel rate tables) and printed next to the published figure:

* **ring-flash-attention** (``ring_flash``): 8 x H800 (profile ``h800``) and 8 x A100 (``dgx-a100``), fwd and
  fwd+bwd, ring / zigzag / striped with FlashAttention-2 per block, and the single-GPU "ideal" (the rate table
  alone). Published iterations/s become TFLOP/s per device under lcbench's convention (4 x exact causal area x
  Hq x d per forward, 3.5x for fwd+bwd). A row whose rate table cannot time it (A100 forward: only the
  published fwd+bwd figure exists) is shown as skipped with the reason. The error is predicted / published - 1;
  the summary is the median |error| over the CP rows, and whether the fastest strategy is the same.
* **TransformerEngine** (``te``): 9 shapes B x S of 524,288 tokens x CP 2/4/8 x P2P / all-gather / A2A on
  ``dgx-h100`` with the cuDNN table; the README gives only statistics, so the check compares the winner of
  each CP size (the share of (shape, CP) cells whose predicted winner is the published majority), and the
  CP2 -> CP8 speed-up of 1x512K vs 256x2K (best method at each size).
* **TE sliding window** (``swa``): window 1024, the first five shapes, all-gather vs A2A at CP 2/4/8: the
  A2A advantage ``t_all_gather / t_a2a - 1`` over the shapes vs the published range.

Predictions are analytic (no kernel runs): the whole check takes well under a minute on 2 cores.
"""

from __future__ import annotations

import json
import statistics
import time
from typing import Optional, Sequence

from rich.console import Console

from harness.bench import published as pub
from harness.bench.args import run_sections, sections
from harness.user_input import OneLineParser, integer, writable_file
from harness.prediction.cluster import Cluster, load_cluster
from harness.prediction.predict import Predictor
from harness.run import Run

SECTIONS = ("ring_flash", "te", "swa")
TIE = 0.03  # lcbench's tie: |ratio - 1| < 3%


# ----- ring-flash-attention ---------------------------------------------------------------------------------
def ideal_tflops(cluster: Cluster, row: pub.RingFlashRow) -> tuple[Optional[float], Optional[str]]:
    """The single-GPU kernel's TFLOP/s from the rate table alone (the README's "ideal" x 8)."""
    s = pub.RING_FLASH_SHAPE
    table = cluster.rates_for(pub.RING_FLASH_METHOD)
    why = table.supports(s["dtype"], row.direction)
    if why:
        return None, why
    work = row.seqlen * (row.seqlen + 1) // 2 * s["heads_q"] * s["batch"]
    ms = table.time_ms(work, s["dtype"], row.direction, table.kind_for(False, s["mask"]), s["head_dim"])
    return pub.causal_flops(row.seqlen, row.direction) / (ms / 1e3) / 1e12, None


def ring_flash_run(row: pub.RingFlashRow) -> Run:
    return Run.make(method=pub.RING_FLASH_METHOD, strategy=row.strategy, seqlen=row.seqlen,
                    direction=row.direction, world_size=row.world_size, **pub.RING_FLASH_SHAPE)


def predict_cp(cluster: Cluster, run: Run) -> tuple[Optional[dict], Optional[str]]:
    """The predicted record, or why the run cannot be predicted (the rate table's or the strategy's reason)."""
    why = cluster.rates_for(run.method).supports(run.dtype, run.direction)
    if why:
        return None, why
    record = Predictor(cluster).record(run)
    if record["status"] != "predicted":
        return None, f"{record['status']}: {record['reason']}"
    return record, None


def ring_flash_rows(gpus: Sequence[str], directions: Sequence[str]) -> list[dict]:
    rows = []
    clusters = {gpu: load_cluster(pub.RING_FLASH_CLUSTERS[gpu]) for gpu in gpus}
    for row in pub.RING_FLASH:
        if row.gpu not in gpus or row.direction not in directions:
            continue
        cluster = clusters[row.gpu]
        out = {"gpu": row.gpu, "cluster": cluster.name, "direction": row.direction, "published_name": row.name,
               "strategy": row.strategy, "world_size": row.world_size, "iter_per_s": row.iter_per_s,
               "published_tflops": row.tflops_per_device()}
        if row.strategy == pub.IDEAL:
            predicted, why = ideal_tflops(cluster, row)
        else:
            record, why = predict_cp(cluster, ring_flash_run(row))
            predicted = record["tflops"] if record else None
            if record:
                out.update(predicted_ms=record["time_ms_median"], exposed_comm_ms=record["exposed_comm_ms"])
        out.update(predicted_tflops=predicted, skipped=why,
                   error=None if predicted is None else predicted / out["published_tflops"] - 1)
        rows.append(out)
    return rows


def ring_flash_winners(rows: list[dict]) -> list[dict]:
    """Per (GPU, direction): the fastest strategy published and predicted (and the predicted margin)."""
    out = []
    for key in sorted({(r["gpu"], r["direction"]) for r in rows}):
        cp = [r for r in rows if (r["gpu"], r["direction"]) == key and r["world_size"] > 1]
        predicted = [r for r in cp if r["predicted_tflops"] is not None]
        if not cp or len(predicted) < len(cp):
            continue
        best_pub = max(cp, key=lambda r: r["published_tflops"])
        ranked = sorted(predicted, key=lambda r: -r["predicted_tflops"])
        margin = ranked[0]["predicted_tflops"] / ranked[1]["predicted_tflops"] - 1 if len(ranked) > 1 else None
        out.append({"gpu": key[0], "direction": key[1], "published": best_pub["strategy"],
                    "predicted": ranked[0]["strategy"], "margin": margin,
                    "same": ranked[0]["strategy"] == best_pub["strategy"],
                    "tie": margin is not None and margin < TIE})
    return out


# ----- TransformerEngine ------------------------------------------------------------------------------------
def te_run(method: str, comm: str, batch: int, seqlen: int, cp: int, mask: str = "causal",
           mask_params: Optional[dict] = None) -> Run:
    return Run.make(method=method, strategy=pub.TE_STRATEGIES[comm], mask=mask, mask_params=mask_params,
                    seqlen=seqlen, batch=batch, world_size=cp, **pub.TE_SHAPE)


def te_cells(shapes: Sequence[tuple[int, int]], cp_sizes: Sequence[int], comms: Sequence[str], method: str,
             mask: str = "causal", mask_params: Optional[dict] = None) -> list[dict]:
    cluster = load_cluster(pub.TE_CLUSTER)
    cells = []
    for batch, seqlen in shapes:
        for cp in cp_sizes:
            for comm in comms:
                record, why = predict_cp(cluster, te_run(method, comm, batch, seqlen, cp, mask, mask_params))
                cells.append({"shape": f"{batch}x{seqlen}", "batch": batch, "seqlen": seqlen, "cp": cp,
                              "comm": comm, "strategy": pub.TE_STRATEGIES[comm], "skipped": why,
                              "predicted_ms": record["time_ms_median"] if record else None,
                              "exposed_comm_ms": record["exposed_comm_ms"] if record else None})
    return cells


def _best(cells: list[dict], shape: str, cp: int) -> Optional[dict]:
    ok = [c for c in cells if c["shape"] == shape and c["cp"] == cp and c["predicted_ms"] is not None]
    return min(ok, key=lambda c: c["predicted_ms"]) if ok else None


def _margin(cells: list[dict], shape: str, cp: int) -> Optional[float]:
    """How much slower the second-fastest method is than the fastest (None: fewer than two)."""
    t = sorted(c["predicted_ms"] for c in cells if c["shape"] == shape and c["cp"] == cp and c["predicted_ms"])
    return t[1] / t[0] - 1 if len(t) > 1 else None


def te_winners(cells: list[dict]) -> dict:
    """Predicted winner per (shape, CP); counts per CP next to the published ones; the share of cells whose
    predicted winner is the published majority winner of that CP size, and how many are predicted ties."""
    by_cp, same, total, ties = {}, 0, 0, 0
    for cp in sorted({c["cp"] for c in cells}):
        majority = max(pub.TE_WINNERS[cp], key=pub.TE_WINNERS[cp].get)
        counts = {comm: 0 for comm in pub.TE_STRATEGIES}
        for shape in dict.fromkeys(c["shape"] for c in cells):
            best = _best(cells, shape, cp)
            if best is None:
                continue
            counts[best["comm"]] += 1
            total += 1
            same += best["comm"] == majority
            margin = _margin(cells, shape, cp)
            ties += margin is not None and margin < TIE
        by_cp[cp] = {"predicted": counts, "published": pub.TE_WINNERS[cp], "published_majority": majority}
    return {"by_cp": by_cp, "same_winner_share": same / total if total else None, "cells": total,
            "same": same, "ties": ties}


def te_speedups(cells: list[dict]) -> list[dict]:
    """CP2 -> CP8 speed-up of the best method at each size, for the shapes the README quotes."""
    out = []
    for (batch, seqlen), (lo, hi) in pub.TE_SPEEDUP.items():
        shape = f"{batch}x{seqlen}"
        two, eight = _best(cells, shape, 2), _best(cells, shape, 8)
        if two and eight:
            out.append({"shape": shape, "predicted": two["predicted_ms"] / eight["predicted_ms"],
                        "published": [lo, hi], "best_cp2": two["comm"], "best_cp8": eight["comm"]})
    return out


def swa_advantage(cells: list[dict]) -> list[dict]:
    """Per CP size: t_all_gather / t_a2a - 1 over the SWA shapes (min, max) vs the published range."""
    out = []
    for cp in sorted({c["cp"] for c in cells}):
        ratios = []
        for shape in dict.fromkeys(c["shape"] for c in cells):
            t = {c["comm"]: c["predicted_ms"] for c in cells if c["shape"] == shape and c["cp"] == cp}
            if t.get("all_gather") and t.get("a2a"):
                ratios.append(t["all_gather"] / t["a2a"] - 1)
        if ratios:
            lo, hi = pub.TE_SWA_ADVANTAGE[cp]
            out.append({"cp": cp, "predicted": [min(ratios), max(ratios)], "published": [lo, hi],
                        "same_sign": (min(ratios) > 0) == (lo > 0) and (max(ratios) > 0) == (hi > 0)})
    return out


# ----- printing ----------------------------------------------------------------------------------------------
def _num(x: Optional[float], fmt: str) -> str:
    return "-" if x is None else format(x, fmt)


def format_ring_flash(rows: list[dict], winners: list[dict]) -> str:
    head = (f"{'GPU':<5} {'dir':<8} {'README':<12} {'lcbench':<13} {'W':>2} {'iter/s':>7} {'published':>10} "
            f"{'predicted':>10} {'error':>7}  TFLOP/s per device; note")
    lines = [head, "-" * len(head)]
    for r in rows:
        note = f"skipped: {r['skipped']}" if r["skipped"] else (
            f"exposed comm {r['exposed_comm_ms']:.2f} of {r['predicted_ms']:.2f} ms" if "predicted_ms" in r else
            "kernel alone (rate table)")
        lines.append(f"{r['gpu']:<5} {r['direction']:<8} {r['published_name']:<12} {r['strategy']:<13} "
                     f"{r['world_size']:>2} {r['iter_per_s']:>7g} {r['published_tflops']:>10.1f} "
                     f"{_num(r['predicted_tflops'], '10.1f'):>10} {_num(r['error'], '+7.1%'):>7}  {note}")
    for w in winners:
        tie = " (a tie: < 3%)" if w["margin"] is not None and w["margin"] < TIE else ""
        lines.append(f"fastest {w['gpu']} {w['direction']}: published {w['published']}, predicted {w['predicted']} "
                     f"by {_num(w['margin'], '.1%')}{tie}")
    return "\n".join(lines)


def format_te(winners: dict, speedups: list[dict], cells: list[dict]) -> str:
    shapes = list(dict.fromkeys(c["shape"] for c in cells))
    cps = sorted({c["cp"] for c in cells})
    head = f"{'shape':<10} " + " ".join(f"{'CP' + str(cp) + ' p2p/ag/a2a ms':>28} {'win':>10}" for cp in cps)
    lines = [head, "-" * len(head)]
    for shape in shapes:
        parts = []
        for cp in cps:
            t = {c["comm"]: c["predicted_ms"] for c in cells if c["shape"] == shape and c["cp"] == cp}
            best = _best(cells, shape, cp)
            parts.append(f"{'/'.join(_num(t.get(k), '.1f') for k in pub.TE_STRATEGIES):>28} "
                         f"{best['comm'] if best else '-':>10}")
        lines.append(f"{shape:<10} " + " ".join(parts))
    for cp, w in winners["by_cp"].items():
        lines.append(f"winners CP{cp}: predicted {w['predicted']} of {sum(w['predicted'].values())} shapes; "
                     f"published {w['published']} of {pub.TE_TUPLES} tuples (majority {w['published_majority']})")
    lines.append(f"same winner as the published majority: {_num(winners['same_winner_share'], '.0%')} of "
                 f"{winners['cells']} (shape, CP) cells; {winners['ties']} cells are predicted ties (< 3%; the "
                 "README: 39 of 108 selections lead by < 3%)")
    for s in speedups:
        lines.append(f"CP2 -> CP8 speed-up {s['shape']}: predicted {s['predicted']:.2f}x ({s['best_cp2']} -> "
                     f"{s['best_cp8']}), published {s['published'][0]:.2f}-{s['published'][1]:.2f}x")
    return "\n".join(lines)


def format_swa(adv: list[dict]) -> str:
    lines = ["A2A advantage t_all_gather / t_a2a - 1 (sliding window 1024, first five shapes):"]
    for a in adv:
        lines.append(f"  CP{a['cp']}: predicted {a['predicted'][0]:+.1%} .. {a['predicted'][1]:+.1%}, "
                     f"published (H100/FA3) {a['published'][0]:+.1%} .. {a['published'][1]:+.1%}"
                     f"{'' if a['same_sign'] else '  (different sign)'}")
    return "\n".join(lines)


def median_abs_error(rows: list[dict]) -> Optional[float]:
    errors = [abs(r["error"]) for r in rows if r["error"] is not None and r["world_size"] > 1]
    return statistics.median(errors) if errors else None


# ----- the bench ---------------------------------------------------------------------------------------------
def te_shape(text: str) -> tuple[int, int]:
    import argparse

    known = {f"{b}x{s}": (b, s) for b, s in pub.TE_SHAPES}
    if text not in known:
        raise argparse.ArgumentTypeError(f"{text!r}: expected one of {', '.join(known)}")
    return known[text]


def main(argv: Optional[Sequence[str]] = None, prog: str = "lcbench bench predict") -> int:
    p = OneLineParser(prog=prog, description=__doc__.split("\n\n")[0])
    p.add_argument("--sections", type=sections(SECTIONS), default=list(SECTIONS),
                   help=f"comma-separated, of {', '.join(SECTIONS)} (default: all)")
    p.add_argument("--gpus", type=sections(tuple(pub.RING_FLASH_CLUSTERS)), default=list(pub.RING_FLASH_CLUSTERS),
                   help="ring_flash GPUs (default: H800,A100)")
    p.add_argument("--directions", type=sections(("fwd", "fwd+bwd")), default=["fwd", "fwd+bwd"],
                   help="ring_flash directions (default: fwd,fwd+bwd)")
    p.add_argument("--shapes", type=lambda t: [te_shape(x.strip()) for x in t.split(",") if x.strip()],
                   default=None, help="TE shapes BxS, comma-separated (default: all nine; swa: the first five)")
    p.add_argument("--cp-sizes", type=lambda t: sorted({integer(2)(x) for x in t.split(",")}), default=None,
                   help="TE CP sizes (default: 2,4,8)")
    p.add_argument("--json", help="also write every row and summary to this file")
    a = p.parse_args(argv)
    if a.json:
        writable_file(a.json, "--json")
    bad = sorted(set(a.cp_sizes or ()) - set(pub.TE_CP_SIZES))
    if bad:
        p.error(f"argument --cp-sizes: {bad[0]} is not a CP size of the TE study (2, 4, 8)")
    cps = a.cp_sizes or list(pub.TE_CP_SIZES)
    started, out = time.perf_counter(), {}

    def ring_flash() -> None:
        rows = ring_flash_rows(a.gpus, a.directions)
        winners = ring_flash_winners(rows)
        same = [w["same"] for w in winners]
        out["ring_flash"] = {"source": pub.RING_FLASH_SOURCE, "rows": rows, "winners": winners,
                             "median_abs_error": median_abs_error(rows),
                             "same_winner_share": sum(same) / len(same) if same else None}
        print(f"ring-flash-attention ({pub.RING_FLASH_SOURCE}): causal, 8192 tokens per GPU, 32q/8kv d128 bf16, "
              f"{pub.RING_FLASH_METHOD} per block; TFLOP/s per device = 4 x S(S+1)/2 x Hq x d (x3.5 fwd+bwd) x "
              "iter/s / W")
        print(format_ring_flash(rows, winners))
        ties = sum(w["tie"] for w in winners)
        print(f"median |error| (CP rows): {_num(out['ring_flash']['median_abs_error'], '.1%')}; same fastest "
              f"strategy: {_num(out['ring_flash']['same_winner_share'], '.0%')} of {len(same)} ({ties} of them "
              "predicted ties < 3%)\n")

    def te() -> None:
        shapes = a.shapes or list(pub.TE_SHAPES)
        cells = te_cells(shapes, cps, list(pub.TE_STRATEGIES), pub.TE_METHOD)
        winners, speedups = te_winners(cells), te_speedups(cells)
        out["te"] = {"source": pub.TE_SOURCE, "cluster": pub.TE_CLUSTER, "method": pub.TE_METHOD, "cells": cells,
                     "winners": winners, "speedups": speedups}
        print(f"TransformerEngine CP study ({pub.TE_SOURCE}): fwd+bwd causal, B x S = 524288, 32q/8kv d128 bf16; "
              f"predicted on {pub.TE_CLUSTER} with {pub.TE_METHOD}; p2p = ring_zigzag per sequence, a2a = ulysses")
        print(format_te(winners, speedups, cells) + "\n")

    def swa() -> None:
        shapes = [s for s in (a.shapes or pub.TE_SWA_SHAPES) if s in pub.TE_SWA_SHAPES]
        cells = te_cells(shapes, cps, ["all_gather", "a2a"], pub.TE_SWA_METHOD, "sliding_window_causal",
                         {"window": pub.TE_SWA_WINDOW})
        adv = swa_advantage(cells)
        out["swa"] = {"source": pub.TE_SOURCE, "method": pub.TE_SWA_METHOD, "cells": cells, "advantage": adv}
        print(f"TE sliding window 1024 on {pub.TE_CLUSTER} with {pub.TE_SWA_METHOD}:")
        print(format_swa(adv) + "\n")

    jobs = {"ring_flash": ring_flash, "te": te, "swa": swa}
    run_sections(jobs, [name for name in jobs if name in a.sections], Console(), label=prog)
    same = [w["same"] for w in out.get("ring_flash", {}).get("winners", [])]
    te = out.get("te", {}).get("winners", {})
    n = len(same) + te.get("cells", 0)
    if n:
        out["same_winner_share"] = (sum(same) + te.get("same", 0)) / n
        print(f"same winner, all {n} configurations (ring-flash groups + TE cells): {out['same_winner_share']:.0%}")
    print(f"total {time.perf_counter() - started:.0f} s (predicted, not measured)")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(out, f, indent=1, default=str)
    return 0
