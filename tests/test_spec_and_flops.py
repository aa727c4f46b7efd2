"""Runs are plain data with a stable identity; FLOPs follow the field's exact-area convention."""

import pickle

import pytest
import torch

from harness.masks import build_mask
from harness.interfaces import Problem, softmax_flops, softmax_forward_flops
from harness.run import Run


def make(**kw):
    base = dict(method="sdpa", mask="causal", seqlen=1024, heads_q=8, heads_kv=2, head_dim=64)
    return Run.make(**{**base, **kw})


def test_runs_hash_compare_and_round_trip():
    a = make(mask_params={"window": 3}, options={"block_q": 64})
    b = make(mask_params={"window": 3}, options={"block_q": 64})
    assert a == b and hash(a) == hash(b) and a.key == b.key
    assert Run.from_dict(a.to_dict()) == a
    assert pickle.loads(pickle.dumps(a)) == a


def test_key_changes_with_every_field_but_not_with_timing():
    a = make()
    for change in (dict(seqlen=2048), dict(direction="bwd"), dict(dtype="bfloat16"), dict(world_size=2),
                   dict(mask_params={"window": 1}), dict(strategy="ring"), dict(heads_kv=8)):
        assert make(**change).key != a.key, change
    assert make(timing={"warmup": 9}).key == a.key


def test_forward_flops_use_the_exact_mask_area():
    s, h, d = 1000, 4, 32
    mask = build_mask("causal", s)
    problem = Problem(mask, 2, s, h, h, d, torch.float32, torch.device("cpu"))
    assert mask.area() == s * (s + 1) // 2
    assert softmax_forward_flops(problem) == 4 * (s * (s + 1) // 2) * h * d * 2
    factors = {d: softmax_flops(problem, d) / softmax_forward_flops(problem) for d in ("fwd", "bwd", "fwd+bwd")}
    assert factors == {"fwd": 1.0, "bwd": 2.5, "fwd+bwd": 3.5}


def test_sliding_window_area_is_exact():
    s, w = 500, 37
    mask = build_mask("sliding_window_causal", s, window=w)
    assert mask.area() == sum(min(q, w) + 1 for q in range(s))


# Keys of workload runs as lcbench wrote them at commit e65a617, when a workload's phase was spelled
# ``direction=<phase>``: results files of that time must resume without re-running them.
PHASE_KEYS_BEFORE_PHASE_FIELD = {
    ("hybrid_lm", "decode"): "47860d822fac94f478d3",
    ("qttt", "ttt_step"): "f8cceed47fc7bda03a34",
}


def test_a_workload_run_has_a_phase_and_no_direction_and_keeps_its_old_key():
    hybrid = Run.make(workload="hybrid_lm", params={"flavor": "tiny", "pattern": "LS"}, mask="causal", seqlen=512,
                      phase="decode", decode_tokens=4)
    qttt = Run.make(workload="qttt", params={"flavor": "tiny", "method": "sdpa"}, method="sdpa", mask="causal",
                    seqlen=256, phase="ttt_step")
    assert hybrid.direction is None and hybrid.phase == hybrid.timed == "decode"
    assert {("hybrid_lm", "decode"): hybrid.key, ("qttt", "ttt_step"): qttt.key} == PHASE_KEYS_BEFORE_PHASE_FIELD
    assert Run.from_dict(hybrid.to_dict()) == hybrid
    stored_before = {**hybrid.to_dict(), "direction": "decode"}  # a record of that time: no phase
    del stored_before["phase"]
    assert Run.from_dict(stored_before) == hybrid


def test_a_phase_belongs_to_a_workload_and_a_workload_names_one():
    with pytest.raises(ValueError, match="only a workload has phases"):
        make(phase="prefill")
    with pytest.raises(ValueError, match="names no phase"):
        Run.make(workload="hybrid_lm", mask="causal", seqlen=256)
