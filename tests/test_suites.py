"""Suites: every shipped suite loads with every profile; every mistake is one clear line naming the key, the
value and what is allowed; sweeps and workloads expand into the runs they say."""

import sqlite3
from pathlib import Path

import pytest
import yaml

from harness import catalog
from harness.errors import UserError
from harness.run import Run
from suites.loader import SMOKE, available_suites, load_suite, parse_suite, suite_profiles

GOOD = {
    "name": "t",
    "methods": ["sdpa"],
    "masks": ["causal", {"name": "sliding_window_causal", "window": 64}],
    "seqlens": [256],
    "shapes": [{"heads_q": 4, "heads_kv": 2, "head_dim": 16}],
    "directions": ["fwd", "bwd"],
}
FIXTURES = Path(__file__).parent / "fixtures"

# A smoke profile must stay small: it is what `lcbench run SUITE --profile smoke` runs in < 2 min on 2 cores.
SMOKE_MAX_RUNS = 40
SMOKE_MAX_SEQLEN = 1024
SMOKE_MAX_WORLD_SIZE = 2
SMOKE_MAX_RUN_TIME = 0.05  # seconds of timed work per run


# ----- shipped suites ---------------------------------------------------------------------------------


def _suite_profiles():
    return [(name, p) for name in available_suites() for p in [None, *suite_profiles(name)]]


@pytest.mark.parametrize("name,profile", _suite_profiles())
def test_shipped_suites_load_with_every_profile(name, profile):
    suite = load_suite(name, profile)
    assert suite.runs
    sizes = [r.world_size for r in suite.runs]
    assert sizes == sorted(sizes)  # bucketed by world size
    assert len({r.key for r in suite.runs}) == len(suite.runs)  # no run twice


@pytest.mark.parametrize("name", available_suites())
def test_every_shipped_suite_has_a_small_smoke_profile(name):
    assert SMOKE in suite_profiles(name)
    suite = load_suite(name, SMOKE)
    assert suite.profile == SMOKE
    assert 0 < len(suite.runs) <= SMOKE_MAX_RUNS
    assert max(r.seqlen for r in suite.runs) <= SMOKE_MAX_SEQLEN
    assert max(r.world_size for r in suite.runs) <= SMOKE_MAX_WORLD_SIZE
    assert all(r.device == "cpu" and r.timing.min_run_time <= SMOKE_MAX_RUN_TIME for r in suite.runs)
    # representative: more than one subject (with its parameters), and more than one mask or direction/phase
    assert len({(r.method, r.strategy, r.workload, r.params) for r in suite.runs}) > 1
    assert len({(r.mask, r.mask_params) for r in suite.runs}) > 1 or len({r.timed for r in suite.runs}) > 1


def test_legacy_suite_keeps_the_keys_of_lcbench_0_1_0():
    """The schema rewrite must not change a run's key: the 0.1.0 results file holds every run of its suite."""
    suite = load_suite(str(FIXTURES / "legacy_suite.yaml"))
    with sqlite3.connect(FIXTURES / "results_v0_1_0.db") as con:
        stored = {row[0] for row in con.execute("select key from results")}
    assert len(suite.runs) == 24
    # its strategies named no local method: today each runs its fastest one, a new run; on resume, the run it
    # stood for in 0.1.0 (blocksparse inside) is the one found stored, and nothing is repeated
    assert {r.key for r in suite.runs if not r.strategy} <= stored
    assert {r.key for r in suite.resumed(stored)} <= stored
    methods = catalog.methods()
    assert all(r.method == catalog.strategies()[r.strategy].local_methods.default_method("cpu", methods)
               for r in suite.resumed(set()) if r.strategy)


# ----- expansion ----------------------------------------------------------------------------------------


