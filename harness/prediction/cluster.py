"""Cluster profiles: what ``lcbench predict`` knows of a cluster, as a YAML file with a source for every number.

A profile gives the node (devices per node, how many nodes), the device (name, memory, its kernel rate tables
— :mod:`harness.prediction.rates` — one per method, and for CPU "devices" the cores the ranks of a node share),
and two link tiers: ``node`` (between devices of one node) and ``network`` (between nodes). Each tier has the
per-device link bandwidth per direction (``link_gbps``, the datasheet's), the achieved nccl-tests **bus
bandwidth** of each operation (``busbw_gbps``: send_recv, all_gather, reduce_scatter, all_to_all) and the
per-step latency (``latency_us``); ``launch_us`` is a collective's fixed cost. Bus bandwidth is what nccl-tests
reports after its per-collective factors ((n-1)/n for all-gather, reduce-scatter and all-to-all, 1 for
send/recv; nccl-tests doc/PERFORMANCE.md), so a transfer in which a rank sends B bytes takes
``launch + steps x latency + B / busbw``.

``sources`` maps every numeric key (dotted: ``tiers.node.busbw_gbps.all_gather``) to where it comes from; a
built-in profile must cite all of them (a test checks). No number here is fitted to a result a prediction is
checked against.

Built-ins live in ``harness/prediction/clusters/`` (``lcbench list clusters``); a user passes a file path.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any, Optional

import yaml
from pydantic import Field, ValidationError, model_validator
from pydantic_core import PydanticCustomError

from harness.errors import UserError, unknown
from harness.interfaces.schedule import OPS
from harness.prediction.rates import RateTable
from suites.schema import Strict, load_yaml, user_error

CLUSTERS_PACKAGE = "harness.prediction"
TIERS = ("node", "network")


class Tier(Strict):
    link_gbps: float = Field(gt=0, description="per-device link bandwidth per direction, GB/s (datasheet)")
    busbw_gbps: dict[str, float] = Field(description="achieved nccl-tests bus bandwidth per operation, GB/s")
    latency_us: float = Field(ge=0, description="latency of one step, microseconds")

    @model_validator(mode="after")
    def _ops(self) -> "Tier":
        missing = [op for op in OPS if op not in self.busbw_gbps]
        extra = [op for op in self.busbw_gbps if op not in OPS]
        if extra:
            raise PydanticCustomError("unknown_name", "unknown {kind} {name}",
                                      {"kind": "operation", "name": extra[0], "known": list(OPS)})
        if missing:
            raise PydanticCustomError("not_allowed_at", "at", {"key": "busbw_gbps", "value": self.busbw_gbps,
                                                               "expected": f"a bandwidth for each of {', '.join(OPS)}"})
        for op, bw in self.busbw_gbps.items():
            if not bw > 0:
                raise PydanticCustomError("not_allowed_at", "at", {"key": f"busbw_gbps.{op}", "value": bw,
                                                                   "expected": "a number > 0 (GB/s)"})
        return self


class Device(Strict):
    name: str = Field(description="the device, as a datasheet names it")
    memory_gib: float = Field(gt=0, description="device memory, GiB")
    rates: dict[str, str] = Field(description="method -> kernel rate table file (relative to the profile)")
    cores: Optional[int] = Field(None, ge=1, description="CPU cores the ranks of a node share (CPU devices)")
    threads_per_rank: Optional[int] = Field(None, ge=1, description="torch threads per CPU rank")


class Tiers(Strict):
    node: Tier = Field(description="between the devices of one node")
    network: Optional[Tier] = Field(None, description="between nodes (absent: a single-node cluster)")


class ClusterProfile(Strict):
    name: str = Field(description="profile name")
    summary: str = Field(description="one line: what cluster this is")
    devices_per_node: int = Field(ge=1, description="devices (ranks) per node")
    max_nodes: int = Field(ge=1, description="nodes the cluster may have")
    launch_us: float = Field(ge=0, description="fixed cost of one collective or send/recv, microseconds")
    device: Device
    tiers: Tiers
    sources: dict[str, str] = Field(description="numeric key (dotted) -> where the number comes from")

    @model_validator(mode="after")
    def _network_if_nodes(self) -> "ClusterProfile":
        if self.max_nodes > 1 and self.tiers.network is None:
            raise PydanticCustomError("not_allowed_at", "at", {"key": "tiers.network", "value": None,
                                                               "expected": "a network tier when max_nodes > 1"})
        return self

    @property
    def max_world_size(self) -> int:
        return self.devices_per_node * self.max_nodes

    def tier(self, crosses_nodes: bool) -> Tier:
        return self.tiers.network if crosses_nodes and self.tiers.network is not None else self.tiers.node

    def numeric_keys(self) -> list[str]:
        """Every numeric leaf, dotted (what ``sources`` must cite)."""
        return _numeric_keys(self.model_dump(exclude={"sources"}))


def _numeric_keys(data: Any, prefix: str = "") -> list[str]:
    if isinstance(data, bool):
        return []
    if isinstance(data, (int, float)):
        return [prefix]
    if isinstance(data, dict):
        return [k for key, value in data.items() for k in _numeric_keys(value, f"{prefix}.{key}" if prefix else key)]
    return []


class Cluster:
    """A loaded profile with its rate tables."""

    def __init__(self, profile: ClusterProfile, path: Path, rate_tables: dict[str, RateTable]):
        self.profile, self.path, self.rate_tables = profile, path, rate_tables

    @property
    def name(self) -> str:
        return self.profile.name

    def rates_for(self, method: str) -> RateTable:
        if method not in self.rate_tables:
            raise UserError(f"cluster {self.name}: no kernel rate table for method {method!r} "
                            f"(has: {', '.join(sorted(self.rate_tables))}; `lcbench calibrate --method {method}` "
                            "measures one on this machine)")
        return self.rate_tables[method]

    def version(self) -> str:
        """A digest of the profile and its tables (part of a predicted record's key and stored with it)."""
        import hashlib

        h = hashlib.sha256(self.path.read_bytes())
        for name in sorted(self.rate_tables):
            table = self.rate_tables[name]
            h.update(table.path.read_bytes() if table.path else table.dump().encode())
        return h.hexdigest()[:12]


def builtin_dir() -> Path:
    return Path(str(resources.files(CLUSTERS_PACKAGE).joinpath("clusters")))


def builtin_clusters() -> list[str]:
    return sorted(p.stem for p in builtin_dir().glob("*.yaml"))


def cluster_path(name_or_path: str) -> Path:
    p = Path(name_or_path)
    if p.suffix in (".yaml", ".yml"):
        if not p.is_file():
            raise UserError(f"cluster profile {name_or_path!r} {'is a directory' if p.is_dir() else 'does not exist'}"
                            f" (built-ins: {', '.join(builtin_clusters())})")
        return p
    candidate = builtin_dir() / f"{name_or_path}.yaml"
    if candidate.is_file():
        return candidate
    raise unknown("cluster", name_or_path, builtin_clusters())


def load_cluster(name_or_path: str) -> Cluster:
    """A built-in profile by name or a user's file: validated (one line per mistake) with its rate tables."""
    path = cluster_path(name_or_path)
    try:
        text = path.read_text()
    except OSError as e:
        raise UserError(f"cluster profile {path}: cannot be read ({e.strerror})") from None
    data = load_yaml(text, path.name)
    if not isinstance(data, dict):
        raise UserError(f"{path.name}: expected a mapping of keys ({', '.join(ClusterProfile.model_fields)})")
    try:
        profile = ClusterProfile.model_validate(data)
    except ValidationError as e:
        raise user_error(e, path.name) from None
    tables = {}
    for method, file in profile.device.rates.items():
        table_path = (path.parent / file) if not Path(file).is_absolute() else Path(file)
        if not table_path.is_file():
            raise UserError(f"{path.name}: device.rates.{method}={file!r}: no such rate table ({table_path})")
        table = RateTable.load(table_path)
        if table.method != method:
            raise UserError(f"{path.name}: device.rates.{method}: {file} is the rate table of {table.method!r}")
        tables[method] = table
    return Cluster(profile, path, tables)


def describe(cluster: Cluster) -> dict[str, str]:
    """One row of ``lcbench list clusters``."""
    p = cluster.profile
    tiers = [f"node {p.tiers.node.busbw_gbps['send_recv']:g} GB/s"]
    if p.tiers.network is not None:
        tiers.append(f"network {p.tiers.network.busbw_gbps['send_recv']:g} GB/s")
    return {"name": p.name, "devices": f"{p.devices_per_node} x {p.max_nodes} nodes", "device": p.device.name,
            "links (send/recv bus bw)": ", ".join(tiers), "rate tables": ", ".join(sorted(cluster.rate_tables)),
            "summary": p.summary}


def dump_profile(profile: ClusterProfile) -> str:
    return yaml.safe_dump(profile.model_dump(exclude_none=True), sort_keys=False, width=120)
