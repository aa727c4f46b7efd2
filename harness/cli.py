"""The ``lcbench`` command line. User mistakes print one line (``error: ...``) and exit 2, never a traceback."""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import time
from pathlib import Path
from typing import Callable, Optional

from rich.markup import escape
from rich.table import Table

from harness import quiet
from harness.user_input import (
    DefaultsFormatter, OneLineParser, integer, positive, writable_dir, writable_file, write_output,
)
from harness.errors import UserError
from harness.execution import allocator
from harness.progress import progress
from harness.results.report import wide_console
from harness.results.verdict import VERDICTS

DEFAULT_RESULTS = "results"
console = wide_console()
err_console = wide_console(stderr=True)


# ----- list -----------------------------------------------------------------------------------------------
def _availability(reason: Optional[str]) -> str:
    return "[green]available[/]" if reason is None else f"[yellow]unavailable[/]: {reason}"


def list_methods() -> Table:
    from harness.catalog import methods

    table = Table(title="methods (single-device attention kernels)", header_style="bold")
    for col in ("name", "masks (features)", "dtypes", "devices", "directions", "availability", "summary"):
        table.add_column(col)
    for m in methods().values():
        feats = ", ".join(sorted(m.mask_features)) or "full only"
        table.add_row(
            m.name, feats, ",".join(sorted(m.dtypes)), ",".join(sorted(m.devices)), ",".join(m.directions),
            _availability(m.unavailable_reason()), m.summary,
        )
    return table


def list_strategies() -> Table:
    from harness.catalog import methods, strategies

    table = Table(title="context-parallel strategies", header_style="bold")
    for col in ("name", "availability", "default local method (usable here)", "summary"):
        table.add_column(col)
    for s in strategies().values():
        default = ", ".join(f"{device}: {s.local_methods.default_method(device, methods()) or 'none'}"
                            for device in sorted(s.devices))
        table.add_row(s.name, _availability(s.unavailable_reason()), default, s.summary)
    return table


def list_workloads() -> Table:
    from harness.catalog import workloads

    table = Table(title="workloads (model-level phases)", header_style="bold")
    for col in ("name", "phases", "parameters (defaults)", "flavors", "metrics", "availability", "summary"):
        table.add_column(col)
    for w in workloads().values():
        params = ", ".join(f"{k}={v}" for k, v in w.params.items())
        metrics = ", ".join(f"{m.name} ({m.unit})" for m in w.metrics)
        table.add_row(w.name, ", ".join(w.phases), params, ", ".join(w.flavors), metrics,
                      _availability(w.unavailable_reason()), w.summary)
    return table


def list_masks() -> Table:
    from harness.masks import MASKS

    table = Table(title="mask patterns", header_style="bold")
    for col in ("name", "parameters (defaults)", "summary"):
        table.add_column(col)
    for p in MASKS.values():
        params = ", ".join(f"{k}={v}" for k, v in p.defaults.items())
        table.add_row(p.name, params, p.summary)
    return table


def list_suites() -> Table:
    from suites.loader import available_suites, load_suite, suite_profiles

    table = Table(title="suites", header_style="bold")
    for col in ("name", "runs", "profiles", "description"):
        table.add_column(col)
    for name in available_suites():
        try:
            suite = load_suite(name)
            profiles = ", ".join(f"[bold]{p}[/]" if p == suite.profile else p for p in suite_profiles(name))
            table.add_row(name, str(len(suite.runs)), profiles or "-", suite.description)
        except UserError as e:
            table.add_row(name, "-", "-", f"[red]invalid[/]: {e}")
    return table


def list_clusters() -> Table:
    from harness.prediction.cluster import builtin_clusters, describe, load_cluster

    table = Table(title="cluster profiles (lcbench predict --cluster NAME, or a profile file)", header_style="bold")
    rows = [describe(load_cluster(name)) for name in builtin_clusters()]
    for col in rows[0] if rows else ("name",):
        table.add_column(col)
    for row in rows:
        table.add_row(*(escape(v) for v in row.values()))
    return table


