"""Build any single-device run the way the executor does, for a benchmark that times it side by side.

:func:`build_run` resolves the run's case (method or workload), checks availability and support, and
runs its correctness check once (the gate against float64, or the workload's own check: a benchmark shows no
number of an unvalidated call) and returns the executor's :class:`~harness.execution.executor.Built` (the
timed call, its FLOPs, the workload's metrics and static fields) together with the case's problem. :func:`paired_medians` warms a set of
built calls up and times them alternately (:func:`harness.bench.paired.alternate`). The study benchmarks
(``lcbench bench linear|power|hybrid|ttt``) and ``lcbench bench kernels`` build every side through here, so a
benchmarked call is exactly the call a suite run times.
"""

from __future__ import annotations

from typing import Callable, Mapping, Optional

from harness.bench.paired import Paired, alternate
from harness.execution.cases import case_for
from harness.execution.executor import Built
from harness.execution.machine import machine_info
from harness.execution.single import SingleDevice
from harness.interfaces import softmax_flops
from harness.run import Run


class NotRunnable(RuntimeError):
    """The run is unavailable or unsupported here, or fails its correctness check (the message says why)."""


def build_run(run: Run) -> tuple[Built, object]:
    """(what the executor builds for ``run`` on one device, checked as the executor checks it, the case's
    problem)."""
    case = case_for(run)
    executor = SingleDevice(measure_memory=False)
    why = case.unavailable()
    problem = None if why else case.problem(executor)
    why = why or case.unsupported(problem)
    if why:
        raise NotRunnable(f"{run.label}: {why}")
    built = case.build(problem, executor)
    verdict = built.check()  # outside any timing, as in the executor
    if not verdict.ok:
        raise NotRunnable(f"{run.label}: failed its correctness check: {verdict.reason}")
    return built, problem


def built_call(run: Run) -> tuple[Callable[[], object], float, float]:
    """(the timed call of an attention ``run`` as the executor builds it, its softmax FLOPs on the exact mask
    area, the mask's density: area / (batch x heads x S^2))."""
    built, problem = build_run(run)
    density = problem.area / (problem.batch * problem.heads_q * problem.seqlen**2)
    return built.call, softmax_flops(problem, run.direction), density


def paired_medians(calls: Mapping[str, Callable[[], object]], reps: int, warmup: int = 1) -> Paired:
    """``warmup`` untimed calls of each, then ``reps`` alternating rounds (A, B, A, B, ...)."""
    for call in calls.values():
        for _ in range(warmup):
            call()
    return alternate(calls, reps)


def crossover(faster: Mapping[int, bool]) -> Optional[int]:
    """The smallest measured length from which one side is faster at every larger measured length (None: it
    is not faster at the longest)."""
    found = None
    for length in sorted(faster, reverse=True):
        if not faster[length]:
            break
        found = length
    return found


def machine_line() -> str:
    """The machine and software a benchmark's figures belong to (quoted beside every figure)."""
    import torch

    info = machine_info()
    return (f"{info['cpu']} ({info['cpu_count']} cores), torch {info['versions'].get('torch')}, "
            f"{torch.get_num_threads()} threads, commit {info['commit']}, allocator {info['allocator']}")


__all__ = ["NotRunnable", "build_run", "built_call", "crossover", "machine_line", "paired_medians"]
