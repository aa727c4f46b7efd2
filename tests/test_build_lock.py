"""No stale lock can hang lcbench: a build lock whose owner is gone is taken over at once, and one a live owner
holds past the bounded wait makes the build's method or peer ``unavailable`` with that reason, within seconds.

The lock states are a table (:data:`STALE`: every way an owner can be gone); each is checked on
:class:`harness.build_lock.BuildLock` itself, on the native kernel's build (a tiny C++ source in place of the
kernel's, so a build takes a second) and on torch's extension-build lock as lcbench replaces it; the DeepSpeed
peer's op build is checked end to end in a fresh process.
"""

from __future__ import annotations

import ctypes
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, Iterator

import pytest

from harness.build_lock import (BuildLock, BuildLockBusy, BuildLockOrphaned, TorchBaton, read_owner, stale_reason,
                                torch_build_locks, with_torch_build_locks)

REPO = Path(__file__).resolve().parent.parent
HOST = socket.gethostname()
FAST_S = 10.0  # "within seconds": a stale lock costs no wait, a busy one the 1 s wait plus slack


def _dead_pid() -> int:
    p = subprocess.Popen(["true"])
    p.wait()
    return p.pid


# Every way a lock's owner can be gone: what the file holds (None: the file is left empty, as torch's FileBaton
# leaves it, or a writer killed between creating and writing it).
STALE: dict[str, Callable[[], str | None]] = {
    "owner_exited": lambda: f"{_dead_pid()} {HOST}\n",
    "no_owner_and_nobody_has_it_open": lambda: None,
    "pid_reused_by_a_process_without_it_open": lambda: f"{os.getpid()} {HOST}\n",
}