def list_warnings() -> Table:
    table = Table(title="third-party warnings lcbench silences (harness/quiet.py; recorded with every session)",
                  header_style="bold")
    for col in ("module", "category", "message", "why it does not concern you"):
        table.add_column(col)
    for w in quiet.describe():
        table.add_row(escape(w["module"]), w["category"], escape(w["message"]), escape(w["why"]))
    return table


LISTS: dict[str, Callable[[], Table]] = {
    "methods": list_methods, "strategies": list_strategies, "workloads": list_workloads, "masks": list_masks,
    "suites": list_suites, "clusters": list_clusters, "warnings": list_warnings,
}


def cmd_list(args: argparse.Namespace) -> int:
    console.print(LISTS[args.what]())
    return 0


# ----- run / show / compare / export / plot --------------------------------------------------------------
def make_scheduler(args: argparse.Namespace):
    """The scheduler ``--scheduler`` names; ``--run-timeout``, ``--memory-budget`` and ``--threads`` apply to both."""
    budget = None if args.memory_budget is None else int(args.memory_budget * 2**30)
    if args.scheduler == "inline":
        from harness.cluster.inline_scheduler import InlineScheduler

        return InlineScheduler(run_timeout_s=args.run_timeout, memory_budget_bytes=budget, threads=args.threads)
    from harness.cluster.ray_scheduler import RayScheduler

    return RayScheduler(address=args.address, max_concurrent=args.max_concurrent, run_timeout_s=args.run_timeout,
                        memory_budget_bytes=budget, threads=args.threads)


@contextlib.contextmanager
def calibrated_peaks(suite, address: Optional[str]):
    """For a sweep on this machine, calibrate its GEMM peaks once before any worker starts and hand them to the
    workers (``LCBENCH_PEAK_TFLOPS``) for the sweep's duration; a cluster's workers calibrate their own."""
    from harness.execution.machine import PEAKS_ENV, calibrate_for_sweep

    before = os.environ.get(PEAKS_ENV)
    if address is None:
        calibrate_for_sweep([r.dtype for r in suite.runs if r.device == "cpu"] or ["float32"])
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(PEAKS_ENV, None)
        else:
            os.environ[PEAKS_ENV] = before


def cmd_run(args: argparse.Namespace) -> int:
    from harness.results.store import ResultStore
    from harness.cluster.sweep import run_sweep
    from suites.loader import load_suite

    suite = load_suite(args.suite, args.profile)
    store = ResultStore(args.results)  # checked (writable, an lcbench database) before anything runs
    with store.exclusive() as lock, calibrated_peaks(suite, args.address):  # one driver per results file
        if lock.took_over:
            err_console.print(f"took over the lock of {lock.took_over}: that process is gone", highlight=False)
        scheduler = make_scheduler(args)
        runs = suite.resumed(store.done_keys()) if args.resume else list(suite.runs)
        try:
            summary = run_sweep(suite.name, runs, store, scheduler, resume=args.resume, show_progress=not args.quiet)
        finally:
            scheduler.close()
    if summary.skipped_done:
        err_console.print(f"resume: {summary.skipped_done} of {summary.total} runs already stored, not repeated")
    keys = {r.key for r in runs}
    print_results([r for r in store.records() if r["key"] in keys], title=f"{suite.name} -> {store.path}")
    report_skipped(store)
    counts = ", ".join(f"{n} {s}" for s, n in sorted(summary.counts.items()))
    err_console.print(f"session {summary.session}: {counts or 'nothing to do'}")
    return failure_status([r for r in store.records() if r["key"] in keys], args.allow_failures)


def failure_status(records: list[dict], allow_failures: bool) -> int:
    """``lcbench run``'s exit status: 1 when a run of the suite failed (error, timeout, oom, invalid — not
    unsupported or unavailable, which say what this machine or method cannot do), else 0; ``--allow-failures``
    makes it 0 and says so."""
    from harness.status import FAILED

    failed: dict[str, int] = {}
    for r in records:
        if r["status"] in FAILED:
            failed[r["status"]] = failed.get(r["status"], 0) + 1
    if not failed:
        return 0
    what = ", ".join(f"{n} {s}" for s, n in sorted(failed.items()))
    if allow_failures:
        err_console.print(f"{what} (exit status 0: --allow-failures)", highlight=False)
        return 0
    err_console.print(f"[red]failed:[/] {what}: exit status 1 (--allow-failures to exit 0)", highlight=False)
    return 1


