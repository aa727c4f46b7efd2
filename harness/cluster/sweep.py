"""A sweep: the runs of a suite, scheduled, each stored durably the moment it finishes.

The driver owns the store: a scheduler only yields records, and the driver commits each one before asking
for the next, so a sweep killed at any moment resumes (``resume=True``) without repeating or losing runs.
"""

from __future__ import annotations

import sys
from collections import Counter
from dataclasses import dataclass, field

from rich.console import Console

from harness import status as st
from harness.cluster.scheduler import Scheduler
from harness.progress import progress
from harness.execution.machine import machine_info
from harness.run import Run
from harness.results.store import ResultStore


FAILURE_LINE = 200  # characters of a failed run's reason in its progress line (the record keeps all)


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
                    store_one(st.set_status(st.base_record(run), st.ERROR,
                                         f"no record came back for this run: the scheduler returned {unkeyed} "
                                         f"result(s) that name no run (not a record with a key)"))
    return summary
