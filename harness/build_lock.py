"""Build locks that cannot hang lcbench: a bounded wait, and a lock whose owner is gone is taken over.

Compiled extensions (the native kernel, DeepSpeed's JIT ops through ``torch.utils.cpp_extension``) are built
once into a cache shared by every process, under a lock file. torch's own lock (``FileBaton``) is a bare
file that its waiters poll forever: a build killed mid-way leaves it behind and every later run hangs. A
:class:`BuildLock` instead

* writes its owner (``PID HOST``) into the file and keeps the file open while it holds it;
* is **stale** when its owner is gone: the recorded pid is not running on this host, or no longer has the
  file open (a pid reused since); a lock without an owner line (torch's, or one whose writer was killed
  between creating and writing it) is stale when no process here has it open (``/proc/*/fd``; processes this
  user may not inspect are not counted). A stale lock is removed and the build goes on;
* waits at most ``wait_s`` (``$LCBENCH_BUILD_LOCK_WAIT_S``, default 300 s) for a live owner, then raises
  :class:`BuildLockBusy`, whose message (who holds which lock, for how long) the caller reports as its
  method's or peer's ``unavailable`` reason.

:func:`torch_build_locks` puts :class:`TorchBaton` (a :class:`BuildLock` with ``FileBaton``'s interface) in
place of torch's ``FileBaton`` around a build. Plain ``os``; torch is imported only by that function.
"""

from __future__ import annotations

import contextlib
import os
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Optional, TypeVar

WAIT_ENV = "LCBENCH_BUILD_LOCK_WAIT_S"
DEFAULT_WAIT_S = 300.0
POLL_S = 0.1
T = TypeVar("T")


class BuildLockBusy(RuntimeError):
    """A live owner held the build lock past the wait (the message says who, which lock and how long)."""


class BuildLockOrphaned(BuildLockBusy):
    """The owner we waited for died before finishing its build: the build must be retried."""


@dataclass(frozen=True)
class Owner:
    pid: int
    host: str

    def __str__(self) -> str:
        return f"pid {self.pid} on {self.host}"


def wait_s_default() -> float:
    """The bounded wait for a live owner: ``$LCBENCH_BUILD_LOCK_WAIT_S`` or :data:`DEFAULT_WAIT_S`."""
    try:
        return max(0.0, float(os.environ.get(WAIT_ENV, DEFAULT_WAIT_S)))
    except ValueError:
        return DEFAULT_WAIT_S


def read_owner(path: Path) -> Optional[Owner]:
    """The owner a lock file names (None: no owner line, or no file)."""
    try:
        pid, host = Path(path).read_text().split()[:2]
        return Owner(int(pid), host)
    except (OSError, ValueError):
        return None


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True


def _has_open(pid: int, target: str) -> Optional[bool]:
    """Whether process ``pid`` has ``target`` open (None: its descriptors cannot be read)."""
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except FileNotFoundError:
        return False
    except OSError:
        return None
    for fd in fds:
        try:
            if os.readlink(f"/proc/{pid}/fd/{fd}") == target:
                return True
        except OSError:
            continue
    return False


def _anyone_has_open(target: str) -> Optional[bool]:
    """Whether any process here this user may inspect has ``target`` open (None: no ``/proc``)."""
    try:
        pids = [int(p) for p in os.listdir("/proc") if p.isdigit()]
    except OSError:
        return None
    return any(_has_open(pid, target) for pid in pids)


def stale_reason(path: Path) -> Optional[str]:
    """Why the lock at ``path`` is stale (its owner is gone), or None: it may be held (or does not exist)."""
    path = Path(path)
    if not path.exists():
        return None
    target = os.path.realpath(path)
    owner = read_owner(path)
    if owner is None:
        if _anyone_has_open(target) is False:
            return "it names no owner and no process has it open"
        return None
    if owner.host != socket.gethostname():
        return None  # another host's processes cannot be checked from here
    if not _pid_alive(owner.pid):
        return f"its owner, {owner}, is gone"
    if _has_open(owner.pid, target) is False:
        return f"its owner, {owner}, no longer holds it (the pid was reused)"
    return None


