"""One execution sequence for every run: method, strategy or workload, on one device or on a rank group.

::

    resolve (catalog) -> availability -> support check -> build (outside timing) -> correctness check
    -> warm-up -> time -> memory -> record

The KIND of the run supplies what differs (:mod:`harness.execution.cases`: the callable, its FLOPs, its
check, its metrics); the EXECUTOR supplies where it runs (:class:`harness.execution.single.SingleDevice`, or
:class:`harness.execution.distributed.RankGroupExecutor` on every rank of a torch.distributed group: barriers,
rank-max time, per-rank facts gathered to rank 0). Nothing here knows a kind or a plugin by name.

Every outcome is a record with a status (:mod:`harness.status`) and a one-line reason, never an exception:
a sweep goes on whatever one run does. An unexpected exception names whose code raised it
(:func:`classify_exception`): ``plugin NAME raised TypeError: ...`` for a registered method, strategy or
workload, ``lcbench (at FILE:LINE) raised ...`` for lcbench's own code.
"""

from __future__ import annotations

import json
import time
import traceback
from dataclasses import dataclass, field
from typing import Any, Callable, Optional, Protocol, Sequence

import torch

from harness import status as st
from harness.errors import UserError
from harness.execution.machine import peak_fields, peak_tflops
from harness.execution.measure import TimingStats
from harness.interfaces import Unavailable, Unsupported
from harness.run import Run, Timing


@dataclass
class Built:
    """What a kind built for one run (outside the timed region): the timed call and what is known about it.

    ``check`` is the correctness gate (a :class:`~harness.execution.gate.GateResult` or a workload's
    :class:`~harness.interfaces.workload.CheckResult`; on a rank group only rank 0's verdict counts).
    ``warm`` is one untimed call that may measure something per call (bytes sent); ``per_rank`` this rank's
    facts and ``summarize`` rank 0's record fields from every rank's facts (distributed runs)."""

    call: Callable[[], object]
    flops: float
    check: Callable[[], Any]
    fields: dict[str, Any] = field(default_factory=dict)
    inputs: Sequence[torch.Tensor] = ()
    metrics: Callable[[float], dict[str, float]] = lambda seconds: {}
    units: dict[str, str] = field(default_factory=dict)
    better: dict[str, str] = field(default_factory=dict)
    warm: Callable[[], None] = lambda: None
    per_rank: Callable[[], dict] = dict
    summarize: Callable[[list[dict]], dict] = lambda per_rank: {}
    dtype: Optional[torch.dtype] = None  # for the %peak of attention kinds
    device: torch.device = torch.device("cpu")


class Case(Protocol):
    """One run of one kind, resolved from the catalog (see :mod:`harness.execution.cases`). Its steps take
    what the one before returned, so they cannot run out of order: ``unavailable()``, then ``problem(executor)``
    (what the subject sees, plain data), ``unsupported(problem)``, ``build(problem, executor)``."""

    def unavailable(self) -> Optional[str]: ...

    def problem(self, executor: "Executor") -> Any: ...

    def unsupported(self, problem: Any) -> Optional[str]: ...

    def build(self, problem: Any, executor: "Executor") -> Built: ...


class Executor(Protocol):
    """Where a run executes: one device, or this rank of a group."""

    rank: int
    world_size: int
    measure_memory: bool

    def agree(self, mine: Optional[tuple[str, str]]) -> Optional[tuple[str, str]]:
        """Every rank's (status, reason) of a step that may fail on some ranks: the first failure, everywhere."""

    def time(self, call: Callable[[], object], timing: Timing, device: torch.device) -> TimingStats: ...

    def memory(self, call: Callable[[], object], inputs: Sequence[torch.Tensor],
               device: torch.device) -> tuple[int, str]: ...

    def gather(self, facts: dict) -> list[dict]:
        """Every rank's facts, on rank 0 (and a list of one on one device)."""

    def timing_fields(self) -> dict:
        """Per-rank timing fields of the last ``time`` (none on one device)."""

    def describe(self, reason: str) -> str:
        """A failure reason as this executor reports it (ranks prefix theirs)."""

    def finish(self, record: dict) -> Optional[dict]:
        """The record to return (None off rank 0)."""


class AgreedFailure(Exception):
    """A step failed on some rank; every rank stops the run with this (status, reason)."""

    def __init__(self, status: str, reason: str):
        super().__init__(reason)
        self.status, self.reason = status, reason


def execute_run(run: Run, executor: Executor, case_for: Callable[[Run], Case]) -> Optional[dict]:
    """The one sequence (module docstring). ``case_for`` resolves the run's kind from the catalog."""
    record = st.base_record(run)
    record["kind"] = run.kind
    started = time.perf_counter()
    try:
        _sequence(run, executor, case_for, record)
    except AgreedFailure as e:
        st.set_status(record, e.status, e.reason)
    except Exception as e:  # noqa: BLE001 — every failure is a result
        status, reason = classify_exception(e, run)
        st.set_status(record, status, executor.describe(reason))
        record["traceback"] = traceback.format_exc(limit=8)
    record["wall_s"] = time.perf_counter() - started
    return executor.finish(record)


