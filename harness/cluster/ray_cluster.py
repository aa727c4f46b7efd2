"""Connecting to Ray: an embedded single-node Ray bound to loopback by default, or an existing cluster.

Embedded (``address=None`` and no ``RAY_ADDRESS``): ``ray.init(address="local")`` started in this process with
no dashboard, usage stats off, quiet logs, and every Ray process bound to 127.0.0.1. In Ray 2.60 that takes two
knobs together: ``_node_ip_address="127.0.0.1"`` alone is rewritten to the host's external IP
(``services.resolve_ip_for_localhost``) unless ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0``, which Ray reads into
``ray_constants.ENABLE_RAY_CLUSTER`` at import time and which also makes the GCS, raylet and workers listen on
loopback only. The variable is set before Ray starts (its processes inherit it) and the constant patched in
case ``ray`` was imported earlier.

Ray starts each worker with its niceness raised by ``RAY_worker_niceness`` (15), which every benchmark process
forked under it would inherit; the embedded Ray is started with 0 (unless the user set it), so its workers keep
the driver's niceness even where lowering it again is not permitted. On a joined cluster the benchmark
processes reset theirs themselves where allowed (``harness.cluster.priority``), and every record says what it
ran at.

If the driver is killed (SIGKILL), Ray's GCS, raylet and workers die with it; ``harness.cluster.ray_reaper`` takes
care of the raylet's agents, which Ray leaves behind.

Existing cluster (``address="auto"``, ``"HOST:PORT"``, or ``RAY_ADDRESS``): ``ray.init(address=...)``; the
job's ``runtime_env`` forwards ``LCBENCH_*`` variables (e.g. ``LCBENCH_PLUGINS``) and ``GLIBC_TUNABLES`` (``lcbench
--malloc keep``) so its workers see them
(those a submitted job's own ``runtime_env`` already sets are left to it).
Every node needs lcbench importable (installed, or ``ray job submit --working-dir``).
"""

from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from harness.cluster.ray_reaper import start_reaper, stop_reaper
from harness.errors import UserError

REPO = Path(__file__).resolve().parent.parent
LOOPBACK = "127.0.0.1"
QUIET_ENV = {"RAY_USAGE_STATS_ENABLED": "0"}
LOOPBACK_ENV = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}  # keeps 127.0.0.1 as the node IP (module docstring)
PRIORITY_ENV = {"RAY_worker_niceness": "0"}  # Ray renices its workers by +15 unless told not to (module docstring)
FORWARDED = ("GLIBC_TUNABLES",)  # read when a worker process starts: Ray sets runtime_env variables before that
JOB_CONFIG_ENV = "RAY_JOB_CONFIG_JSON_ENV_VAR"  # set by Ray for a submitted job's entrypoint
CONNECT_TIMEOUT_S = 10.0  # an unreachable --address fails within this, not after Ray's minutes of retries
EMBEDDED_OBJECT_STORE_BYTES = 256 << 20  # records are small; don't reserve 30% of RAM in /dev/shm


@dataclass(frozen=True)
class NodeInfo:
    node_id: str
    ip: str
    cpus: float
    gpus: float
    memory: float  # bytes Ray may schedule (``memory`` resource)


