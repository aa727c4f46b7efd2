"""Local launcher: run context-parallel runs on this machine, without Ray, on local rank groups.

:func:`run_local_many` builds one :class:`~harness.cluster.local_group.LocalRankGroup` per world size (W
supervised children over gloo) and feeds it the runs of that size in order; the group is reused until a run
breaks it (:func:`harness.cluster.outcomes.breaks_group`: a failed, hung or crashed run), then a fresh group
takes the remaining runs. Records come from :func:`harness.cluster.outcomes.group_record`, as in the Ray
scheduler: the children enforce each run's time limit, a rank that dies or overruns is reported with its
cause, and the caller never hangs. :func:`run_local` is the one-run form used by the in-process scheduler.
"""

from __future__ import annotations

import time
from typing import Optional, Sequence

from harness.cluster.group_run import GroupError
from harness.cluster.local_group import LocalRankGroup, free_port, threads_per_rank  # noqa: F401 — free_port: API
from harness.cluster.outcomes import breaks_group, group_record
from harness.spec import Run
from harness.status import base_record, outcome

DEFAULT_EXECUTOR = "harness.execution.distributed:execute_distributed"
SCHEDULER = "local"  # the records' ``scheduler`` field
GROUP_TIMEOUT_MARGIN_S = 5.0  # the group's collectives time out a little after a run's limit
INIT_TIMEOUT_S = 60.0  # starting the children and initialising the process group
FAILURE_GRACE_S = 2.0  # after one rank failed, how long the others may still answer
ANSWER_GRACE_S = 5.0  # over the limit the children enforce themselves


def run_local_many(
    runs: Sequence[Run],
    timeout_s: float = 120.0,
    measure_memory: bool = True,
    executor: str = DEFAULT_EXECUTOR,
) -> list[dict]:
    """Records of ``runs`` (same order), each run executed by a local gloo group of its world size.

    ``timeout_s`` bounds each run (the process group's timeout is a little longer); ``measure_memory=False``
    skips the profiler pass; ``executor`` (``"module:function"``) replaces the rank executor (tests inject
    faults this way). The non-default settings are passed to the default executor only.
    """
    kwargs = {"measure_memory": measure_memory} if executor == DEFAULT_EXECUTOR else {}
    records: list[Optional[dict]] = [None] * len(runs)
    by_size: dict[int, list[int]] = {}
    for i, run in enumerate(runs):
        by_size.setdefault(run.world_size, []).append(i)
    for world_size, indices in by_size.items():
        group: Optional[LocalRankGroup] = None
        threads = threads_per_rank(world_size)
        try:
            for i in indices:
                if group is None:
                    group, failure = _build(world_size, threads, timeout_s, runs[i])
                    if failure is not None:
                        records[i] = failure
                        continue
                result = group.run(executor, runs[i], timeout_s, None, FAILURE_GRACE_S, ANSWER_GRACE_S, kwargs)
                records[i] = group_record(runs[i], result, threads, timeout_s, scheduler=SCHEDULER)
                if not result.ok or breaks_group(records[i]):
                    group.teardown()
                    group = None
        finally:
            if group is not None:
                group.teardown()
    return [r for r in records if r is not None]


def _build(world_size: int, threads: int, timeout_s: float, run: Run) -> tuple[Optional[LocalRankGroup], Optional[dict]]:
    """A started group, or ``(None, record)``: the run that was to open it failed with the group's reason."""
    started = time.perf_counter()
    try:
        return LocalRankGroup(world_size, threads, timeout_s + GROUP_TIMEOUT_MARGIN_S, INIT_TIMEOUT_S).build(), None
    except GroupError as e:
        record = outcome(base_record(run), e.status, f"rank group of {world_size}: {e}")
        record.update(threads=threads, wall_s=time.perf_counter() - started, scheduler=SCHEDULER)
        return None, record


def run_local(run: Run, timeout_s: float = 120.0, **kwargs) -> dict:
    """The record of one run executed by ``run.world_size`` local gloo processes (see run_local_many)."""
    return run_local_many([run], timeout_s, **kwargs)[0]
