"""Context-parallel strategies against the single-device float64 reference, parametrised over the registry.

Every registered strategy (a new one is tested for free) x masks x world sizes {2 (default tier), 4 (integration
tier)} runs forward + backward through the real launcher and rank executor; the correctness gate compares the gathered output
and dq/dk/dv with the reference on sampled rows. A strategy must either pass or be ``unsupported`` exactly
when its own ``unsupported_reason`` says so (``unavailable`` peers are skipped). Measured communication
bytes must equal each strategy's analytic model. All runs of a world size share one process group
(``run_local_many``), so the file costs a few process start-ups, not one per case.
"""

from __future__ import annotations

import json
import time

import pytest
import torch

from harness.catalog import methods, strategies
from harness.interfaces import CPProblem
from harness.cluster.launch import run_local, run_local_many
from context_parallel.layouts import LAYOUTS
from harness.execution.inputs import mask_for
from harness.execution.gate import TOLERANCE
from harness.masks import MASKS
from harness.masks.sharding import shard_areas
from harness.results.schema import DECLARED
from harness.run import Run, Timing

SEQ, HQ, HKV, DIM = 256, 4, 2, 16
WORLD_SIZES = (2, 4)
TIMEOUT_S = 90.0
FAST = Timing(warmup=1, min_samples=1, min_run_time=0.0, max_samples=1)
TILES = {"block_q": 32, "block_k": 32}

# Small-size parameters of the library masks exercised (only those registered are used).
MASK_CASES = {
    "causal": {},
    "full": {},
    "sliding_window_causal": {"window": 40},
    "causal_document": {},
    "share_question": {},
    "global_sliding_window": {"global_tokens": 8, "left": 24, "right": 24},
    "dilated": {"block": 16, "span_blocks": 4},  # dilated key intervals (step > 1)
    "s2": {"block": 16, "local_blocks": 2, "vert_stride": 4},  # per-head mask: head slices must be right
}
MASKS_HERE = {name: params for name, params in MASK_CASES.items() if name in MASKS}
STRATEGY_NAMES = sorted(strategies())


def make_run(strategy: str, mask: str, world_size: int, direction: str = "fwd+bwd", seqlen: int = SEQ,
             heads: tuple[int, int] = (HQ, HKV), dtype: str = "float32", options: dict | None = None,
             tiles: dict | None = TILES, method: str = "blocksparse") -> Run:
    return Run.make(
        method=method, strategy=strategy, mask=mask, mask_params=MASKS_HERE.get(mask, {}), seqlen=seqlen,
        heads_q=heads[0], heads_kv=heads[1], head_dim=DIM, dtype=dtype, direction=direction,
        world_size=world_size, options={**(tiles or {}), **(options or {})}, timing=FAST,
    )


def expected_reason(run: Run) -> str | None:
    """What the strategy itself says about the run (None: it must run and pass)."""
    strategy = strategies()[run.strategy]
    why = strategy.unavailable_reason()
    if why:
        return f"unavailable: {why}"
    problem = strategy.laid_out(CPProblem.of(run, mask_for(run), torch.device("cpu"), methods()))
    return strategy.unsupported_reason(problem)


# The default tier runs every strategy on every mask at world size 2 in one shared process group; world size 4
# (a second group) is the integration tier's.
MATRIX = [make_run(s, m, w) for s in STRATEGY_NAMES for m in MASKS_HERE for w in WORLD_SIZES]
FORWARD_ONLY = [make_run(s, "causal", w, direction="fwd") for s in STRATEGY_NAMES for w in WORLD_SIZES]
# 2-D and nested strategies with their degree options at the extremes and in between (world size 4).
OPTION_CASES = [
    make_run("usp", "causal", 4, options={"ulysses_degree": d}) for d in (1, 4)
] + [make_run("double_ring", "causal_document", 4, options={"inner_size": d}) for d in (1, 4)] + [
    make_run("hierarchical", "sliding_window_causal", 4, options={"a2a_size": 4}),
    make_run("ring_zigzag", "causal", 4, dtype="bfloat16"),
    make_run("ulysses", "causal_document", 4, dtype="bfloat16"),
    make_run("ulysses", "causal", 2, heads=(4, 1)),  # GQA with fewer kv heads than the degree: repeated
    # the local kernels as a plain suite runs them: no tile options (the aten kernel's large unmasked tiles), and
    # the native kernel with its GQA-stacked plans, on odd lengths too
    *(make_run(s, m, w, seqlen=n, tiles=None, method=k) for s in ("ring_zigzag", "all_gather", "ulysses", "usp")
      for m in ("causal", "causal_document") for w, n in ((2, 2048), (4, 2047))
      for k in ("blocksparse", "blocksparse_native")),
]
OPTION_CASES = [r for r in OPTION_CASES if r.strategy in strategies()]
# Lengths the layouts' chunks do not divide (every real document pack): padded at the end, as Megatron and
# TransformerEngine pad, and checked on the real tokens only; every strategy at 777 tokens at world size 2
# (default tier), 777 and 1000 at 3 and 4, GQA heads; a document mask, a window and bfloat16 beside causal.
ODD = {2: (777,), 3: (777, 1000), 4: (777, 1000)}
ODD_LENGTHS = [make_run(s, m, w, seqlen=n) for s in STRATEGY_NAMES for w, lengths in ODD.items() for n in lengths
               for m in ("causal", "causal_document")] + [
    make_run(s, "sliding_window_causal", w, seqlen=777, dtype="bfloat16") for s in STRATEGY_NAMES for w in (2, 3)]
