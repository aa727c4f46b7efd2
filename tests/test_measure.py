"""Timing: a call's CPU time is the process CPU time over the timed window divided by every call in it."""

import time

import pytest
import torch

from harness.execution.measure import time_call
from harness.run import Timing


def _spin(cpu_seconds: float):
    """A call that costs exactly ``cpu_seconds`` of this process's CPU time (whatever the wall clock does)."""

    def call() -> None:
        end = time.process_time() + cpu_seconds
        while time.process_time() < end:
            pass

    return call


@pytest.mark.parametrize("cost_ms", [2.0, 20.0])
def test_cpu_time_per_call_counts_every_call_in_the_window(cost_ms):
    # torch.utils.benchmark's blocked_autorange runs block-size trials before its samples; those calls spend CPU
    # time too, so they must be counted, or a call looks up to several times more expensive than it is
    stats = time_call(_spin(cost_ms / 1e3), Timing(warmup=1, min_samples=3, min_run_time=0.1), torch.device("cpu"))
    assert stats.cpu_ms == pytest.approx(cost_ms, rel=0.15)
    assert stats.samples >= 3
