"""The Ray side of a sweep: a task per single-device run, an actor per rank of a context-parallel group.

Both are thin supervisors (``harness.cluster.isolation``): the benchmark itself runs in a child process they watch,
so they report a crash, an overrun or a memory blow-up as an :class:`~harness.cluster.isolation.Outcome` instead of
dying with it. This module does not import torch: supervisors stay small; children get torch from the
forkserver.
"""

from __future__ import annotations

import os
import socket
from typing import Optional

import ray

from harness.cluster.isolation import Child, KeptChild, Outcome, default_budget, node_memory  # noqa: F401 — API

DEFAULT_RANK_EXECUTOR = "harness.execution.distributed:execute_distributed"  # called on every rank of a group
CHILD = "harness.cluster.child_tasks"  # where the functions run in benchmark processes live (imports torch)


_single = KeptChild(f"{CHILD}:prepare")  # this worker's benchmark process, kept between runs while it is healthy


def run_single(run, threads: int, time_limit_s: float, memory_budget: Optional[int], budget_share: int,
               start_timeout_s: float, fresh_process: bool = False, nice: Optional[int] = None) -> Outcome:
    """Body of the single-run Ray task: the run in this worker's benchmark process (``threads`` torch threads,
    niceness ``nice``: the driver's, where Ray started this worker at its own).

    The process is reused by the worker's next run, as long-lived workers are (the harness measures its GEMM
    peak once per process); one that died, overran or outgrew its budget was killed and is replaced.
    ``fresh_process`` gives every run a new one (stricter isolation, about a second more per run)."""
    budget = memory_budget or default_budget(budget_share)
    return _single.call(f"{CHILD}:execute_single", (run,), (threads, nice), time_limit_s, budget, start_timeout_s,
                        fresh=fresh_process)


class RankActor:
    """One rank of a persistent group: owns a child process that holds the torch.distributed process group."""

    def __init__(self) -> None:
        self.child: Optional[Child] = None

    def describe(self) -> dict:
        """Where this rank lives: Ray node id, node IP (MASTER_ADDR for rank 0), host, pid and the GPU ids Ray
        assigned (ids local to the node: what ``CUDA_VISIBLE_DEVICES`` names there)."""
        return {"node": ray.get_runtime_context().get_node_id(), "ip": ray.util.get_node_ip_address(),
                "host": socket.gethostname(), "pid": os.getpid(), "gpus": [str(g) for g in ray.get_gpu_ids()]}

    def free_port(self) -> int:
        """A TCP port free right now on this node (for the rendezvous store; rank 0 binds it moments later)."""
        with socket.socket() as s:
            s.bind(("", 0))
            return s.getsockname()[1]

    def start(self, rank: int, world_size: int, master_addr: str, master_port: int, backend: str,
              pg_timeout_s: float, start_timeout_s: float, threads: int, env: dict,
              device_index: Optional[int], nice: Optional[int] = None) -> Outcome:
        """Start the rank's child (at niceness ``nice``, the driver's) and initialise the process group in it (once
        per group)."""
        self.child = Child(f"{CHILD}:init_rank",
                           (rank, world_size, master_addr, master_port, backend, pg_timeout_s, threads, device_index,
                            nice),
                           env=env)
        return self.child.start(start_timeout_s)

    def run(self, executor: str, run, time_limit_s: float, memory_budget: Optional[int], budget_share: int) -> Outcome:
        """One distributed run on this rank (the child stays, with its process group, for the next run)."""
        if self.child is None:
            return Outcome("died", reason="rank was never started")
        budget = memory_budget or default_budget(budget_share)
        return self.child.call(f"{CHILD}:execute_rank", (executor, run), time_limit_s, budget)

    def stop(self) -> None:
        if self.child is not None:
            self.child.close()
            self.child = None


# max_calls=0: keep the worker (and its benchmark process) between runs on GPU too (Ray's GPU default is 1;
# the worker itself never touches CUDA, its child does).
run_single_task = ray.remote(max_retries=0, max_calls=0)(run_single)
RankActorRemote = ray.remote(max_restarts=0, max_task_retries=0)(RankActor)