# Combinations that cannot be cut exactly: reported unsupported, never run with wrong results.
UNEVEN = {
    make_run("ulysses", "causal", 2, heads=(3, 1)): "heads_q=3",
    make_run("ulysses", "causal", 4, heads=(6, 2)): "heads_q=6",
    make_run("ulysses", "causal", 4, heads=(8, 3)): "heads_kv=3",
    make_run("usp", "causal", 4, options={"ulysses_degree": 3}): "does not divide world size 4",
    make_run("double_ring", "causal", 4, options={"inner_size": 3}): "does not divide world size 4",
    make_run("hierarchical", "causal", 4, heads=(6, 2), options={"a2a_size": 4}): "heads_q=6",
}
UNEVEN = {r: why for r, why in UNEVEN.items() if r.strategy in strategies()}
P2P_CASES = [make_run(n, "causal_document", 4, options={"collectives": "p2p"})
             for n in ("ulysses", "usp", "all_gather") if n in strategies()]


ALL_RUNS = MATRIX + FORWARD_ONLY + OPTION_CASES + P2P_CASES + ODD_LENGTHS + list(UNEVEN)


class _RecordsByWorldSize(dict):
    """The records of :data:`ALL_RUNS`, one shared process group per world size, started when a test first
    asks for a run of that size (so the default tier starts only the world-size-2 group)."""

    def __missing__(self, run: Run) -> dict:
        if run not in ALL_RUNS:  # else the whole group of its size would start again for it
            raise KeyError(f"{run.label} is not one of ALL_RUNS")
        runs = [r for r in ALL_RUNS if r.world_size == run.world_size]
        started = time.perf_counter()
        self.update(zip(runs, run_local_many(runs, timeout_s=TIMEOUT_S, measure_memory=False)))
        print(f"\n{len(runs)} context-parallel runs at world size {run.world_size} in "
              f"{time.perf_counter() - started:.1f} s")
        return self[run]


@pytest.fixture(scope="module")
def records() -> dict[Run, dict]:
    return _RecordsByWorldSize()


def tiered(runs, ids):
    """``runs`` as parameters: world size 2 in the default tier, larger groups in the integration tier."""
    return [pytest.param(r, id=ids(r), marks=[pytest.mark.integration] if r.world_size > 2 else []) for r in runs]


def check_record(rec: dict, run: Run) -> None:
    assert set(rec) <= set(DECLARED), set(rec) - set(DECLARED)  # every field of the record is declared
    why = expected_reason(run)
    if why and why.startswith("unavailable"):
        assert rec["status"] == "unavailable", rec
        pytest.skip(why)
    if why:
        assert rec["status"] == "unsupported", (rec["status"], rec["reason"], why)
        return
    assert rec["status"] == "ok", (rec["status"], rec["reason"], rec.get("traceback"))
    errors = json.loads(rec["gate_errors"])
    expected = {"out"} if run.direction == "fwd" else {"out", "dq", "dk", "dv"}
    assert set(errors) == expected
    assert max(errors.values()) <= TOLERANCE[run.dtype], errors


@pytest.mark.parametrize("run", tiered(MATRIX, lambda r: f"{r.strategy}-{r.mask}-ws{r.world_size}"))
def test_matches_reference(records, run):
    check_record(records[run], run)


@pytest.mark.parametrize("run", tiered(OPTION_CASES, lambda r: f"{r.strategy}[{r.method}]-{r.mask}-S{r.seqlen}-"
                                                                f"ws{r.world_size}-{r.dtype}-{dict(r.options)}"))
