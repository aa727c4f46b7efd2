"""Both schedulers under fault: every failure of a run is a record with a status and a reason, and the sweep goes on.

One embedded Ray (``scheduler`` fixture) and one inline scheduler (``inline_scheduler``) are shared by the module;
``LCBENCH_PLUGINS=tests.fault_injection`` is set before either starts so that their workers register the
fault-injection methods and strategies. The fault tables (``SINGLE_FAULTS``, ``RANK_FAULTS``) are run under
every scheduler: each case sweeps a faulty run between healthy ones through ``run_sweep`` into a fresh store and
checks the fault's status and reason, the group rebuilt after it, the healthy runs (before and after) stored
untouched and run at the driver's niceness. Cases that take longer than 5 s (the timeouts) are ``slow``.
"""

from __future__ import annotations

import os
import secrets
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from harness.cluster.priority import niceness
from harness.run import Run, Timing
from harness.results.store import ResultStore
from harness.cluster.sweep import run_sweep

pytestmark = pytest.mark.integration  # real Ray / process groups / the CLI end to end

REPO = Path(__file__).resolve().parent.parent
PLUGINS = "tests.fault_injection"
EXECUTOR = "tests.fault_injection:execute_distributed"
RUN_TIMEOUT_S = 6.0
BUDGET = 1 << 30
FAST = Timing(warmup=1, min_samples=2, min_run_time=0.01)


def single(method: str = "naive", **options) -> Run:
    return Run.make(method=method, mask="full", seqlen=32, heads_q=1, heads_kv=1, head_dim=8, timing=FAST,
                    options=options)


def ranked(strategy: str = "fault_allreduce", world_size: int = 2, **options) -> Run:
    return Run.make(method="naive", strategy=strategy, world_size=world_size, mask="full", seqlen=32, heads_q=1,
                    heads_kv=1, head_dim=8, timing=FAST, options=options)


@pytest.fixture(scope="module")
def plugins():
    saved = os.environ.get("LCBENCH_PLUGINS")
    os.environ["LCBENCH_PLUGINS"] = PLUGINS  # before Ray starts (its workers inherit it) and before any child
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop("LCBENCH_PLUGINS", None)
        else:
            os.environ["LCBENCH_PLUGINS"] = saved


@pytest.fixture(scope="module")
def scheduler(plugins):
    from harness.cluster.ray_scheduler import RayScheduler

    s = RayScheduler(run_timeout_s=RUN_TIMEOUT_S, memory_budget_bytes=BUDGET, rank_executor=EXECUTOR,
                     failure_grace_s=1.0)
    try:
        yield s
    finally:
        s.close()


@pytest.fixture(scope="module")
def inline_scheduler(plugins):
    from harness.cluster.inline_scheduler import InlineScheduler

    s = InlineScheduler(run_timeout_s=RUN_TIMEOUT_S, memory_budget_bytes=BUDGET, rank_executor=EXECUTOR)
    try:
        yield s
    finally:
        s.close()


SCHEDULERS = {"ray": "scheduler", "inline": "inline_scheduler"}  # id -> fixture


@pytest.fixture(params=sorted(SCHEDULERS))
def each_scheduler(request):
    """Every scheduler, one after the other: a fault must cost its run only under each of them."""
    return request.getfixturevalue(SCHEDULERS[request.param])


def sweep(scheduler, runs: list[Run], tmp_path: Path) -> list[dict]:
    """Run ``runs`` through the real driver into a fresh store; the stored records, in ``runs`` order."""
    store = ResultStore(tmp_path / "results.db")
    summary = run_sweep("faults", runs, store, scheduler, show_progress=False)
    stored = {r["key"]: r for r in store.records()}
    assert len(summary.records) == len(runs) == len(stored), "a run was lost or repeated"
    for yielded in summary.records:  # what was stored is what the scheduler yielded, untouched
        assert {k: stored[yielded["key"]][k] for k in yielded} == yielded
    return [stored[r.key] for r in runs]


def assert_ok(record: dict, threads: int | None = None) -> None:
    """A healthy run: ok, its threads, and run at the driver's niceness with the machine's load stated."""
    assert record["status"] == "ok", (record["status"], record["reason"])
    assert record["threads"] >= 1
    if threads is not None:
        assert record["threads"] == threads
    assert record["nice"] == niceness(), "the benchmark process did not take the driver's niceness"
    assert "nice_error" not in record, record.get("nice_error")
    assert isinstance(record["load_avg"], float) and record["load_avg"] >= 0