def cmd_predict(args: argparse.Namespace) -> int:
    from harness.prediction.cluster import load_cluster
    from harness.prediction.predict import check_predictable, predict_runs, predicted_key
    from harness.results.store import ResultStore
    from harness.execution.machine import machine_info
    from harness.status import FAILED
    from suites.loader import load_suite

    cluster = load_cluster(args.cluster)
    suite = load_suite(args.suite, args.profile, max_world_size=cluster.profile.max_world_size)
    runs = list(suite.runs)
    check_predictable(runs, cluster)
    store = ResultStore(args.results)
    done = store.done_keys() if args.resume else set()
    session = store.start_session(suite.name, {**machine_info(), "predicted_on": cluster.name,
                                               "cluster_version": cluster.version()}, sys.argv[1:])
    started = time.perf_counter()
    keys = set()
    todo = sum(predicted_key(r, cluster) not in done for r in runs)
    with progress(f"predict {suite.name} on {cluster.name}", todo, err_console, enabled=not args.quiet,
                  unit="runs predicted") as report:
        failed = 0
        for n, record in enumerate(predict_runs(runs, cluster, done), 1):
            stored = store.put(record, session, suite.name)
            keys.add(record["key"])
            if stored is not None and stored["status"] in FAILED:
                failed += 1
                report.failure(f"{stored['status']}: {stored.get('strategy')} ws={stored.get('world_size')}: "
                               f"{stored.get('reason')}")
            report.update(n, failed=failed)
    print_results([r for r in store.records() if r["key"] in keys], title=f"{suite.name} -> {store.path} "
                  f"(PREDICTED on {cluster.name}, not measured)")
    err_console.print(f"session {session}: {len(keys)} predicted in {time.perf_counter() - started:.1f} s"
                      + (f", {len(done)} already stored" if done else ""))
    return 0


def cmd_calibrate(args: argparse.Namespace) -> int:
    from harness.catalog import get_method
    from harness.execution.machine import machine_info
    from harness.prediction import calibrate

    method = get_method(args.method).name
    out = Path(args.output)
    writable_dir(out, "calibrate -o")
    info = machine_info()
    cpu = info.get("cpu") or "unknown CPU"
    device = f"{cpu} ({info.get('cpu_count')} cores)"
    err_console.print(f"calibrate: kernel rates of {method} (suite {calibrate.KERNEL_SUITE}) -> {args.results}")
    table = calibrate.calibrate_kernels(method, Path(args.results), args.threads, args.profile, args.resume, device)
    err_console.print(f"calibrate: gloo links at W={','.join(map(str, calibrate.COMM_WORLD_SIZES))}")
    points = calibrate.measure_links()
    fit = calibrate.fit_tier(points)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    table_file = f"rates/local-{method}.yaml"
    profile = calibrate.local_profile(table, method, fit, cpu, cores, memory, args.threads, table_file,
                                      info.get("commit") or "unknown", len(points))
    for path in calibrate.write_local(out, profile, table, table_file):
        err_console.print(f"wrote {path}")
    err_console.print(f"links: launch {fit['launch_us']:.0f} us, latency {fit['latency_us']:.0f} us/step, bus GB/s "
                      + ", ".join(f"{k} {v:.2f}" for k, v in fit["busbw_gbps"].items())
                      + f" (median fit error {fit['median_fit_error']:.1%})")
    return 0


def _store(path: str):
    """The results at ``path``, opened for reading only (a read-only file or directory reads too)."""
    from harness.results.store import ResultStore

    return ResultStore(path, create=False)


def report_skipped(*stores) -> None:
    """One line per results file on stderr: how it was read, if notable, and how many malformed rows were
    skipped (once per file, however many times it was read)."""
    for store in {str(store.path): store for store in reversed(stores)}.values():
        for note in [*store.notes, store.skipped_note()]:
            if note:
                err_console.print(f"warning: {escape(note)}", highlight=False, soft_wrap=True)