class BuildLock:
    """An exclusive lock file for one build (module docstring): ``with BuildLock(path): build()``."""

    def __init__(self, path: os.PathLike | str, wait_s: Optional[float] = None, poll_s: float = POLL_S):
        self.path = Path(path)
        self.wait_s = wait_s_default() if wait_s is None else float(wait_s)
        self.poll_s = poll_s
        self.fd: Optional[int] = None
        self.removed_stale: list[str] = []  # why each stale lock this one took over was removed

    def try_acquire(self) -> bool:
        """Create the lock (naming this process as its owner); a stale lock in the way is removed first."""
        for _ in range(2):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                if not self._remove_if_stale():
                    return False
                continue
            os.write(fd, f"{os.getpid()} {socket.gethostname()}\n".encode())
            self.fd = fd
            return True
        return False

    def wait(self) -> None:
        """Wait until the lock is released (its owner finished); :class:`BuildLockOrphaned` if the owner died
        first (its stale lock is removed), :class:`BuildLockBusy` after ``wait_s``."""
        deadline = time.monotonic() + self.wait_s
        while self.path.exists():
            if self._remove_if_stale():
                raise BuildLockOrphaned(f"the build that held {self.path} died before finishing "
                                        f"({self.removed_stale[-1]}); removed its lock")
            if time.monotonic() >= deadline:
                raise BuildLockBusy(self._busy())
            time.sleep(self.poll_s)

    def acquire(self) -> "BuildLock":
        """Take the lock within ``wait_s`` (a stale one is taken over), else :class:`BuildLockBusy`."""
        deadline = time.monotonic() + self.wait_s
        while not self.try_acquire():
            if time.monotonic() >= deadline:
                raise BuildLockBusy(self._busy())
            time.sleep(self.poll_s)
        return self

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()

    def __enter__(self) -> "BuildLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()

    def _remove_if_stale(self) -> bool:
        why = stale_reason(self.path)
        if why is None:
            return False
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        self.removed_stale.append(why)
        return True

    def _busy(self) -> str:
        owner = read_owner(self.path)
        who = str(owner) if owner else "a process that names no owner"
        return f"build lock {self.path} held by {who} for more than {self.wait_s:g} s (${WAIT_ENV} to wait longer)"


class TorchBaton(BuildLock):
    """:class:`BuildLock` with the interface of ``torch.utils.file_baton.FileBaton`` (try_acquire, wait,
    release), which torch's extension builder calls."""

    def __init__(self, lock_file_path: str, wait_seconds: float = POLL_S, warn_after_seconds: Optional[float] = None,
                 *, wait_s: Optional[float] = None):
        super().__init__(lock_file_path, wait_s=wait_s, poll_s=wait_seconds)


@contextlib.contextmanager
def torch_build_locks(wait_s: Optional[float] = None) -> Iterator[None]:
    """Within: torch's extension builds (``torch.utils.cpp_extension``) lock with :class:`TorchBaton`."""
    import torch.utils.cpp_extension as cpp_extension

    saved = cpp_extension.FileBaton
    cpp_extension.FileBaton = lambda path, *a, **k: TorchBaton(path, *a, wait_s=wait_s, **k)
    try:
        yield
    finally:
        cpp_extension.FileBaton = saved


def with_torch_build_locks(build: Callable[[], T], wait_s: Optional[float] = None) -> T:
    """``build()`` under :func:`torch_build_locks`, once more if the owner it waited for died mid-build;
    :class:`BuildLockBusy` if a live owner holds the lock past the wait."""
    with torch_build_locks(wait_s):
        try:
            return build()
        except BuildLockOrphaned:
            return build()