def single_threads(scheduler) -> int:
    """The torch threads a scheduler gives a timed single-device run: all of a node's cores (one at a time)."""
    from harness.cluster.ray_scheduler import RayScheduler

    return int(scheduler.single_cpus()) if isinstance(scheduler, RayScheduler) else len(os.sched_getaffinity(0))


@dataclass(frozen=True)
class Fault:
    """A faulty run and the record it must become: ``status``, and ``reason`` exactly (or, with
    ``contains=True``, each of ``reason``'s ``|``-separated parts somewhere in it)."""

    run: Run
    status: str
    reason: str
    contains: bool = False

    def check(self, record: dict) -> None:
        assert record["status"] == self.status, (record["status"], record["reason"])
        if self.contains:
            assert all(part in record["reason"] for part in self.reason.split("|")), record["reason"]
        else:
            assert record["reason"] == self.reason


def case(fault: Fault, slow: bool = False):
    return pytest.param(fault, marks=pytest.mark.slow) if slow else fault


# Whatever the plugin does, the record says so and the runs before and after it are untouched.
SINGLE_FAULTS = {
    "sigkill": case(Fault(single("fault_crash", how="sigkill"), "error", "worker died: SIGKILL")),
    "exit": case(Fault(single("fault_crash", code=3), "error", "worker died: exit code 3")),
    "segfault": case(Fault(single("fault_crash", how="segfault"), "error", "worker died: SIGSEGV")),
    "system_exit": case(Fault(single("fault_crash", how="system_exit", code=4), "error", "run raised SystemExit: 4")),
    "keyboard_interrupt": case(Fault(single("fault_crash", how="keyboard_interrupt"), "error",
                                     "run raised KeyboardInterrupt: injected by a plugin")),
    "allocation_30gib": case(Fault(single("fault_alloc", gib=30), "oom", "memory", contains=True)),
    "memory_hog": case(Fault(single("fault_hog"), "oom", "exceeded the memory budget of 1.00 GiB", contains=True)),
    "hang": case(Fault(single("fault_sleep", seconds=600), "timeout", f"exceeded the time limit of {RUN_TIMEOUT_S:g} s"),
                 slow=True),
}


# ----- single-device runs ------------------------------------------------------------------------------
@pytest.mark.parametrize("fault", list(SINGLE_FAULTS.values()), ids=list(SINGLE_FAULTS))
def test_single_run_fault_is_that_runs_record(each_scheduler, tmp_path, fault):
    before, failed, after = sweep(each_scheduler, [single(tag="before"), fault.run, single(tag="after")], tmp_path)
    threads = single_threads(each_scheduler)
    assert_ok(before, threads=threads)  # one timed run per node: it gets the node's cores as threads
    fault.check(failed)
    assert_ok(after, threads=threads)
    if fault.status == "timeout":
        assert RUN_TIMEOUT_S <= failed["wall_s"] < RUN_TIMEOUT_S + 5
    if "memory budget" in fault.reason:
        assert failed["peak_rss_bytes"] > BUDGET


def test_single_run_driver_backstop_cancels_a_silent_worker(scheduler, tmp_path, monkeypatch):
    """If a task's supervisor itself never answers, the driver stops waiting (ray.wait timeout) after the time
    limit plus its grace and cancels the task (ray.cancel(force=True)): a timeout record, then business as usual."""
    import ray

    import harness.cluster.ray_scheduler as sched
    from tests.fault_injection import stuck_supervisor

    monkeypatch.setattr(sched, "run_single_task", ray.remote(max_retries=0)(stuck_supervisor))
    monkeypatch.setattr(scheduler, "start_timeout_s", 1.0)
    monkeypatch.setattr(scheduler, "answer_grace_s", 1.0)
    t0 = time.perf_counter()
    (silent,) = sweep(scheduler, [single(tag="silent")], tmp_path / "a")
    assert time.perf_counter() - t0 < RUN_TIMEOUT_S + 2 + 10
    assert silent["status"] == "timeout"
    assert silent["reason"] == f"no answer from its worker within {RUN_TIMEOUT_S + 2:g} s; cancelled"
    monkeypatch.undo()
    (after,) = sweep(scheduler, [single(tag="after-cancel")], tmp_path / "b")
    assert_ok(after)


