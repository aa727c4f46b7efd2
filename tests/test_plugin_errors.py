"""An unexpected exception of a plugin's code is stored as ``plugin NAME raised TYPE: message`` — the method,
strategy or workload whose code raised named, never a bare ``ZeroDivisionError`` — and the user's own mistakes,
unsupported features and lcbench's own failures keep reasons of their own."""

from __future__ import annotations

import pytest

from harness import catalog
from harness.execution.executor import classify_exception
from harness.execution.single import execute
from harness.run import Run, Timing

QUICK = Timing(warmup=0, min_samples=1, min_run_time=0.001)
MODULE = "lcbench_raising_plugins"
PLUGIN = '''
from harness.interfaces import Method, Workload, WorkloadStep, Unsupported
from harness.masks.core import ALL_FEATURES


def _build_type_error(problem):
    return len(3)  # TypeError in the method's own code


def _build_later(problem):
    def fn(q, k, v):
        return {}[q.shape]  # KeyError when called, inside a closure of this module
    return fn


def _build_unsupported(problem):
    raise Unsupported("no such tile size here")


def _workload_build(problem):
    if problem.params["mode"] == "divide":
        return 1 / 0
    if problem.params["mode"] == "method":
        return problem.method("raising_type_error").build(None)  # the method's code raises, not the workload's
    raise IndexError("list index out of range")


METHODS = [
    Method(name=n, summary="raises", build=b, mask_features=ALL_FEATURES)
    for n, b in (("raising_type_error", _build_type_error), ("raising_later", _build_later),
                 ("raising_unsupported", _build_unsupported))
]
WORKLOADS = [Workload(name="raising_workload", summary="raises", phases=("prefill",),
                      params={"mode": "divide"}, build=_workload_build)]
'''


@pytest.fixture
def plugins(tmp_path, monkeypatch):
    (tmp_path / f"{MODULE}.py").write_text(PLUGIN)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv(catalog.PLUGINS_ENV, MODULE)
    for registry in (catalog.methods, catalog.workloads, catalog.code_owners):
        registry.cache_clear()
    yield
    for registry in (catalog.methods, catalog.workloads, catalog.code_owners):
        registry.cache_clear()


def method_run(method: str) -> Run:
    return Run.make(method=method, mask="causal", seqlen=64, heads_q=2, heads_kv=2, head_dim=8, timing=QUICK)


def workload_run(mode: str) -> Run:
    return Run.make(workload="raising_workload", params={"mode": mode}, mask="causal", seqlen=64,
                    phase="prefill", timing=QUICK)


CASES = [
    # (run, status, the reason's start)
    (method_run("raising_type_error"), "error", "plugin raising_type_error raised TypeError: object of type 'int'"),
    (method_run("raising_later"), "error", "plugin raising_later raised KeyError:"),
    (method_run("raising_unsupported"), "unsupported", "no such tile size here"),
    (workload_run("divide"), "error", "plugin raising_workload raised ZeroDivisionError: division by zero"),
    (workload_run("index"), "error", "plugin raising_workload raised IndexError: list index out of range"),
    (workload_run("method"), "error", "plugin raising_type_error raised TypeError:"),
]


@pytest.mark.parametrize("run,status,reason", CASES, ids=[f"{r.method or r.param_kwargs['mode']}" for r, _, _ in CASES])
def test_the_stored_reason_names_the_plugin_whose_code_raised(plugins, run, status, reason):
    record = execute(run, measure_memory=False)
    assert record["status"] == status, (record["status"], record["reason"])
    assert record["reason"].startswith(reason), record["reason"]
    assert "\n" not in record["reason"]


def test_a_module_shared_by_several_entries_is_put_down_to_the_one_the_run_uses():
    owners = catalog.code_owners().by_module
    shared = next((m, names) for m, names in owners.items() if len(names) > 1)
    module, names = shared
    code = compile("def boom():\n    raise TypeError('shared')\n", f"<{module}>", "exec")
    scope = {"__name__": module}
    exec(code, scope)  # a function whose frame reports the shared module
    try:
        scope["boom"]()
    except TypeError as e:
        run = Run.make(method=names[1], mask="causal", seqlen=64, heads_q=1, heads_kv=1, head_dim=8)
        assert classify_exception(e, run) == ("error", f"plugin {names[1]} raised TypeError: shared")
        _, reason = classify_exception(e)
        assert reason.startswith(f"plugin code in {module}.boom (shared by {names[0]}")


def test_lcbench_s_own_code_is_named_with_the_place():
    try:
        {}["missing"]
    except KeyError as e:
        status, reason = classify_exception(e)
    assert status == "error" and reason.startswith("lcbench (at test_plugin_errors.py:") and "KeyError" in reason