def test_options_dtypes_gqa(records, run):
    check_record(records[run], run)


@pytest.mark.parametrize("run", tiered(ODD_LENGTHS, lambda r: f"{r.strategy}-{r.mask}-{r.dtype}-S{r.seqlen}-ws{r.world_size}"))
def test_odd_lengths_are_padded_exactly(records, run):
    """The run passes its float64 gate on its real tokens; the padding tokens are outside its area (the ranks'
    areas sum to the mask's) and FLOPs; the bytes are those the strategy's model gives the padded layout."""
    rec = records[run]
    check_record(rec, run)
    if rec["status"] != "ok":
        return
    strategy = strategies()[run.strategy]
    laid_out = strategy.laid_out(CPProblem.of(run, mask_for(run), torch.device("cpu"), methods())).seqlen
    assert rec.get("padded_seqlen") == (laid_out if laid_out != run.seqlen else None)
    assert laid_out - run.seqlen < 2 * run.world_size
    if strategy.local_methods.pads_exactly:
        assert sum(json.loads(rec["rank_area"])) == rec["area"] == mask_for(run).area(run.heads_q)
    if rec.get("comm_bytes_model") is not None:
        assert json.loads(rec["comm_bytes"]) == json.loads(rec["comm_bytes_model"])


def test_a_length_the_layout_cuts_is_not_padded():
    """Padding only where the chunks do not divide the length, to the next multiple of W, then of 2W."""
    for name, strategy in strategies().items():
        if not strategy.local_methods.pads_exactly:
            continue
        for seqlen, world in ((256, 2), (777, 3), (1000, 4), (777, 4)):
            run = make_run(name, "causal", world, seqlen=seqlen)
            problem = strategy.laid_out(CPProblem.of(run, mask_for(run), torch.device("cpu"), methods()))
            assert problem.seqlen in {seqlen, -(-seqlen // world) * world, -(-seqlen // (2 * world)) * 2 * world}
            assert problem.seqlen - problem.padding == seqlen and problem.mask.area() == mask_for(run).area()
            if problem.padding:
                with pytest.raises(Exception):  # the layout refused the run's own length
                    strategy.layout(CPProblem.of(run, mask_for(run), torch.device("cpu"), methods()))


@pytest.mark.parametrize("run", tiered(list(UNEVEN), lambda r: f"{r.strategy}-S{r.seqlen}-H{r.heads_q}:{r.heads_kv}"))
def test_uneven_is_unsupported(records, run):
    rec = records[run]
    assert rec["status"] == "unsupported", (rec["status"], rec["reason"])
    assert UNEVEN[run] in rec["reason"], rec["reason"]


@pytest.mark.parametrize("run", tiered([r for r in FORWARD_ONLY + MATRIX if r.mask == "causal"],
                                       lambda r: f"{r.strategy}-{r.direction}-ws{r.world_size}"))
def test_comm_bytes_match_analytic_model(records, run):
    rec = records[run]
    if rec["status"] != "ok":
        pytest.skip(f"{rec['status']}: {rec['reason']}")
    if rec.get("comm_bytes_model") is None:
        pytest.skip("strategy has no communication model")
    measured, model = json.loads(rec["comm_bytes"]), json.loads(rec["comm_bytes_model"])
    assert len(measured) == run.world_size
    assert measured == model


@pytest.mark.integration
def test_record_fields_and_balance(records):
    """Per-rank fields are there; contiguous causal shards are unbalanced, head-tail ones are not."""
    ring = records[make_run("ring", "causal", 4)]
    zigzag = records[make_run("ring_zigzag", "causal", 4)]
    for rec in (ring, zigzag):
        assert rec["status"] == "ok"
        assert len(json.loads(rec["rank_time_ms"])) == 4 and len(json.loads(rec["rank_cpu_ms"])) == 4
        assert rec["time_imbalance"] >= 1.0 and rec["tflops"] > 0
        assert sum(json.loads(rec["rank_area"])) == rec["area"]  # ranks split the mask's area exactly
    assert ring["area_imbalance"] == pytest.approx(7 / 4, rel=0.02)  # rank W-1: (2W-1)/W of the mean
    assert zigzag["area_imbalance"] == pytest.approx(1.0, abs=1e-9)


@pytest.mark.integration
@pytest.mark.parametrize("run", P2P_CASES, ids=lambda r: r.strategy)
def test_p2p_emulated_collectives(records, run):
    """With the backend's all-to-all / reduce-scatter replaced by the P2P emulation: the same results and
    the same counted bytes as the native collectives."""
    rec = records[run]
    check_record(rec, run)
    native = records[make_run(run.strategy, "causal_document", 4)]
    assert rec["comm_bytes"] == native["comm_bytes"] == rec["comm_bytes_model"]


def test_layouts_are_permutations():
    run = make_run("ring", "causal_document", 4, seqlen=512)
    problem = CPProblem(run=run, mask=mask_for(run), dtype=torch.float32, device=torch.device("cpu"))
    for name, layout in {**LAYOUTS, "usp": strategies()["usp"].layout}.items():
        parts = layout(problem)
        assert len(parts) == 4, name
        assert torch.equal(torch.cat(parts).sort().values, torch.arange(512)), name


@pytest.mark.parametrize("name", ["ring", "ring_zigzag", "ring_doc_zigzag", "ring_striped"])
def test_rank_areas_match_mask_library(records, name):
    """Per-rank areas from the tile plans equal the mask library's shard areas (independent code)."""
    rec = records[make_run(name, "causal_document", 2)]
    layout = {"ring": "contiguous", "ring_zigzag": "zigzag", "ring_doc_zigzag": "doc_zigzag",
              "ring_striped": "striped"}[name]
    expected = shard_areas(mask_for(make_run(name, "causal_document", 2)), layout, 2).areas
    assert json.loads(rec["rank_area"]) == [a * HQ for a in expected]


@pytest.mark.integration
def test_launcher_survives_hang_and_crash():
    """A hanging rank and a crashing rank become records; the healthy run after them still runs."""
    pytest.importorskip("tests.fault_injection")
    def fault(name: str, rank: int) -> Run:
        return Run.make(method="blocksparse", strategy=name, mask="causal", seqlen=64, heads_q=1, heads_kv=1,
                        head_dim=8, world_size=2, options={"rank": rank})

    # rank 0 hangs (no record: the launcher's timeout); a fresh group runs the healthy run; then rank 1
    # raises (rank 0 waits in a collective; the launcher sees rank 1 exit)
    runs = [fault("fault_hang", 0), make_run("ring", "causal", 2), fault("fault_raise", 1)]
    started = time.perf_counter()
    recs = run_local_many(runs, timeout_s=4.0, measure_memory=False,
                          executor="tests.fault_injection:execute_distributed")
    assert time.perf_counter() - started < 90
    assert [r["status"] for r in recs] == ["timeout", "ok", "error"], [(r["status"], r["reason"]) for r in recs]


@pytest.mark.slow
@pytest.mark.parametrize("name", STRATEGY_NAMES)
def test_larger_causal_document_with_memory(name):
    """A larger case through ``run_local`` with the memory measurement on (one group per run)."""
    run = Run.make(
        method="blocksparse", strategy=name, mask="causal_document", seqlen=2048, heads_q=8, heads_kv=4,
        head_dim=32, direction="fwd+bwd", world_size=4, options={"block_q": 128, "block_k": 128}, timing=FAST,
    )
    rec = run_local(run, timeout_s=300)
    check_record(rec, run)
    if rec["status"] == "ok":
        assert rec["peak_mem_bytes"] > 0


def test_bench_table(records):
    """The bench's table shows measured bytes next to the model for ok runs, and the reason otherwise."""
    from harness.bench.cp import format_table

    recs = [records[make_run("ring", "causal", 2)], records[make_run("ulysses", "causal", 2, heads=(3, 1))]]
    table = format_table(recs)
    assert "==" in table.splitlines()[2] and "unsupported" in table.splitlines()[3]


@pytest.mark.integration
def test_launcher_reports_the_failing_ranks_own_reason(monkeypatch):
    """A real strategy raising on rank 1 (through the real runner): its reason, at once, not rank 0's timeout."""
    pytest.importorskip("tests.fault_injection")
    monkeypatch.setenv("LCBENCH_PLUGINS", "tests.fault_injection")
    run = Run.make(method="naive", strategy="fault_attention_raise", mask="causal", seqlen=64, heads_q=1,
                   heads_kv=1, head_dim=8, world_size=2)
    started = time.perf_counter()
    rec = run_local(run, timeout_s=30.0)
    assert time.perf_counter() - started < 25
    assert rec["status"] == "error"
    assert rec["reason"].startswith("rank 1:") and "injected fault in attention on rank 1" in rec["reason"]
