"""Local launcher: run context-parallel runs on this machine, without Ray, on local rank groups.

:class:`LocalGroups` keeps one :class:`~harness.cluster.local_group.LocalRankGroup` (W supervised children
over gloo) and feeds it the runs of its world size; the group is reused until a run breaks it
(:func:`harness.cluster.run_records.breaks_group`: a failed, hung or crashed run), then a fresh group takes the
next run. :func:`run_local_many` runs a list so, grouped by world size; the inline scheduler keeps one.
Records come from :func:`harness.cluster.run_records.group_record`, as in the Ray scheduler: the children enforce
each run's time limit and memory budget, a rank that dies or overruns is reported with its cause, and the
caller never hangs. :func:`run_local` is the one-run form.
"""

from __future__ import annotations

import time
from typing import Callable, Optional, Sequence

from harness.cluster.group_run import GroupError
from harness.cluster.isolation import default_budget
from harness.cluster.local_group import LocalRankGroup, free_port, threads_per_rank  # noqa: F401 — free_port: API
from harness.cluster.run_records import breaks_group, group_record
from harness.cluster.priority import niceness
from harness.run import Run
from harness.status import base_record, set_status

DEFAULT_EXECUTOR = "harness.execution.distributed:execute_distributed"
SCHEDULER = "local"  # the records' ``scheduler`` field
GROUP_TIMEOUT_MARGIN_S = 5.0  # the group's collectives time out a little after a run's limit
INIT_TIMEOUT_S = 60.0  # starting the children and initialising the process group
FAILURE_GRACE_S = 2.0  # after one rank failed, how long the others may still answer
ANSWER_GRACE_S = 5.0  # over the limit the children enforce themselves


class LocalGroups:
    """The local rank groups of a sweep: one group at a time (a CPU machine's cores are the group's), reused run
    after run of its world size until a run breaks it (:func:`~harness.cluster.run_records.breaks_group`), then
    built afresh for the next run; a run of another size tears it down first.

    ``timeout_s`` bounds each run (the group's collectives time out a little later); ``memory_budget`` is each
    rank's RSS budget (None: :func:`~harness.cluster.isolation.default_budget` of the world size); ``nice``: the
    ranks' niceness (None: this process's); ``executor`` (``"module:function"``) runs on every rank with
    ``executor_kwargs``; ``scheduler`` names the records' supervisor."""

    def __init__(self, timeout_s: float = 120.0, memory_budget: Optional[int] = None, executor: str = DEFAULT_EXECUTOR,
                 executor_kwargs: Optional[dict] = None, nice: Optional[int] = None, scheduler: str = SCHEDULER):
        self.timeout_s, self.memory_budget = float(timeout_s), memory_budget
        self.executor, self.executor_kwargs = executor, executor_kwargs or {}
        self.nice = niceness() if nice is None else nice
        self.scheduler = scheduler
        self.group: Optional[LocalRankGroup] = None
        self.built = 0  # groups built so far

    def run(self, run: Run) -> dict:
        """The record of ``run`` on a group of its world size (the group's own failure to start included)."""
        threads = threads_per_rank(run.world_size)
        if self.group is not None and (self.group.world_size != run.world_size or not self.group.healthy):
            self.close()
        if self.group is None:
            self.group, failure = _build(run.world_size, threads, self.timeout_s, run, self.nice, self.scheduler)
            if failure is not None:
                return failure
            self.built += 1
        budget = self.memory_budget or default_budget(run.world_size)
        result = self.group.run(self.executor, run, self.timeout_s, budget, FAILURE_GRACE_S, ANSWER_GRACE_S,
                                executor_kwargs=self.executor_kwargs)
        record = group_record(run, result, threads, self.timeout_s, scheduler=self.scheduler)
        if not result.ok or breaks_group(record):
            self.close()
        return record

    def close(self) -> None:
        if self.group is not None:
            self.group.teardown()
            self.group = None


def run_local_many(
    runs: Sequence[Run],
    timeout_s: float = 120.0,
    measure_memory: bool = True,
    executor: str = DEFAULT_EXECUTOR,
    memory_budget: Optional[int] = None,
    on_record: Optional[Callable[[dict], None]] = None,
) -> list[dict]:
    """Records of ``runs`` (same order), each run executed by a local gloo group of its world size (one group
    per world size, reused: :class:`LocalGroups`); ``on_record`` is called with each record as it finishes
    (progress).

    ``timeout_s`` bounds each run (the process group's timeout is a little longer); ``measure_memory=False``
    skips the profiler pass; ``executor`` (``"module:function"``) replaces the rank executor (tests inject
    faults this way); ``memory_budget`` is each rank's RSS budget (default: see :class:`LocalGroups`). The
    non-default settings are passed to the default executor only.
    """
    kwargs = {"measure_memory": measure_memory} if executor == DEFAULT_EXECUTOR else {}
    first: dict[int, int] = {}  # world size -> its first run: sizes in order of appearance, runs in order
    for i, run in enumerate(runs):
        first.setdefault(run.world_size, i)
    order = sorted(range(len(runs)), key=lambda i: (first[runs[i].world_size], i))
    records: list[Optional[dict]] = [None] * len(runs)
    groups = LocalGroups(timeout_s, memory_budget, executor, kwargs)
    try:
        for i in order:
            records[i] = groups.run(runs[i])
            if on_record is not None:
                on_record(records[i])
    finally:
        groups.close()
    return [r for r in records if r is not None]


def _build(world_size: int, threads: int, timeout_s: float, run: Run, nice: Optional[int] = None,
           scheduler: str = SCHEDULER) -> tuple[Optional[LocalRankGroup], Optional[dict]]:
    """A started group, or ``(None, record)``: the run that was to open it failed with the group's reason."""
    started = time.perf_counter()
    try:
        group = LocalRankGroup(world_size, threads, timeout_s + GROUP_TIMEOUT_MARGIN_S, INIT_TIMEOUT_S, nice=nice)
        return group.build(), None
    except GroupError as e:
        record = set_status(base_record(run), e.status, f"rank group of {world_size}: {e}")
        record.update(threads=threads, wall_s=time.perf_counter() - started, scheduler=scheduler)
        return None, record


def run_local(run: Run, timeout_s: float = 120.0, **kwargs) -> dict:
    """The record of one run executed by ``run.world_size`` local gloo processes (see run_local_many)."""
    return run_local_many([run], timeout_s, **kwargs)[0]
