"""``RayScheduler``: runs a sweep's points on Ray, locally or on a cluster, and survives every kind of run fault.

Single-device runs (world size 1, no strategy) are Ray tasks (``max_retries=0``); the run itself happens in a
benchmark process that the task's worker supervises (``harness.cluster.isolation``) with a time limit, a memory
budget (an RSS watchdog) and an exact death cause, so a crash, a hang or a memory blow-up costs that run
only (the process is replaced; ``fresh_process_per_run=True`` replaces it after every run). On CPU, concurrent runs compete for
cores and spoil each other's timings, so by default each task asks for all the CPUs of a node: ONE timed run
at a time per node. ``max_concurrent=N`` allows N per node (each then gets 1/N of the node's CPUs and as many
torch threads). The driver also stops waiting for a task after the time limit plus a grace
(``ray.wait`` timeout) and cancels it (``ray.cancel(force=True)``), in case its supervisor itself is stuck.

Multi-rank runs (a strategy at some world size) are bucketed by (world size, device); each bucket runs on one
persistent group of rank actors (``harness.cluster.rank_group``) whose process group is initialised once and reused
for every run; a run that fails in any way tears the group down and the next run gets a fresh one. On CPU a
group takes one node's CPUs, so it never overlaps a timed single-device run; groups of other sizes are
released before a bucket starts.

Records are yielded as runs finish; nothing a run does makes ``run()`` raise.
"""

from __future__ import annotations

import math
import time
from collections import deque
from typing import Iterator, Optional

import ray

from harness.status import base_record, set_status
from harness.cluster.isolation import Outcome
from harness.cluster.run_records import breaks_group, group_record, single_record
from harness.cluster.priority import niceness
from harness.cluster.rank_group import GroupError, GroupSpec, RankGroup, cpus_per_rank
from harness.cluster.ray_cluster import RayConnection
from harness.cluster.ray_workers import DEFAULT_RANK_EXECUTOR, run_single_task
from harness.cluster.scheduler import is_single, rank_capacity, unplaceable
from harness.run import Run

GroupKey = tuple[int, str]  # (world size, device)


