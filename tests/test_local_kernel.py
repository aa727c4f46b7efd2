"""The local-kernel seam: ``Run.method`` chooses the kernel a CP strategy runs locally.

* every method with a ``LocalKernel`` honours its contract on its own (no processes): partial results over
  key blocks at arbitrary global positions merge by log-sum-exp into the exact attention, the per-block
  backward with the GLOBAL out/lse sums to the exact gradients, ``area`` counts the allowed pairs;
* built-in strategies run with a second local method (``naive``) and pass the gate; a method without a
  local kernel is ``unsupported`` with a reason naming the methods that have one; peers record the kernel
  they really ran;
* ``context_parallel`` never imports the ``methods`` package (the kernel comes from ``ctx.kernel``).
"""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest
import torch

from harness.catalog import local_kernels, methods, strategies
from harness.cluster.launch import run_local_many
from harness.execution.inputs import mask_for
from harness.interfaces import CPProblem, LocalKernel, local_attention, merge_into
from harness.interfaces.local_kernel import PlanSpec
from harness.interfaces.strategy import OwnKernel
from harness.interfaces.reference import reference_attention
from harness.masks import build_mask
from harness.run import Run, Timing

S, B, HQ, HKV, D = 128, 2, 4, 2, 16
MASKS_HERE = {
    "causal_document": {},
    "s2": {"block": 16, "local_blocks": 2, "vert_stride": 4},  # per-head mask: the head range must select rows
}
KERNELS = sorted(local_kernels())


def test_two_methods_have_local_kernels():
    assert {"blocksparse", "naive"} <= set(KERNELS)
    assert all(isinstance(k, LocalKernel) for k in local_kernels().values())


