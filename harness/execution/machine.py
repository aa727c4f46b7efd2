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

from harness import quiet
from harness.execution import allocator

PACKAGES = ("torch", "ray", "numpy", "triton", "flash-attn", "deepspeed", "megatron-core", "yunchang")
REPO = Path(__file__).resolve().parents[2]  # the checkout: harness/execution/machine.py -> repository root


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
        "allocator": allocator.describe(),
        "peak_tflops": session_peaks(),  # calibrated at the start of the sweep (calibrate_for_sweep)
        "silenced_warnings": quiet.describe(),  # third-party warnings not shown (harness/quiet.py)
    }


# GEMM peaks of this process, by (dtype, device type): calibrated once, or installed from the session.
_PEAKS: dict[tuple[str, str], float] = {}
CALIBRATION_ATTEMPTS = 5
CALIBRATION_SECONDS = 0.3  # minimum run time of each attempt
CALIBRATION_PAUSE_S = 0.05  # between attempts, so a burst of load from other processes can pass


def _key(dtype: torch.dtype | str, device: str) -> tuple[str, str]:
    return str(dtype).removeprefix("torch."), torch.device(device).type


def _attempt(a: torch.Tensor, b: torch.Tensor, seconds: float) -> float:
    """TFLOP/s of ``a @ b`` in the best block of one ``blocked_autorange`` of at least ``seconds``."""
    import torch.utils.benchmark as benchmark

    m = benchmark.Timer("a @ b", globals={"a": a, "b": b}).blocked_autorange(min_run_time=seconds)
    return 2 * a.shape[0] * a.shape[1] * b.shape[1] / min(m.times) / 1e12


def calibrate_peak(dtype: torch.dtype | str, device: str, attempts: int = CALIBRATION_ATTEMPTS) -> float:
    """Measure this machine's GEMM peak (TFLOP/s) for ``dtype`` on ``device``: the best of ``attempts``
    separate measurements, each itself the best block of a timed matmul. A peak, not a typical value: load
    from other processes only lowers single attempts. Call it once per machine at the start of a sweep, store
    the result with the session (``calibrate_peaks``) and let every run of the sweep reuse it
    (``install_peaks`` in worker processes)."""
    import time

    key = _key(dtype, device)
    n = 1024 if key[1] == "cpu" else 8192  # large enough to reach each device's peak
    a = torch.randn(n, n, dtype=getattr(torch, key[0]), device=device)
    b = torch.randn(n, n, dtype=a.dtype, device=device)
    a @ b  # warm-up
    best = 0.0
    for i in range(max(1, attempts)):
        if i:
            time.sleep(CALIBRATION_PAUSE_S)
        best = max(best, _attempt(a, b, CALIBRATION_SECONDS))
    _PEAKS[key] = best
    return best


def calibrate_peaks(dtypes, device: str) -> dict[str, float]:
    """``{dtype name: peak TFLOP/s}`` for every dtype of a sweep (see :func:`calibrate_peak`), ready to store
    in the session's machine info (``machine_info()["peak_tflops"] = ...``) and to hand to workers."""
    return {_key(d, device)[0]: calibrate_peak(d, device) for d in dtypes}


def install_peaks(peaks: dict[str, float], device: str) -> None:
    """Make this process reuse peaks calibrated elsewhere (by the sweep's driver, stored with its session)."""
    for dtype, value in peaks.items():
        if value and value > 0:
            _PEAKS[_key(dtype, device)] = float(value)


def peak_tflops(dtype: torch.dtype | str, device: str, explicit: float | None = None) -> float:
    """The 100% of 'fraction of peak': ``explicit`` when given (and remembered), else the value calibrated or
    installed in this process, else a calibration now (once per process)."""
    key = _key(dtype, device)
    if explicit is not None and explicit > 0:
        _PEAKS[key] = float(explicit)
    if key not in _PEAKS:
        install_peaks(session_peaks().get(key[1], {}), key[1])
    if key not in _PEAKS:
        calibrate_peak(dtype, device)
    return _PEAKS[key]


PEAKS_ENV = "LCBENCH_PEAK_TFLOPS"  # {device: {dtype: TFLOP/s}} calibrated by the sweep's driver, for its workers


def session_peaks() -> dict[str, dict[str, float]]:
    """The peaks the driver of this sweep calibrated (``LCBENCH_PEAK_TFLOPS``; it reaches Ray workers and ranks
    on this machine like every ``LCBENCH_*`` variable), ``{}`` when none."""
    import json

    try:
        return json.loads(os.environ.get(PEAKS_ENV, "") or "{}")
    except ValueError:
        return {}


def calibrate_for_sweep(dtypes, device: str = "cpu") -> dict[str, float]:
    """Calibrate this machine's peaks once, at the start of a sweep, and hand them to every worker on it."""
    import json

    peaks = calibrate_peaks(sorted(set(dtypes)), device)
    os.environ[PEAKS_ENV] = json.dumps({**session_peaks(), device: peaks})
    return peaks


def peak_fields(tflops: float | None, peak: float | None) -> dict:
    """``frac_peak`` and ``peak_suspect`` of a record. A fraction above 1 means the calibrated peak was too low
    (measured under load) or the FLOP count is too high: ``peak_suspect`` is True and tables must not show
    the fraction as a fact."""
    if not tflops or not peak or peak <= 0:
        return {"frac_peak": None, "peak_suspect": False}
    frac = tflops / peak
    return {"frac_peak": frac, "peak_suspect": frac > 1.0}