class RayScheduler:
    """The :class:`~harness.cluster.scheduler.Scheduler` that runs points on Ray (see module docstring).

    ``address``: None (and no ``RAY_ADDRESS``) starts an embedded single-node Ray on loopback; ``"auto"`` or
    ``"HOST:PORT"`` joins a running cluster. ``max_concurrent``: timed single-device runs at once per node.
    ``run_timeout_s``: time limit of one run (status ``timeout``). ``memory_budget_bytes``: RSS limit of each
    benchmark process (each rank, for a multi-rank run; status ``oom``); default 80% of the node's RAM divided
    by the processes that may share it. ``threads``: torch threads per process; default the CPUs it reserved.
    Every benchmark process runs at this driver's niceness (``harness.cluster.priority``).
    """

    def __init__(
        self,
        address: Optional[str] = None,
        max_concurrent: int = 1,
        run_timeout_s: float = 600.0,
        *,
        memory_budget_bytes: Optional[int] = None,
        threads: Optional[int] = None,
        rank_cpus: Optional[float] = None,
        group_timeout_s: float = 120.0,
        init_timeout_s: float = 60.0,
        start_timeout_s: float = 120.0,
        answer_grace_s: float = 30.0,
        failure_grace_s: float = 2.0,
        rank_executor: str = DEFAULT_RANK_EXECUTOR,
        fresh_process_per_run: bool = False,
        num_cpus: Optional[int] = None,
        log_to_driver: bool = False,
    ):
        if max_concurrent < 1:
            raise ValueError(f"max_concurrent must be >= 1, got {max_concurrent}")
        self.max_concurrent = max_concurrent
        self.run_timeout_s = float(run_timeout_s)
        self.memory_budget_bytes = memory_budget_bytes
        self.threads = threads
        self.rank_cpus = rank_cpus
        self.group_timeout_s = group_timeout_s
        self.init_timeout_s = init_timeout_s
        self.start_timeout_s = start_timeout_s  # a fresh benchmark process (forkserver start included)
        self.answer_grace_s = answer_grace_s  # driver-side slack over the limits its supervisors enforce
        self.failure_grace_s = failure_grace_s  # after one rank failed, how long the others may still answer
        self.rank_executor = rank_executor
        self.fresh_process_per_run = fresh_process_per_run
        self.connection = RayConnection(address, num_cpus=num_cpus, log_to_driver=log_to_driver)
        self.groups: dict[GroupKey, RankGroup] = {}
        self.groups_built = 0
        self.nice = niceness()  # the benchmark processes reset theirs to this (Ray starts its workers at 15)

    # ----- the Scheduler protocol ---------------------------------------------------------------------
    def run(self, runs: list[Run]) -> Iterator[dict]:
        """Yield one record per run as it finishes: single-device runs first, then each world size's bucket."""
        singles = [r for r in runs if is_single(r)]
        buckets: dict[GroupKey, list[Run]] = {}
        for r in sorted((r for r in runs if not is_single(r)), key=lambda r: r.world_size):
            buckets.setdefault((r.world_size, r.device), []).append(r)
        if singles:
            self.release_groups()
            yield from self._run_singles(singles)
        for key, bucket in buckets.items():
            world_size, device = key
            nodes = self.connection.nodes()
            capacity = rank_capacity(device, sum(n.cpus for n in nodes), sum(n.gpus for n in nodes))
            refused = [unplaceable(run, capacity) for run in bucket]
            if all(refused):
                for record in refused:
                    record["scheduler"] = "ray"
                    yield record
                continue
            self.release_groups(keep=key)
            yield from self._run_bucket(key, bucket)

    def close(self) -> None:
        """Tear down the rank groups and shut down the embedded Ray (a joined cluster keeps running)."""
        self.release_groups()
        self.connection.close()

    def __enter__(self) -> "RayScheduler":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ----- resources ----------------------------------------------------------------------------------
    def node_cpus(self) -> float:
        """CPUs of the smallest node that has any (a CPU-less head node is not a worker)."""
        cpus = [n.cpus for n in self.connection.nodes() if n.cpus > 0]
        if not cpus:
            raise RuntimeError("the Ray cluster has no node with CPUs")
        return min(cpus)

    def single_cpus(self) -> float:
        """CPUs each single-device task reserves: a node's share for one of ``max_concurrent`` timed runs."""
        return cpus_per_rank(self.node_cpus(), self.max_concurrent)

    def _slots(self, task_cpus: float) -> int:
        return max(1, sum(int(n.cpus / task_cpus + 1e-6) for n in self.connection.nodes()))

    def _threads_for(self, cpus: float) -> int:
        return self.threads or max(1, math.floor(cpus + 1e-6))

    # ----- single-device runs -------------------------------------------------------------------------
    def _run_singles(self, runs: list[Run]) -> Iterator[dict]:
        task_cpus = self.single_cpus()
        threads = self._threads_for(task_cpus)
        slots = self._slots(task_cpus)  # in flight at once: a queued task must not spend its time limit waiting
        backstop = self.run_timeout_s + self.start_timeout_s + self.answer_grace_s
        queue, inflight = deque(runs), {}
        try:
            while queue or inflight:
                while queue and len(inflight) < slots:
                    run = queue.popleft()
                    ref = run_single_task.options(num_cpus=task_cpus, num_gpus=1 if run.device == "cuda" else 0).remote(
                        run, threads, self.run_timeout_s, self.memory_budget_bytes, self.max_concurrent,
                        self.start_timeout_s, self.fresh_process_per_run, self.nice)
                    inflight[ref] = (run, time.perf_counter())
                first_deadline = min(t for _, t in inflight.values()) + backstop
                ready, _ = ray.wait(list(inflight), num_returns=1, timeout=max(0.0, first_deadline - time.perf_counter()))
                for ref in ready:
                    run, t0 = inflight.pop(ref)
                    yield single_record(run, _task_outcome(ref, time.perf_counter() - t0), threads)
                now = time.perf_counter()
                for ref, (run, t0) in list(inflight.items()):
                    if now - t0 >= backstop:
                        ray.cancel(ref, force=True)
                        del inflight[ref]
                        reason = f"no answer from its worker within {backstop:g} s; cancelled"
                        yield single_record(run, Outcome("timeout", reason=reason, elapsed_s=now - t0), threads)
        finally:  # the consumer stopped early (or the driver is going down): leave nothing running
            for ref in inflight:
                ray.cancel(ref, force=True)

    # ----- multi-rank runs ----------------------------------------------------------------------------
    def group_spec(self, key: GroupKey) -> GroupSpec:
        world_size, device = key
        cpus = self.rank_cpus or (1.0 if device == "cuda" else cpus_per_rank(self.node_cpus(), world_size))
        return GroupSpec(
            world_size=world_size, device=device, cpus_per_rank=cpus, threads=self._threads_for(cpus),
            group_timeout_s=self.group_timeout_s, init_timeout_s=self.init_timeout_s,
            pg_timeout_s=max(self.run_timeout_s, self.init_timeout_s) + self.answer_grace_s, nice=self.nice,
        )

    def _group(self, key: GroupKey) -> RankGroup:
        """The healthy group for ``key``, built (with one retry) if there is none."""
        group = self.groups.get(key)
        if group is not None and group.healthy:
            return group
        self.release_groups(only=key)
        spec = self.group_spec(key)
        try:
            group = RankGroup(spec).build()
        except GroupError as e:
            if e.status == "unavailable":
                raise
            group = RankGroup(spec).build()  # once more: e.g. the rendezvous port was taken meanwhile
        self.groups[key] = group
        self.groups_built += 1
        return group

    def _run_bucket(self, key: GroupKey, runs: list[Run]) -> Iterator[dict]:
        for i, run in enumerate(runs):
            try:
                group = self._group(key)
            except GroupError as e:  # no group for this size: every run left in the bucket gets the reason
                for rest in runs[i:]:
                    record = set_status(base_record(rest), e.status, f"rank group of {key[0]}: {e}")
                    record["scheduler"] = "ray"
                    yield record
                return
            result = group.run(self.rank_executor, run, self.run_timeout_s, self.memory_budget_bytes,
                               self.failure_grace_s, self.answer_grace_s, budget_share=key[0])
            record = group_record(run, result, group.spec.threads, self.run_timeout_s)
            if not result.ok or breaks_group(record):
                self.release_groups(only=key)
            yield record

    def release_groups(self, keep: Optional[GroupKey] = None, only: Optional[GroupKey] = None) -> None:
        """Tear down rank groups (all; all but ``keep``; or just ``only``) and free their resources."""
        for key in list(self.groups):
            if (keep is not None and key == keep) or (only is not None and key != only):
                continue
            self.groups.pop(key).teardown()


def _task_outcome(ref, elapsed_s: float) -> Outcome:
    """A task's outcome; Ray-level failures (its worker killed, cancelled) become outcomes too."""
    try:
        return ray.get(ref)
    except ray.exceptions.TaskCancelledError:
        return Outcome("timeout", reason="cancelled", elapsed_s=elapsed_s)
    except (ray.exceptions.WorkerCrashedError, ray.exceptions.RayActorError) as e:
        return Outcome("died", reason=f"died: {str(e).strip().splitlines()[0][:300]}", elapsed_s=elapsed_s)
    except ray.exceptions.RayError as e:
        return Outcome("raised", reason=str(e).strip().splitlines()[0][:300], elapsed_s=elapsed_s)
