"""The peer strategies (other libraries' context parallelism) pass the same gate as ours, or say why not.

CPU peers (deepspeed_ulysses, yunchang_ulysses, torch_ring, torch_ring_alltoall) run through the real
launcher and rank executor at world sizes 2 and 4, forward and backward separately, on the masks they
claim: output and dq/dk/dv against the float64 reference, and the bytes they hand to torch.distributed
(counted in their backward too) equal to their analytic model. GPU-only peers must report
``unavailable`` with a reason here (package missing / needs CUDA) — through the executor, never a crash.
(tests/test_context_parallel.py also sweeps every registered strategy, peers included, over its masks.)
"""

from __future__ import annotations

import json

import pytest
import torch

from harness.catalog import strategies
from harness.interfaces import CPProblem
from harness.cluster.launch import run_local_many
from context_parallel.layouts import zigzag
from harness.execution.inputs import mask_for
from harness.masks import MASKS
from harness.interfaces import torch_dtype
from harness.run import Run, Timing

pytestmark = pytest.mark.integration  # real Ray / process groups / the CLI end to end

SEQ, HQ, HKV, DIM = 256, 8, 4, 16  # kv heads divisible by 4: the Ulysses peers split heads evenly
FAST = Timing(warmup=1, min_samples=1, min_run_time=0.0, max_samples=1)
TILES = {"block_q": 32, "block_k": 32}
TIMEOUT_S = 120.0

CPU_PEERS = {
    # peer -> masks it claims (Ulysses peers: any mask, our local kernel; torch's ring: full and causal)
    "deepspeed_ulysses": {"causal": {}, "causal_document": {}, "s2": {"block": 16, "local_blocks": 2, "vert_stride": 4}},
    "yunchang_ulysses": {"causal": {}, "sliding_window_causal": {"window": 40}},
    "torch_ring": {"causal": {}, "full": {}},
    "torch_ring_alltoall": {"causal": {}, "full": {}},
}
GPU_PEERS = [
    "yunchang_ring", "yunchang_usp", "te_cp_p2p", "te_cp_a2a", "te_cp_all_gather", "te_cp_a2a_p2p",
    "ring_flash_attn", "ring_flash_attn_zigzag", "ring_flash_attn_llama3", "magi_attention",
]


def make_run(strategy: str, mask: str, params: dict, world_size: int, direction: str,
             heads: tuple[int, int] = (HQ, HKV)) -> Run:
    return Run.make(
        method="blocksparse", strategy=strategy, mask=mask, mask_params=params, seqlen=SEQ, heads_q=heads[0],
        heads_kv=heads[1], head_dim=DIM, direction=direction, world_size=world_size, options=TILES, timing=FAST,
    )


def cases(world_size: int) -> list[Run]:
    return [
        make_run(peer, mask, params, world_size, direction)
        for peer, masks in CPU_PEERS.items() for mask, params in masks.items() if mask in MASKS
        for direction in ("fwd", "bwd")
    ]


@pytest.fixture(scope="module", autouse=True)
def deepspeed_op_built():
    """DeepSpeed's comm init JIT-compiles a C++ op once (cached); build it here, not in the ranks' prepare."""
    from context_parallel.peer_deepspeed_ulysses import prebuild

    if strategies()["deepspeed_ulysses"].unavailable_reason() is None:
        prebuild()


def check_records(records: list[dict]) -> None:
    for rec in records:
        label = f"{rec['strategy']} {rec['mask']} ws={rec['world_size']} {rec['direction']}"
        assert rec["status"] == "ok", f"{label}: {rec['status']}: {rec['reason']}\n{rec.get('traceback', '')}"
        errors = json.loads(rec["gate_errors"])
        assert set(errors) == ({"out"} if rec["direction"] == "fwd" else {"out", "dq", "dk", "dv"}), label
        measured, model = json.loads(rec["comm_bytes"]), json.loads(rec["comm_bytes_model"])
        assert measured == model, f"{label}: measured bytes {measured} != model {model}"
        assert all(b > 0 for b in measured), f"{label}: no communication counted"


@pytest.mark.parametrize("world_size", [2, 4])
def test_cpu_peers(world_size):
    runs = cases(world_size)
    records = run_local_many(runs, timeout_s=TIMEOUT_S, measure_memory=False)
    assert len(records) == len(runs)
    check_records(records)


@pytest.mark.slow
def test_cpu_peers_bfloat16_longer():
    """bfloat16 at 4x the length, GQA 8:4, world size 4, causal fwd and bwd (tolerance of bfloat16)."""
    runs = [
        Run.make(**{**make_run(peer, "causal", {}, 4, d).to_dict(), "seqlen": 4 * SEQ, "dtype": "bfloat16"})
        for peer in CPU_PEERS for d in ("fwd", "bwd")
    ]
    records = run_local_many(runs, timeout_s=TIMEOUT_S, measure_memory=False)
    assert len(records) == len(runs)
    check_records(records)


@pytest.mark.parametrize("peer", sorted(CPU_PEERS))
def test_cpu_peers_available(peer):
    assert strategies()[peer].unavailable_reason() is None


@pytest.mark.parametrize("peer", GPU_PEERS)
def test_gpu_peers_report_why(peer):
    why = strategies()[peer].unavailable_reason()
    if torch.cuda.is_available() and why is None:
        pytest.skip("CUDA and the package are present: the peer is usable")
    assert why and ("not installed" in why or "CUDA" in why), why


def test_unavailable_and_unsupported_are_records_not_crashes():
    runs = [make_run(p, "causal", {}, 2, "fwd") for p in ("te_cp_p2p", "magi_attention", "yunchang_ring")]
    runs += [make_run("torch_ring", "causal_document", {}, 2, "bwd")]  # torch's ring has no document mask
    runs += [make_run("deepspeed_ulysses", "causal", {}, 2, "bwd", heads=(8, 1))]  # 1 kv head over 2 ranks
    records = run_local_many(runs, timeout_s=TIMEOUT_S, measure_memory=False)
    status = {(r["strategy"], r["mask"], r["heads_kv"]): (r["status"], r["reason"]) for r in records}
    for peer in ("te_cp_p2p", "magi_attention", "yunchang_ring"):
        assert status[(peer, "causal", HKV)][0] in ("unavailable", "ok"), status[(peer, "causal", HKV)]
    assert status[("torch_ring", "causal_document", HKV)][0] == "unsupported"
    assert status[("deepspeed_ulysses", "causal", 1)][0] == "unsupported"
    assert "not divisible" in status[("deepspeed_ulysses", "causal", 1)][1]


@pytest.mark.parametrize("world_size", [2, 4])
def test_torch_ring_layout_is_torch_head_tail(world_size):
    """torch_ring's shards come from torch's own load balancer, which is our zigzag (head-tail) layout."""
    run = make_run("torch_ring", "causal", {}, world_size, "fwd")
    problem = CPProblem(run=run, mask=mask_for(run), dtype=torch_dtype(run.dtype), device=torch.device("cpu"))
    ours = zigzag(problem)
    theirs = strategies()["torch_ring"].layout(problem)
    assert all(torch.equal(a, b) for a, b in zip(ours, theirs))
