"""A sweep: the runs of a suite, scheduled, each stored durably the moment it finishes.

The driver owns the store: a scheduler only yields records, and the driver commits each one before asking
for the next, so a sweep killed at any moment resumes (``resume=True``) without repeating or losing runs.
"""

from __future__ import annotations

import os
import sys
from collections import Counter
from dataclasses import dataclass, field
from typing import Iterator, Optional, Protocol

import torch
from rich.console import Console

from harness import status as st
from harness.cluster.isolation import KeptChild, default_budget
from harness.cluster.launch import DEFAULT_EXECUTOR as DEFAULT_RANK_EXECUTOR, LocalGroups
from harness.cluster.local_group import CHILD, rank_env, threads_per_rank
from harness.cluster.outcomes import single_record
from harness.cluster.priority import niceness
from harness.progress import progress
from harness.execution.machine import machine_info
from harness.spec import Run
from harness.results.store import ResultStore


class Scheduler(Protocol):
    """Runs benchmark points somewhere and yields their records as they finish (in any order)."""

    def run(self, runs: list[Run]) -> Iterator[dict]: ...

    def close(self) -> None: ...


def is_single(run: Run) -> bool:
    """A run on one device (a method, or a workload at world size 1); the others run on a rank group."""
    return run.strategy is None and run.world_size == 1


INLINE = "inline"  # the records' ``scheduler`` field
FAILURE_LINE = 200  # characters of a failed run's reason in its progress line (the record keeps all)
RANKS_PER_CPU = 4  # CPU ranks are processes sharing cores: beyond this many per core a group is pointless


def rank_capacity(device: str, cpus: float, gpus: float) -> int:
    """How many ranks a cluster with ``cpus`` CPUs and ``gpus`` GPUs can place for ``device`` runs."""
    return int(gpus) if device == "cuda" else int(cpus * RANKS_PER_CPU)


def unplaceable(run: Run, capacity: int) -> Optional[dict]:
    """The ``unsupported`` record of a run whose world size the cluster cannot place (None when it can):
    reported before any rank starts."""
    if run.world_size <= capacity:
        return None
    unit = "GPUs" if run.device == "cuda" else f"rank slots ({RANKS_PER_CPU} per CPU)"
    return st.outcome(st.base_record(run), st.UNSUPPORTED,
                      f"needs {run.world_size} ranks, cluster has {capacity} {unit}")


class InlineScheduler:
    """Runs every point on this machine without Ray, one at a time (tests, debugging, ``--scheduler inline``),
    each isolated as on Ray: a single-device run in a supervised benchmark process kept between runs
    (:class:`~harness.cluster.isolation.KeptChild`), a multi-rank run on a local rank group
    (:class:`~harness.cluster.launch.LocalGroups`). A crash, an exit, a hang past ``run_timeout_s`` or an RSS
    past ``memory_budget_bytes`` (default: 80% of the node's RAM, divided among a group's ranks) costs that run
    only, and becomes its ``error`` / ``timeout`` / ``oom`` record. ``threads``: torch threads of a
    single-device run (default: this process's cores). ``rank_executor`` replaces the ranks' executor (tests).
    """

    def __init__(self, run_timeout_s: float = 600.0, memory_budget_bytes: Optional[int] = None,
                 threads: Optional[int] = None, start_timeout_s: float = 120.0,
                 rank_executor: str = DEFAULT_RANK_EXECUTOR):
        self.run_timeout_s, self.memory_budget_bytes = float(run_timeout_s), memory_budget_bytes
        self.threads, self.start_timeout_s = threads, start_timeout_s
        self.nice = niceness()
        self._execute = f"{CHILD}:execute_single"
        self.single = KeptChild(f"{CHILD}:prepare", env=rank_env())
        self.groups = LocalGroups(self.run_timeout_s, memory_budget_bytes, rank_executor, nice=self.nice,
                                  scheduler=INLINE)

    @property
    def groups_built(self) -> int:
        """Rank groups built so far (one is reused until a run breaks it)."""
        return self.groups.built

    def run(self, runs: list[Run]) -> Iterator[dict]:
        for run in runs:
            if is_single(run):
                yield self.run_single(run)
                continue
            gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
            refused = unplaceable(run, rank_capacity(run.device, os.cpu_count() or 1, gpus))
            if refused is not None:
                refused["scheduler"] = INLINE
            yield refused or self.groups.run(run)

    def run_single(self, run: Run) -> dict:
        """The record of a single-device run from its supervised process."""
        threads = self.threads or threads_per_rank(1)  # this process's cores
        budget = self.memory_budget_bytes or default_budget(1)
        outcome = self.single.call(self._execute, (run,), (threads, self.nice), self.run_timeout_s, budget,
                                   self.start_timeout_s)
        return single_record(run, outcome, threads, scheduler=INLINE)

    def close(self) -> None:
        self.single.close()
        self.groups.close()


@dataclass
class SweepSummary:
    session: str
    total: int
    skipped_done: int
    counts: Counter = field(default_factory=Counter)
    records: list[dict] = field(default_factory=list)


def run_sweep(
    suite_name: str,
    runs: list[Run],
    store: ResultStore,
    scheduler: Scheduler,
    resume: bool = False,
    show_progress: bool = True,
    console: Console | None = None,
) -> SweepSummary:
    """Schedule ``runs`` (minus those already stored, when resuming) and store every record as it arrives;
    with ``show_progress``, progress on ``console`` (default: stderr): a bar, or lines where it is not a
    terminal (:mod:`harness.progress`), and a line per failed run."""
    done = store.done_keys() if resume else set()
    todo = [r for r in runs if r.key not in done]
    session = store.start_session(suite_name, machine_info(), sys.argv)
    summary = SweepSummary(session=session, total=len(runs), skipped_done=len(runs) - len(todo))
    labels = {r.key: r.label for r in todo}
    unkeyed = 0  # results that name no run (not a record): their runs are stored as errors at the end
    with progress(suite_name, len(todo), console, enabled=show_progress, unit="runs done") as report:

        def store_one(record: object) -> bool:
            stored = store.put(record, session, suite_name)  # checked: a malformed record is stored as an error
            if stored is None:
                return False
            summary.counts[stored["status"]] += 1
            summary.records.append(stored)
            if stored["status"] in st.FAILED:
                reason = (stored.get("reason") or "").split("\n")[0][:FAILURE_LINE]
                report.failure(f"{stored['status']}: {labels.get(stored['key'], stored['key'])}: {reason}")
            c = summary.counts
            report.update(len(summary.records), failed=sum(c[s] for s in st.FAILED),
                          skipped=sum(c[s] for s in st.NOT_RUN))
            return True

        for record in scheduler.run(todo):
            unkeyed += not store_one(record)
        if unkeyed:
            stored = {r["key"] for r in summary.records}
            for run in todo:
                if run.key not in stored:
                    store_one(st.outcome(st.base_record(run), st.ERROR,
                                         f"no record came back for this run: the scheduler returned {unkeyed} "
                                         f"result(s) that name no run (not a record with a key)"))
    return summary