def print_results(records: list[dict], title: str) -> None:
    """One results table per kind (method, strategy, workload), folded to the console's width, then the runs
    not run, grouped by reason."""
    from harness.results.report import results_tables, skipped_table

    for table in results_tables(records, title=title, width=console.width):
        console.print(table)
    skipped = skipped_table(records)
    if skipped is not None:
        console.print(skipped)


NOTHING_TO_SHOW = 1  # exit status of show/export when the file holds no (matching) records


def _nothing(store, suite: Optional[str] = None) -> int:
    """One line saying the file has no records (of ``suite``: naming the suites it has), then its notes."""
    if suite:
        suites = sorted({r.get("suite") for r in store.records()} - {None})
        note = f"no records of suite {suite!r} in {store.path} (its suites: {', '.join(suites) or 'none'})"
    else:
        note = f"{store.path} holds no records"
    err_console.print(escape(note), highlight=False, soft_wrap=True)
    report_skipped(store)
    return NOTHING_TO_SHOW


def cmd_show(args: argparse.Namespace) -> int:
    from harness.results.store import newest_results

    path = args.path
    if path is None:
        path = newest_results(DEFAULT_RESULTS)
        err_console.print(f"reading {escape(str(path))} (the newest results file in {DEFAULT_RESULTS}/)",
                          highlight=False, soft_wrap=True)
    store = _store(path)
    records = store.records(suite=args.suite)
    if not records:
        return _nothing(store, args.suite)
    print_results(records, title=str(store.path))
    report_skipped(store)
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from harness.results.report import compare_table

    base, new = _store(args.base), _store(args.new)
    table, tally = compare_table(base.records(), new.records())
    console.print(table)
    console.print(", ".join(f"{n} {k}" for k, n in tally.items() if n or k in VERDICTS))
    report_skipped(base, new)
    return 0


def cmd_recommend(args: argparse.Namespace) -> int:
    from harness.results.recommend import parse_memory, recommend, recommendation_tables

    by = [b.strip() for b in args.by.split(",") if b.strip()] if args.by else None
    limit = parse_memory(args.memory_limit) if args.memory_limit is not None else None
    stores = [_store(path) for path in args.paths]
    records = [r for store in stores for r in store.records(suite=args.suite)]
    recs = recommend(records, by=by, memory_limit=limit)
    report_skipped(*stores)
    if not recs:
        raise UserError(f"no ok results in {', '.join(args.paths)} to recommend from")
    for table in recommendation_tables(recs, title=f"recommendation · {', '.join(args.paths)}"):
        console.print(table)
    tally: dict[str, int] = {}
    for rec in recs:
        word = rec.verdict.verdict if rec.verdict is not None else "only option"
        tally[word] = tally.get(word, 0) + 1
    console.print(f"{len(recs)} configurations: " + ", ".join(f"{n} {k}" for k, n in sorted(tally.items())))
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from harness.results.report import export, markdown

    store = _store(args.path)
    if args.output is not None:
        writable_file(args.output, "export -o")
    records = store.records()
    if not records:
        return _nothing(store)
    text = markdown(records, str(store.path)) if args.format == "md" else export(store.export_rows(), args.format)
    if args.output is not None:
        write_output(args.output, text, "export -o")
        err_console.print(f"wrote {args.output}")
    else:
        sys.stdout.write(text)
    report_skipped(store)
    return 0


def cmd_plot(args: argparse.Namespace) -> int:
    from harness.results.plot import plot_records

    from harness.results.figures import Provenance

    store = _store(args.path)
    writable_dir(args.output, "plot -o")
    notes: list[str] = []
    written = plot_records(store.records(), args.output, x=args.x, y=args.y, by=args.by,
                           mark_crossings=args.crossings, provenance=Provenance((str(store.path),), store.sessions()),
                           notes=notes)
    report_skipped(store)
    if not written:
        raise UserError(f"no ok results in {args.path} to plot")
    for p in written:
        err_console.print(f"wrote {p}")
    for note in notes:
        err_console.print(f"crossings: {escape(note)}", highlight=False, soft_wrap=True)
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from harness.results.html_report import read_sources, write_report

    writable_dir(args.output, "report -o")
    stores = [_store(path) for path in args.paths]
    path = write_report(read_sources(stores), args.output)
    report_skipped(*stores)
    err_console.print(f"wrote {path}")
    return 0


