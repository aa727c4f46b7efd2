"""The lock a sweep holds on its results file, so that two drivers never write one file at once.

``<db>.lock`` is held with ``flock`` for the sweep's duration and says who holds it (pid, host, start time).
A second driver gets one line naming the holder (:class:`UserError`). The kernel drops an ``flock`` when its
holder exits; a lock that outlives its owner (a run's forked child still holding the descriptor after the
driver was killed) is taken over when the owner's pid is gone from this host, or now belongs to a process
that started after the lock was taken.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import time
from pathlib import Path
from typing import Optional

from harness.errors import UserError

ATTEMPTS = 5  # opening and locking races with a holder that is just releasing (or a takeover by another)


def process_started_at(pid: int) -> Optional[float]:
    """When process ``pid`` of this host started (epoch seconds), where ``/proc`` says; else None."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        boot = next(float(line.split()[1]) for line in Path("/proc/stat").read_text().splitlines()
                    if line.startswith("btime"))
        return boot + int(fields[19]) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError, StopIteration):
        return None


def owner_gone(owner: dict) -> bool:
    """Whether the process that took the lock ``owner`` describes has certainly ended: it ran on this host,
    and its pid is free or now a process started after the lock was taken. Unknown is not gone."""
    pid, since = owner.get("pid"), owner.get("since")
    if owner.get("host") != socket.gethostname() or not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        pass  # alive, someone else's
    started = process_started_at(pid)
    return isinstance(since, (int, float)) and started is not None and started > since + 1


def describe(owner: dict) -> str:
    """``pid 123 on host box since 2026-12-03 09:30:12 UTC`` (what the lock file says)."""
    if not owner:
        return "an unknown process (its lock file does not say who)"
    since = owner.get("since")
    when = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(since)) if isinstance(since, (int, float)) else "?"
    return f"pid {owner.get('pid')} on host {owner.get('host')} since {when}"


def _read_owner(fd: int) -> dict:
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        owner = json.loads(os.read(fd, 4096) or b"{}")
    except (OSError, ValueError):
        return {}
    return owner if isinstance(owner, dict) else {}


class ResultsLock:
    """``with ResultsLock(db):`` holds ``<db>.lock`` (see the module docstring). ``took_over`` names the gone
    owner whose lock this one replaced, if any."""

    def __init__(self, db: Path):
        self.db = Path(db)
        self.path = self.db.with_name(self.db.name + ".lock")
        self.fd: Optional[int] = None
        self.took_over: Optional[str] = None

    def _held_by_us(self, fd: int) -> bool:
        """Descriptor ``fd`` is still the file at ``path`` (a takeover may have replaced it)."""
        try:
            return os.stat(self.path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            return False

    def acquire(self) -> None:
        for _ in range(ATTEMPTS):
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            except OSError as e:
                raise UserError(f"results path {str(self.db)!r}: cannot create its lock {str(self.path)!r} "
                                f"({e.strerror or e})") from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                owner = _read_owner(fd)
                if not owner_gone(owner):
                    os.close(fd)
                    raise UserError(f"results path {str(self.db)!r} is in use by another lcbench run: "
                                    f"{describe(owner)} (lock {self.path}); wait for it to finish, or give "
                                    f"another --results") from None
                self.took_over = describe(owner)
                if self._held_by_us(fd):  # still that owner's file (no other driver took it over meanwhile)
                    self.path.unlink(missing_ok=True)  # its holder keeps an unlinked file; the next is new
                os.close(fd)
                continue
            if not self._held_by_us(fd):
                os.close(fd)
                continue
            owner = json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "since": time.time()})
            os.ftruncate(fd, 0)
            os.pwrite(fd, owner.encode(), 0)
            self.fd = fd
            return
        raise UserError(f"results path {str(self.db)!r}: could not take its lock {str(self.path)!r} in "
                        f"{ATTEMPTS} attempts (other drivers are starting on it)")

    def release(self) -> None:
        """Remove the lock file, then let go (a driver that opened it meanwhile sees it gone and retries)."""
        if self.fd is None:
            return
        if self._held_by_us(self.fd):
            self.path.unlink(missing_ok=True)
        os.close(self.fd)
        self.fd = None

    def __enter__(self) -> "ResultsLock":
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()
