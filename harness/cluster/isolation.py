"""Benchmark code runs in a child process that its supervisor watches: time limit, memory budget, exact death cause.

Ray tells a driver only that a worker "died unexpectedly"; it cannot say whether the kernel's OOM killer, a
SIGSEGV or an ``os._exit`` ended it, and a memory limit set inside a Ray worker would also hit Ray's own
threads. So every benchmark process is a plain child of the Ray worker that supervises it:

* children are forked from a ``multiprocessing`` *forkserver* that preloads torch and the harness, so a new
  child costs milliseconds once the forkserver runs, and starts single-threaded (no Ray threads, no OpenMP
  pool: fork-safe); a child that died or was killed is simply replaced by the next run;
* the supervisor waits on a pipe with a deadline (``time_limit_s``) and polls the child's resident memory
  (RSS, ``/proc/PID/statm``) every ``POLL_S``: over the budget it SIGKILLs the child (an RSS watchdog, not
  ``RLIMIT_AS``, because CUDA reserves terabytes of address space and the watchdog also works on GPU hosts);
* a child that exits is reported with its exit code or signal name (``died: SIGKILL``); one that the kernel's
  OOM killer ended (a SIGKILL while ``/proc/vmstat``'s ``oom_kill`` count rose) is ``oom``;
* a child ignores SIGINT: Ctrl-C interrupts the supervisor, which kills its children, while a
  ``KeyboardInterrupt`` (or ``SystemExit``) raised *inside* a call is that call's ``raised`` outcome;
* children die with their parent (``PR_SET_PDEATHSIG``; the forkserver exits with the Ray worker that
  started it), so killing a Ray worker (``ray.kill``, ``ray.cancel(force=True)``) leaves no benchmark
  process behind.

Memory is the child's whole RSS, including the torch pages it shares with the forkserver (a few hundred MB).

This module knows nothing about Ray: it is plain ``multiprocessing``.
"""

from __future__ import annotations

import ctypes
import importlib
import multiprocessing
import os
import signal
import socket
import time
import traceback
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any, Callable, Optional

POLL_S = 0.05
PRELOAD = ["torch", "harness.cluster.child_tasks"]  # imported once by the forkserver, shared by every child
KINDS = ("ok", "raised", "died", "timeout", "oom")
MEMORY_FRACTION = 0.8  # default budget: this share of the node's RAM, split between concurrent processes
_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


@dataclass
class Outcome:
    """What became of one call in a child process (plain data: crosses Ray and pipes)."""

    kind: str  # one of KINDS
    value: Any = None  # the call's return value when ``kind == "ok"``
    reason: str = ""  # one line, for the record
    detail: str = ""  # a traceback, when there is one
    elapsed_s: float = 0.0
    peak_rss: int = 0  # bytes, highest RSS the supervisor saw during the call
    host: str = ""

    @property
    def ok(self) -> bool:
        return self.kind == "ok"


def gib(n: float) -> str:
    return f"{n / 2**30:.2f} GiB"


def node_memory() -> int:
    """This node's memory: physical RAM, or the cgroup (v2) limit of this container when lower."""
    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    try:
        with open("/sys/fs/cgroup/memory.max") as f:
            limit = f.read().strip()
        if limit.isdigit():
            total = min(total, int(limit))
    except OSError:
        pass
    return total


def default_budget(share: int) -> int:
    """``MEMORY_FRACTION`` of this node's memory divided by ``share`` processes (the default RSS budget)."""
    return int(node_memory() * MEMORY_FRACTION / max(share, 1))


def oom_kills() -> Optional[int]:
    """How many processes the kernel's OOM killer has killed since boot (``/proc/vmstat``; None if unknown)."""
    try:
        with open("/proc/vmstat") as f:
            for line in f:
                if line.startswith("oom_kill "):
                    return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return None


def rss_bytes(pid: int) -> int:
    """Resident set size of ``pid`` (0 when it is gone)."""
    try:
        with open(f"/proc/{pid}/statm") as f:
            return int(f.read().split()[1]) * _PAGE
    except (OSError, IndexError, ValueError):
        return 0


def exit_reason(exitcode: Optional[int]) -> str:
    """``SIGKILL`` for a signal, ``exit code 3`` otherwise."""
    if exitcode is None:
        return "still running"
    if exitcode < 0:
        try:
            return signal.Signals(-exitcode).name
        except ValueError:
            return f"signal {-exitcode}"
    return f"exit code {exitcode}"


