"""`lcbench predict` as a specification: exact areas and bytes of every strategy's declared schedule, the walk's
overlap rules on hand-computed toy schedules, the rate model's interpolation, predicted records through every
reader, and one-line errors for everything a user can get wrong."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from harness.catalog import methods, strategies
from harness.cli import main
from harness.execution.inputs import mask_for
from harness.interfaces import CPProblem
from harness.interfaces.strategy import AnyLinearKernel, AnyLocalKernel
from harness.interfaces.schedule import (ALL_GATHER, SEND_RECV, Compute, Placement, ProgramBuilder, Transfer)
from harness.masks import MASKS, build_mask
from harness.masks.sharding import LAYOUT_PAIR_AREAS, LAYOUTS, pair_areas
from harness.prediction.cluster import ClusterProfile, load_cluster
from harness.prediction.model import Walker
from harness.prediction.predict import Predictor, predicted_key
from harness.prediction.rates import RatePoint, RateTable
from harness.results.store import ResultStore
from harness.run import Run
from suites.loader import parse_suite

SCHEDULED = sorted(n for n, s in strategies().items() if s.schedule is not None)
SOFTMAX_MASKS = [("causal", {}), ("sliding_window_causal", {"window": 96}), ("causal_document", {}), ("full", {})]


def _problem(strategy: str, mask: str = "causal", seqlen: int = 768, world: int = 4, direction: str = "fwd",
             heads: tuple[int, int] = (8, 4), method: str = "blocksparse", mask_params=None, options=None) -> CPProblem:
    run = Run.make(method=method, strategy=strategy, mask=mask, seqlen=seqlen, heads_q=heads[0], heads_kv=heads[1],
                   head_dim=16, world_size=world, direction=direction, mask_params=mask_params, options=options)
    return CPProblem.of(run, mask_for(run), torch.device("cpu"), methods())


# ----- exact areas ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("layout", sorted(LAYOUTS))
@pytest.mark.parametrize("name", ["causal", "sliding_window_causal", "causal_document", "full_document", "power",
                                  "dilated"])
@pytest.mark.parametrize("world", [2, 3, 4])
def test_pair_areas_equal_the_dense_mask(layout, name, world):
    pattern = MASKS[name]
    mask = build_mask(name, 600, 1, **pattern.examples[0])
    try:
        positions = LAYOUTS[layout](600, world, mask.doc_lengths)
    except Exception:  # noqa: BLE001 — a length the layout cannot cut
        pytest.skip("layout cannot cut this length")
    dense = mask.dense()[0].numpy()
    want = np.array([[dense[np.ix_(q.numpy(), k.numpy())].sum() for k in positions] for q in positions])
    assert (pair_areas(mask, positions, positions) == want).all()
    fast = LAYOUT_PAIR_AREAS.get(layout)
    if fast is not None and fast(mask, world) is not None:
        assert (fast(mask, world) == want).all()


# ----- every scheduled strategy: its schedule is its code's bytes and area ----------------------------------
@pytest.mark.parametrize("strategy", SCHEDULED)
@pytest.mark.parametrize("mask,params", SOFTMAX_MASKS)
@pytest.mark.parametrize("direction", ["fwd", "bwd", "fwd+bwd"])
@pytest.mark.parametrize("world", [2, 4, 8])
def test_schedule_bytes_equal_the_comm_model_and_areas_cover_the_mask(strategy, mask, params, direction, world):
    method = "lightning" if isinstance(strategies()[strategy].local_methods, AnyLinearKernel) else \
        "blocksparse"
    problem = _problem(strategy, mask, 1536, world, direction, method=method, mask_params=params or None)
    if strategies()[strategy].unsupported_reason(problem):
        pytest.skip(strategies()[strategy].unsupported_reason(problem))
    schedule = strategies()[strategy].schedule(problem, Placement(world, 4))
    assert list(schedule.sent_bytes()) == strategies()[strategy].comm_model(problem, direction)
    passes = 2 if direction == "fwd+bwd" else 1
    if method == "blocksparse":
        assert int(schedule.areas().sum()) == passes * problem.mask.area(8)
    assert (schedule.peak_bytes > 0).all()


def test_ring_schedule_by_hand():
    """Causal S=8 on two contiguous shards: rank 0 attends its diagonal (10 pairs x 8 heads), rank 1 its diagonal
    then rank 0's block (16 pairs); one K/V block each way, overlapped with the first step."""
    problem = _problem("ring", seqlen=8, world=2)
    s = strategies()["ring"].schedule(problem, Placement(2, 2))
    computes = [st.compute for st in s.stages if st.compute is not None]
    assert [list(c.area // 8) for c in computes] == [[10, 10], [0, 16]]
    assert [list(c.dense) for c in computes] == [[False, False], [False, True]]
    first = s.stages[0]
    assert first.transfers[0].op == SEND_RECV and list(first.transfers[0].peer) == [1, 0]
    assert list(first.transfers[0].bytes) == [2 * 4 * 4 * 16 * 4] * 2  # K and V: 4 tokens x 4 kv heads x 16 x fp32
    assert s.stages[1].waits == ((0, 0),)


def test_ulysses_and_all_gather_schedules_by_hand():
    u = strategies()["ulysses"].schedule(_problem("ulysses", seqlen=16, world=2), Placement(2, 2))
    assert [t.op for st in u.stages for t in st.transfers] == ["all_to_all", "all_to_all"]
    (compute,) = [st.compute for st in u.stages if st.compute is not None]
    assert compute.heads == 4 and list(compute.q_rows) == [16, 16] and list(compute.area) == [136 * 4] * 2
    g = strategies()["all_gather"].schedule(_problem("all_gather", seqlen=16, world=2, direction="bwd"),
                                            Placement(2, 2))
    assert [t.op for st in g.stages for t in st.transfers] == ["reduce_scatter"]  # the forward gathered K/V


# ----- the walk --------------------------------------------------------------------------------------------------
def _flat_rates(ms_per_mpair: float) -> RateTable:
    """A table whose time is exactly work / 1e6 x ms_per_mpair (constant rate), for hand-computed walks."""
    pts = [RatePoint("float32", d, "causal", w, 16, w / 1e6 * ms_per_mpair) for d in ("fwd", "bwd") for w in (1e6, 1e8)]
    return RateTable("blocksparse", "toy", "test", pts)


def _toy_profile(devices_per_node: int = 2, cores=None, busbw: float = 1.0, latency_us: float = 0.0) -> ClusterProfile:
    tier = {"link_gbps": busbw, "busbw_gbps": {op: busbw for op in ("send_recv", "all_gather", "reduce_scatter",
                                                                       "all_to_all")}, "latency_us": latency_us}
    return ClusterProfile.model_validate({
        "name": "toy", "summary": "toy", "devices_per_node": devices_per_node, "max_nodes": 4, "launch_us": 0.0,
        "device": {"name": "toy", "memory_gib": 1, "rates": {}, **({"cores": cores, "threads_per_rank": 1} if cores
                                                                   else {})},
        "tiers": {"node": tier, "network": {**tier, "busbw_gbps": {k: busbw / 10 for k in tier["busbw_gbps"]}}},
        "sources": {}})


def _walk(builder: ProgramBuilder, profile: ClusterProfile, world: int = 2):
    return Walker(profile, _flat_rates(1.0), "float32", "causal", 16, world).walk(builder.build(np.ones(world)))


def test_walk_overlaps_a_posted_transfer_with_the_compute_it_runs_beside():
    """A 1 MB send at 1 GB/s takes 1 ms; beside a 3 ms compute it is hidden, beside a 0.5 ms compute it delays the next
    step, which waits for it."""
    for compute_mpairs, expected in ((3.0, 3.0 + 3.0), (0.5, 1.0 + 3.0)):
        b = ProgramBuilder()
        h = b.post("kv", Transfer(SEND_RECV, np.array([10**6, 10**6]), peer=np.array([1, 0])))
        b.compute("a", Compute.of(np.array([compute_mpairs * 1e6] * 2), [1, 1], [1, 1], 1, 1))
        b.wait(h)
        b.compute("b", Compute.of(np.array([3e6, 3e6]), [1, 1], [1, 1], 1, 1))
        times = _walk(b, _toy_profile())
        assert np.allclose(times.wall_ms, expected)
        assert np.allclose(times.compute_ms, compute_mpairs + 3.0)


def test_walk_crosses_the_network_tier_and_shares_cores():
    b = ProgramBuilder()
    b.wait(b.post("gather", Transfer(ALL_GATHER, np.array([10**6] * 4), groups=((0, 1, 2, 3),))))
    times = _walk(b, _toy_profile(devices_per_node=2), world=4)  # spans 2 nodes: the network's 0.1 GB/s
    assert np.allclose(times.wall_ms, 10.0) and times.bytes_by_tier["network"].tolist() == [10**6] * 4
    b = ProgramBuilder()
    b.compute("a", Compute.of(np.array([2e6] * 4), [1] * 4, [1] * 4, 1, 1))
    shared = _walk(b, _toy_profile(devices_per_node=4, cores=2), world=4)  # 4 one-thread ranks on 2 cores
    assert np.allclose(shared.wall_ms, 4.0) and np.allclose(shared.busy_ms, 2.0)


def test_walk_relay_forwards_after_its_receive():
    b = ProgramBuilder()
    b.wait(b.post("state", Transfer(SEND_RECV, np.array([10**6] * 3), peer=np.array([-1, 0, 1]), chain=True)))
    assert np.allclose(_walk(b, _toy_profile(devices_per_node=4), world=3).wall_ms, [0.0, 1.0, 2.0])


# ----- the rate model ------------------------------------------------------------------------------------------------
def test_rate_table_interpolates_in_log_log_and_derives_directions():
    pts = [RatePoint("float32", "fwd", "causal", 1e6, 64, 1.0), RatePoint("float32", "fwd", "causal", 1e8, 64, 25.0),
           RatePoint("float32", "fwd+bwd", "causal", 1e6, 64, 4.0), RatePoint("float32", "fwd", "full", 1e6, 64, 0.8)]
    t = RateTable("m", "d", "s", pts)
    assert t.time_ms(1e6, "float32", "fwd", "causal", 64) == pytest.approx(1.0)
    assert t.time_ms(1e7, "float32", "fwd", "causal", 64) == pytest.approx(5.0)  # sqrt(1 x 25): log-linear
    assert t.time_ms(1e9, "float32", "fwd", "causal", 64) == pytest.approx(250.0)  # constant rate above
    assert t.time_ms(1e6, "float32", "fwd", "causal", 128) == pytest.approx(2.0)  # linear in head dim
    assert t.time_ms(1e6, "float32", "bwd", "causal", 64) == pytest.approx(3.0)  # fwd+bwd - fwd
    assert t.time_ms(1e6, "float32", "fwd", "sliding_window_causal", 64) == pytest.approx(1.0)  # falls back
    assert t.kind_for(True, "causal") == "full" and t.kind_for(False, "causal_document") == "causal"
    assert t.supports("bfloat16", "fwd") and "bfloat16" in t.supports("bfloat16", "fwd")
    assert t.supports("float32", "bwd") is None


def test_local_profile_cites_every_number_and_loads_its_table():
    cluster = load_cluster("local")
    assert set(cluster.profile.numeric_keys()) <= set(cluster.profile.sources)
    assert cluster.rates_for("blocksparse").supports("float32", "fwd+bwd") is None


# ----- predicted records -------------------------------------------------------------------------------------------
WEAK = {
    "name": "weak", "strategies": ["ring_zigzag", "ulysses", "all_gather"], "local_method": "blocksparse",
    "masks": ["causal", "causal_document"], "seqlens_per_device": [256], "shapes": [{"heads_q": 8, "heads_kv": 8,
                                                                                   "head_dim": 16}],
    "dtypes": ["float32"], "directions": ["fwd", "bwd"], "world_sizes": [2, 4],
}


def test_weak_scaling_axis_scales_the_length_with_the_world():
    runs = parse_suite(WEAK).runs
    assert {(r.world_size, r.seqlen) for r in runs} == {(2, 512), (4, 1024)}


def test_predicted_records_are_marked_keyed_apart_and_complete():
    cluster = load_cluster("local")
    run = Run.make(method="blocksparse", strategy="ring_zigzag", mask="causal", seqlen=1024, heads_q=8, heads_kv=4,
                   head_dim=64, world_size=4, direction="fwd")
    r = Predictor(cluster).record(run)
    assert r["status"] == "predicted" and r["source"] == "predicted" and r["run_key"] == run.key
    assert r["key"] == predicted_key(run, cluster) != run.key
    assert r["model_version"] and r["cluster"] == "local" and r["cluster_version"]
    for field in ("time_ms_median", "tflops", "rank_time_ms", "rank_cpu_ms", "rank_compute_ms",
                  "rank_exposed_comm_ms", "comm_bytes", "bytes_by_tier", "area_imbalance", "peak_mem_bytes"):
        assert r[field] is not None, field
    assert math.isclose(r["tflops"], r["flops"] / (r["time_ms_median"] / 1e3 * 4) / 1e12)
    assert json.loads(r["comm_bytes"]) == json.loads(r["comm_bytes_model"])


@pytest.mark.parametrize("strategy", [n for n in SCHEDULED if strategies()[n].local_methods == AnyLocalKernel()])
def test_an_odd_length_is_predicted_on_the_padded_layout_the_run_measures(strategy):
    """777 tokens at W=4 (softmax strategies; the local profile's table is blocksparse's): predicted on the
    padded layout a measured run lays out (bytes = the model's), with the padding outside the area."""
    run = Run.make(method="blocksparse", strategy=strategy, mask="causal", seqlen=777, heads_q=8, heads_kv=4,
                   head_dim=64, world_size=4, direction="fwd")
    r = Predictor(load_cluster("local")).record(run)
    assert r["status"] == "predicted", r["reason"]
    assert r["padded_seqlen"] in (780, 784)
    assert sum(json.loads(r["rank_area"])) == r["area"] == mask_for(run).area(8)
    if r["comm_bytes_model"] is not None:
        assert json.loads(r["comm_bytes"]) == json.loads(r["comm_bytes_model"])


def test_predict_show_compare_export_plot(tmp_path, capsys):
    suite = tmp_path / "weak.yaml"
    import yaml

    suite.write_text(yaml.safe_dump(WEAK))
    db = tmp_path / "pred.db"
    assert main(["predict", str(suite), "--cluster", "local", "--results", str(db)]) == 0
    records = ResultStore(db, create=False).records()
    assert records and {r["status"] for r in records} == {"predicted"}
    progress = capsys.readouterr().err  # not a terminal: progress lines, ending with all of them
    assert f"predict {WEAK['name']} on local: {len(records)}/{len(records)} runs predicted (100%)" in progress
    assert main(["show", str(db)]) == 0
    shown = capsys.readouterr().out
    assert "PREDICTED ON LOCAL" in shown and "predicted (not measured)" in shown
    assert main(["export", str(db), "--format", "json", "-o", str(tmp_path / "x.json")]) == 0
    exported = json.loads((tmp_path / "x.json").read_text())
    assert {r["status"] for r in exported} == {"predicted"} and all(r["time_ms_median"] for r in exported)
    # a "measurement" of the same runs: compare gives the model's error per run (here 0 by construction)
    measured = tmp_path / "measured.db"
    store = ResultStore(measured)
    session = store.start_session("weak", {})
    for r in records:
        store.put({**r, "key": r["run_key"], "status": "ok", "source": None}, session, "weak")
    store.close()
    capsys.readouterr()
    assert main(["compare", str(measured), str(db)]) == 0
    out = capsys.readouterr().out
    assert "prediction vs measurement" in out and "+0.0%" in out and "exact" in out
    assert main(["plot", str(db), "-o", str(tmp_path / "plots")]) == 0
    assert list((tmp_path / "plots").glob("*.png"))


def test_plot_draws_predictions_dashed(tmp_path):
    import matplotlib.pyplot as plt

    from harness.results import plot

    cluster = load_cluster("local")
    recs = [Predictor(cluster).record(Run.make(method="blocksparse", strategy="ring_zigzag", mask="causal", seqlen=s,
                                               heads_q=8, heads_kv=4, head_dim=64, world_size=2)) for s in (512, 1024)]
    drawn = []
    for _, fig in plot.build_figures(recs):
        drawn += [(line.get_label(), line.get_linestyle(), line.get_markerfacecolor())
                  for ax in fig.axes for line in ax.get_lines() if not line.get_label().startswith("_")]
        plt.close(fig)
    assert drawn and all(label.endswith("(predicted)") and style == "--" and face == "none"
                         for label, style, face in drawn)


# ----- one-line errors ---------------------------------------------------------------------------------------------
def _profile_text(**overrides) -> str:
    import yaml

    data = yaml.safe_load(load_cluster("local").path.read_text())
    for dotted, value in overrides.items():
        node, *path, leaf = dotted.split(".")
        target = data[node] if path or leaf else data
        for p in path:
            target = target[p]
        target[leaf] = value
    return yaml.safe_dump(data)


@pytest.mark.parametrize("change,words", [
    ({"tiers.node.bogus": 1}, ["bogus", "unknown key"]),
    ({"tiers.node.busbw_gbps": {"send_recv": -1.0, "all_gather": 1.0, "reduce_scatter": 1.0, "all_to_all": 1.0}},
     ["send_recv", "-1.0", "> 0"]),
    ({"tiers.node.latency_us": -3.0}, ["latency_us", "-3.0", ">= 0"]),
    ({"device.rates": {"blocksparse": "rates/missing.yaml"}}, ["missing.yaml", "no such rate table"]),
])
def test_bad_profile_is_one_line(tmp_path, capsys, change, words):
    local = load_cluster("local")
    (tmp_path / "rates").mkdir()
    for table in local.rate_tables.values():
        (tmp_path / "rates" / table.path.name).write_text(table.path.read_text())
    path = tmp_path / "bad.yaml"
    path.write_text(_profile_text(**change))
    assert main(["predict", "context_parallel", "--profile", "scaling", "--cluster", str(path),
                 "--results", str(tmp_path / "r.db")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and all(w in err for w in words), err


@pytest.mark.parametrize("argv,words", [
    (["predict", "context_parallel", "--cluster", "local"], ["deepspeed_ulysses", "declares no schedule"]),
    (["predict", "context_parallel", "--profile", "scaling", "--cluster", "dgx-h1OO"], ["cluster", "dgx-h1OO"]),
    (["predict", "kernels", "--cluster", "local"], ["context-parallel", "method"]),
])
def test_unpredictable_suites_are_one_line(tmp_path, capsys, argv, words):
    assert main([*argv, "--results", str(tmp_path / "r.db")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and all(w in err for w in words), err


def test_a_dtype_the_rate_table_lacks_is_one_line(tmp_path, capsys):
    import yaml

    suite = tmp_path / "bf16.yaml"
    suite.write_text(yaml.safe_dump({**WEAK, "dtypes": ["bfloat16"]}))
    assert main(["predict", str(suite), "--cluster", "local", "--results", str(tmp_path / "r.db")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "bfloat16" in err and "float32" in err, err


def test_gpu_check_writes_rate_tables_from_its_records(tmp_path):
    from harness.gpu_check import write_rate_tables

    recs = [{"status": "ok", "method": "sdpa", "strategy": None, "workload": None, "direction": d, "mask": m,
             "seqlen": s, "heads_q": 16, "batch": 1, "area": build_mask(m, s, 16).area(16), "dtype": "bfloat16",
             "head_dim": 128, "time_ms_median": s / 1000} for d in ("fwd", "fwd+bwd") for m in ("causal", "full")
            for s in (4096, 16384)]
    (path,) = write_rate_tables(recs, "NVIDIA H200 (140 GiB)", tmp_path)
    table = RateTable.load(path)
    assert path.name == "nvidia-h200-sdpa.yaml" and table.kinds() == {"causal", "full"}
    assert table.time_ms(build_mask("causal", 4096, 16).area(16), "bfloat16", "fwd", "causal", 128) == \
        pytest.approx(4.096)


@pytest.mark.parametrize("device, threads, expected_ms", [("cpu", 1, 3.0), ("cpu", 2, 5.0), ("cuda", 1, 5.0)])
def test_a_rate_point_is_the_kernel_alone_on_its_cores(device, threads, expected_ms):
    """A one-thread CPU run's CPU time is what the call costs whatever else shares the machine (its wall median
    holds the waits for a core); threads that wait on each other, and GPU kernels, keep the wall median."""
    from harness.prediction.rates import table_from_records

    record = {"status": "ok", "method": "blocksparse", "direction": "fwd", "mask": "full", "seqlen": 256,
              "heads_q": 4, "batch": 1, "area": 256 * 256 * 4, "dtype": "float32", "head_dim": 64, "device": device,
              "threads": threads, "time_ms_median": 5.0, "cpu_ms": 3.0}
    (point,) = table_from_records([record], "blocksparse", "here", "test").points
    assert point.time_ms == expected_ms


def test_placement_decides_the_tier_each_transfer_crosses():
    """Double ring on two 8-device nodes with windows of 8: per rank one outer K/V block crosses the network,
    the inner ring's 2 x 7 stay inside the node; hierarchical's all-to-all stays inside the node."""
    profile = _toy_profile(devices_per_node=8)
    problem = _problem("double_ring", seqlen=2048, world=16, options={"inner_size": 8})
    times = Walker(profile, _flat_rates(1.0), "float32", "causal", 16, 16).walk(
        strategies()["double_ring"].schedule(problem, Placement(16, 8)))
    block = 2 * 128 * 4 * 16 * 4  # K and V of 128 tokens, 4 kv heads, d 16, fp32
    assert times.bytes_by_tier["network"].tolist() == [block] * 16
    assert times.bytes_by_tier["node"].tolist() == [14 * block] * 16
    problem = _problem("hierarchical", seqlen=2048, world=16, options={"a2a_size": 8})
    schedule = strategies()["hierarchical"].schedule(problem, Placement(16, 8))
    a2a = [t for st in schedule.stages for t in st.transfers if t.op == "all_to_all"]
    assert a2a and all({r // 8 for r in g} == {g[0] // 8} for t in a2a for g in t.groups)
