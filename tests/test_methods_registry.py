"""The method registry: every method is well formed and honest about its availability; ``flex`` really runs.

On this CPU-only machine every GPU-only method must say why it is unavailable (missing package or CUDA)
without crashing, and ``flex`` must pass the correctness gate on the masks it claims. The adapters' CPU-side
plumbing (BlockMask from the block map, FFA range plans, closure relocation, varlen layouts) is checked
directly.
"""

from __future__ import annotations

import dataclasses
from typing import Optional

import pytest
import torch
from torch.nn.attention.flex_attention import create_block_mask, flex_attention

from harness.execution.gate import check_method
from harness.masks import build_mask
from harness.masks.core import Mask, RowIntervals, Varlen
from harness.masks.registry import MASKS
from harness.catalog import methods
from harness.interfaces import Method, Problem
from methods import flex, magi_ffa, natten
from methods._common import packed_cu_seqlens

ALL = methods()
S, B, HQ, HKV, D = 256, 1, 4, 2, 32
ON_GPU_MACHINE = torch.cuda.is_available()


# ----- every method ---------------------------------------------------------------------------------

def test_names_are_unique() -> None:
    from methods import BUILTIN

    names = [m.name for m in BUILTIN]
    assert len(names) == len(set(names))


@pytest.mark.parametrize("name", sorted(ALL))
def test_method_is_well_formed(name: str) -> None:
    method = ALL[name]
    assert method.name == name
    assert method.summary.strip()
    assert method.devices and method.dtypes
    reason = method.probe()  # called directly: must not raise
    assert reason is None or (isinstance(reason, str) and reason)
    assert method.unavailable_reason() == reason


GPU_ONLY = sorted(n for n, m in ALL.items() if m.devices == frozenset({"cuda"}))


def test_the_gpu_methods_are_registered() -> None:
    expected = {
        "flash_attn2", "flash_attn3", "cudnn_sdpa", "flex_cuda", "xformers", "flashinfer", "magi_ffa", "natten",
    }
    assert expected <= set(GPU_ONLY)


@pytest.mark.skipif(ON_GPU_MACHINE, reason="on a GPU machine these methods may be available")
@pytest.mark.parametrize("name", GPU_ONLY)
def test_gpu_only_method_is_unavailable_here_with_a_reason(name: str) -> None:
    reason = ALL[name].unavailable_reason()
    assert reason is not None
    assert "CUDA" in reason or "not installed" in reason, reason


def test_a_raising_probe_is_reported_not_raised() -> None:
    def broken_probe() -> Optional[str]:
        raise RuntimeError("driver exploded")

    method = Method(name="broken", summary="throwaway", build=lambda problem: None, probe=broken_probe)
    assert method.unavailable_reason() == "probe failed: RuntimeError: driver exploded"


# ----- flex on CPU: the correctness gate --------------------------------------------------------------

def per_head_window_mask(seqlen: int, heads: int) -> Mask:
    """Causal sliding window whose width differs per head (per-head, arbitrary); mask_mod closes over a tensor."""
    windows = 16 * (torch.arange(heads) + 1)  # [H]
    q = torch.arange(seqlen)
    lo = (q[None, :] - windows[:, None]).clamp_min(0)[..., None]  # [H, S, 1]
    hi = (q + 1).expand(heads, seqlen)[..., None]

    def definition(b, h, q_idx, k_idx):
        return (k_idx <= q_idx) & (q_idx - k_idx <= windows[h])

    return Mask("test_per_head_window", seqlen, RowIntervals.build(lo, hi), definition)


def dilated_causal_mask(seqlen: int) -> Mask:
    """Causal keys with the query's residue mod 4 (shared, arbitrary, a dilated interval per row)."""
    q = torch.arange(seqlen)

    def definition(b, h, q_idx, k_idx):
        return (k_idx <= q_idx) & ((q_idx - k_idx) % 4 == 0)

    return Mask("test_dilated_causal", seqlen, RowIntervals.build(q % 4, q + 1, torch.full_like(q, 4)), definition)


REGISTERED = [
    ("full", {}),
    ("causal", {}),
    ("sliding_window_causal", {"window": 64}),
    ("causal_document", {}),
    ("s2", {}),  # per-head, if another pattern file provides it
    ("neighborhood", {"window": 32, "stride": 4, "dilation": 2}),
]
LOCAL = {"per_head_window": per_head_window_mask, "dilated_causal": lambda s, h: dilated_causal_mask(s)}


def gate_mask(case: str) -> Mask:
    if case in LOCAL:
        return LOCAL[case](S, HQ)
    name, params = dict((n, (n, p)) for n, p in REGISTERED)[case]
    if name not in MASKS:
        pytest.skip(f"mask pattern {name} is not registered")
    return build_mask(name, S, HQ, **params)


def problem_for(mask: Mask, dtype: torch.dtype = torch.float32, needs_grad: bool = False) -> Problem:
    return Problem(
        mask=mask, batch=B, seqlen=S, heads_q=HQ, heads_kv=HKV, head_dim=D, dtype=dtype,
        device=torch.device("cpu"), needs_grad=needs_grad,
    )


# Each new mask_mod is one Inductor compile (~5 s on 2 cores with a cold cache): the masks the issue names
# plus one per-head/arbitrary mask run by default (~20 s cold, ~5 s warm); the other patterns are `slow`.
DEFAULT_GATE = ["full", "causal", "sliding_window_causal", "causal_document", "per_head_window"]
SLOW_GATE = ["s2", "neighborhood", "dilated_causal"]