def resolve(path: str) -> Callable:
    """``"package.module:function"`` -> the function."""
    module, _, name = path.partition(":")
    return getattr(importlib.import_module(module), name)


def _die_with_parent() -> None:
    """Ask the kernel to SIGKILL this process when its parent dies (Linux; a no-op elsewhere)."""
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except OSError:
        pass


def _one_line(e: BaseException) -> str:
    """``ValueError: bad`` (``KeyboardInterrupt`` for an exception without a message)."""
    text = f"{type(e).__name__}: {e}" if str(e) else type(e).__name__
    return text.splitlines()[0][:400]


def _serve(conn: Connection, env: dict, init: Optional[str], init_args: tuple) -> None:
    """Child main: set ``env``, run ``init(*init_args)``, then serve ``(fn, args)`` calls until the pipe closes.

    Functions travel as ``"module:function"`` paths so that the supervisor never imports what they need."""
    _die_with_parent()  # the parent is the forkserver, which exits when the supervising process does
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the supervisor's to handle (module docstring)
    if os.getppid() == 1:  # orphaned before prctl took effect
        os._exit(1)
    os.environ.update(env)
    try:
        value = resolve(init)(*init_args) if init else None
        conn.send(("ok", value, ""))
    except BaseException as e:  # noqa: BLE001 — reported to the supervisor
        conn.send(("raised", _one_line(e), traceback.format_exc(limit=12)))
        return
    while True:
        try:
            fn, args = conn.recv()
        except (EOFError, OSError):
            return
        try:
            conn.send(("ok", resolve(fn)(*args), ""))
        except BaseException as e:  # noqa: BLE001
            conn.send(("raised", _one_line(e), traceback.format_exc(limit=12)))


def context() -> multiprocessing.context.BaseContext:
    """The forkserver context, preloading torch and the harness (configured before its first start)."""
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(PRELOAD)
    return ctx


class Child:
    """One supervised benchmark process: started once, then called any number of times.

    A Ray worker running single-device runs keeps its child from run to run until it dies or is killed (or
    uses one per run, see :func:`run_once`); a rank of a context-parallel group keeps its child, which holds
    the torch.distributed process group, for every run of the group.
    """

    def __init__(self, init: Optional[str] = None, init_args: tuple = (), env: Optional[dict] = None):
        self.init, self.init_args, self.env = init, init_args, env or {}
        self.proc: Optional[multiprocessing.process.BaseProcess] = None
        self.conn: Optional[Connection] = None

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.is_alive()

    def start(self, timeout_s: float, memory_budget: Optional[int] = None) -> Outcome:
        """Start the child and wait for ``init`` (bounded by ``timeout_s``)."""
        ctx = context()
        ours, theirs = ctx.Pipe()
        # A forkserver child has the environment the forkserver started with: ``env`` is applied in the child.
        self.proc = ctx.Process(
            target=_serve, args=(theirs, self.env, self.init, self.init_args), daemon=True,
            name="lcbench-child",
        )
        self.proc.start()
        theirs.close()
        self.conn = ours
        return self._wait(timeout_s, memory_budget, what="start-up time limit")

    def call(self, fn: str, args: tuple, time_limit_s: float, memory_budget: Optional[int] = None) -> Outcome:
        """Run ``fn(*args)`` in the child; kill the child if it overruns ``time_limit_s`` or ``memory_budget``."""
        if not self.alive or self.conn is None:
            return Outcome("died", reason=f"process not running ({exit_reason(self._exitcode())})", host=_host())
        try:
            self.conn.send((fn, args))
        except (OSError, EOFError) as e:
            return Outcome("died", reason=f"pipe closed: {e}", host=_host())
        return self._wait(time_limit_s, memory_budget, what="time limit")

    def _exitcode(self) -> Optional[int]:
        return self.proc.exitcode if self.proc is not None else None

    def _wait(self, limit_s: float, memory_budget: Optional[int], what: str) -> Outcome:
        assert self.proc is not None and self.conn is not None
        started = time.perf_counter()
        deadline = started + limit_s
        peak = 0
        kills = oom_kills()
        while True:
            now = time.perf_counter()
            if now >= deadline:
                self.kill()
                return Outcome("timeout", reason=f"exceeded the {what} of {limit_s:g} s", elapsed_s=now - started,
                               peak_rss=peak, host=_host())
            ready = self.conn.poll(min(POLL_S, deadline - now))
            if ready:
                try:
                    kind, value, detail = self.conn.recv()
                except (EOFError, OSError):
                    ready = False  # the child closed the pipe by dying: reported below
                    self.proc.join(POLL_S)  # its exit status follows the EOF by a moment
                else:
                    elapsed = time.perf_counter() - started
                    if kind == "ok":
                        return Outcome("ok", value=value, elapsed_s=elapsed, peak_rss=peak, host=_host())
                    return Outcome("raised", reason=value, detail=detail, elapsed_s=elapsed, peak_rss=peak, host=_host())
            rss = rss_bytes(self.proc.pid)
            peak = max(peak, rss)
            if memory_budget and rss > memory_budget:
                self.kill()
                return Outcome("oom", reason=f"RSS {gib(rss)} exceeded the memory budget of {gib(memory_budget)}",
                               elapsed_s=time.perf_counter() - started, peak_rss=peak, host=_host())
            if not ready and not self.proc.is_alive():
                self.proc.join(1)
                return _death(self._exitcode(), kills, time.perf_counter() - started, peak)

    def kill(self) -> None:
        if self.proc is not None and self.proc.is_alive():
            self.proc.kill()
            self.proc.join(5)

    def close(self) -> None:
        """Close the pipe (the child's serve loop ends) and make sure the process is gone."""
        if self.conn is not None:
            self.conn.close()
            self.conn = None
        if self.proc is not None:
            self.proc.join(2)
            self.kill()


