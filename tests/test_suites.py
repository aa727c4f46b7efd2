"""Suites: every shipped suite loads; every mistake is one clear line naming key, value and what is allowed."""

import pytest
import yaml

from harness.errors import UserError
from suites.loader import available_suites, load_suite, parse_suite

GOOD = {
    "name": "t",
    "methods": ["sdpa"],
    "masks": ["causal", {"name": "sliding_window_causal", "window": 64}],
    "seqlens": [256],
    "shapes": [{"heads_q": 4, "heads_kv": 2, "head_dim": 16}],
    "directions": ["fwd", "bwd"],
}


@pytest.mark.parametrize("name", available_suites())
def test_shipped_suites_load(name):
    suite = load_suite(name)
    assert suite.runs
    sizes = [r.world_size for r in suite.runs]
    assert sizes == sorted(sizes)  # bucketed by world size


def test_expansion_is_the_product_of_the_lists():
    suite = parse_suite(GOOD)
    assert len(suite.runs) == 1 * 2 * 1 * 1 * 2
    assert {r.mask for r in suite.runs} == {"causal", "sliding_window_causal"}


@pytest.mark.parametrize(
    "change,expected",
    [
        ({"seqlen": [1]}, "unknown key in suite 'seqlen'; did you mean 'seqlens'"),
        ({"seqlens": 128}, "seqlens=128 has type int; expected a list"),
        ({"seqlens": [0]}, "seqlens has 0; expected integers >= 1"),
        ({"methods": ["sdpaa"]}, "unknown method 'sdpaa'; did you mean 'sdpa'"),
        ({"masks": ["casual"]}, "unknown mask 'casual'; did you mean 'causal'"),
        ({"masks": [{"name": "sliding_window_causal", "windw": 3}]}, "did you mean 'window'"),
        ({"shapes": [{"heads_q": 6, "heads_kv": 4}]}, "heads_q=6 is not a multiple of heads_kv=4"),
        ({"shapes": [{"head": 6}]}, "unknown shape key in suite 'head'"),
        ({"dtypes": ["fp32"]}, "unknown dtype in suite 'fp32'"),
        ({"directions": ["backward"]}, "unknown direction in suite 'backward'"),
        ({"timing": {"warmups": 3}}, "did you mean 'warmup'"),
        ({"methods": [], "strategies": []}, "needs 'methods' or 'strategies'"),
    ],
)
def test_bad_suites_name_the_key_the_value_and_what_is_allowed(change, expected):
    with pytest.raises(UserError) as e:
        parse_suite({**GOOD, **change})
    assert expected in str(e.value)
    assert "\n" not in str(e.value)


def test_missing_required_key_and_unknown_profile():
    data = dict(GOOD)
    del data["seqlens"]
    with pytest.raises(UserError, match="exactly one of 'seqlens'"):
        parse_suite(data)
    del data["shapes"]
    with pytest.raises(UserError, match="missing required key 'shapes'"):
        parse_suite(data)
    with pytest.raises(UserError, match="unknown profile"):
        parse_suite({**GOOD, "profiles": {"cpu": {}}}, profile="gpu")


def test_profiles_override_keys():
    suite = parse_suite({**GOOD, "profiles": {"cpu": {"seqlens": [128, 512]}}}, profile="cpu")
    assert {r.seqlen for r in suite.runs} == {128, 512}


def test_invalid_yaml_is_one_line(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("name: x\nmethods: [sdpa\n")
    with pytest.raises(UserError, match="not valid YAML at line"):
        load_suite(str(path))
    path.write_text(yaml.safe_dump([1, 2]))
    with pytest.raises(UserError, match="expected a mapping"):
        load_suite(str(path))


def test_weak_scaling_multiplies_tokens_per_device_by_world_size():
    data = {k: v for k, v in GOOD.items() if k not in ("seqlens", "methods")}
    suite = parse_suite({**data, "strategies": ["ring"], "seqlens_per_device": [128], "world_sizes": [1, 2, 4]})
    assert {(r.world_size, r.seqlen) for r in suite.runs} == {(1, 128), (2, 256), (4, 512)}
    with pytest.raises(UserError, match="exactly one of 'seqlens'"):
        parse_suite({**GOOD, "seqlens_per_device": [128]})
