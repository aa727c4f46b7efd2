"""The C allocator a benchmark process runs with, chosen at process start and recorded with every result.

glibc serves an allocation at or above its mmap threshold with a fresh ``mmap`` and unmaps it on ``free``. The
threshold grows with what a process frees but stops at 32 MiB on 64-bit, so a kernel whose outputs or
gradients are 32 MiB or more faults every page of them in again on every call: system time that grows in
steps with S (at 16K and up in ``lcbench bench linear --sections scaling``), a cost of the allocator, not of the
kernel. jemalloc and tcmalloc keep freed memory for reuse, which is why PyTorch's CPU tuning guide and
``torch.backends.xeon.run_cpu`` preload one of them. Policy ``keep`` asks glibc for the same through its
documented tunables (``GLIBC_TUNABLES``: no mmap below 4 GiB, no trimming of the heap below 4 GiB freed), with
no library to install. Peak memory is unaffected: lcbench measures it from torch's allocation events, not RSS.

Tunables are read once, when a process starts, so :func:`restart_with` re-executes the command with them;
the embedded Ray's workers and the rank processes inherit the environment, and an existing cluster's workers
get the variable through the job's ``runtime_env`` (``harness.cluster.ray_cluster``). ``keep`` needs glibc (a
Linux build against musl, or macOS, is refused before anything runs). :func:`describe` is what
``machine_info`` records.
"""

from __future__ import annotations

import os
import platform
import sys
from typing import Mapping, Sequence

from harness.errors import UserError

GIB4 = 1 << 32
KEEP_TUNABLES = f"glibc.malloc.mmap_threshold={GIB4}:glibc.malloc.trim_threshold={GIB4}"
POLICIES = {
    "default": "as the environment starts lcbench (glibc's defaults unless GLIBC_TUNABLES or LD_PRELOAD say else)",
    "keep": "glibc keeps freed memory for reuse, as jemalloc/tcmalloc do (GLIBC_TUNABLES=" + KEEP_TUNABLES + ")",
}


def applied(policy: str, env: Mapping[str, str] = os.environ) -> bool:
    """Whether a process started with ``env`` runs under ``policy``."""
    return policy == "default" or set(KEEP_TUNABLES.split(":")) <= set(env.get("GLIBC_TUNABLES", "").split(":"))


def environment(policy: str, env: Mapping[str, str] = os.environ) -> dict[str, str]:
    """``env`` with what ``policy`` needs added (other tunables kept)."""
    out = dict(env)
    if not applied(policy, env):
        out["GLIBC_TUNABLES"] = ":".join(t for t in (env.get("GLIBC_TUNABLES"), KEEP_TUNABLES) if t)
    return out


def restart_with(policy: str, argv: Sequence[str]) -> None:
    """Re-execute ``python -m harness.cli ARGV`` under ``policy`` unless this process already runs under it
    (then the caller goes on); does not return otherwise."""
    if applied(policy):
        return
    if platform.libc_ver()[0] != "glibc":
        raise UserError(f"--malloc {policy}: needs glibc's tunables; this Python runs on "
                        f"{platform.libc_ver()[0] or platform.system()} (use --malloc default)")
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, [sys.executable, "-m", "harness.cli", *argv], environment(policy))


def describe(env: Mapping[str, str] = os.environ) -> str:
    """This process's allocator in one line, for the machine record of every result."""
    parts = [f"{name}={env[name]}" for name in ("GLIBC_TUNABLES", "LD_PRELOAD") if env.get(name)]
    return "keep: " + ", ".join(parts) if applied("keep", env) else (", ".join(parts) or "glibc default")


__all__ = ["KEEP_TUNABLES", "POLICIES", "applied", "describe", "environment", "restart_with"]
