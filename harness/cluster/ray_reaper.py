"""Clean up an embedded Ray whose driver died without shutting it down (SIGKILL, the kernel's OOM killer).

Ray ties its GCS, raylet and workers to the driver (``PR_SET_PDEATHSIG``), but not the raylet's agents
(``ray::DashboardAgent``, ``ray::RuntimeEnvAgent``): after a driver is SIGKILLed they wait for a dead GCS
forever. A shared machine must not collect such orphans, so the embedded Ray gets this reaper: a small
process that every second notes the driver's descendants (pid and start time) and, when its stdin reaches
EOF without a goodbye byte (the driver died), terminates those still running, then kills the stragglers.
A normal ``close()`` writes the goodbye byte and the reaper exits quietly.

Run as ``python -m harness.cluster.ray_reaper DRIVER_PID``; started by :func:`start_reaper`.
"""

from __future__ import annotations

import os
import select
import subprocess
import sys
from typing import Optional

SNAPSHOT_S = 1.0
GRACE_S = 3.0
GOODBYE = b"x"


def start_reaper() -> Optional[subprocess.Popen]:
    """Start the reaper for this process (Linux only; None where it cannot run)."""
    if not sys.platform.startswith("linux"):
        return None
    return subprocess.Popen(
        [sys.executable, "-m", "harness.cluster.ray_reaper", str(os.getpid())], stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True, env=dict(os.environ),
    )


def stop_reaper(reaper: Optional[subprocess.Popen]) -> None:
    """Tell the reaper the driver shut Ray down itself: it exits without killing anything."""
    if reaper is None or reaper.poll() is not None:
        return
    try:
        reaper.stdin.write(GOODBYE)
        reaper.stdin.close()
        reaper.wait(5)
    except (OSError, subprocess.TimeoutExpired):
        reaper.kill()


def _descendants(pid: int) -> dict[int, float]:
    import psutil

    try:
        procs = psutil.Process(pid).children(recursive=True)
    except psutil.Error:
        return {}
    out = {}
    for p in procs:
        try:
            if p.pid != os.getpid():
                out[p.pid] = p.create_time()
        except psutil.Error:
            pass
    return out


def _reap(seen: dict[int, float]) -> None:
    import psutil

    procs = []
    for pid, created in seen.items():
        try:
            p = psutil.Process(pid)
            if p.create_time() == created:  # the same process, not a reused pid
                procs.append(p)
        except psutil.Error:
            pass
    for p in procs:
        try:
            p.terminate()
        except psutil.Error:
            pass
    _, alive = psutil.wait_procs(procs, timeout=GRACE_S)
    for p in alive:
        try:
            p.kill()
        except psutil.Error:
            pass


def main(driver_pid: int) -> None:
    seen: dict[int, float] = {}
    stdin = sys.stdin.buffer
    while True:
        now = _descendants(driver_pid)
        if now:  # empty once the driver is gone: keep the last picture of its tree
            seen = now
        ready, _, _ = select.select([stdin], [], [], SNAPSHOT_S)
        if ready:
            if stdin.read(1) == GOODBYE:
                return
            _reap(seen)  # EOF: the driver is gone
            return


if __name__ == "__main__":
    main(int(sys.argv[1]))