def test_expansion_is_the_product_of_the_lists():
    suite = parse_suite(GOOD)
    assert len(suite.runs) == 1 * 2 * 1 * 1 * 2
    assert {r.mask for r in suite.runs} == {"causal", "sliding_window_causal"}
    assert all(r.kind == "method" and r.world_size == 1 for r in suite.runs)


def test_profiles_override_keys_and_null_removes_one():
    suite = parse_suite({**GOOD, "profiles": {"cpu": {"seqlens": [128, 512]}}}, profile="cpu")
    assert {r.seqlen for r in suite.runs} == {128, 512}
    base = {**GOOD, "strategies": ["ring"], "world_sizes": [2]}
    suite = parse_suite({**base, "profiles": {"one": {"strategies": None}}}, profile="one")
    assert {r.kind for r in suite.runs} == {"method"}


def test_default_profile_is_cpu_without_cuda_and_none_when_undefined():
    import torch

    suite = parse_suite({**GOOD, "profiles": {"cpu": {"seqlens": [128]}, "gpu": {"seqlens": [999]}}})
    assert suite.profile == ("gpu" if torch.cuda.is_available() else "cpu")
    assert parse_suite({**GOOD, "profiles": {SMOKE: {"seqlens": [128]}}}).profile is None


def test_weak_scaling_multiplies_tokens_per_device_by_world_size():
    data = {k: v for k, v in GOOD.items() if k not in ("seqlens", "methods")}
    suite = parse_suite({**data, "strategies": ["ring"], "seqlens_per_device": [128], "world_sizes": [1, 2, 4]})
    assert {(r.world_size, r.seqlen) for r in suite.runs} == {(1, 128), (2, 256), (4, 512)}
    with pytest.raises(UserError, match="exactly one of 'seqlens'"):
        parse_suite({**GOOD, "seqlens_per_device": [128]})


@pytest.mark.parametrize("strategy", sorted(catalog.strategies()))
def test_a_strategy_without_a_named_local_method_runs_its_fastest_usable_one(strategy):
    """No ``local_method``: each strategy runs what its kernel source prefers and can run here (the native kernel
    for a softmax strategy, lightning for a linear one), as ``lcbench list strategies`` states."""
    data = {k: v for k, v in GOOD.items() if k != "methods"}
    run = parse_suite({**data, "strategies": [strategy], "world_sizes": [2]}).runs[0]
    source = catalog.strategies()[strategy].local_methods
    methods = catalog.methods()
    assert run.method == source.default_method("cpu", methods)
    assert source.runs(methods[run.method]) and methods[run.method].unavailable_reason() is None
    first = next((n for n in source.preferred if methods[n].unavailable_reason() is None), None)
    if first is not None:  # the fastest it prefers, where it is usable (blocksparse_native: a C++ compiler)
        assert run.method == first
    named = parse_suite({**data, "strategies": [strategy], "world_sizes": [2], "local_method": "naive"}).runs[0]
    assert named.method == "naive"


def test_list_valued_options_are_sweep_axes():
    data = {**GOOD, "methods": ["blocksparse"], "strategies": ["ring"], "world_sizes": [2],
            "options": {"block_q": [32, 64], "block_k": [32, 64], "collectives": "native"}}
    suite = parse_suite(data)
    assert len(suite.runs) == 4 * 2 * 2 * 2  # 4 option sets x (method + strategy) x 2 masks x 2 directions
    sets = {r.options for r in suite.runs}
    assert sets == {(("block_k", k), ("block_q", q), ("collectives", "native")) for q in (32, 64) for k in (32, 64)}


def test_decode_is_a_direction_with_its_own_token_count():
    suite = parse_suite({**GOOD, "directions": ["fwd", "decode"], "decode_tokens": 4})
    tokens = {(r.direction, r.decode_tokens) for r in suite.runs}
    assert tokens == {("fwd", 1), ("decode", 4)}  # fwd runs keep their key: decode_tokens only where it applies


