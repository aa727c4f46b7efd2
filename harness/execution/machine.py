"""What ran a benchmark: machine, CPU/GPU model, library versions, lcbench commit, and its GEMM peak."""

from __future__ import annotations

import functools
import os
import platform
import socket
import subprocess
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import torch

PACKAGES = ("torch", "ray", "numpy", "triton", "flash-attn", "deepspeed", "megatron-core", "yunchang")
REPO = Path(__file__).resolve().parent.parent


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _commit() -> str:
    try:
        out = subprocess.run(
            ["git", "-C", str(REPO), "rev-parse", "--short=12", "HEAD"], capture_output=True, text=True, timeout=5
        )
        dirty = subprocess.run(
            ["git", "-C", str(REPO), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True, text=True, timeout=5,
        )
        if out.returncode == 0:
            return out.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        pass
    return "unknown"


@functools.lru_cache(maxsize=1)
def machine_info() -> dict:
    """Plain-data description of this process's machine and software, stored with every result."""
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = version(name)
        except PackageNotFoundError:
            pass
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return {
        "hostname": socket.gethostname(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "gpu": gpu,
        "versions": versions,
        "commit": _commit(),
    }


@functools.lru_cache(maxsize=None)
def peak_tflops(dtype: torch.dtype, device: str) -> float:
    """Measured GEMM throughput (TFLOP/s) of this process's device for ``dtype``: the 100% of 'fraction of
    peak'. Measured once per process (workers are long-lived), best of several blocks: a peak, not a typical
    value, so that load from other processes on a shared machine lowers it as little as possible."""
    import torch.utils.benchmark as benchmark

    n = 2048 if device == "cpu" else 8192
    a = torch.randn(n, n, dtype=dtype, device=device)
    b = torch.randn(n, n, dtype=dtype, device=device)
    a @ b  # warm-up
    m = benchmark.Timer("a @ b", globals={"a": a, "b": b}).blocked_autorange(min_run_time=0.5)
    return 2 * n**3 / min(m.times) / 1e12
