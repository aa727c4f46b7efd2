"""The performance model: a strategy's :class:`~harness.interfaces.schedule.Schedule` walked on a cluster.

Every rank runs its stages in order. A stage starts when the rank finished the previous stage's compute and the
transfers it waits for have arrived; it posts its transfers at its start and then computes. So communication
is overlapped with compute exactly where the strategy's code overlaps it (a ring's next block in flight
during the current block's attention) and exposed where it waits (an all-to-all before the attention).

* **Compute**: the kernel rate table's time for the call a rank makes (its exact pairs, its kind: a dense
  block, a causal/partial block or the mask's own pattern), times the CPU sharing factor on a node whose
  ranks x threads exceed its cores (4 one-thread ranks on 2 cores run at half speed each, in wall time; their
  CPU time is not stretched).
* **A send/recv** from s to r starts when both posted it and the sender's link of that tier is free, and takes
  ``launch + latency + bytes / busbw`` of the tier between their nodes; **a collective** starts when every
  member posted it and takes ``launch + (n - 1) x latency + max bytes sent / busbw`` of the widest tier the
  group spans (nccl-tests' bus bandwidth already holds the (n-1)/n factor). A relay (``chain``) forwards only
  after its own receive.
* **Per rank**: the end time (wall), the busy time (compute plus the transfers it sends: CPU time where the
  "link" is a memory copy), the compute time, the communication time and the exposed communication (wall
  minus compute), and the bytes it sends over each tier.

The model version is part of every predicted record's key: a changed model never passes for an old one.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from harness.interfaces.schedule import SEND_RECV, Compute, Schedule, Transfer
from harness.prediction.cluster import ClusterProfile
from harness.prediction.rates import RateTable

MODEL_VERSION = "1"


@dataclass
class RankTimes:
    """Per-rank results of a walk, in ms (bytes per tier in bytes)."""

    wall_ms: np.ndarray
    busy_ms: np.ndarray
    compute_ms: np.ndarray
    comm_ms: np.ndarray
    bytes_by_tier: dict[str, np.ndarray]

    @property
    def exposed_comm_ms(self) -> np.ndarray:
        return np.maximum(self.wall_ms - self.compute_ms, 0.0)


class Walker:
    """Walks schedules of one (cluster, rate table, problem kind) on a placement (see the module docstring)."""

    def __init__(self, profile: ClusterProfile, rates: RateTable, dtype: str, mask: str, head_dim: int,
                 world_size: int):
        self.profile, self.rates, self.dtype, self.mask, self.head_dim = profile, rates, dtype, mask, head_dim
        self.world_size = world_size
        self.node = np.arange(world_size) // profile.devices_per_node
        self.sharing = _sharing(profile, world_size)

    # ----- compute ---------------------------------------------------------------------------------------
    def compute_ms(self, c: Compute) -> np.ndarray:
        """Modelled time of every rank's call (unshared: one rank alone on its cores)."""
        out = np.zeros(len(c.area))
        for dense in (True, False):
            pick = (c.dense == dense) & (c.area > 0)
            if pick.any():
                kind = self.rates.kind_for(dense, self.mask)
                out[pick] = self._times(c.area[pick].astype(np.float64), c.direction, kind)
        return out

    def _times(self, work: np.ndarray, direction: str, kind: str) -> np.ndarray:
        curve = self.rates._curve(self.dtype, direction, kind, self.head_dim)
        if curve is None:  # derived directions / kinds: the table's scalar rules, once per distinct work
            uniq, inverse = np.unique(work, return_inverse=True)
            times = np.array([self.rates.time_ms(w, self.dtype, direction, kind, self.head_dim) for w in uniq])
            return times[inverse]
        dim, xs, ys = curve
        return np.exp(interpolate_many(np.log(work), xs, ys)) * self.head_dim / dim

    # ----- communication ------------------------------------------------------------------------------------
    def _cost_ms(self, op: str, nbytes: np.ndarray, crosses: np.ndarray, steps: np.ndarray) -> np.ndarray:
        p = self.profile
        out = np.empty(len(nbytes))
        for cross in (False, True):
            pick = crosses == cross
            if pick.any():
                tier = p.tier(bool(cross))
                out[pick] = (p.launch_us + steps[pick] * tier.latency_us) / 1e3 + \
                    nbytes[pick] / (tier.busbw_gbps[op] * 1e9) * 1e3
        return out

    def _tier_names(self, crosses: np.ndarray) -> np.ndarray:
        network = self.profile.tiers.network is not None
        return np.where(crosses & network, "network", "node")

    def transfer(self, t: Transfer, post: np.ndarray, link_free: dict[str, np.ndarray],
                 times: RankTimes) -> np.ndarray:
        """Arrival time of ``t`` at every rank (its post time where it receives nothing)."""
        w = self.world_size
        arrival = post.copy()
        if t.op == SEND_RECV:
            src = t.peer
            has = src >= 0
            s = np.where(has, src, 0)
            crosses = self.node[s] != self.node
            cost = self._cost_ms(t.op, t.bytes[s].astype(np.float64), crosses, np.ones(w))
            tiers = self._tier_names(crosses)
            sender_cost = np.zeros(w)
            np.add.at(sender_cost, s[has], cost[has])
            if t.chain:
                for r in _chain_order(src):
                    if has[r]:
                        start = max(post[r], post[src[r]], arrival[src[r]] if has[src[r]] else post[src[r]])
                        arrival[r] = start + cost[r]
            else:
                free = np.zeros(w)
                for name in ("node", "network"):
                    pick = has & (tiers == name)
                    free[pick] = link_free[name][s[pick]]
                start = np.maximum(np.maximum(post, post[s]), free)
                arrival = np.where(has, start + cost, post)
                for name in ("node", "network"):
                    pick = has & (tiers == name)
                    np.maximum.at(link_free[name], s[pick], arrival[pick])
            times.comm_ms += sender_cost
            for name in ("node", "network"):
                sent = np.zeros(w)
                pick = has & (tiers == name)
                np.add.at(sent, s[pick], t.bytes[s[pick]])
                times.bytes_by_tier[name] = times.bytes_by_tier[name] + sent
            return arrival
        for group in t.groups:
            if len(group) < 2:
                continue
            g = np.array(group)
            cross = bool(len(set(self.node[g])) > 1)
            name = "network" if cross and self.profile.tiers.network is not None else "node"
            start = max(post[g].max(), link_free[name][g].max())
            cost = self._cost_ms(t.op, np.array([float(t.bytes[g].max())]), np.array([cross]),
                                 np.array([len(g) - 1.0]))[0]
            arrival[g] = start + cost
            link_free[name][g] = start + cost
            times.comm_ms[g] += cost
            times.bytes_by_tier[name][g] += t.bytes[g]
        return arrival

    # ----- the walk -------------------------------------------------------------------------------------------
    def walk(self, schedule: Schedule) -> RankTimes:
        w = self.world_size
        times = RankTimes(np.zeros(w), np.zeros(w), np.zeros(w), np.zeros(w),
                          {"node": np.zeros(w, dtype=np.int64), "network": np.zeros(w, dtype=np.int64)})
        link_free = {"node": np.zeros(w), "network": np.zeros(w)}
        arrivals: dict[tuple[int, int], np.ndarray] = {}
        clock, last = np.zeros(w), np.zeros(w)
        for si, stage in enumerate(schedule.stages):
            start = clock.copy()
            for handle in stage.waits:
                start = np.maximum(start, arrivals.pop(handle))
            for ti, t in enumerate(stage.transfers):
                arrivals[(si, ti)] = self.transfer(t, start, link_free, times)
            if stage.compute is not None:
                alone = self.compute_ms(stage.compute)
                times.compute_ms += alone
                clock = start + alone * self.sharing
            else:
                clock = start
            last = np.maximum(last, clock)
        for pending in arrivals.values():  # transfers nobody waited for still end the step
            last = np.maximum(last, pending)
        times.wall_ms = np.maximum(last, clock)
        times.busy_ms = times.compute_ms + times.comm_ms
        return times