def _death(exitcode: Optional[int], kills_before: Optional[int], elapsed_s: float, peak: int) -> Outcome:
    """The outcome of a child that died: ``oom`` when the kernel's OOM killer did it, else ``died`` and how."""
    kills = oom_kills()
    if exitcode == -signal.SIGKILL and kills is not None and kills_before is not None and kills > kills_before:
        return Outcome("oom", reason=f"killed by the kernel's OOM killer (RSS peak {gib(peak)})", elapsed_s=elapsed_s,
                       peak_rss=peak, host=_host())
    return Outcome("died", reason=f"died: {exit_reason(exitcode)}", elapsed_s=elapsed_s, peak_rss=peak, host=_host())


class KeptChild:
    """A :class:`Child` kept from call to call while it is healthy: replaced when it died, was killed (an
    overrun, its memory budget) or its ``init_args`` change; ``fresh=True`` gives a call a new one of its own.

    The single-device runs of a Ray worker and of the inline scheduler go through one of these: the process is
    reused as long-lived workers are (the harness measures its GEMM peak once per process)."""

    def __init__(self, init: str, env: Optional[dict] = None):
        self.init, self.env = init, env
        self.child: Optional[Child] = None
        self.init_args: tuple = ()

    def call(self, fn: str, args: tuple, init_args: tuple, time_limit_s: float, memory_budget: Optional[int],
             start_timeout_s: float, fresh: bool = False) -> Outcome:
        """``fn(*args)`` in the kept process (started with ``init(*init_args)`` if there is none)."""
        if fresh:
            return run_once(fn, args, time_limit_s, memory_budget, start_timeout_s, self.init, init_args, self.env)
        if self.child is None or not self.child.alive or self.init_args != init_args:
            self.close()
            self.child, self.init_args = Child(self.init, init_args, self.env), init_args
            started = self.child.start(start_timeout_s, memory_budget)
            if not started.ok:
                self.close()
                started.reason = f"at start-up: {started.reason}"
                return started
        outcome = self.child.call(fn, args, time_limit_s, memory_budget)
        if not self.child.alive:
            self.close()
        return outcome

    def close(self) -> None:
        if self.child is not None:
            self.child.close()
            self.child = None


def run_once(fn: str, args: tuple, time_limit_s: float, memory_budget: Optional[int], start_timeout_s: float,
             init: Optional[str] = None, init_args: tuple = (), env: Optional[dict] = None) -> Outcome:
    """``fn(*args)`` in a fresh child (the strictest isolation of a single-device run)."""
    child = Child(init, init_args, env)
    try:
        started = child.start(start_timeout_s, memory_budget)
        if not started.ok:
            started.reason = f"at start-up: {started.reason}"
            return started
        return child.call(fn, args, time_limit_s, memory_budget)
    finally:
        child.close()


def _host() -> str:
    return socket.gethostname()
