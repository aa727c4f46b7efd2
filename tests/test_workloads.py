"""Workloads are a third registry kind that runs through the same execution sequence as methods and strategies:
every registered workload's every phase builds, passes its own float64 check, reports its metrics with units,
and has a FLOP model that agrees with torch's FLOP counter; a wrong kernel inside a workload is caught."""

import sys
import types

import pytest
import torch

from harness import catalog
from harness.errors import UserError
from harness.execution.cases.workload import WorkloadCase
from harness.execution.single import SingleDevice, execute
from harness.interfaces import Method
from harness.results.schema import DECLARED
from harness.run import Run, Timing
from tests import flop_counting

QUICK = Timing(warmup=1, min_samples=3, min_run_time=0.01)
WORKLOADS = sorted(catalog.workloads())


# Shapes small enough for the default tier (a workload's own defaults where it has none here).
SMALL_MODEL = {"vocab": 256, "hidden": 128, "heads": 4, "heads_kv": 2, "head_dim": 32, "intermediate": 256,
               "layers": 2, "rope_dim": 32, "pattern": "LS"}
SMALL_PARAMS = {"hybrid_lm": SMALL_MODEL, "hybrid_lm_hf": SMALL_MODEL,
               "qttt": {"steps": 2, "span": 64, "span_at": "end", "answer_tokens": 2}}


def workload_run(name: str, phase: str, **kw) -> Run:
    base = dict(workload=name, mask="causal", seqlen=256, phase=phase, timing=QUICK, decode_tokens=2)
    return Run.make(**{**base, **kw})


def cases():
    for name in WORKLOADS:
        w = catalog.get_workload(name)
        for phase in w.phases:
            yield name, phase


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize("name,phase", list(cases()))
def test_every_phase_runs_checked_and_measured(name, phase, dtype):
    record = execute(workload_run(name, phase, dtype=dtype, params=SMALL_PARAMS.get(name, {})))
    assert record["status"] == "ok", record["reason"]
    assert record["kind"] == "workload" and record["flops"] > 0 and record["time_ms_median"] > 0
    assert record["metrics"] and set(record["metric_units"]) == set(record["metrics"])
    assert all(0 <= v < float("inf") for v in record["metrics"].values())  # counts (power_reach's holes) may be 0
    assert record["flop_convention"]
    assert set(record) <= set(DECLARED) and isinstance(record["facts"], dict)  # the typed record, nothing loose
    assert record["kernel"] and record["kernel"] != name  # the attention kernel(s) that ran, not the workload


def test_flavors_and_parameters_resolve_and_bad_ones_are_one_line_errors():
    w = catalog.get_workload("attention_layer")
    assert w.resolve_params({"flavor": "llama3-8b"})["heads_q"] == 32
    assert w.resolve_params({"flavor": "llama3-8b", "heads_q": 16})["heads_q"] == 16
    with pytest.raises(UserError, match="unknown flavor of workload 'attention_layer' 'tinyy'; did you mean 'tiny'"):
        w.resolve_params({"flavor": "tinyy"})
    with pytest.raises(UserError, match="unknown parameter of workload 'attention_layer' 'head'"):
        w.resolve_params({"head": 3})
    with pytest.raises(UserError, match="heads_q='x' has type str; expected int"):
        w.resolve_params({"heads_q": "x"})


def test_unsupported_phase_and_method_are_reported_not_run():
    record = execute(workload_run("attention_layer", "ttt_step"))
    assert record["status"] == "unsupported" and "phase ttt_step" in record["reason"]
    record = execute(workload_run("attention_layer", "train_step", params={"method": "flex"}))
    assert record["status"] == "unsupported" and "backward" in record["reason"]


def test_a_wrong_kernel_inside_a_workload_is_caught(monkeypatch):
    sdpa = catalog.get_method("sdpa")

    def build(problem):
        fn = sdpa.build(problem)
        return lambda q, k, v: fn(q, k, v) * 1.01

    module = types.ModuleType("lcbench_test_wrong_kernel")
    module.METHODS = [Method(name="sdpa_off_by_1pct", summary="sdpa x 1.01", build=build,
                             mask_features=sdpa.mask_features, decode=True)]
    monkeypatch.setitem(sys.modules, module.__name__, module)
    monkeypatch.setenv("LCBENCH_PLUGINS", module.__name__)
    catalog.methods.cache_clear()
    try:
        for phase in ("prefill", "decode", "train_step"):
            record = execute(workload_run("attention_layer", phase, params={"method": "sdpa_off_by_1pct"}))
            assert record["status"] == "invalid", (phase, record["reason"])
            assert "eager error" in record["reason"]
            assert "time_ms_median" in record  # measured, but stored invalid: never shown as a result
    finally:
        catalog.methods.cache_clear()


