"""The CPU priority a benchmark process runs at, and the machine's load while it runs.

Ray starts its workers at nice 15 (``RAY_worker_niceness``), and every benchmark process forked under one
inherits that: on a shared node a timed run then loses the CPU to any other process. So each benchmark process
(the child that times a single run, each rank of a group) resets its niceness to the driver's before it runs
anything (:func:`reset_niceness`). Going back down from the niceness it inherited is raising priority, which
Linux allows only within ``RLIMIT_NICE`` (or with ``CAP_SYS_NICE``); when that is not permitted the process keeps
its niceness and says why, and every record states what its run got (:func:`run_conditions`): ``nice``, the
1-minute ``load_avg`` when the run started, and ``nice_error`` when the reset failed.

Plain ``os``: no torch, no Ray.
"""

from __future__ import annotations

import os
from typing import Optional

_reset_error: Optional[str] = None  # why this process could not take the niceness it was asked for


def niceness() -> int:
    """This process's nice value."""
    return os.getpriority(os.PRIO_PROCESS, 0)


def reset_niceness(target: Optional[int]) -> Optional[str]:
    """Set this process's niceness to ``target`` (None: leave it); None when it now has it, else why not.

    The failure is also kept for :func:`run_conditions`, so every record of this process reports it."""
    global _reset_error
    _reset_error = None
    if target is None or niceness() == target:
        return None
    before = niceness()
    try:
        os.setpriority(os.PRIO_PROCESS, 0, target)
    except OSError as e:
        _reset_error = f"could not change niceness {before} -> {target}: {e.strerror or e}"
    return _reset_error


def run_conditions() -> dict:
    """What a record states about the CPU its run competed for: ``nice``, ``load_avg`` (and ``nice_error``)."""
    fields: dict = {"nice": niceness()}
    try:
        fields["load_avg"] = round(os.getloadavg()[0], 2)
    except OSError:  # no load average on this platform
        fields["load_avg"] = None
    if _reset_error:
        fields["nice_error"] = _reset_error
    return fields