def test_max_world_size_bounds_the_world_sizes_used():
    data = {**GOOD, "strategies": ["ring"], "world_sizes": [1, 2, 8]}
    assert len(parse_suite(data, max_world_size=8).runs) > 0
    with pytest.raises(UserError) as e:
        parse_suite(data, max_world_size=4)
    assert "world_sizes[2]=8" in str(e.value) and "<= 4" in str(e.value)
    # world sizes only strategies would use do not count for a methods-only suite
    parse_suite({**GOOD, "world_sizes": [64]}, max_world_size=4)


# ----- workloads ----------------------------------------------------------------------------------------

TOY_PLUGIN = '''
"""Two toy workloads for the suite tests: a layer with flavors and a list-valued parameter, and a
distributed decoder. ``build`` is a real (tiny) computation; the loader never calls it."""
import torch
from harness.interfaces.workload import CheckResult, Workload, WorkloadStep


def build(problem):
    x = torch.randn(problem.seqlen, problem.params.get("hidden", 8))
    return WorkloadStep(call=lambda: x @ x.T, flops=2.0 * x.shape[0] ** 2 * x.shape[1],
                        check=lambda: CheckResult(ok=True), metrics=lambda s: {"tokens_per_s": x.shape[0] / s})


WORKLOADS = [
    Workload(name="toy_layer", summary="a toy layer", phases=("train_step", "prefill", "decode"),
             params={"flavor": "tiny", "hidden": 64, "heads": 4, "method": "sdpa", "dims": [1, 2]},
             flavors={"tiny": {"hidden": 64}, "big": {"hidden": 256, "heads": 8}}, build=build),
    Workload(name="toy_decoder", summary="a toy distributed decoder", phases=("prefill", "decode"),
             params={"layers": 2}, build=build, distributed=True),
]
'''

WL_BASE = {"name": "w", "seqlens": [256]}


@pytest.fixture
def toy_workloads(tmp_path, monkeypatch):
    (tmp_path / "lcbench_toy_suite_workloads.py").write_text(TOY_PLUGIN)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv(catalog.PLUGINS_ENV, "lcbench_toy_suite_workloads")
    catalog.workloads.cache_clear()
    yield
    catalog.workloads.cache_clear()


def test_workloads_expand_per_phase_they_have(toy_workloads):
    suite = parse_suite({**WL_BASE, "workloads": ["toy_layer", {"name": "toy_decoder", "layers": 3}],
                         "phases": ["prefill", "train_step"], "world_sizes": [1, 2]})
    got = {(r.workload, r.phase, r.world_size) for r in suite.runs}
    assert got == {("toy_layer", "prefill", 1), ("toy_layer", "train_step", 1),  # one device: world size 1
                   ("toy_decoder", "prefill", 1), ("toy_decoder", "prefill", 2)}  # no train_step phase
    assert all(r.kind == "workload" and r.mask == "causal" and r.heads_q is None for r in suite.runs)
    assert {r.param_kwargs.get("layers") for r in suite.runs if r.workload == "toy_decoder"} == {3}


def test_workloads_without_phases_run_all_of_theirs_and_decode_tokens(toy_workloads):
    suite = parse_suite({**WL_BASE, "workloads": ["toy_layer"], "decode_tokens": 8})
    assert {(r.phase, r.decode_tokens) for r in suite.runs} == {("train_step", 1), ("prefill", 1), ("decode", 8)}
    assert {r.method for r in suite.runs} == {""}  # no method unless the parameters name one


def test_list_valued_workload_params_are_sweep_axes(toy_workloads):
    entry = {"name": "toy_layer", "hidden": [32, 64], "heads": [2, 4], "method": ["sdpa", "blocksparse"],
             "dims": [3, 4]}  # dims defaults to a list: [3, 4] is one value
    suite = parse_suite({**WL_BASE, "workloads": [entry], "phases": ["prefill"]})
    points = {(r.param_kwargs["hidden"], r.param_kwargs["heads"], r.method) for r in suite.runs}
    assert len(suite.runs) == len(points) == 8
    assert {tuple(r.param_kwargs["dims"]) for r in suite.runs} == {(3, 4)}
    swept = parse_suite({**WL_BASE, "workloads": [{"name": "toy_layer", "dims": [[1], [2, 3]]}], "phases": ["prefill"]})
    assert sorted(tuple(r.param_kwargs["dims"]) for r in swept.runs) == [(1,), (2, 3)]


