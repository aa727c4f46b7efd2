"""Build and load lcbench's native kernels (C++ beside this file) on first use, for the machine they run on.

A kernel is compiled once per (source, compiler, CPU) with ``g++ -O3 -march=native`` into a cache folder
(``$LCBENCH_NATIVE_CACHE``, else ``~/.cache/lcbench/native``), one builder at a time under a
:class:`harness.build_lock.BuildLock` (a bounded wait; a dead builder's lock is taken over; a lock held past
the wait makes the kernel unavailable, saying who holds it), and loaded with :mod:`ctypes`; no torch headers
are involved, so a build takes seconds. The matrix products are the BLAS that torch itself links
(``sgemm_``/``dgemm_`` exported by ``libtorch_cpu``, Intel MKL in the x86 wheels); each worker thread pins that
BLAS to one thread (``MKL_Set_Num_Threads_Local``) so the kernel's own threads are the only parallelism.
:func:`unavailable_reason` says why a kernel cannot be built here (no compiler, no BLAS symbol), which a
method reports as its availability probe.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Optional

import torch

from harness.build_lock import BuildLock, BuildLockBusy

HERE = Path(__file__).resolve().parent
FLAGS = ("-O3", "-march=native", "-fno-math-errno", "-std=c++17", "-shared", "-fPIC", "-pthread")
BLAS_SYMBOLS = ("sgemm_", "dgemm_")
THREADS_LOCAL_SYMBOL = "MKL_Set_Num_Threads_Local"  # the C entry (by value); the lowercase one is Fortran's


class NativeUnavailable(RuntimeError):
    """The kernel cannot be built or linked on this machine (the message says why)."""


def _compiler() -> str:
    cxx = os.environ.get("CXX", "g++")
    if shutil.which(cxx) is None:
        raise NativeUnavailable(f"no C++ compiler ({cxx} not on PATH; set CXX)")
    return cxx


def _cpu_identity() -> str:
    """What ``-march=native`` compiles for: the CPU's model and feature flags."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return platform.machine()
    keep = [ln for ln in lines if ln.startswith(("model name", "flags"))][:2]
    return platform.machine() + "\n" + "\n".join(keep)


def _cache_dir() -> Path:
    root = os.environ.get("LCBENCH_NATIVE_CACHE") or Path.home() / ".cache" / "lcbench" / "native"
    return Path(root)


def build_target(name: str) -> Path:
    """Where kernel ``name`` is cached for this source, compiler and CPU (its build lock: ``.lock`` beside it)."""
    source = HERE / f"{name}.cpp"
    cxx = _compiler()
    version = subprocess.run([cxx, "--version"], capture_output=True, text=True).stdout
    key = hashlib.sha256("\0".join([source.read_text(), cxx, version, *FLAGS, _cpu_identity()]).encode()).hexdigest()
    return _cache_dir() / f"{name}-{key[:16]}.so"


def _build(name: str) -> Path:
    source, cxx = HERE / f"{name}.cpp", _compiler()
    target = build_target(name)
    if target.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        with BuildLock(target.with_suffix(".lock")):  # one builder at a time; a dead builder's lock is taken over
            if not target.exists():  # else built by the owner we waited for
                _compile(cxx, source, target)
    except BuildLockBusy as e:
        raise NativeUnavailable(str(e)) from None
    return target


def _compile(cxx: str, source: Path, target: Path) -> None:
    fd, tmp = tempfile.mkstemp(suffix=".so", dir=target.parent)
    os.close(fd)
    done = subprocess.run([cxx, *FLAGS, str(source), "-o", tmp], capture_output=True, text=True)
    if done.returncode != 0:
        os.unlink(tmp)
        raise NativeUnavailable(f"{cxx} failed to build {source.name}: {done.stderr.strip()[-400:]}")
    os.replace(tmp, target)  # atomic: a loader never sees a half-written file


def _torch_symbol(name: str) -> Optional[int]:
    lib = ctypes.CDLL(str(Path(torch.__file__).parent / "lib" / "libtorch_cpu.so"))
    try:
        return ctypes.cast(getattr(lib, name), ctypes.c_void_p).value
    except AttributeError:
        return None


@functools.lru_cache(maxsize=None)
def load(name: str) -> ctypes.CDLL:
    """The compiled kernel ``name`` (``name.cpp`` here), initialised with torch's BLAS."""
    blas = {sym: _torch_symbol(sym) for sym in BLAS_SYMBOLS}
    missing = [sym for sym, addr in blas.items() if addr is None]
    if missing:
        raise NativeUnavailable(f"torch's libtorch_cpu exports no BLAS {', '.join(missing)}")
    lib = ctypes.CDLL(str(_build(name)))
    lib.lcb_init(*(ctypes.c_void_p(blas[s]) for s in BLAS_SYMBOLS), ctypes.c_void_p(_torch_symbol(THREADS_LOCAL_SYMBOL)))
    return lib


def unavailable_reason(name: str) -> Optional[str]:
    """None when ``load(name)`` works here, else why not (for a method's availability probe)."""
    try:
        load(name)
    except (NativeUnavailable, OSError) as exc:
        return str(exc)
    return None
