"""The one status vocabulary of a run, and the groups every part of lcbench reads it by.

A run ends with exactly one status and, unless ``ok``, a one-line reason:

- ``ok``: it ran, passed the correctness gate (or its workload's own check) and was measured;
- ``unsupported``: the method / strategy / workload cannot express this mask, dtype, shape or option;
- ``unavailable``: a library or a device is missing here;
- ``oom``, ``timeout``, ``error``: it was tried and failed so;
- ``invalid``: it ran but failed the correctness check — its timing is never shown as a result;
- ``predicted``: not run — modelled by ``lcbench predict`` on a cluster profile; its figures are a model's,
  stored, shown and plotted as such (never as a measurement).
"""

from __future__ import annotations

from typing import Optional

OK = "ok"
UNSUPPORTED = "unsupported"
UNAVAILABLE = "unavailable"
OOM = "oom"
TIMEOUT = "timeout"
ERROR = "error"
INVALID = "invalid"
PREDICTED = "predicted"

STATUSES = (OK, UNSUPPORTED, UNAVAILABLE, OOM, TIMEOUT, ERROR, INVALID, PREDICTED)
WITH_FIGURES = (OK, PREDICTED)  # records whose figures are shown: measured and valid, or a model's (labelled)
NOT_RUN = (UNAVAILABLE, UNSUPPORTED)  # the reason is about the method/library, not the run
FAILED = (ERROR, OOM, TIMEOUT, INVALID)  # tried, and no valid number came out
RUN_BREAKING = (ERROR, OOM, TIMEOUT)  # a rank group whose run ended so may be out of step: rebuild it

# How allocators say they ran out (torch's CPU allocator: "DefaultCPUAllocator: can't allocate memory: you tried
# to allocate N bytes. Error code 12 (Cannot allocate memory)"; CUDA's: "CUDA out of memory"; C++: bad_alloc).
MEMORY_MARKS = ("out of memory", "memoryerror", "can't allocate memory", "cannot allocate memory",
                "not enough memory", "bad_alloc", "failed to allocate")


def memory_exhausted(text: str) -> bool:
    """Whether a failure's text is an allocator's out-of-memory failure (the run is then ``oom``)."""
    lowered = text.lower()
    return any(m in lowered for m in MEMORY_MARKS)


def base_record(run) -> dict:
    """The record every run starts from: its key, its plain-data fields, no status yet."""
    return {"key": run.key, **run.to_dict(), "status": None, "reason": None}


def set_status(record: dict, status: str, reason: Optional[str]) -> dict:
    """Set a record's status and reason (``status`` must be one of :data:`STATUSES`)."""
    assert status in STATUSES, status
    record["status"], record["reason"] = status, reason
    return record