@pytest.mark.parametrize("case", DEFAULT_GATE + [pytest.param(c, marks=pytest.mark.slow) for c in SLOW_GATE])
def test_flex_passes_the_gate(case: str) -> None:
    method = ALL["flex"]
    assert method.unavailable_reason() is None
    mask = gate_mask(case)
    problem = problem_for(mask)
    assert method.unsupported_reason(problem, "fwd") is None  # flex claims every mask
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(B, S, h, D, generator=g) for h in (HQ, HKV, HKV))
    result = check_method(method.build(problem), q, k, v, mask, problem.scale, with_grad=False)
    assert result.ok, result.reason
    if method.backward:
        grad_problem = problem_for(mask, needs_grad=True)
        result = check_method(method.build(grad_problem), q, k, v, mask, problem.scale, with_grad=True)
        assert result.ok, result.reason


def test_flex_fails_loudly_instead_of_falling_back_to_eager(monkeypatch: pytest.MonkeyPatch) -> None:
    """Past Dynamo's recompile limit flex_attention would silently run unfused eager code: build must raise."""
    monkeypatch.setattr(flex, "RECOMPILE_LIMIT", 0)
    with torch._dynamo.config.patch(recompile_limit=1, accumulated_recompile_limit=1):
        flex.build(problem_for(build_mask("causal", S)))  # compiled by the gate tests: the one allowed entry
        with pytest.raises(Exception, match="recompile_limit"):
            flex.build(problem_for(build_mask("sliding_window_causal", S, window=48)))  # a new graph


def test_flex_declares_forward_only_because_torch_has_no_cpu_backward() -> None:
    """If a torch release adds FlexAttention's CPU backward, this fails: then declare backward=True."""
    assert ALL["flex"].backward is False
    assert ALL["flex"].unsupported_reason(problem_for(build_mask("causal", S)), "bwd") == "backward (forward only)"
    q = torch.randn(1, 2, 128, 16, requires_grad=True)
    with pytest.raises(NotImplementedError, match="backward on CPU"):
        flex_attention(q, q, q)


@pytest.mark.parametrize("case", ["causal_document", "sliding_window_causal", "per_head_window", "dilated_causal"])
@pytest.mark.parametrize("block", [64, 128])
def test_block_mask_from_ir_equals_create_block_mask(case: str, block: int) -> None:
    mask = gate_mask(case)
    ours = flex.block_mask_from_ir(mask, block, torch.device("cpu"))
    heads = mask.intervals.num_heads if mask.per_head else None
    theirs = create_block_mask(mask.flex_mask_mod(), None, heads, S, S, device="cpu", BLOCK_SIZE=block)
    assert torch.equal(ours.to_dense(), theirs.to_dense())  # partial + full blocks
    assert torch.equal(ours.full_kv_num_blocks, theirs.full_kv_num_blocks)  # which of them are full
    assert torch.equal(ours.kv_num_blocks, theirs.kv_num_blocks)


def test_mask_mod_closure_tensors_move_to_the_kernel_device() -> None:
    mask = build_mask("causal_document", S)
    moved = flex.mask_mod_on(mask.flex_mask_mod(), torch.device("meta"))
    cells = [c.cell_contents for c in moved.__closure__ if isinstance(c.cell_contents, torch.Tensor)]
    assert cells and all(t.device.type == "meta" for t in cells)
    assert flex.mask_mod_on(mask.flex_mask_mod(), torch.device("cpu")) is mask.flex_mask_mod()


# ----- the GPU adapters' CPU-side plumbing ------------------------------------------------------------

def test_packed_cu_seqlens_repeat_the_documents_per_batch_element() -> None:
    varlen = Varlen(cu_seqlens=torch.tensor([0, 3, 10], dtype=torch.int32), causal=True)
    cu, longest = packed_cu_seqlens(varlen, batch=2, seqlen=10, device=torch.device("cpu"))
    assert cu.tolist() == [0, 3, 10, 13, 20] and cu.dtype == torch.int32 and longest == 7


@pytest.mark.parametrize(
    "name, params, block",
    [
        ("full", {}, 128),
        ("causal", {}, 128),
        ("causal_document", {}, 128),
        ("full_document", {}, 128),
        ("sliding_window_causal", {"window": 64}, 64),
        ("sliding_window", {"left": 64, "right": 64}, 64),
    ],
)
def test_magi_range_plan_is_exactly_the_mask(name: str, params: dict, block: int) -> None:
    mask = build_mask(name, S, **params)
    plan = magi_ffa.range_plan(mask, block)
    assert isinstance(plan, magi_ffa.RangePlan), plan
    assert torch.equal(plan.dense(S), mask.dense()[0])
    packed = plan.repeated(2, S)
    assert torch.equal(packed.q_ranges[len(plan.types):], plan.q_ranges + S)


def test_magi_reports_partial_tiles_it_cannot_express() -> None:
    mask = build_mask("sliding_window_causal", S, window=100)
    problem = problem_for(mask, dtype=torch.bfloat16)
    problem = dataclasses.replace(problem, options={"block_size": 128})
    assert "not a causal, inverse-causal or bi-causal slice" in magi_ffa.limits(problem)


def test_natten_accepts_only_neighborhood_masks() -> None:
    assert "not a neighborhood mask" in natten.limits(problem_for(build_mask("causal", S)))
    if "neighborhood" not in MASKS:
        pytest.skip("mask pattern neighborhood is not registered")
    mask = build_mask("neighborhood", S, window=32, stride=4, dilation=2, causal=True)
    assert natten.limits(problem_for(mask)) is None