def test_workload_masks_are_checked_at_the_workload_heads(toy_workloads):
    s2 = {"name": "s2", "block": 32, "local_blocks": 2, "vert_stride": 4, "dense_heads": 6}
    with pytest.raises(UserError, match=r"masks\[0\].*dense_heads=6"):
        parse_suite({**WL_BASE, "workloads": ["toy_layer"], "masks": [s2]})  # toy_layer has 4 heads
    suite = parse_suite({**WL_BASE, "workloads": [{"name": "toy_layer", "flavor": "big", "heads": 8}], "masks": [s2]})
    assert suite.runs


@pytest.mark.parametrize(
    "change,expected",
    [
        ({"workloads": ["toy_layr"]}, ["workloads[0]", "unknown workload 'toy_layr'", "'toy_layer'"]),
        ({"workloads": [{"name": "toy_layer", "hiden": 3}]}, ["workloads[0]", "'hiden'", "'hidden'"]),
        ({"workloads": [{"name": "toy_layer", "flavor": "huge"}]}, ["workloads[0]", "flavor", "'huge'", "tiny"]),
        ({"workloads": [{"name": "toy_layer", "hidden": "64"}]}, ["workloads[0]", "hidden='64'", "int"]),
        ({"workloads": [{"name": "toy_layer", "hidden": []}]}, ["workloads[0].hidden=[]", "empty"]),
        ({"workloads": [{"name": "toy_layer", "method": "sdpaa"}]}, ["workloads[0].method", "'sdpaa'", "'sdpa'"]),
        ({"workloads": ["toy_layer"], "phases": ["prefil"]}, ["phases[0]", "unknown phase 'prefil'", "'prefill'"]),
        ({"workloads": [{"layers": 2}]}, ["workloads[0]", "a workload name or a mapping with 'name'"]),
        ({"workloads": []}, ["workloads=[]", "empty"]),
    ],
)
def test_bad_workload_entries(toy_workloads, change, expected):
    with pytest.raises(UserError) as e:
        parse_suite({**WL_BASE, **change})
    message = str(e.value)
    assert "\n" not in message
    for fragment in expected:
        assert fragment in message, message


# ----- malformed suites ---------------------------------------------------------------------------------

NEIGHBORHOOD = {"name": "neighborhood", "window": 1024}

