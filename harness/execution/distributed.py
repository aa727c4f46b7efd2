"""The rank-group executor: the same sequence on every rank of a torch.distributed group, the record on rank 0.

:func:`execute_distributed` is called on every rank of an initialised default process group whose size is
``run.world_size`` (by the Ray scheduler's rank actors and by :mod:`harness.cluster.launch`). What differs
from one device:

- steps that may fail on some ranks only (a strategy's ``prepare``) are agreed: the first failure stops the
  run on every rank, so no rank goes on alone into a collective;
- each timed iteration starts at a barrier; the record holds the RANK-MAX time per iteration (median, p20,
  p80), every rank's median and CPU time, and the time imbalance (max/mean);
- per-rank facts (bytes sent, area, peak memory) are gathered to rank 0, which writes the record.

A rank other than 0 whose run fails raises :class:`RankFailed`, so its supervisor reports the rank's own reason
at once instead of rank 0 waiting out the group timeout and reporting a peer error.
"""

from __future__ import annotations

import json
import math
import statistics
import time
from typing import Callable, Optional, Sequence

import torch
import torch.distributed as dist

from harness import status as st
from harness.execution.cases import case_for
from harness.execution.executor import execute_run
from harness.execution.measure import TimingStats, peak_memory, summarize
from harness.run import Run, Timing


class RankFailed(RuntimeError):
    """Raised on a rank other than 0 whose run failed (see the module docstring)."""

    def __init__(self, status: str, reason: str):
        super().__init__(f"{status}: {reason}")
        self.status, self.reason = status, reason


def all_gather_objects(obj) -> list:
    out: list = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


class RankGroupExecutor:
    """This rank of the default process group (see the module docstring)."""

    def __init__(self, measure_memory: bool = True):
        self.rank = dist.get_rank()
        self.world_size = dist.get_world_size()
        self.measure_memory = measure_memory
        self.timing_facts: list[tuple[list[float], float]] = []  # every rank's (seconds per call, CPU per call)

    def agree(self, mine: Optional[tuple[str, str]]) -> Optional[tuple[str, str]]:
        everyone = all_gather_objects(mine)
        return next((o for o in everyone if o is not None), None)

    def time(self, call: Callable[[], object], timing: Timing, device: torch.device) -> TimingStats:
        """Per-iteration rank-max times; every rank runs the same number of iterations, chosen from the slowest
        rank's first sample so that ``min_run_time`` and ``min_samples`` are met, capped at ``max_samples``.
        One warm-up call already ran (the case's ``warm``)."""
        for _ in range(max(timing.warmup - 1, 0)):
            dist.barrier()
            call()
        dist.barrier()
        t0 = time.perf_counter()
        call()
        first = torch.tensor([time.perf_counter() - t0], dtype=torch.float64)
        dist.all_reduce(first, op=dist.ReduceOp.MAX)
        wanted = math.ceil(timing.min_run_time / max(float(first), 1e-9))
        n = max(timing.min_samples, min(timing.max_samples, wanted))
        seconds: list[float] = []
        cpu = 0.0
        for _ in range(n):
            dist.barrier()
            c0, t0 = time.process_time(), time.perf_counter()
            call()
            seconds.append(time.perf_counter() - t0)
            cpu += time.process_time() - c0
        dist.barrier()
        self.timing_facts = all_gather_objects((seconds, cpu / n))
        rank_max = [max(times[i] for times, _ in self.timing_facts) for i in range(n)]
        return summarize(rank_max, max(c for _, c in self.timing_facts))

    def memory(self, call: Callable[[], object], inputs: Sequence[torch.Tensor], device: torch.device) -> tuple[int, str]:
        return peak_memory(call, inputs, device)

    def gather(self, facts: dict) -> list[dict]:
        return all_gather_objects(facts)

    def timing_fields(self) -> dict:
        """Every rank's median and CPU time per call, and the time imbalance (max / mean of the medians)."""
        medians = [statistics.median(times) * 1e3 for times, _ in self.timing_facts]
        mean = statistics.mean(medians)
        return {
            "rank_time_ms": json.dumps([round(t, 4) for t in medians]),
            "rank_cpu_ms": json.dumps([round(c * 1e3, 4) for _, c in self.timing_facts]),
            "time_imbalance": max(medians) / mean if mean > 0 else None,
        }

    def describe(self, reason: str) -> str:
        return f"rank {self.rank}: {reason}"

    def finish(self, record: dict) -> Optional[dict]:
        if self.rank != 0 and record["status"] in st.RUN_BREAKING:
            raise RankFailed(record["status"], record["reason"])
        return record if self.rank == 0 else None


def execute_distributed(run: Run, measure_memory: bool = True) -> Optional[dict]:
    """Run ``run`` on this rank; rank 0 returns the record, the other ranks None (see module docstring)."""
    if dist.get_world_size() != run.world_size:
        record = st.base_record(run)
        return st.set_status(record, st.ERROR,
                          f"process group has {dist.get_world_size()} ranks, run wants {run.world_size}")
    return execute_run(run, RankGroupExecutor(measure_memory), case_for)