def _block_problem(mask_name: str, seed: int = 0):
    """Global q/k/v/dout, local q rows (a shuffled half of the sequence) and keys in 3 shuffled blocks."""
    g = torch.Generator().manual_seed(seed)
    mask = build_mask(mask_name, S, num_heads=HQ, **MASKS_HERE[mask_name])
    q, k, v = (torch.randn(B, S, h, D, generator=g) for h in (HQ, HKV, HKV))
    dout = torch.randn(B, S, HQ, D, generator=g)
    q_pos = torch.randperm(S, generator=g)[: S // 2].sort().values  # any rows, any order is allowed
    q_pos = q_pos[torch.randperm(len(q_pos), generator=g)]
    k_blocks = torch.randperm(S, generator=g).chunk(3)
    return mask, (q, k, v, dout), q_pos, k_blocks


def _reference(mask, tensors, q_pos, heads):
    """float64 out rows ``q_pos`` for q heads ``heads`` and the gradients of sum(out * dout) there."""
    q, k, v, dout = (t.double().requires_grad_(True) for t in tensors)
    out = reference_attention(q, k, v, mask, q_pos, D**-0.5)
    h0, h1 = heads
    loss = (out[:, :, h0:h1] * dout[:, q_pos, h0:h1]).sum()
    dq, dk, dv = torch.autograd.grad(loss, (q, k, v))
    return out[:, :, h0:h1].detach(), dq, dk, dv


@pytest.mark.parametrize("mask_name", sorted(MASKS_HERE))
@pytest.mark.parametrize("heads", [(0, HQ), (2, 4)], ids=["all-heads", "head-slice"])
@pytest.mark.parametrize("kv_group", [1, HQ // HKV], ids=["plan-unstacked", "plan-gqa-stacked"])
@pytest.mark.parametrize("name", KERNELS)
def test_kernel_contract(name, heads, mask_name, kv_group):
    kernel = local_kernels()[name]
    mask, (q, k, v, dout), q_pos, k_blocks = _block_problem(mask_name)
    h0, h1 = heads
    group = HQ // HKV
    kv0, kv1 = h0 // group, h1 // group
    ql, dl = q[:, q_pos, h0:h1].contiguous(), dout[:, q_pos, h0:h1].contiguous()
    blocks = [(kp, k[:, kp, kv0:kv1].contiguous(), v[:, kp, kv0:kv1].contiguous()) for kp in k_blocks]
    plans = [kernel.plan(PlanSpec(mask, q_pos, kp, heads, torch.float32, torch.device("cpu"),
                                  {"block_q": 16, "block_k": 16}, kv_group=kv_group)) for kp, _, _ in blocks]
    scale = D**-0.5

    acc_out = torch.zeros(ql.shape, dtype=torch.float32)
    acc_lse = torch.full((B, h1 - h0, len(q_pos)), float("-inf"))
    for (kp, kb, vb), plan in zip(blocks, plans):
        out, lse = kernel.forward(ql, kb, vb, plan, scale)
        assert out.shape == ql.shape and out.dtype == ql.dtype and lse.shape == acc_lse.shape
        merge_into(acc_out, acc_lse, out, lse)

    ref_out, ref_dq, ref_dk, ref_dv = _reference(mask, (q, k, v, dout), q_pos, heads)
    torch.testing.assert_close(acc_out.double(), ref_out, atol=2e-5, rtol=1e-4)

    dq = torch.zeros(ql.shape)
    dk, dv = torch.zeros(k.shape), torch.zeros(v.shape)
    for (kp, kb, vb), plan in zip(blocks, plans):
        gq, gk, gv = kernel.backward(dl, ql, kb, vb, acc_out, acc_lse, plan, scale)
        dq += gq
        dk[:, kp, kv0:kv1] += gk
        dv[:, kp, kv0:kv1] += gv
    torch.testing.assert_close(dq.double(), ref_dq[:, q_pos, h0:h1], atol=2e-5, rtol=1e-4)
    torch.testing.assert_close(dk.double(), ref_dk, atol=2e-5, rtol=1e-4)
    torch.testing.assert_close(dv.double(), ref_dv, atol=2e-5, rtol=1e-4)

    allowed = mask.dense(q_pos=q_pos)  # [Hm, n, S]
    expected = int(allowed.sum()) * (h1 - h0) if allowed.shape[0] == 1 else int(allowed[h0:h1].sum())
    assert sum(kernel.area(p) for p in plans) == expected


@pytest.mark.parametrize("name", KERNELS)
def test_local_attention_is_differentiable(name):
    """``local_attention`` with all keys in one plan is the complete attention, gradients included."""
    kernel = local_kernels()[name]
    mask, (q, k, v, dout), _, _ = _block_problem("s2", seed=1)
    rows = torch.arange(S)
    plan = kernel.plan(PlanSpec(mask, rows, rows, (0, HQ), torch.float32, torch.device("cpu"), {}))
    leaves = [t.clone().requires_grad_(True) for t in (q, k, v)]
    out = local_attention(kernel, *leaves, plan, D**-0.5)
    grads = torch.autograd.grad(out, leaves, dout)
    ref_out, *ref_grads = _reference(mask, (q, k, v, dout), rows, (0, HQ))
    torch.testing.assert_close(out.double(), ref_out, atol=2e-5, rtol=1e-4)
    for got, want in zip(grads, ref_grads):
        torch.testing.assert_close(got.double(), want, atol=2e-5, rtol=1e-4)


# ----- strategies with a chosen local method ---------------------------------------------------------------

FAST = Timing(warmup=1, min_run_time=0.0, min_samples=1, max_samples=1)


def make_run(strategy: str, method: str, mask: str = "causal_document", direction: str = "fwd+bwd") -> Run:
    return Run.make(
        method=method, strategy=strategy, mask=mask, mask_params=MASKS_HERE.get(mask, {}), seqlen=256,
        heads_q=HQ, heads_kv=HKV, head_dim=D, dtype="float32", direction=direction, world_size=2,
        options={"block_q": 64, "block_k": 64}, timing=FAST,
    )


def cp_problem(run: Run) -> CPProblem:
    return CPProblem.of(run, mask_for(run), torch.device("cpu"), methods())


NO_KERNEL = next(name for name, m in sorted(methods().items()) if m.local_kernel is None and not m.probe())
OURS = ["ring_zigzag", "ulysses", "all_gather"]
SECOND = [make_run(s, "naive") for s in OURS]
WITHOUT = make_run("ring_zigzag", NO_KERNEL)
PEER = make_run("torch_ring", "blocksparse", mask="causal", direction="fwd")


@pytest.fixture(scope="module")
def records() -> dict[Run, dict]:
    runs = SECOND + [WITHOUT, PEER]
    return dict(zip(runs, run_local_many(runs, timeout_s=120, measure_memory=False)))


@pytest.mark.parametrize("run", SECOND, ids=lambda r: r.strategy)
def test_strategy_runs_a_second_local_method(records, run):
    rec = records[run]
    assert rec["status"] == "ok", (rec["status"], rec["reason"], rec.get("traceback"))
    assert rec["kernel"] == "naive"
    errors = json.loads(rec["gate_errors"])
    assert set(errors) == {"out", "dq", "dk", "dv"}


def test_method_without_local_kernel_is_unsupported(records):
    why = strategies()["ring_zigzag"].unsupported_reason(cp_problem(WITHOUT))
    assert why and f"local method {NO_KERNEL} has no local kernel" in why and "blocksparse" in why, why
    rec = records[WITHOUT]
    assert (rec["status"], rec["reason"]) == ("unsupported", why)


def test_peer_records_its_own_kernel(records):
    strategy = strategies()["torch_ring"]
    rec = records[PEER]
    if strategy.unavailable_reason():
        pytest.skip(strategy.unavailable_reason())
    assert rec["status"] == "ok", (rec["status"], rec["reason"])
    assert strategy.kernel and rec["kernel"] == strategy.kernel


def test_own_kernel_peers_take_any_method_and_name_their_kernel():
    for name, strategy in strategies().items():
        if isinstance(strategy.local_methods, OwnKernel):
            assert strategy.kernel, f"{name} runs its own kernel but does not say which"
            why = strategy.unsupported_reason(cp_problem(make_run(name, NO_KERNEL)))
            assert not why or "local kernel" not in why, why


def test_context_parallel_does_not_import_methods():
    root = Path(__file__).resolve().parents[1] / "context_parallel"
    for path in sorted(root.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            else:
                continue
            bad = [n for n in names if n == "methods" or n.startswith("methods.")]
            assert not bad, f"{path.name} imports {bad}"
