"""Test-only methods and strategies that fail on purpose (registered with ``LCBENCH_PLUGINS=tests.fault_injection``).

Single-device methods (run through the real ``harness.execution.executor``): ``fault_crash`` (option ``how``:
``exit`` — ``os._exit(code)``, the default —, ``sigkill``, ``segfault`` (SIGSEGV), ``system_exit`` (raises
``SystemExit(code)``) or ``keyboard_interrupt`` (raises ``KeyboardInterrupt``, as a plugin might)),
``fault_sleep`` (sleeps, then is the naive kernel: slow-ish healthy runs, or an overrun), ``fault_hog``
(allocates until it is stopped), ``fault_alloc`` (one allocation of ``gib`` GiB, touched), ``fault_wrong``
(ignores the mask: fails the correctness gate). The fault happens when the method builds its kernel, with the
amount and kind taken from the run's options.

Strategies: a strategy's behaviour lives in :func:`execute_distributed`, the rank executor the tests hand the
scheduler (``rank_executor="tests.fault_injection:execute_distributed"``): ``fault_allreduce`` (healthy: one
all_reduce, a record from rank 0) and ``fault_raise`` / ``fault_exit`` / ``fault_sigkill`` / ``fault_segfault``
/ ``fault_system_exit`` / ``fault_keyboard_interrupt`` / ``fault_hang`` / ``fault_hog`` / ``fault_alloc`` /
``fault_sleep``, which do that on the rank given by the ``rank`` option (default 1).
Any other strategy is passed to the real ``harness.execution.distributed.execute_distributed`` — among them
``fault_attention_raise``, a real strategy whose attention raises on one rank while its peers wait.
:func:`stuck_supervisor` replaces the single-run task to test the driver's own time limit.
"""

from __future__ import annotations

import os
import signal
import time
from typing import Optional

import torch

from harness.interfaces.strategy import Strategy
from harness.masks.core import ALL_FEATURES
from harness.interfaces import Method, Problem

HOG_CHUNK = 64 << 20
HOG_CAP = 4 << 30  # never more than this, even if the watchdog failed


def _hog(cap: int = HOG_CAP) -> list:
    """Allocate and touch memory chunk by chunk up to ``cap`` (the budget watchdog should stop us first)."""
    held = []
    while len(held) * HOG_CHUNK < cap:
        held.append(torch.ones(HOG_CHUNK // 4))
        time.sleep(0.005)
    time.sleep(600)
    return held


def _trivial(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    return q.clone()


def crash(how: str, code: int) -> None:
    """End (or break out of) this process as a misbehaving plugin might: ``how`` names the way."""
    if how == "sigkill":
        os.kill(os.getpid(), signal.SIGKILL)
    if how == "segfault":
        os.kill(os.getpid(), signal.SIGSEGV)
    if how == "system_exit":
        raise SystemExit(code)
    if how == "keyboard_interrupt":
        raise KeyboardInterrupt("injected by a plugin")
    os._exit(code)


def allocate(gib: float) -> torch.Tensor:
    """One allocation of ``gib`` GiB, every page touched (the allocator refuses it, or the budget stops it)."""
    return torch.ones(int(gib * 2**30), dtype=torch.uint8)


def _build_crash(problem: Problem):
    crash(problem.options.get("how", "exit"), int(problem.options.get("code", 3)))


def _build_alloc(problem: Problem):
    allocate(float(problem.options.get("gib", 30)))
    return _trivial


def _build_sleep(problem: Problem):
    from methods.naive import build

    time.sleep(float(problem.options.get("seconds", 1.0)))
    return build(problem)  # a correct kernel: these runs pass the gate


def _build_hog(problem: Problem):
    _hog(int(problem.options.get("cap", HOG_CAP)))
    return _trivial


def _method(name: str, build) -> Method:
    return Method(name=name, summary=f"test fault injection: {name}", build=build, mask_features=ALL_FEATURES,
                  forward_flops=lambda p: 1.0)


def _build_ignores_mask(problem: Problem):
    """A fast, wrong kernel: full attention whatever the mask (the correctness gate must catch it)."""
    def fn(q, k, v):
        out = torch.nn.functional.scaled_dot_product_attention(
            q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), enable_gqa=True)
        return out.transpose(1, 2)

    return fn


METHODS = [_method("fault_crash", _build_crash), _method("fault_sleep", _build_sleep), _method("fault_hog", _build_hog),
           _method("fault_alloc", _build_alloc), _method("fault_wrong", _build_ignores_mask)]

CRASHES = {"fault_exit": "exit", "fault_sigkill": "sigkill", "fault_segfault": "segfault",
           "fault_system_exit": "system_exit", "fault_keyboard_interrupt": "keyboard_interrupt"}
STRATEGY_FAULTS = ("fault_allreduce", "fault_raise", *CRASHES, "fault_hang", "fault_hog", "fault_alloc", "fault_sleep")


def _not_here(*_args):
    raise NotImplementedError("fault strategies run through tests.fault_injection.execute_distributed")


def _attention_raises(ctx, q, k, v):
    """A real strategy's step failing on one rank while its peers wait in a collective."""
    import torch.distributed as dist

    if ctx.rank == int(ctx.options.get("rank", 1)):
        raise ValueError(f"injected fault in attention on rank {ctx.rank}")
    dist.all_reduce(torch.ones(1))  # the failing rank never joins: peers wait for the group timeout
    return q.clone()


def _contiguous(problem):
    return list(torch.arange(problem.seqlen).chunk(problem.world_size))


STRATEGIES = [Strategy(name=n, summary=f"test fault injection: {n}", layout=_not_here, attention=_not_here)
              for n in STRATEGY_FAULTS]
# Run by the REAL rank executor (harness.execution.distributed): its failure path is what is tested.
STRATEGIES.append(Strategy(name="fault_attention_raise", summary="test fault injection: raises in attention",
                           layout=_contiguous, attention=_attention_raises, local_methods=frozenset({"naive"}),
                           options={"rank": 1}))


def stuck_supervisor(*_args, **_kwargs) -> None:
    """Stands in for the single-run task when a test needs a supervisor that never answers."""
    time.sleep(600)


def execute_distributed(run) -> Optional[dict]:
    """Rank executor for the tests: the fault strategies here, anything else to the real runner."""
    if run.strategy not in STRATEGY_FAULTS:
        from harness.execution.distributed import execute_distributed as real

        return real(run)
    import torch.distributed as dist

    from harness.status import base_record, set_status

    started = time.perf_counter()
    opts = run.option_kwargs
    rank, target = dist.get_rank(), int(opts.get("rank", 1))
    if run.strategy == "fault_sleep":
        time.sleep(float(opts.get("seconds", 1.0)))
    if rank == target:
        if run.strategy == "fault_raise":
            raise RuntimeError(f"injected fault on rank {rank}")
        if run.strategy in CRASHES:
            crash(CRASHES[run.strategy], int(opts.get("code", 3)))
        if run.strategy == "fault_hog":
            _hog()
        if run.strategy == "fault_alloc":
            allocate(float(opts.get("gib", 30)))
    t = torch.ones(4)
    dist.all_reduce(t)
    if rank == target and run.strategy == "fault_hang":
        dist.all_reduce(t)  # a collective no peer joins: hangs
    if rank != 0:
        return None
    record = set_status(base_record(run), "ok", None)
    record.update(allreduce_sum=float(t[0]), threads=torch.get_num_threads(), time_ms_median=0.0,
                  wall_s=time.perf_counter() - started, pid=os.getpid())
    return record
