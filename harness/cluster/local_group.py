"""A rank group on this machine without Ray: W supervised child processes over gloo on 127.0.0.1.

The same supervision as a Ray group (:mod:`harness.cluster.rank_group`), minus the actors: each rank is an
:class:`harness.cluster.isolation.Child` of this process (forked from the forkserver that preloaded torch and
the rank runner, so a group starts in about a second) whose start-up joins the process group
(``child_tasks.init_rank``) and which then executes any number of runs (``child_tasks.execute_rank``). A run
is sent to every rank at once; one thread per rank waits on its child's answer, and
:func:`harness.cluster.group_run.collect` applies the group's deadline and failure grace. A group whose run
failed is torn down (its children killed) by its owner and built afresh.
"""

from __future__ import annotations

import os
import socket
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import Optional

from harness.cluster.group_run import GroupError, GroupRun, collect
from harness.cluster.isolation import Child, Outcome
from harness.run import Run

CHILD = "harness.cluster.child_tasks"  # the functions the rank processes run
ENV_PREFIX = "LCBENCH_"  # this process's settings the ranks need (plugins, devices, ...)
_TEARDOWN_WAIT_S = 5.0  # how long teardown waits for the rank threads after killing their children


def free_port() -> int:
    """A TCP port free right now on 127.0.0.1 (for the rendezvous store; rank 0 binds it moments later)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def threads_per_rank(world_size: int) -> int:
    """This process's cores split between the ranks, so that W ranks do not oversubscribe the machine."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:
        cores = os.cpu_count() or 1
    return max(1, cores // world_size)


def rank_env() -> dict:
    """This process's ``LCBENCH_*`` variables (a forkserver child has the forkserver's environment otherwise)."""
    return {k: v for k, v in os.environ.items() if k.startswith(ENV_PREFIX)}


class LocalRankGroup:
    """The W ranks of one world size on this machine, alive until :meth:`teardown`."""

    def __init__(self, world_size: int, threads: int, pg_timeout_s: float, init_timeout_s: float = 60.0,
                 env: Optional[dict] = None, nice: Optional[int] = None):
        self.world_size, self.threads, self.nice = world_size, threads, nice
        self.pg_timeout_s, self.init_timeout_s = pg_timeout_s, init_timeout_s
        self.env = rank_env() if env is None else env
        self.children: list[Child] = []
        self.pool: Optional[ThreadPoolExecutor] = None
        self.inflight: list[Future] = []  # the rank threads of the last start or run
        self.healthy = False

    def build(self) -> "LocalRankGroup":
        """Start the W children and initialise the process group in each (they rendezvous, so all at once);
        on any failure kill what exists and raise :class:`GroupError`."""
        port = free_port()
        self.pool = ThreadPoolExecutor(self.world_size, thread_name_prefix=f"lcbench-rank-w{self.world_size}")
        self.children = [
            Child(f"{CHILD}:init_rank",
                  (rank, self.world_size, "127.0.0.1", port, "gloo", self.pg_timeout_s, self.threads, None, self.nice),
                  env=self.env)
            for rank in range(self.world_size)
        ]
        futures = {self.pool.submit(c.start, self.init_timeout_s): rank for rank, c in enumerate(self.children)}
        self.inflight = list(futures)
        run = collect(futures, _wait_any, _outcome, self.init_timeout_s, failure_grace_s=2.0, answer_grace_s=5.0)
        if not run.ok:
            self.teardown()
            bad = next((r for r in sorted(run.results, key=lambda r: r.rank) if not r.outcome.ok), None)
            if bad is None:
                raise GroupError(f"ranks {run.missing} did not join the process group within {self.init_timeout_s:g} s")
            raise GroupError(f"rank {bad.rank} could not join the process group: {bad.outcome.reason}",
                             status="timeout" if bad.outcome.kind == "timeout" else "error")
        self.healthy = True
        return self

    def run(self, executor: str, run: Run, time_limit_s: float, memory_budget: Optional[int],
            failure_grace_s: float, answer_grace_s: float, *, executor_kwargs: Optional[dict] = None) -> GroupRun:
        """``executor(run, **executor_kwargs)`` on every rank; the children enforce ``time_limit_s`` and
        ``memory_budget`` (None: no budget) themselves; the wait is :func:`collect`'s."""
        if self.pool is None or not self.healthy:
            raise GroupError("the group is not built (or was torn down after a failed run)")
        args = (executor, run, executor_kwargs or {})
        futures = {self.pool.submit(c.call, f"{CHILD}:execute_rank", args, time_limit_s, memory_budget): rank
                   for rank, c in enumerate(self.children)}
        self.inflight = list(futures)
        out = collect(futures, _wait_any, _outcome, time_limit_s, failure_grace_s, answer_grace_s)
        if not out.ok:
            self.healthy = False
        return out

    def teardown(self) -> None:
        """Kill the children; a rank thread still waiting on its child then returns (``died``) and the threads end."""
        self.healthy = False
        for c in self.children:
            if c.proc is not None and c.proc.is_alive():
                c.proc.kill()  # only the signal here: the rank's own thread may be joining the process right now
        if self.pool is not None:
            wait(self.inflight, timeout=_TEARDOWN_WAIT_S)
            self.pool.shutdown(wait=False, cancel_futures=True)
            self.pool = None
        self.inflight = []
        for c in self.children:
            c.close()
        self.children = []


def _wait_any(pending: list[Future], timeout_s: float) -> tuple[set[Future], list[Future]]:
    done, rest = wait(pending, timeout=timeout_s, return_when=FIRST_COMPLETED)
    return done, [f for f in pending if f in rest]


def _outcome(future: Future) -> Outcome:
    """A rank thread's outcome (its call never raises; a supervisor bug becomes a ``raised`` outcome)."""
    try:
        return future.result()
    except Exception as e:  # noqa: BLE001
        return Outcome("raised", reason=f"supervisor: {type(e).__name__}: {e}".splitlines()[0][:300])