def plant(path: Path, content: str | None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(content or "")
    return path


HOLDER = ("import os, socket, sys, time\n"
          "fd = os.open(sys.argv[1], os.O_CREAT | os.O_EXCL | os.O_WRONLY)\n"
          "os.write(fd, (f'{os.getpid()} {socket.gethostname()}\\n' if sys.argv[2] == 'owner' else '').encode())\n"
          "print('held', flush=True)\n"
          "time.sleep(120)\n")


@pytest.fixture
def held() -> Iterator[Callable[[Path, bool], subprocess.Popen]]:
    """``held(path, names_owner)``: a live process holding the lock at ``path`` (killed, by pid, afterwards)."""
    procs: list[subprocess.Popen] = []

    def hold(path: Path, names_owner: bool = True) -> subprocess.Popen:
        path.parent.mkdir(parents=True, exist_ok=True)
        p = subprocess.Popen([sys.executable, "-c", HOLDER, str(path), "owner" if names_owner else "bare"],
                             stdout=subprocess.PIPE, text=True)
        procs.append(p)
        assert p.stdout.readline().strip() == "held"
        return p

    yield hold
    for p in procs:
        p.kill()
        p.wait()


# ----- the lock itself ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("state", sorted(STALE))
def test_a_stale_lock_is_taken_over_at_once(tmp_path, state):
    lock = plant(tmp_path / "lock", STALE[state]())
    assert stale_reason(lock) is not None
    t0 = time.monotonic()
    with BuildLock(lock, wait_s=60) as held_lock:
        assert time.monotonic() - t0 < FAST_S
        assert read_owner(lock).pid == os.getpid() and read_owner(lock).host == HOST
        assert held_lock.removed_stale and stale_reason(lock) is None  # ours now, and live
    assert not lock.exists()


@pytest.mark.parametrize("names_owner", [True, False], ids=["names_its_owner", "bare_like_torch"])
def test_a_live_lock_is_waited_for_within_the_bound(tmp_path, held, names_owner):
    lock = tmp_path / "lock"
    holder = held(lock, names_owner)
    assert stale_reason(lock) is None
    t0 = time.monotonic()
    with pytest.raises(BuildLockBusy) as e:
        BuildLock(lock, wait_s=1).acquire()
    assert 1 <= time.monotonic() - t0 < FAST_S
    who = f"pid {holder.pid} on {HOST}" if names_owner else "a process that names no owner"
    assert str(e.value) == f"build lock {lock} held by {who} for more than 1 s ($LCBENCH_BUILD_LOCK_WAIT_S to wait longer)"
    assert lock.exists(), "a live owner's lock must not be removed"


def test_another_hosts_lock_is_not_judged_from_here(tmp_path):
    lock = plant(tmp_path / "lock", f"{os.getpid()} not-{HOST}\n")
    assert stale_reason(lock) is None
    with pytest.raises(BuildLockBusy, match=f"held by pid {os.getpid()} on not-{HOST}"):
        BuildLock(lock, wait_s=0.2).acquire()


def test_a_lock_is_taken_over_when_its_live_owner_dies(tmp_path, held):
    lock = tmp_path / "lock"
    holder = held(lock)
    killer = subprocess.Popen([sys.executable, "-c", f"import os, time; time.sleep(1); os.kill({holder.pid}, 9)"])
    try:
        with BuildLock(lock, wait_s=30):
            assert read_owner(lock).pid == os.getpid()
    finally:
        killer.wait()


# ----- the native kernel's build -----------------------------------------------------------------------------
@pytest.fixture
def tiny_native(tmp_path, monkeypatch):
    """methods._native building ``tiny.cpp`` (one function) into a fresh cache: its target and lock paths."""
    from methods import _native

    monkeypatch.setenv("LCBENCH_NATIVE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(_native, "HERE", tmp_path)
    (tmp_path / "tiny.cpp").write_text('extern "C" int lcb_answer() { return 42; }\n')
    target = _native.build_target("tiny")
    return _native, target, target.with_suffix(".lock")


@pytest.mark.parametrize("state", sorted(STALE))
def test_native_build_after_a_killed_build(tiny_native, state):
    native, target, lock = tiny_native
    plant(lock, STALE[state]())
    t0 = time.monotonic()
    assert native._build("tiny") == target
    assert time.monotonic() - t0 < FAST_S
    assert ctypes.CDLL(str(target)).lcb_answer() == 42
    assert not lock.exists()


def test_native_build_held_by_a_live_build_is_unavailable(tiny_native, held, monkeypatch):
    native, target, lock = tiny_native
    holder = held(lock)
    monkeypatch.setenv("LCBENCH_BUILD_LOCK_WAIT_S", "1")
    t0 = time.monotonic()
    reason = native.unavailable_reason("tiny")
    assert time.monotonic() - t0 < FAST_S
    assert reason == f"build lock {lock} held by pid {holder.pid} on {HOST} for more than 1 s " \
                     "($LCBENCH_BUILD_LOCK_WAIT_S to wait longer)"
    assert not target.exists()


# ----- torch's extension-build lock, as lcbench replaces it -------------------------------------------------
def test_torch_builds_lock_with_the_bounded_baton(tmp_path, held):
    import torch.utils.cpp_extension as cpp_extension
    from torch.utils.file_baton import FileBaton

    with torch_build_locks(wait_s=1):
        stale = plant(tmp_path / "stale" / "lock", None)
        baton = cpp_extension.FileBaton(str(stale))
        assert isinstance(baton, TorchBaton) and baton.try_acquire()  # the killed build's lock is taken over
        baton.release()
        live = tmp_path / "live" / "lock"
        held(live)
        baton = cpp_extension.FileBaton(str(live))
        assert not baton.try_acquire()
        t0 = time.monotonic()
        with pytest.raises(BuildLockBusy):
            baton.wait()  # torch's own waits forever
        assert time.monotonic() - t0 < FAST_S
    assert cpp_extension.FileBaton is FileBaton


def test_torch_build_retried_when_the_build_it_waited_for_died(tmp_path, held):
    """A waiter whose builder dies mid-build retries the build itself instead of loading nothing."""
    lock = tmp_path / "lock"
    holder = held(lock)
    calls = []

    def build() -> str:
        import torch.utils.cpp_extension as cpp_extension

        calls.append(1)
        baton = cpp_extension.FileBaton(str(lock))
        if baton.try_acquire():
            baton.release()
            return "built"
        if len(calls) == 1:
            holder.kill()
            holder.wait()
        baton.wait()
        return "loaded"

    assert with_torch_build_locks(build, wait_s=30) == "built"
    assert len(calls) == 2
    with pytest.raises(BuildLockOrphaned):
        plant(lock, None)
        TorchBaton(str(lock), wait_s=5).wait()


# ----- the DeepSpeed peer's op build, end to end -----------------------------------------------------------
PREBUILD = ("from context_parallel.peer_deepspeed_ulysses import prebuild\n"
            "print('PREBUILD', prebuild())\n")


def _prebuild(extensions: Path, wait_s: float, timeout_s: float) -> str:
    env = dict(os.environ, TORCH_EXTENSIONS_DIR=str(extensions), LCBENCH_BUILD_LOCK_WAIT_S=str(wait_s),
               PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
    done = subprocess.run([sys.executable, "-c", PREBUILD], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=timeout_s)
    assert done.returncode == 0, done.stderr[-2000:]
    return next(line for line in done.stdout.splitlines() if line.startswith("PREBUILD ")).removeprefix("PREBUILD ")


def _needs_deepspeed() -> None:
    from harness.catalog import strategies

    why = strategies()["deepspeed_ulysses"].unavailable_reason()
    if why is not None:
        pytest.skip(f"deepspeed_ulysses: {why}")


@pytest.mark.integration
def test_deepspeed_op_build_held_by_a_live_build_is_unavailable(tmp_path, held):
    _needs_deepspeed()
    lock = tmp_path / "ext" / "deepspeed_shm_comm" / "lock"
    holder = held(lock)
    t0 = time.monotonic()
    reason = _prebuild(tmp_path / "ext", wait_s=1, timeout_s=120)
    assert reason == f"deepspeed_shm_comm op not built: build lock {lock} held by pid {holder.pid} on {HOST} for " \
                     "more than 1 s ($LCBENCH_BUILD_LOCK_WAIT_S to wait longer)"
    assert time.monotonic() - t0 < 60  # a fresh process importing deepspeed, then the 1 s wait


@pytest.mark.slow
def test_deepspeed_op_builds_after_a_killed_build(tmp_path):
    """What ``make test`` meets on a machine where a build was killed: torch's bare lock left behind (minutes,
    ~3 on 2 shared cores: the op is compiled from scratch into a fresh directory)."""
    _needs_deepspeed()
    plant(tmp_path / "ext" / "deepspeed_shm_comm" / "lock", None)
    assert _prebuild(tmp_path / "ext", wait_s=600, timeout_s=600) == "None"
    assert not (tmp_path / "ext" / "deepspeed_shm_comm" / "lock").exists()