# ----- validate / mask -------------------------------------------------------------------------------------
def cmd_validate(args: argparse.Namespace) -> int:
    from harness.catalog import get_method
    from harness.masks import get_mask_pattern
    from harness.execution.validate import count_checks, validate_all
    from harness.status import NOT_RUN

    for m in args.method or []:
        get_method(m)
    for m in args.mask or []:
        get_mask_pattern(m)
    table = Table(title="correctness gate (float64 reference)", header_style="bold")
    for col in ("method", "mask", "params", "dtype", "dir", "status", "normalised errors / reason"):
        table.add_column(col)
    failures = 0
    counts: dict[str, int] = {}
    with progress("validate", count_checks(args.method, args.mask), err_console, enabled=not args.quiet,
                  unit="checks done") as report:
        for done, check in enumerate(validate_all(args.method, args.mask), 1):
            counts[check.status] = counts.get(check.status, 0) + 1
            failures += check.status == "invalid"
            if check.status == "invalid":
                report.failure(f"invalid: {check.method} on {check.mask} {check.dtype} {check.direction}: "
                               f"{check.detail}")
            report.update(done, failed=failures, skipped=sum(counts.get(s, 0) for s in NOT_RUN))
            _validate_row(table, check, args.all)
    console.print(table)
    console.print(", ".join(f"{n} {s}" for s, n in sorted(counts.items())))
    return 1 if failures else 0


def _validate_row(table: Table, check, show_all: bool) -> None:
    """A check's row: ok and invalid ones always, the others (unsupported, unavailable) with ``--all``."""
    if check.status in ("ok", "invalid") or show_all:
        colour = {"ok": "green", "invalid": "red"}.get(check.status, "yellow")
        params = ",".join(f"{k}={v}" for k, v in check.params.items())
        table.add_row(check.method, check.mask, params, check.dtype, check.direction,
                      f"[{colour}]{check.status}[/]", escape(check.detail or ""))


def parse_params(pairs: list[str]) -> dict:
    """``key=value`` pairs, each value read as YAML (bounded like a suite file: one line when it is not YAML)."""
    from suites.schema import load_yaml

    params = {}
    for pair in pairs:
        if "=" not in pair:
            raise UserError(f"--param {pair!r}: expected key=value")
        key, value = pair.split("=", 1)
        params[key] = load_yaml(value, f"--param {pair!r}")
    return params


def cmd_mask(args: argparse.Namespace) -> int:
    from harness.masks.view import mask_command

    if args.png is not None:
        writable_file(args.png, "mask --png")
    mask_command(args.name, args.seqlen, parse_params(args.param), args.png, args.heads, args.block, args.layers)
    return 0


# ----- bench -----------------------------------------------------------------------------------------------
def cmd_bench(args: argparse.Namespace) -> int:
    from harness.bench import run_bench

    return run_bench(args.what, args.args)


