"""Synthetic results of every kind, shaped like the executor's records, for the plot and report tests: methods
on two masks and three directions, a strategy at two world sizes, workloads whose phases carry different
metrics (one with an analytic twin, one with a parameter to spread with ``--by``), predictions, and failed /
invalid / not-run records; and a store holding them with the session that measured them."""

from __future__ import annotations

from pathlib import Path

from harness.results.figures import Provenance
from harness.results.store import ResultStore

SEQLENS = (256, 512, 1024, 2048)
MASKS = {"causal": {}, "sliding_window_causal": {"window": 128}}


def _kernel(method: str, mask: str, seqlen: int, direction: str, time_ms: float, **extra) -> dict:
    flops = 4.0 * seqlen * seqlen / 2 * 4 * 32 * (2.5 if direction == "bwd" else 1.0)
    record = {
        "key": f"{method}-{extra.get('strategy')}-{mask}-{seqlen}-{direction}-{extra.get('world_size', 1)}",
        "kind": "strategy" if extra.get("strategy") else "method", "method": method, "strategy": None,
        "mask": mask, "mask_params": MASKS[mask], "seqlen": seqlen, "batch": 1, "heads_q": 4, "heads_kv": 2,
        "head_dim": 32, "dtype": "float32", "direction": direction, "world_size": 1, "device": "cpu",
        "status": "ok", "reason": None, "time_ms_median": time_ms, "time_ms_p20": 0.9 * time_ms,
        "time_ms_p80": 1.2 * time_ms, "flops": flops, "tflops": flops / (time_ms * 1e9), "peak_tflops": None,
        "peak_mem_bytes": seqlen * 4096, "session": "s1", "suite": "kernels",
    }
    record.update(extra)
    return record


def _workload(name: str, phase: str, seqlen: int, method: str, mask: str, metrics: dict, **extra) -> dict:
    record = _kernel(method, mask, seqlen, phase, 2.0 + seqlen / 200, kind="workload", workload=name,
                     params={"flavor": "tiny", "layers": 2, **extra.pop("params", {})},
                     heads_q=None, heads_kv=None, head_dim=None, suite="attention_layer")
    record["key"] = f"{name}-{phase}-{seqlen}-{method}-{mask}-{record['params']}"
    record["metrics"] = metrics
    record["metric_units"] = {k: ("fraction" if "mass" in k else "tokens/s" if k.endswith("_per_s") else "ms")
                              for k in metrics}
    record["metric_better"] = {k: ("higher" if k.endswith("_per_s") or k.startswith("mass") else "lower")
                               for k in metrics}
    record.update(extra)
    return record


def report_records() -> list[dict]:
    out = []
    for i, method in enumerate(("sdpa", "blocksparse", "flex_cpu_with_a_long_name")):
        for mask in MASKS:
            for direction in ("fwd", "bwd", "decode"):
                for s in SEQLENS:
                    time_ms = (1 + i) * s / 300 + (0.5 if mask == "causal" else 0)
                    out.append(_kernel(method, mask, s, direction, time_ms))
    for ws in (2, 4):
        for s in SEQLENS:
            out.append(_kernel("sdpa", "causal", s, "fwd", s / 250 / ws, strategy="ring_zigzag", world_size=ws))
    for method in ("sdpa", "blocksparse"):
        for mask in MASKS:
            for s in SEQLENS:
                out.append(_workload("attention_layer", "prefill", s, method, mask,
                                     {"tokens_per_s": 1e5 / s, "ms_per_token": s / 1e3}))
                out.append(_workload("attention_layer", "decode", s, method, mask, {"ms_per_token": 0.1 + s / 1e4}))
                out.append(_workload("attention_layer", "train_step", s, method, mask, {"step_ms": s / 10}))
    for pattern, times in (("LLLS", (2.0, 3.0, 4.0, 5.0)), ("SSSS", (1.0, 2.5, 5.0, 9.0))):
        for s, t in zip(SEQLENS, times):
            out.append(_workload("hybrid_lm", "decode", s, "sdpa", "causal", {"ms_per_token": t},
                                 params={"pattern": pattern}))
    for s in SEQLENS:
        out.append(_workload("score_dilution", "mass", s, "sdpa", "causal",
                             {"mass": 0.9 - s / 1e4, "mass_analytic": 0.91 - s / 1e4}))
        out.append(_kernel("sdpa", "causal", s, "fwd", s / 400, strategy="ring_zigzag", world_size=8,
                           status="predicted", cluster="dgx-h100", model_version="1", key=f"pred-{s}"))
    out.append(_kernel("blocksparse", "causal", 4096, "fwd", 9.0, status="invalid", reason="failed the gate: err 0.3"))
    out.append(_kernel("flex_cpu_with_a_long_name", "causal", 4096, "fwd", 9.0, status="oom", reason="out of memory"))
    out.append(_kernel("flash_attn2", "causal", 256, "fwd", 1.0, status="unavailable", reason="needs CUDA"))
    return out


PROVENANCE = Provenance(files=("results/kernels.db",), sessions={
    "s1": {"suite": "kernels", "hostname": "box", "cpu": "x86 (2 cores)", "gpu": None, "commit": "abc1234",
           "peak_tflops": {"cpu": {"float32": 0.05}}}})



def store_of(path: Path, recs: list[dict] | None = None) -> Path:
    """A results file holding ``recs`` (default: :func:`report_records`) under the session of PROVENANCE."""
    store = ResultStore(path)
    sid = store.start_session("kernels", {k: v for k, v in PROVENANCE.sessions["s1"].items() if k != "suite"})
    for r in report_records() if recs is None else recs:
        store.put({k: v for k, v in r.items() if k != "session"}, sid, r.get("suite") or "kernels")
    store.close()
    return path