BAD = [
    ({"seqlen": [1]}, ["unknown key 'seqlen'", "did you mean 'seqlens'"]),
    ({"seqlens": 128}, ["seqlens=128", "has type int; expected a list"]),
    ({"seqlens": [0]}, ["seqlens[0]=0", "expected an integer >= 1"]),
    ({"seqlens": [256, "512"]}, ["seqlens[1]='512'", "expected an integer"]),
    ({"seqlens": []}, ["seqlens=[]", "is empty"]),
    ({"masks": []}, ["masks=[]", "is empty"]),
    ({"shapes": []}, ["shapes=[]", "is empty"]),
    ({"directions": []}, ["directions=[]", "is empty"]),
    ({"methods": []}, ["methods=[]", "is empty"]),
    ({"methods": "sdpa"}, ["methods='sdpa'", "expected a list"]),
    ({"methods": ["sdpaa"]}, ["methods[0]", "unknown method 'sdpaa'", "did you mean 'sdpa'"]),
    ({"strategies": ["rin"], "world_sizes": [2]}, ["strategies[0]", "unknown strategy 'rin'", "'ring'"]),
    ({"strategies": ["ring"], "local_method": "nope"}, ["local_method", "unknown method 'nope'"]),
    ({"local_method": "sdpa"}, ["local_method='sdpa'", "no 'strategies'"]),
    ({"masks": ["casual"]}, ["masks[0]", "unknown mask 'casual'", "did you mean 'causal'"]),
    ({"masks": [{"name": "sliding_window_causal", "windw": 3}]}, ["masks[0]", "'windw'", "did you mean 'window'"]),
    ({"masks": [3]}, ["masks[0]=3", "a mask name or a mapping with 'name'"]),
    ({"masks": [{"name": "sliding_window", "left": "abc"}]}, ["masks[0]", "sliding_window", "left='abc'", "int"]),
    ({"masks": [{"name": "sliding_window_causal", "window": -5}]}, ["masks[0]", "window=-5", "integer >= 0"]),
    ({"masks": [{"name": "s2", "block": 32, "dense_heads": 99}]}, ["masks[0]", "dense_heads=99", "num_heads (4)"]),
    ({"masks": [NEIGHBORHOOD]}, ["masks[0]", "neighborhood", "window=1024", "seqlen (256)"]),
    ({"masks": [{"name": "causal_document", "distribution": "no_such_file.json"}]},
     ["masks[0]", "causal_document", "'no_such_file.json'"]),
    ({"masks": [{"name": "block_causal_document", "block": 100}]}, ["masks[0]", "block=100", "divisor of seqlen"]),
    ({"shapes": [{"heads_q": 6, "heads_kv": 4}]}, ["shapes[0]", "heads_q=6 is not a multiple of heads_kv=4"]),
    ({"shapes": [{"head": 6}]}, ["shapes[0]", "unknown key 'head'", "'heads_q'"]),
    ({"shapes": [{"heads_q": "8"}]}, ["shapes[0].heads_q='8'", "expected an integer"]),
    ({"shapes": [{"heads_q": 0}]}, ["shapes[0].heads_q=0", ">= 1"]),
    ({"shapes": [{"heads_q": True}]}, ["shapes[0].heads_q=True", "expected an integer"]),
    ({"dtypes": ["fp32"]}, ["dtypes[0]", "unknown dtype 'fp32'", "'float32'"]),
    ({"directions": ["backward"]}, ["directions[0]", "unknown direction 'backward'"]),
    ({"device": "gpu"}, ["device", "unknown device 'gpu'", "cuda"]),
    ({"timing": {"warmups": 3}}, ["timing", "unknown key 'warmups'", "did you mean 'warmup'"]),
    ({"timing": {"warmup": -1}}, ["timing.warmup=-1", "integer >= 0"]),
    ({"timing": {"min_samples": 0}}, ["timing.min_samples=0", "integer >= 1"]),
    ({"timing": {"min_run_time": 0}}, ["timing.min_run_time=0", "> 0"]),
    ({"timing": {"min_samples": 5, "max_samples": 2}}, ["timing.max_samples=2", "min_samples (5)"]),
    ({"timing": 3}, ["timing=3", "expected a mapping"]),
    ({"world_sizes": [0]}, ["world_sizes[0]=0", ">= 1"]),
    ({"world_sizes": [70000]}, ["world_sizes[0]=70000", "<= 65536"]),  # predict goes to 1024+ devices
    ({"decode_tokens": 0}, ["decode_tokens=0", ">= 1"]),
    ({"options": 3}, ["options=3", "expected a mapping"]),
    ({"strategies": ["ring"], "options": {"block_qq": 64}}, ["options.block_qq", "'block_qq'", "'block_q'"]),
    ({"options": {"block_q": []}}, ["options.block_q=[]", "empty"]),
    ({"phases": ["prefill"]}, ["phases=['prefill']", "no 'workloads'"]),
    ({"name": 3}, ["name=3", "expected a string"]),
    ({"profiles": {"cpu": 3}}, ["profiles.cpu=3", "expected a mapping"]),
    ({"profiles": {"cpu": {"name": "x"}}}, ["profiles.cpu", "unknown key 'name'"]),
    ({"profiles": {"cpu": {"shapes": [{"heads_q": "8"}]}}}, ["profiles.cpu.shapes[0].heads_q='8'"]),
    ({"profiles": {"smoke": {"profiles": {"x": {}}}}}, ["profiles.smoke", "unknown key 'profiles'"]),
    # a mask set by the selected profile: the error names the profile's key
    ({"profiles": {"cpu": {"masks": [NEIGHBORHOOD]}}}, ["profiles.cpu.masks[0]", "window=1024"]),
]


