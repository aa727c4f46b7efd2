"""What each kind of run supplies to the one execution sequence (:mod:`harness.execution.executor`).

``case_for(run)`` picks the kind from the run's fields (``Run.kind``) and resolves the subject by name from the
catalog; nothing else in the execution path knows which kind it runs.
"""

from __future__ import annotations

from typing import Callable

from harness.execution.cases.method import MethodCase
from harness.execution.cases.strategy import StrategyCase
from harness.execution.cases.workload import WorkloadCase
from harness.run import Run

CASES: dict[str, Callable[[Run], object]] = {"method": MethodCase, "strategy": StrategyCase, "workload": WorkloadCase}


def case_for(run: Run):
    return CASES[run.kind](run)


__all__ = ["CASES", "MethodCase", "StrategyCase", "WorkloadCase", "case_for"]
