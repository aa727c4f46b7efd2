"""The scheduler without Ray: every point on this machine, one at a time, each isolated as on Ray."""

from __future__ import annotations

import os
from typing import Iterator, Optional

import torch

from harness.cluster.isolation import KeptChild, default_budget
from harness.cluster.launch import DEFAULT_EXECUTOR as DEFAULT_RANK_EXECUTOR, LocalGroups
from harness.cluster.local_group import CHILD, rank_env, threads_per_rank
from harness.cluster.run_records import single_record
from harness.cluster.priority import niceness
from harness.cluster.scheduler import is_single, rank_capacity, unplaceable
from harness.run import Run

INLINE = "inline"  # the records' ``scheduler`` field


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
