"""The roofline view's two numbers per run: arithmetic intensity (FLOPs per byte moved) and the machine's
measured GEMM peak it is drawn against.

Bytes moved are the attention call's compulsory traffic at the record's dtype, each tensor read or written
once: forward Q, K, V read and O written; backward Q, K, V, O, dO read and dQ, dK, dV written; fwd+bwd both;
a decode step its query rows and the whole K/V cache. A kernel moves at least that much, so the intensity is
an upper bound (the point lies at or left of where the kernel really is). Only attention calls
(methods and strategies, which carry their head shape) have it; a workload's phases do not.
"""

from __future__ import annotations

from typing import Optional

from harness.results.schema import number

BYTES_CONVENTION = ("intensity = FLOPs / compulsory bytes (fwd: Q,K,V read + O written; bwd: Q,K,V,O,dO read + "
                    "dQ,dK,dV written; decode: its rows + the K/V cache), an upper bound")
ELEMENT_BYTES = {"float64": 8, "float32": 4, "float16": 2, "bfloat16": 2, "float8_e4m3fn": 1, "float8_e5m2": 1}


def bytes_moved(record: dict) -> Optional[float]:
    """The compulsory bytes of the record's attention call (see the module docstring); None when the record
    has no head shape or a dtype of unknown size."""
    size = ELEMENT_BYTES.get(str(record.get("dtype")))
    shape = [number(record.get(k)) for k in ("batch", "seqlen", "heads_q", "heads_kv", "head_dim")]
    if size is None or any(v is None or v <= 0 for v in shape):
        return None
    batch, seqlen, heads_q, heads_kv, head_dim = shape
    direction = record.get("direction")
    rows = (number(record.get("decode_tokens")) or 1) if direction == "decode" else seqlen
    q = batch * rows * heads_q * head_dim  # elements of Q (and of O, dO, dQ)
    kv = batch * seqlen * heads_kv * head_dim  # elements of K (and of V, dK, dV)
    forward = 2 * q + 2 * kv
    backward = 4 * q + 4 * kv  # Q, O, dO read, dQ written; K, V read, dK, dV written
    elements = {"fwd": forward, "decode": forward, "bwd": backward, "fwd+bwd": forward + backward}.get(direction)
    return None if elements is None else elements * size


def intensity(record: dict) -> Optional[float]:
    """FLOPs per compulsory byte of the record's call (None without FLOPs or bytes)."""
    flops, moved = number(record.get("flops")), bytes_moved(record)
    return flops / moved if flops and moved else None


def peaks(records: list[dict], sessions: dict[str, dict]) -> dict[str, float]:
    """``{dtype: measured GEMM peak TFLOP/s}`` of the records' machine: the peak each record was measured
    against (``peak_tflops``), else the one its session calibrated (``{device: {dtype: TFLOP/s}}``). When
    records disagree (several sessions or machines) the highest is the roof."""
    out: dict[str, float] = {}
    for r in records:
        dtype = str(r.get("dtype"))
        peak = number(r.get("peak_tflops"))
        if peak is None:
            by_device = (sessions.get(r.get("session") or "", {}).get("peak_tflops") or {})
            device = str(r.get("device") or "cpu").split(":")[0]
            by_dtype = by_device.get(device) if isinstance(by_device, dict) else None
            peak = number((by_dtype or {}).get(dtype)) if isinstance(by_dtype, dict) else None
        if peak and peak > 0:
            out[dtype] = max(out.get(dtype, 0.0), peak)
    return out