def test_decode_equals_the_last_rows_of_prefill_in_float64():
    """The decode check compares a decode step with the float64 prefill of the same tokens: in float64 the
    kernel's own error is ~1e-15."""
    record = execute(workload_run("attention_layer", "decode", dtype="float64", params={"method": "naive"}))
    assert record["status"] == "ok", record["reason"]
    import json

    assert json.loads(record["gate_errors"])["out"] < 1e-10


def test_a_workload_checks_the_kernel_gates_rows(monkeypatch):
    """The attention layer's checks look at the rows the kernel gate would (every row at this size): a kernel
    wrong in one row that the old 64-row sample never drew is caught in prefill and train_step."""
    from harness.interfaces.reference import sample_rows

    row = 500
    assert row not in sample_rows(1024).tolist()
    sdpa = catalog.get_method("sdpa")

    def build(problem):
        fn = sdpa.build(problem)

        def wrong_row(q, k, v):
            out = fn(q, k, v)
            bump = torch.zeros_like(out)
            bump[:, row] = 0.5
            return out + bump
        return wrong_row

    module = types.ModuleType("lcbench_test_wrong_row")
    module.METHODS = [Method(name="sdpa_wrong_row", summary="sdpa, one row off", build=build,
                             mask_features=sdpa.mask_features, decode=True)]
    monkeypatch.setitem(sys.modules, module.__name__, module)
    monkeypatch.setenv("LCBENCH_PLUGINS", module.__name__)
    try:
        for phase in ("prefill", "train_step"):
            record = execute(workload_run("attention_layer", phase, seqlen=1024, params={"method": "sdpa_wrong_row"}))
            assert record["status"] == "invalid", (phase, record["reason"])
    finally:
        catalog.methods.cache_clear()


# ----- the FLOP model against torch.utils.flop_counter: every workload, phase and method it runs on -------------

def _runs_here(method: Method) -> bool:
    return "cpu" in method.devices and not method.unavailable_reason()


def _flop_methods(spec) -> list[str]:
    """The methods a workload's method parameter is held to the counter with: every linear method where the
    parameter needs a linear kernel (their FLOPs are the matmuls they run); otherwise every method that states
    what it executes (``Method.executed_flops``) — the others state the softmax convention's exact mask area,
    not the tiles they compute, so no counter can check them."""
    registry = catalog.methods()
    if spec.needs:
        return sorted(n for n, m in registry.items() if getattr(m, spec.needs) is not None and _runs_here(m))
    return sorted(n for n, m in registry.items() if m.executed_flops is not None and _runs_here(m))


def flop_cases():
    for name in WORKLOADS:
        w = catalog.get_workload(name)
        for key, spec in sorted(w.specs.items()):
            if spec.registry != "method":
                continue
            for method in _flop_methods(spec):
                for phase in w.phases:
                    yield pytest.param(name, phase, {**SMALL_PARAMS.get(name, {}), key: method},
                                       id=f"{name}-{phase}-{key}={method}")


@pytest.mark.parametrize("name,phase,params", list(flop_cases()))
def test_every_workload_states_the_flops_the_counter_counts(name, phase, params):
    """The FLOPs a workload phase states equal FlopCounterMode's count of one timed call (up to float rounding):
    both count matmuls and attention as the method executes it; what neither counts (softmax, norms, RoPE,
    element-wise work, optimizers) is left out of both. The counter is torch's, plus the CPU ops it lacks
    (``tests/flop_counting.py``)."""
    case = WorkloadCase(workload_run(name, phase, seqlen=128, params=params))
    executor = SingleDevice(measure_memory=False)
    problem = case.problem(executor)
    why = case.unsupported(problem)
    if why:
        pytest.skip(why)
    built = case.build(problem, executor)
    built.call()  # warm (a first call may build optimizer state or caches)
    with flop_counting.counter() as counter:
        built.call()
    assert counter.get_total_flops() == pytest.approx(built.flops, rel=1e-9), (name, phase, params)