# ----- multi-rank runs ---------------------------------------------------------------------------------
def _group_fault(scheduler, tmp_path, fault: Run) -> dict:
    """[healthy, fault, healthy] at world size 2: the fault tears the group down, a new one runs the last."""
    runs = [ranked(tag="before"), fault, ranked(tag="after")]
    built = scheduler.groups_built
    before, failed, after = sweep(scheduler, runs, tmp_path)
    assert_ok(before)
    assert_ok(after)
    assert before["allreduce_sum"] == after["allreduce_sum"] == 2.0
    assert before["pid"] != after["pid"], "the group was not rebuilt after the fault"
    assert scheduler.groups_built - built >= 1
    return failed


RANK_FAULTS = {
    "raises": case(Fault(ranked("fault_raise"), "error", "rank 1 raised RuntimeError: injected fault on rank 1")),
    # through the real runner: the failing rank's own reason is recorded at once, not a peer's timeout
    "raises_inside_a_real_strategy": case(Fault(ranked("fault_attention_raise"), "error",
                                                "rank 1|injected fault in attention on rank 1", contains=True)),
    "exit": case(Fault(ranked("fault_exit", code=7), "error", "rank 1 died: exit code 7")),
    "sigkill": case(Fault(ranked("fault_sigkill"), "error", "rank 1 died: SIGKILL")),
    "segfault": case(Fault(ranked("fault_segfault"), "error", "rank 1 died: SIGSEGV")),
    "system_exit": case(Fault(ranked("fault_system_exit", code=5), "error", "rank 1 raised SystemExit: 5")),
    "keyboard_interrupt": case(Fault(ranked("fault_keyboard_interrupt"), "error",
                                     "rank 1 raised KeyboardInterrupt: injected by a plugin")),
    "allocation_30gib": case(Fault(ranked("fault_alloc", gib=30), "oom", "rank 1|memory", contains=True)),
    "memory_hog": case(Fault(ranked("fault_hog"), "oom", "rank 1: RSS |exceeded the memory budget of 1.00 GiB",
                             contains=True)),
    "hangs_in_collective": case(Fault(ranked("fault_hang"), "timeout",
                                      f"rank 1 exceeded the time limit of {RUN_TIMEOUT_S:g} s"), slow=True),
    "exceeds_time_limit": case(Fault(ranked("fault_sleep", seconds=600), "timeout",
                                     f"ranks 0,1 exceeded the time limit of {RUN_TIMEOUT_S:g} s"), slow=True),
}


@pytest.mark.parametrize("fault", list(RANK_FAULTS.values()), ids=list(RANK_FAULTS))
def test_rank_fault_is_that_runs_record(each_scheduler, tmp_path, fault):
    failed = _group_fault(each_scheduler, tmp_path, fault.run)
    fault.check(failed)
    if fault.run.strategy == "fault_raise":
        assert "injected fault" in failed["traceback"]
    if fault.run.strategy == "fault_attention_raise":
        assert failed["wall_s"] < RUN_TIMEOUT_S


def test_inline_limits_follow_the_cli(plugins):
    """``--run-timeout`` and ``--memory-budget`` reach the inline scheduler's runs and its rank groups."""
    from harness.cli import build_parser, make_scheduler

    args = build_parser().parse_args(["run", "quickstart", "--scheduler", "inline", "--run-timeout", "9",
                                      "--memory-budget", "2", "--threads", "1"])
    s = make_scheduler(args)
    try:
        assert (s.run_timeout_s, s.memory_budget_bytes, s.threads) == (9.0, 2 << 30, 1)
        assert (s.groups.timeout_s, s.groups.memory_budget) == (9.0, 2 << 30)
    finally:
        s.close()