@pytest.mark.parametrize("change,expected", BAD, ids=[str(i) for i in range(len(BAD))])
def test_bad_suites_name_the_key_the_value_and_what_is_allowed(change, expected):
    assert len(BAD) >= 30
    profile = "cpu" if "cpu" in change.get("profiles", {}) else None
    with pytest.raises(UserError) as e:
        parse_suite({**GOOD, **change}, profile=profile)
    message = str(e.value)
    assert "\n" not in message
    for fragment in expected:
        assert fragment in message, message


@pytest.mark.parametrize(
    "text,expected",
    [
        ("name: x\nmethods: [sdpa]\nmethods: [naive]\n", "duplicate key 'methods' at line 3 (first given at line 2)"),
        ("name: x\nprofiles:\n  cpu: {seqlens: [1]}\n  cpu: {seqlens: [2]}\n", "duplicate key 'cpu' at line 4"),
        ("name: x\nmasks:\n  - {name: sliding_window, left: 1, left: 2}\n", "duplicate key 'left' at line 3"),
        ("name: x\nmethods: [sdpa\n", "not valid YAML at line"),
    ],
)
def test_yaml_mistakes_are_one_line_with_the_line_number(tmp_path, text, expected):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(UserError) as e:
        load_suite(str(path))
    assert expected in str(e.value) and str(e.value).startswith("bad.yaml: ")
    assert "\n" not in str(e.value)


def test_invalid_top_level_is_one_line(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump([1, 2]))
    with pytest.raises(UserError, match="expected a mapping"):
        load_suite(str(path))


def test_missing_required_keys_and_unknown_profile():
    data = dict(GOOD)
    del data["seqlens"]
    with pytest.raises(UserError, match="exactly one of 'seqlens'"):
        parse_suite(data)
    del data["shapes"]
    with pytest.raises(UserError, match="missing required key 'shapes'"):
        parse_suite({**data, "seqlens": [256]})
    with pytest.raises(UserError, match="missing required key 'name'"):
        parse_suite({k: v for k, v in GOOD.items() if k != "name"})
    with pytest.raises(UserError, match="needs 'methods', 'strategies' or 'workloads'"):
        parse_suite({k: v for k, v in GOOD.items() if k != "methods"})
    with pytest.raises(UserError, match="unknown profile"):
        parse_suite({**GOOD, "profiles": {"cpu": {}}}, profile="gpu")


# ----- end to end ---------------------------------------------------------------------------------------


@pytest.mark.slow  # ~40 s on 2 idle cores (12 runs, each gated against float64 and timed); longer when shared
def test_quickstart_smoke_runs_end_to_end(tmp_path):
    from harness.cli import main
    from harness.results.store import ResultStore

    assert main(["run", "quickstart", "--profile", "smoke", "--scheduler", "inline", "--results", str(tmp_path),
                 "--quiet"]) == 0
    records = ResultStore(str(tmp_path)).records()
    expected = {r.key for r in load_suite("quickstart", SMOKE).runs}
    assert {r["key"] for r in records} == expected
    assert all(r["status"] == "ok" for r in records), {r["status"] for r in records}
    assert isinstance(Run.from_dict(records[0]), Run)