def interpolate_many(x: np.ndarray, xs: list[float], ys: list[float]) -> np.ndarray:
    """:func:`harness.prediction.rates._interpolate` of every element of ``x`` at once."""
    if len(xs) == 1:
        return ys[0] + (x - xs[0])
    out = np.interp(x, xs, ys)
    above, below = x > xs[-1], x < xs[0]
    out[above] = ys[-1] + (x[above] - xs[-1])
    slope = min(1.0, max(0.0, (ys[1] - ys[0]) / (xs[1] - xs[0])))
    out[below] = ys[0] + slope * (x[below] - xs[0])
    return out


def _sharing(profile: ClusterProfile, world_size: int) -> float:
    """Wall-time stretch of compute when a node's ranks x threads exceed its cores (CPU devices), else 1."""
    cores, threads = profile.device.cores, profile.device.threads_per_rank or 1
    if not cores:
        return 1.0
    ranks = min(world_size, profile.devices_per_node)
    return max(1.0, ranks * threads / cores)


def _chain_order(src: np.ndarray) -> list[int]:
    """Ranks of a relay in the order the state travels (each after its source)."""
    order: list[int] = []
    seen: set[int] = set()
    for r in range(len(src)):
        path, x = [], r
        while x >= 0 and x not in seen:
            path.append(x)
            seen.add(x)
            x = int(src[x])
        order.extend(reversed(path))
    return order