def _sequence(run: Run, executor: Executor, case_for: Callable[[Run], Case], record: dict) -> None:
    case = case_for(run)
    why = case.unavailable()
    if why:
        st.set_status(record, st.UNAVAILABLE, why)
        return
    problem = case.problem(executor)
    why = case.unsupported(problem)
    if why:
        st.set_status(record, st.UNSUPPORTED, why)
        return
    built = case.build(problem, executor)
    record.update(built.fields)
    check = built.check()
    built.warm()
    timed_from = time.perf_counter()
    stats = executor.time(built.call, run.timing, built.device)
    if executor.measure_memory:
        peak, mem_method = executor.memory(built.call, built.inputs, built.device)
    else:
        peak, mem_method = 0, "not measured"
    timed_s = time.perf_counter() - timed_from
    facts = executor.gather({**built.per_rank(), "peak": peak})
    if executor.rank != 0:
        return
    record.update(built.summarize(facts))
    record.update(executor.timing_fields())
    record["timed_s"] = timed_s
    fill_measurement(record, run, built, stats, check)
    record["peak_mem_bytes"] = max(f["peak"] for f in facts)
    record["mem_method"] = mem_method if len(facts) == 1 else f"rank max of: {mem_method}"
    if len(facts) > 1:
        record["rank_peak_mem_bytes"] = json.dumps([f["peak"] for f in facts])
    if check.ok:
        st.set_status(record, st.OK, None)
    else:
        st.set_status(record, st.INVALID, check.reason)


def fill_measurement(record: dict, run: Run, built: Built, stats: TimingStats, check: Any) -> None:
    """The measured fields every kind shares: time, CPU time, FLOPs, throughput, check errors, metrics."""
    seconds = stats.median_ms / 1e3 * run.world_size  # device-seconds: rank-max time x world size
    tflops = built.flops / seconds / 1e12 if seconds > 0 and built.flops else 0.0
    peak = peak_tflops(built.dtype, built.device.type) if built.dtype is not None else 0.0
    errors = getattr(check, "errors", {}) or {}
    record.update(
        time_ms_median=stats.median_ms,
        time_ms_p20=stats.p20_ms,
        time_ms_p80=stats.p80_ms,
        samples=stats.samples,
        cpu_ms=stats.cpu_ms,
        flops=built.flops,
        tflops=tflops,
        peak_tflops=peak or None,
        **peak_fields(tflops, peak),
        max_abs_err=getattr(check, "max_abs_err", None),
        gate_errors=json.dumps({k: float(f"{v:.3e}") for k, v in errors.items()}),
        threads=torch.get_num_threads(),
    )
    metrics = built.metrics(stats.median_ms / 1e3)
    if metrics:
        record["metrics"] = metrics
        record["metric_units"] = {k: built.units.get(k, "") for k in metrics}
        record["metric_better"] = {k: built.better.get(k, "lower") for k in metrics}


def classify_exception(e: BaseException, run: Optional[Run] = None) -> tuple[str, str]:
    """(status, one-line reason) for an exception raised by a run.

    The user's mistakes (:class:`UserError`), unsupported features, out-of-memory and timeouts keep their own
    text; any other exception is a bug of the code that raised it, named by :func:`raised_by`."""
    text = _one_line(e)
    if isinstance(e, Unsupported):
        return st.UNSUPPORTED, str(e)
    if isinstance(e, Unavailable):
        return st.UNAVAILABLE, str(e)
    if isinstance(e, UserError):
        return st.ERROR, str(e)
    if isinstance(e, MemoryError) or st.memory_exhausted(str(e)):
        return st.OOM, text
    lowered = text.lower()
    if "timed out" in lowered or "timeout" in lowered:  # a collective that hit the group's timeout
        return st.TIMEOUT, text
    return st.ERROR, f"{raised_by(e, run)} raised {text}"


def _one_line(e: BaseException) -> str:
    lines = f"{type(e).__name__}: {e}".strip().splitlines() or [type(e).__name__]
    return lines[0][:400]


def raised_by(e: BaseException, run: Optional[Run] = None) -> str:
    """Whose code raised ``e``: ``plugin NAME`` for the innermost traceback frame in a registered method's,
    strategy's or workload's code (:func:`harness.catalog.code_owners`: one of its functions or a closure inside
    them, else a function of a module they live in). Code several entries share is put down to the one this
    run uses, else named with its owners. ``lcbench (at FILE:LINE)`` when no plugin code is on the stack."""
    from harness.catalog import code_owners

    try:
        owners, used = code_owners(), _subjects(run)
    except Exception:  # noqa: BLE001 — a catalog that cannot load (a broken plugin) must not hide the failure
        owners, used = None, []
    for frame in reversed(_frames(e) if owners is not None else []):
        names = owners.by_code.get(frame.f_code) or owners.by_module.get(frame.f_globals.get("__name__"))
        if names:
            return _owner(names, used, frame)
    last = traceback.extract_tb(e.__traceback__)[-1:] if e.__traceback__ else []
    return "lcbench" + "".join(f" (at {f.filename.rsplit('/', 1)[-1]}:{f.lineno})" for f in last)


def _owner(names: tuple[str, ...], used: list[str], frame) -> str:
    if len(names) == 1:
        return f"plugin {names[0]}"
    mine = [n for n in used if n in names]
    if mine:
        return f"plugin {mine[0]}"
    shared = ", ".join(names[:3]) + (", ..." if len(names) > 3 else "")
    return f"plugin code in {frame.f_globals.get('__name__')}.{frame.f_code.co_name} (shared by {shared})"


def _frames(e: BaseException) -> list:
    """The frames of ``e``'s traceback, outermost first."""
    out, tb = [], e.__traceback__
    while tb is not None:
        out.append(tb.tb_frame)
        tb = tb.tb_next
    return out


def _subjects(run: Optional[Run]) -> list[str]:
    """The names a run uses: its strategy, method and workload, and the names among its parameters."""
    if run is None:
        return []
    names = [run.strategy or "", run.method or "", run.workload or ""]
    names += [v for v in run.param_kwargs.values() if isinstance(v, str)]
    if run.workload:
        from harness.catalog import workloads

        workload = workloads().get(run.workload)
        names += [v for v in (workload.params.values() if workload else ()) if isinstance(v, str)]
    return [n for n in names if n]