def test_buckets_reuse_one_group_per_world_size(scheduler, tmp_path):
    runs = [ranked(world_size=4, i=0), single(tag="bucket"), ranked(i=1), ranked(world_size=4, i=1), ranked(i=2)]
    scheduler.release_groups()
    built = scheduler.groups_built
    records = sweep(scheduler, runs, tmp_path)
    for r in records:
        assert_ok(r)
    assert scheduler.groups_built - built == 2  # one group of 2 ranks, one of 4, each reused
    by_ws = {}
    for r in records[2:] + records[:1]:
        by_ws.setdefault(r["world_size"], set()).add(r["pid"])
    assert all(len(pids) == 1 for pids in by_ws.values())
    assert records[0]["allreduce_sum"] == 4.0 and records[0]["threads"] == max(1, int(scheduler.node_cpus() // 4))


def test_group_that_cannot_be_placed_is_unavailable(scheduler, tmp_path):
    """Bundles the cluster cannot hold: the group's wait times out and every run of the bucket says why."""
    from harness.cluster.ray_scheduler import RayScheduler

    greedy = RayScheduler(rank_cpus=64, group_timeout_s=2, rank_executor=EXECUTOR)  # joins the module's Ray
    try:
        t0 = time.perf_counter()
        records = sweep(greedy, [ranked(i=0), ranked(i=1)], tmp_path)
        assert time.perf_counter() - t0 < 30  # one attempt for the bucket, not one per run
    finally:
        greedy.close()
    for r in records:
        assert r["status"] == "unavailable"
        assert r["reason"].startswith("rank group of 2: could not reserve 2 ranks x {'CPU': 64} within 2 s")


# ----- the driver killed mid-sweep, then resumed -----------------------------------------------------------
SLOW_SUITE = {
    "name": "slow-fake",
    "methods": ["fault_sleep"],
    "masks": ["full"],
    "seqlens": [16, 24, 32, 40, 48, 56, 64, 72],
    "shapes": [{"heads_q": 1, "head_dim": 8}],
    "options": {"seconds": 0.7},
    "timing": {"warmup": 1, "min_samples": 2, "min_run_time": 0.01},
}


def _cli(args: list[str]) -> list[str]:
    return [sys.executable, "-m", "harness.cli", "run", *args, "--quiet"]


def _env() -> dict:
    env = dict(os.environ, LCBENCH_PLUGINS=PLUGINS, RAY_USAGE_STATS_ENABLED="0")
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return env


def _stored(db: Path) -> dict[str, tuple]:
    if not db.exists():
        return {}
    with sqlite3.connect(str(db), timeout=30) as conn:
        return {k: (s, f) for k, s, f in conn.execute("SELECT key, session, finished_at FROM results")}


def test_driver_killed_mid_sweep_resumes_without_repeats(scheduler, tmp_path):
    """``lcbench run`` (its own embedded Ray) SIGKILLed after some runs are stored: nothing of it survives, and
    ``--resume`` (here joining the module's Ray) finishes the sweep without repeating or losing a run."""
    import psutil
    import ray

    scheduler.release_groups()  # the resumed driver joins this Ray: leave it the CPUs
    suite = tmp_path / "slow.yaml"
    suite.write_text(yaml.safe_dump(SLOW_SUITE))
    db = tmp_path / "results.db"
    total = len(SLOW_SUITE["seqlens"])
    args = [str(suite), "--results", str(db)]

    driver = subprocess.Popen(_cli(args), cwd=REPO, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    tree: list = []
    try:
        deadline = time.time() + 150
        while len(_stored(db)) < 2 and driver.poll() is None and time.time() < deadline:
            time.sleep(0.1)
        assert driver.poll() is None, driver.stdout.read().decode()[-2000:]
        tree = psutil.Process(driver.pid).children(recursive=True)
        driver.send_signal(signal.SIGKILL)
        driver.wait(10)
        _, alive = psutil.wait_procs(tree, timeout=30)
        assert not alive, f"left behind by the killed driver: {[p.name() for p in alive]}"
    finally:
        if driver.poll() is None:
            driver.kill()
        for p in tree:  # by pid, only what this driver started
            try:
                p.kill()
            except psutil.Error:
                pass
    first = _stored(db)
    assert 2 <= len(first) < total, "kill came too late to test resuming"

    address = ray.get_runtime_context().gcs_address
    resumed = subprocess.run(_cli(args + ["--resume", "--address", address]), cwd=REPO, env=_env(),
                             capture_output=True, text=True, timeout=240)
    assert resumed.returncode == 0, resumed.stdout[-2000:] + resumed.stderr[-2000:]
    final = _stored(db)
    assert len(final) == total, "a run was lost"
    for key, stamp in first.items():
        assert final[key] == stamp, "a finished run was repeated or altered"
    new_sessions = {s for k, (s, _) in final.items() if k not in first}
    assert len(new_sessions) == 1 and not new_sessions & {s for s, _ in first.values()}
    assert {r["status"] for r in ResultStore(db).records()} == {"ok"}


# ----- --address against a `ray start --head` cluster on loopback --------------------------------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _kill_tree(pid: int) -> None:
    """SIGTERM then SIGKILL a process and all its descendants, by pid (never by name: others run Ray too)."""
    import psutil

    try:
        root = psutil.Process(pid)
    except psutil.NoSuchProcess:
        return
    procs = root.children(recursive=True) + [root]
    for p in procs:
        try:
            p.terminate()
        except psutil.NoSuchProcess:
            pass
    _, alive = psutil.wait_procs(procs, timeout=10)
    for p in alive:
        try:
            p.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(alive, timeout=5)


@pytest.mark.slow
def test_address_of_a_ray_start_cluster(tmp_path):
    """``lcbench run --address HOST:PORT`` against ``ray start --head`` on loopback (stopped by pid afterwards)."""
    port = _free_port()
    temp_dir = tempfile.mkdtemp(prefix="lcbray", dir="/tmp")  # short: Ray's socket paths must stay < 108 chars
    # Ray 2.5x clusters use token auth; a driver given an explicit address must opt in with the same token.
    auth = {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32)}
    head_env = dict(os.environ, RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0", RAY_USAGE_STATS_ENABLED="0",
                    PYTHONPATH=str(REPO), **auth)
    head_env.pop("LCBENCH_PLUGINS", None)  # the driver's runtime_env must forward it to the workers
    head = subprocess.Popen(
        ["ray", "start", "--head", "--node-ip-address=127.0.0.1", f"--port={port}", "--num-cpus=2",
         "--include-dashboard=false", f"--temp-dir={temp_dir}", "--block"],
        env=head_env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )
    try:
        deadline = time.time() + 90
        while time.time() < deadline:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
            assert head.poll() is None, "ray start exited"
            time.sleep(0.5)
        suite = tmp_path / "tiny.yaml"
        suite.write_text(yaml.safe_dump({**SLOW_SUITE, "methods": ["naive", "fault_sleep"], "seqlens": [16, 32],
                                         "options": {"seconds": 0.1}}))
        db = tmp_path / "results.db"
        done = subprocess.run(_cli([str(suite), "--results", str(db), "--address", f"127.0.0.1:{port}"]), cwd=REPO,
                              env={**_env(), **auth}, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
        records = ResultStore(db).records()
        assert len(records) == 4 and {r["status"] for r in records} == {"ok"}, [r["reason"] for r in records]
        assert {r["node"] for r in records} and all(r["threads"] == 2 for r in records)
    finally:
        _kill_tree(head.pid)


# ----- what a benchmark process runs at ------------------------------------------------------------------
NICENESS_PROBE = (
    "import json, os\n"
    "from harness.cluster.priority import niceness, reset_niceness, run_conditions\n"
    "start = niceness()\n"
    "if start < 19:\n"
    "    os.setpriority(os.PRIO_PROCESS, 0, start + 2)  # as Ray renices its workers\n"
    "target = start if start < 19 else 18  # back down: what a reset asks of the kernel\n"
    "print(json.dumps({'target': target, 'why': reset_niceness(target), **run_conditions()}))\n"
)


def test_a_benchmark_process_takes_the_drivers_niceness_or_says_why():
    """Lowering a niceness needs privilege (or RLIMIT_NICE): the reset either happens or is recorded."""
    import json

    done = subprocess.run([sys.executable, "-c", NICENESS_PROBE], cwd=REPO, env=_env(), capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr[-2000:]
    got = json.loads(done.stdout)
    if got["why"] is None:
        assert got["nice"] == got["target"] and "nice_error" not in got
    else:
        assert got["why"].startswith("could not change niceness") and got["nice_error"] == got["why"]
        assert got["nice"] != got["target"]
    assert got["load_avg"] >= 0


@pytest.mark.parametrize("exitcode, kills, kind, reason", [
    (-signal.SIGKILL, (3, 4), "oom", "killed by the kernel's OOM killer (RSS peak 2.00 GiB)"),
    (-signal.SIGKILL, (3, 3), "died", "died: SIGKILL"),
    (-signal.SIGKILL, (None, None), "died", "died: SIGKILL"),
    (-signal.SIGSEGV, (3, 4), "died", "died: SIGSEGV"),
    (3, (3, 4), "died", "died: exit code 3"),
])
def test_a_death_by_the_oom_killer_is_oom(monkeypatch, exitcode, kills, kind, reason):
    """A child SIGKILLed while the kernel's OOM-kill count rose was the OOM killer's: ``oom``, not ``error``."""
    from harness.cluster import isolation

    monkeypatch.setattr(isolation, "oom_kills", lambda: kills[1])
    o = isolation._death(exitcode, kills[0], 1.0, 2 << 30)
    assert (o.kind, o.reason) == (kind, reason)