class RayConnection:
    """This process's connection to Ray; ``close()`` shuts Ray down only if this object started it."""

    def __init__(self, address: Optional[str] = None, num_cpus: Optional[int] = None, log_to_driver: bool = False):
        address = address or os.environ.get("RAY_ADDRESS") or None
        self.address = address
        self.owned = False
        self.reaper: Optional[subprocess.Popen] = None
        for k, v in QUIET_ENV.items():
            os.environ.setdefault(k, v)
        import ray

        if ray.is_initialized():  # e.g. inside a ``ray job submit`` entrypoint that already connected
            return
        if address is None:
            os.environ.update(LOOPBACK_ENV)  # inherited by the raylet, GCS and workers started below
            for k, v in PRIORITY_ENV.items():
                os.environ.setdefault(k, v)
            _force_loopback()
            # Workers must import lcbench (and any LCBENCH_PLUGINS module) however the driver was started.
            paths = [str(REPO)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
            os.environ["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(paths))
            ray.init(
                address="local", include_dashboard=False, _node_ip_address=LOOPBACK, num_cpus=num_cpus,
                object_store_memory=EMBEDDED_OBJECT_STORE_BYTES, logging_level=logging.ERROR,
                log_to_driver=log_to_driver, configure_logging=True,
            )
            self.reaper = start_reaper()  # cleans up Ray's agents if this driver is killed
        else:
            check_reachable(address)
            env = _forwarded_env()
            extra = {}
            if _is_loopback(address):  # a cluster bound to loopback: this driver must register as 127.0.0.1 too
                os.environ.update(LOOPBACK_ENV)
                _force_loopback()
                extra["_node_ip_address"] = LOOPBACK
            try:
                ray.init(
                    address=address, logging_level=logging.ERROR, log_to_driver=log_to_driver,
                    runtime_env={"env_vars": env} if env else None, **extra,
                )
            except (ConnectionError, RuntimeError, ValueError) as e:
                raise UserError(f"--address {address}: cannot join a Ray cluster there: "
                                f"{str(e).strip().splitlines()[0][:200]}") from None
        self.owned = True

    def nodes(self) -> list[NodeInfo]:
        """The alive nodes and their schedulable resources."""
        import ray

        out = []
        for n in ray.nodes():
            if not n.get("Alive"):
                continue
            r = n.get("Resources", {})
            out.append(NodeInfo(n["NodeID"], n.get("NodeManagerAddress", ""), float(r.get("CPU", 0)),
                                float(r.get("GPU", 0)), float(r.get("memory", 0))))
        return out

    def close(self) -> None:
        import ray

        if self.owned and ray.is_initialized():
            ray.shutdown()
        stop_reaper(self.reaper)
        self.reaper = None
        self.owned = False


def check_reachable(address: str, timeout_s: float = CONNECT_TIMEOUT_S) -> None:
    """A ``HOST:PORT`` address must accept a TCP connection within ``timeout_s`` — else one line, at once,
    instead of Ray's minutes of retry warnings. ``auto`` is left to Ray (it reads the local cluster file)."""
    if address == "auto":
        return
    host, sep, port = address.removeprefix("ray://").rpartition(":")
    if not sep or not port.isdigit() or not host:
        raise UserError(f"--address {address!r}: expected 'auto' or HOST:PORT (e.g. 10.0.0.1:6379)")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s):
            pass
    except OSError as e:
        reason = "timed out" if isinstance(e, socket.timeout) else (e.strerror or str(e))
        raise UserError(f"--address {address}: no Ray cluster reachable there ({reason} after at most "
                        f"{timeout_s:g} s)") from None


def _forwarded_env() -> dict:
    """``LCBENCH_*`` variables and the allocator's (``lcbench --malloc``) for the job's workers, minus those a
    submitted job's runtime_env already sets (Ray refuses to merge a driver's env var with the job's own value
    for it)."""
    env = {k: v for k, v in os.environ.items() if k.startswith("LCBENCH_") or k in FORWARDED}
    if JOB_CONFIG_ENV in os.environ:
        try:
            job_env = (json.loads(os.environ[JOB_CONFIG_ENV]).get("runtime_env") or {}).get("env_vars") or {}
        except (ValueError, AttributeError):
            return {}
        env = {k: v for k, v in env.items() if k not in job_env}
    return env


def _is_loopback(address: str) -> bool:
    host = address.removeprefix("ray://").rsplit(":", 1)[0]
    return host in ("127.0.0.1", "localhost", "::1", "[::1]")


def _force_loopback() -> None:
    """Make this process's Ray resolve the node IP to loopback even if ``ray`` was imported before."""
    try:
        from ray._private import ray_constants

        ray_constants.ENABLE_RAY_CLUSTER = False
    except (ImportError, AttributeError):
        pass
