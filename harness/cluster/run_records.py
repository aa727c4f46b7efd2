"""Supervisor outcomes -> result records: every fault of a run becomes a status and a one-line reason.

A single-device run's child returns the record ``harness.execution.executor`` made; a multi-rank run's rank 0 returns
the record ``execute_distributed`` made. When a process dies, overruns or blows its memory budget there is no
record, so one is made here from the run and the supervisors' outcomes.
"""

from __future__ import annotations

from typing import Optional

from harness.status import RUN_BREAKING, base_record, memory_exhausted, set_status
from harness.cluster.isolation import Outcome
from harness.cluster.group_run import GroupRun, RankFailure, failed as rank_failed
from harness.run import Run

# Texts of the failures a rank sees when a *peer* failed first: the peer's failure is the reason, not these.
PEER_FAILURE_MARKS = ("gloo", "nccl", "connection closed", "connection reset", "broken pipe", "peer", "timed out")


def _annotate(record: dict, o: Outcome, threads: int, scheduler: str = "ray") -> dict:
    record.setdefault("threads", threads)
    record.setdefault("wall_s", o.elapsed_s)
    record["node"] = o.host or record.get("node")
    record["scheduler"] = scheduler
    if o.peak_rss:
        record["peak_rss_bytes"] = o.peak_rss
    return record


def _failure(run: Run, status: str, reason: str, o: Outcome, threads: int, scheduler: str = "ray") -> dict:
    record = set_status(base_record(run), status, reason)
    if o.detail:
        record["traceback"] = o.detail
    return _annotate(record, o, threads, scheduler)


def _raised_status(reason: str) -> str:
    return "oom" if memory_exhausted(reason) else "error"


def single_record(run: Run, o: Outcome, threads: int, scheduler: str = "ray") -> dict:
    """The record of a single-device run from its supervisor's outcome (``scheduler``: ``ray`` or ``inline``).

    ``raised``: what escaped the executor (which makes every ``Exception`` of a run its record): a
    ``SystemExit`` or a ``KeyboardInterrupt`` the run raised is that run's error, not a stop of the sweep."""
    if o.kind == "ok" and isinstance(o.value, dict):
        return _annotate(dict(o.value), o, threads, scheduler)
    if o.kind == "ok":
        return _failure(run, "error", f"benchmark process returned {type(o.value).__name__}, not a record", o, threads,
                        scheduler)
    if o.kind == "died":
        return _failure(run, "error", f"worker {o.reason}", o, threads, scheduler)
    if o.kind == "raised":
        reason = o.reason if o.reason.startswith("at start-up") else f"run raised {o.reason}"
        return _failure(run, _raised_status(o.reason), reason, o, threads, scheduler)
    return _failure(run, o.kind, o.reason, o, threads, scheduler)  # timeout, oom


def _priority(o: Outcome) -> int:
    """Which rank's failure explains the run: deaths and memory first, then a rank's own exception, then a
    peer-induced communication error, then an overrun. A :class:`RankFailure` counts as a rank's own exception."""
    if isinstance(o.value, RankFailure):
        return 2
    if o.kind == "died":
        return 0
    if o.kind == "oom":
        return 1
    if o.kind == "raised":
        return 3 if any(m in o.reason.lower() for m in PEER_FAILURE_MARKS) else 2
    return 4


def group_record(run: Run, g: GroupRun, threads: int, time_limit_s: float, scheduler: str = "ray") -> dict:
    """The record of a multi-rank run: rank 0's record, or the failure that explains the run.

    Rank 0's record also stands when the only failures are other ranks' :class:`RankFailure` reports (the
    ranks agreed on a failure that rank 0 recorded). ``scheduler`` names the supervisor (``ray``, ``local``)."""
    by_rank = {r.rank: r.outcome for r in g.results}
    failed = sorted(((r, o) for r, o in by_rank.items() if rank_failed(o)), key=lambda ro: (_priority(ro[1]), ro[0]))
    zero = by_rank.get(0)
    if zero is not None and not rank_failed(zero) and (g.ok or not g.missing and
                                                       all(isinstance(o.value, RankFailure) for _, o in failed)):
        if isinstance(zero.value, dict):
            return _annotate(dict(zero.value), zero, threads, scheduler)
        return _failure(run, "error", f"rank 0 returned {type(zero.value).__name__}, not a record", zero, threads,
                        scheduler)
    if failed:
        rank, o = failed[0]
        if isinstance(o.value, RankFailure):
            return _failure(run, o.value.status, o.value.reason, _elapsed(o, g), threads, scheduler)
        if o.kind == "timeout":
            ranks = sorted(r for r, x in failed if x.kind == "timeout") + g.missing
            return _failure(run, "timeout", f"{_ranks(ranks)} {o.reason}", _elapsed(o, g), threads, scheduler)
        if o.kind == "raised":
            return _failure(run, _raised_status(o.reason), f"rank {rank} raised {o.reason}", _elapsed(o, g), threads,
                            scheduler)
        sep = " " if o.kind == "died" else ": "
        return _failure(run, "error" if o.kind == "died" else o.kind, f"rank {rank}{sep}{o.reason}", _elapsed(o, g),
                        threads, scheduler)
    return _failure(run, "timeout", f"{_ranks(g.missing)} gave no answer within {time_limit_s:g} s",
                    Outcome("timeout", elapsed_s=g.elapsed_s), threads, scheduler)


def _elapsed(o: Outcome, g: GroupRun) -> Outcome:
    o.elapsed_s = g.elapsed_s
    return o


def _ranks(ranks: list[int]) -> str:
    """``rank 1`` or ``ranks 0,1``."""
    ranks = sorted(set(ranks))
    return f"rank {ranks[0]}" if len(ranks) == 1 else "ranks " + ",".join(map(str, ranks))


def breaks_group(record: Optional[dict]) -> bool:
    return record is None or record.get("status") in RUN_BREAKING
