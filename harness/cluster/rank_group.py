"""A persistent group of rank actors for one world size: built once, reused for every run, rebuilt after a fault.

Building a group: a placement group with one bundle per rank (strategy PACK), one :class:`RankActor` per
bundle, then in each actor a child process that calls ``init_process_group`` once (gloo on CPU, NCCL on GPU;
MASTER_ADDR is rank 0's node IP, the port one rank 0 found free). On GPU each rank gets one GPU and sees
every GPU its node gave the group (``CUDA_VISIBLE_DEVICES`` = their union, as Ray Train does for NCCL), then
``torch.cuda.set_device`` picks its own. Every wait is bounded: reserving the bundles, starting the actors,
initialising the process group.

Running: every rank gets the run; the group waits for all of them within the time limit. The first rank that
fails (raises, dies, runs out of memory) starts a short grace period for the others, after which the group
stops waiting: the ranks left are stuck in a collective with a dead peer. A group that failed is torn down
(actors killed, placement group removed) by its owner and built afresh for the next run.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Optional

import ray
from ray.util.placement_group import PlacementGroup, placement_group, remove_placement_group
from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

from harness.cluster.group_run import GroupError, GroupRun, RankResult, collect  # noqa: F401 — re-exported
from harness.cluster.isolation import Outcome
from harness.cluster.ray_workers import RankActorRemote


@dataclass(frozen=True)
class GroupSpec:
    """How to build a group: size, device, resources per rank and the bounds on every wait."""

    world_size: int
    device: str  # "cpu" or "cuda"
    cpus_per_rank: float
    threads: int
    group_timeout_s: float = 120.0  # bundles reserved and actors answering
    init_timeout_s: float = 60.0  # process group initialised (the child's start included)
    pg_timeout_s: float = 1800.0  # torch.distributed's own collective timeout
    nice: Optional[int] = None  # the ranks' niceness (the driver's); None: what the Ray worker has

    @property
    def backend(self) -> str:
        return "nccl" if self.device == "cuda" else "gloo"

    def bundle(self) -> dict:
        b = {"CPU": self.cpus_per_rank}
        if self.device == "cuda":
            b["GPU"] = 1
        return b


def cpus_per_rank(node_cpus: float, world_size: int) -> float:
    """On CPU a group takes one node's CPUs in all (one timed thing per node); Ray resources have 4 decimals."""
    return max(math.floor(node_cpus / world_size * 1e4) / 1e4, 0.0001)