# ----- parser ----------------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="lcbench", description="Long-context attention benchmark harness")
    parser.add_argument("--malloc", choices=sorted(allocator.POLICIES), default="default",
                        help="C allocator of lcbench and its workers, recorded with every result: "
                             + "; ".join(f"{k}: {v}" for k, v in allocator.POLICIES.items()))
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("list", help="list methods, strategies, workloads, masks, suites, clusters or the "
                                    "silenced third-party warnings")
    p.add_argument("what", choices=sorted(LISTS), help="what to list: " + ", ".join(sorted(LISTS)))
    p.set_defaults(func=cmd_list)

    p = sub.add_parser("run", help="run a suite; every run is stored as it finishes")
    p.add_argument("suite", help="suite name (suites/NAME.yaml) or path to a YAML file")
    p.add_argument("--results", default=DEFAULT_RESULTS, help="results directory or .db file (default: results/)")
    p.add_argument("--resume", action="store_true", help="skip runs already stored in --results")
    p.add_argument("--profile", help="suite profile (default: gpu if CUDA is available else cpu, when defined)")
    p.add_argument("--address", default=os.environ.get("RAY_ADDRESS"),
                   help="Ray cluster: auto or HOST:PORT (default: an embedded local Ray)")
    p.add_argument("--scheduler", choices=("ray", "inline"), default="ray",
                   help="ray (default) or inline (no Ray: one run at a time, each in a supervised process)")
    p.add_argument("--max-concurrent", type=integer(1, 1024), default=1,
                   help="timed runs at once per node (default 1: concurrent CPU runs spoil timings)")
    p.add_argument("--run-timeout", type=positive, default=600.0, help="seconds before a run is stopped (timeout)")
    p.add_argument("--memory-budget", type=positive, metavar="GIB",
                   help="RSS limit per benchmark process, GiB (default: 80%% of node RAM / processes sharing it)")
    p.add_argument("--threads", type=integer(1, 4096), help="torch threads per benchmark process (default: the CPUs it reserved)")
    p.add_argument("--quiet", action="store_true", help="no progress bar or progress lines")
    p.add_argument("--allow-failures", action="store_true",
                   help="exit 0 even when runs failed (default: exit 1 when any run is error, timeout, oom or invalid)")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("predict", help="predict a context-parallel suite on a cluster profile (stored as predicted)")
    p.add_argument("suite", help="suite name (suites/NAME.yaml) or path to a YAML file")
    p.add_argument("--cluster", required=True, help="cluster profile: a built-in (lcbench list clusters) or a file")
    p.add_argument("--results", default=DEFAULT_RESULTS, help="results directory or .db file (default: results/)")
    p.add_argument("--profile", help="suite profile (default: as lcbench run)")
    p.add_argument("--resume", action="store_true", help="skip runs already predicted in --results")
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser("calibrate", help="measure this machine's cluster profile (kernel rates, gloo links)")
    p.add_argument("--method", default="blocksparse", help="local kernel whose rate table to measure "
                   "(default: blocksparse, the CP suites' local method)")
    p.add_argument("-o", "--output", default="results/calibration",
                   help="folder for local.yaml and its rate table (default: results/calibration)")
    p.add_argument("--results", default="results/calibration/kernels.db",
                   help="results file of the kernel runs (default: results/calibration/kernels.db)")
    p.add_argument("--threads", type=integer(1, 4096), default=1,
                   help="torch threads per process (default 1: what a CPU rank has at W >= cores)")
    p.add_argument("--profile", help="profile of the kernel_rates suite (default: its base keys)")
    p.add_argument("--resume", action="store_true", help="reuse kernel runs already stored in --results")
    p.set_defaults(func=cmd_calibrate)

    p = sub.add_parser("show", help="tables of stored results (exit 1: the file holds no records)")
    p.add_argument("path", nargs="?", help="results .db file, or a directory holding results.db "
                                          f"(default: the newest {DEFAULT_RESULTS}/*.db, named on stderr)")
    p.add_argument("--suite", help="only this suite's runs (default: every run in the file)")
    p.set_defaults(func=cmd_show)

    p = sub.add_parser("compare", help="ratios NEW/BASE of time and metrics per matching run, with a verdict: "
                                       "better, worse, tie or inconclusive (from the spreads and CPU time)")
    p.add_argument("base", help="results directory or .db file of the base sweep")
    p.add_argument("new", help="results directory or .db file of the new sweep")
    p.set_defaults(func=cmd_compare)

    p = sub.add_parser("recommend", help="per configuration: the fastest option, its margin, tie or not, memory")
    p.add_argument("paths", nargs="+", metavar="DB", help="results directories or .db files (read together)")
    p.add_argument("--by", help="comma-separated identity fields of a configuration, e.g. mask,seqlen,world_size "
                                "(or params.NAME); any other field that varies becomes part of the option "
                                "(default: every identity field that varies)")
    p.add_argument("--memory-limit", metavar="SIZE",
                   help="also the fastest option peaking within SIZE: 16GiB, 512MiB, 2.5GB, or a number of GiB "
                        "(default: no limit)")
    p.add_argument("--suite", help="only this suite's runs (default: every run in the files)")
    p.set_defaults(func=cmd_recommend)

    p = sub.add_parser("export", help="export results: csv/json the raw records, md the tables show prints")
    p.add_argument("path", help="results .db file, or a directory holding results.db")
    p.add_argument("--format", choices=("csv", "json", "md"), default="csv",
                   help="csv (default) or json: every field of every record (csv: times in ISO 8601); "
                        "md: the tables of lcbench show, for reading")
    p.add_argument("-o", "--output", help="file to write (default: stdout)")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("plot", help="PNG plots of any metric vs any parameter (default: per kind, vs seqlen)")
    p.add_argument("path", help="results directory or .db file")
    p.add_argument("-o", "--output", default="results/plots", help="folder for the PNG files")
    p.add_argument("--x", help="x axis: a record field, params.NAME or metrics.NAME (default: seqlen)")
    p.add_argument("--y", help="y axis, as --x; several (a,b) share one figure (default: kernels TFLOP/s and time; "
                        "workloads ms/token and memory)")
    p.add_argument("--by", help="one line per value of this field (default: who ran, shape, dtype)")
    p.add_argument("--crossings", action="store_true",
                   help="mark where two lines cross (e.g. the length from which one pattern beats another)")
    p.set_defaults(func=cmd_plot)

    p = sub.add_parser("report", help="one self-contained HTML page of results files: recommendation, tables, "
                       "plots, failures, conventions, machine")
    p.add_argument("paths", nargs="+", metavar="DB", help="results files (.db) or directories holding results.db")
    p.add_argument("-o", "--output", default="results/report",
                   help="folder for index.html (default: results/report)")
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("validate", help="check methods against the float64 reference on every claimed mask")
    p.add_argument("--method", action="append", help="only this method (repeatable)")
    p.add_argument("--mask", action="append", help="only this mask pattern (repeatable)")
    p.add_argument("--all", action="store_true", help="also list unsupported/unavailable combinations")
    p.add_argument("--quiet", action="store_true", help="no progress bar or progress lines")
    p.set_defaults(func=cmd_validate)

    p = sub.add_parser("mask", help="describe a mask and draw it")
    p.add_argument("name", help="mask pattern (lcbench list masks)")
    p.add_argument("--seqlen", type=integer(1, 1 << 24), default=32768,
                   help="tokens (default 32768: the PowerAttention paper's receptive-field length)")
    p.add_argument("--param", action="append", default=[], metavar="KEY=VALUE", help="mask parameter (repeatable)")
    p.add_argument("--heads", type=integer(1, 1024), default=1, help="number of heads (per-head patterns)")
    p.add_argument("--block", type=integer(1, 1 << 20), default=128, help="block size for the block statistics")
    p.add_argument("--png", help="write a picture of the mask (with --layers: coverage vs layers) to this file")
    p.add_argument("--layers", type=integer(1, 4096),
                   help="also the receptive field of the last block through 1..LAYERS stacked layers")
    p.set_defaults(func=cmd_mask)

    from harness.bench import BENCHES

    p = sub.add_parser("bench", help="benchmarks of lcbench itself (NAME --help: its arguments)",
                       formatter_class=DefaultsFormatter,
                       description="benchmarks of lcbench itself:\n" + "\n".join(
                           f"  {name:<10} {doc}" for name, (_, doc) in BENCHES.items()))
    p.add_argument("what", choices=list(BENCHES), metavar="NAME", help=", ".join(BENCHES))
    p.add_argument("args", nargs=argparse.REMAINDER, help="the benchmark's own arguments")
    p.set_defaults(func=cmd_bench)
    return parser


def main(argv: Optional[list[str]] = None) -> int:
    quiet.silence()
    try:
        args = build_parser().parse_args(argv)
        allocator.restart_with(args.malloc, sys.argv[1:] if argv is None else argv)
        return args.func(args)
    except UserError as e:
        err_console.print(f"[red]error:[/] {escape(str(e))}", highlight=False, soft_wrap=True)
        return 2
    except KeyboardInterrupt:
        err_console.print("interrupted: finished runs are stored; re-run with --resume to continue")
        return 130


if __name__ == "__main__":
    sys.exit(main())
