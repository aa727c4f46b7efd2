"""The single-device executor: one process, one device; ``execute(run)`` is the entry point of a single run."""

from __future__ import annotations

from typing import Callable, Optional, Sequence

import torch

from harness.execution.cases import case_for
from harness.execution.executor import execute_run
from harness.execution.measure import TimingStats, peak_memory, time_call
from harness.run import Run, Timing


class SingleDevice:
    """Runs in this process: ``torch.utils.benchmark`` timing (triton's ``do_bench`` on CUDA), allocator peak."""

    rank = 0
    world_size = 1

    def __init__(self, measure_memory: bool = True):
        self.measure_memory = measure_memory

    def agree(self, mine: Optional[tuple[str, str]]) -> Optional[tuple[str, str]]:
        return mine

    def time(self, call: Callable[[], object], timing: Timing, device: torch.device) -> TimingStats:
        return time_call(call, timing, device)

    def memory(self, call: Callable[[], object], inputs: Sequence[torch.Tensor], device: torch.device) -> tuple[int, str]:
        return peak_memory(call, inputs, device)

    def gather(self, facts: dict) -> list[dict]:
        return [facts]

    def timing_fields(self) -> dict:
        return {}

    def describe(self, reason: str) -> str:
        return reason

    def finish(self, record: dict) -> dict:
        return record


def execute(run: Run, measure_memory: bool = True) -> dict:
    """Run one single-device point (a method, or a workload at world size 1) and return its record."""
    return execute_run(run, SingleDevice(measure_memory), case_for)