class RankGroup:
    """The ranks of one world size, alive until :meth:`teardown`."""

    def __init__(self, spec: GroupSpec):
        self.spec = spec
        self.pg: Optional[PlacementGroup] = None
        self.actors: list = []
        self.info: list[dict] = []
        self.healthy = False

    # ----- building -----------------------------------------------------------------------------------
    def build(self) -> "RankGroup":
        """Reserve, start and initialise; on any failure tear down what exists and raise :class:`GroupError`."""
        try:
            self._build()
        except GroupError:
            self.teardown()
            raise
        except Exception as e:  # noqa: BLE001 — e.g. a bundle Ray rejects: the bucket's reason, not a crash
            self.teardown()
            raise GroupError(f"{type(e).__name__}: {_first_line(e)}") from e
        except BaseException:
            self.teardown()
            raise
        self.healthy = True
        return self

    def _build(self) -> None:
        spec = self.spec
        self.place()
        master = self.info[0]["ip"]
        port = self._get_all([self.actors[0].free_port.remote()], spec.group_timeout_s, "find a free port")[0]
        envs, devices = self._device_env()
        refs = [
            a.start.remote(rank, spec.world_size, master, port, spec.backend, spec.pg_timeout_s, spec.init_timeout_s,
                           spec.threads, envs[rank], devices[rank], spec.nice)
            for rank, a in enumerate(self.actors)
        ]
        outcomes = self._get_all(refs, spec.init_timeout_s + 10, "initialise the process group")
        for rank, o in enumerate(outcomes):
            if not o.ok:
                raise GroupError(f"rank {rank} could not join the process group: {o.reason}")

    def place(self) -> None:
        """Reserve one bundle per rank (PACK: a node's ranks are consecutive) and start the rank actors; fills
        :attr:`info` with each rank's :meth:`RankActor.describe`. No process group yet (that is ``start``)."""
        spec = self.spec
        self.pg = placement_group([spec.bundle()] * spec.world_size, strategy="PACK")
        ready, _ = ray.wait([self.pg.ready()], timeout=spec.group_timeout_s)
        if not ready:
            raise GroupError(
                f"could not reserve {spec.world_size} ranks x {spec.bundle()} within {spec.group_timeout_s:g} s "
                f"(cluster has {ray.cluster_resources()})", status="unavailable")
        gpu = spec.device == "cuda"
        self.actors = [
            RankActorRemote.options(
                num_cpus=spec.cpus_per_rank, num_gpus=1 if gpu else 0,
                scheduling_strategy=PlacementGroupSchedulingStrategy(self.pg, placement_group_bundle_index=i),
            ).remote()
            for i in range(spec.world_size)
        ]
        self.info = self._get_all([a.describe.remote() for a in self.actors], spec.group_timeout_s, "start rank actors")

    def _device_env(self) -> tuple[list[dict], list[Optional[int]]]:
        """Per rank: the environment of its child and its device index (see :func:`device_env`)."""
        if self.spec.device != "cuda":
            return [{}] * self.spec.world_size, [None] * self.spec.world_size
        return device_env(self.info)

    @staticmethod
    def _get_all(refs: list, timeout_s: float, what: str) -> list:
        ready, _ = ray.wait(refs, num_returns=len(refs), timeout=timeout_s)
        if len(ready) < len(refs):
            raise GroupError(f"timed out after {timeout_s:g} s waiting to {what}")
        try:
            return ray.get(refs)
        except ray.exceptions.RayError as e:
            raise GroupError(f"failed to {what}: {str(e).splitlines()[0][:300]}") from None

    # ----- running ------------------------------------------------------------------------------------
    def run(self, executor: str, run, time_limit_s: float, memory_budget: Optional[int], failure_grace_s: float,
            answer_grace_s: float, *, budget_share: int = 1) -> GroupRun:
        """Run on every rank and wait for them (:func:`harness.cluster.group_run.collect`: the same rule as a
        local group's); a group whose run failed is marked unhealthy."""
        started = time.perf_counter()
        refs = {
            a.run.remote(executor, run, time_limit_s, memory_budget, budget_share): rank
            for rank, a in enumerate(self.actors)
        }
        out = collect(refs, lambda pending, timeout: ray.wait(pending, num_returns=1, timeout=timeout), _outcome_of,
                      time_limit_s, failure_grace_s, answer_grace_s, started)
        if not out.ok:
            self.healthy = False
        return out

    # ----- tearing down -------------------------------------------------------------------------------
    def teardown(self) -> None:
        """Kill the actors (their children die with them) and release the placement group."""
        self.healthy = False
        for a in self.actors:
            try:
                ray.kill(a, no_restart=True)
            except Exception:  # noqa: BLE001 — already dead
                pass
        self.actors = []
        if self.pg is not None:
            try:
                remove_placement_group(self.pg)
            except Exception:  # noqa: BLE001
                pass
            self.pg = None


def device_env(info: list[dict]) -> tuple[list[dict], list[Optional[int]]]:
    """Per rank (``info``: each rank's ``describe()``): ``CUDA_VISIBLE_DEVICES`` = the GPUs of all the group's
    ranks on its node, and its own GPU's index among them (what ``torch.cuda.set_device`` takes). Ranks are
    grouped by Ray node id (several simulated nodes can share one IP), by IP for a ``describe`` without one."""
    by_node: dict[str, list[str]] = {}
    for i in info:
        by_node.setdefault(i.get("node") or i["ip"], []).extend(i["gpus"])
    envs, devices = [], []
    for i in info:
        if not i["gpus"]:
            raise GroupError(f"rank on {i['host']} ({i['ip']}) was given no GPU by Ray")
        visible = sorted(set(by_node[i.get("node") or i["ip"]]), key=lambda g: (len(g), g))
        envs.append({"CUDA_VISIBLE_DEVICES": ",".join(visible)})
        devices.append(visible.index(i["gpus"][0]))
    return envs, devices


def _outcome_of(ref) -> Outcome:
    """A rank's outcome; the actor's own death (killed, node lost) becomes a ``died`` outcome."""
    try:
        return ray.get(ref)
    except ray.exceptions.RayActorError as e:
        return Outcome("died", reason=f"rank actor died: {_first_line(e)}")
    except ray.exceptions.RayError as e:
        return Outcome("raised", reason=_first_line(e))


def _first_line(e: BaseException) -> str:
    return str(e).strip().splitlines()[0][:300] if str(e).strip() else type(e).__name__
