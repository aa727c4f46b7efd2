"""GPU self-check in one command: ``make gpu-check`` / ``python -m harness.gpu_check``.

For a CUDA machine that has torch (and triton) but maybe no Ray, no flash-attn and no internet. Two parts,
under ``--budget`` seconds in all (default 8 minutes):

1. every test marked ``gpu`` (pytest ``-m gpu`` on the test files that use the marker, in a child process):
   correctness of the CUDA kernels against the float64 reference, fwd+bwd and decode;
2. a short GPU suite run INLINE (:class:`harness.cluster.inline_scheduler.InlineScheduler`: supervised processes, no Ray):
   every method that runs on CUDA and whose availability probe passes here (``sdpa``, ``cudnn_sdpa``,
   ``flex_cuda`` and any installed GPU library), bf16, causal / sliding window / documents at two lengths,
   fwd and fwd+bwd, plus decode for the methods that have it. Records go to ``results/gpu_check.db``
   (``lcbench show results/gpu_check.db``); the runs a method leaves for lack of time are listed
   ("k of n runs"), and so is a method named with ``--methods`` that cannot run here. Each method gets an equal share of what is left when its turn comes (a cheap method's unused
   time passes on), and starts no run once its share is spent, so one slow-to-compile method cannot keep the
   later adapters from being exercised at all.

The suite's ``ok`` runs also become the device's kernel rate tables (``results/rates/DEVICE-METHOD.yaml``,
:mod:`harness.prediction.rates`), what a cluster profile of this device cites for ``lcbench predict``.

A one-screen summary goes to stdout and to ``results/gpu_check.txt``. Exit status 0 when every selected
test passed and no run failed (error, oom, timeout, invalid); 1 otherwise. Without a CUDA device it prints
"no CUDA device: nothing to check" and exits 0, writing nothing.

Nothing on this path imports Ray (tests/test_gpu.py checks it).
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

from harness.user_input import DefaultsFormatter
from harness.run import Run, Timing

ROOT = Path(__file__).resolve().parent.parent
TESTS = ROOT / "tests"
GPU_MARKER = re.compile(r"pytest\.mark\.gpu\b")
NO_DEVICE = "no CUDA device: nothing to check"

SUITE_MASKS: tuple[tuple[str, dict], ...] = (
    ("causal", {}), ("sliding_window_causal", {"window": 1024}), ("causal_document", {}),
)
SUITE_SEQLENS = (4096, 16384)
SUITE_DIRECTIONS = ("fwd", "fwd+bwd")
SUITE_SHAPE = dict(heads_q=16, heads_kv=8, head_dim=128, dtype="bfloat16", device="cuda")
SUITE_TIMING = Timing(warmup=2, min_samples=5, min_run_time=0.1, max_samples=20)
DECODE_SEQLEN = 32768


@dataclass
class TestOutcome:
    """The gpu-marked tests: pytest's exit code, its closing line, and the files it ran."""

    returncode: int
    summary: str
    files: list[str]
    seconds: float

    @property
    def ok(self) -> bool:
        return self.returncode in (0, 5) or not self.files  # 5: nothing selected


@dataclass
class SuiteOutcome:
    records: list[dict] = field(default_factory=list)
    not_run: list[str] = field(default_factory=list)  # "method (k of n runs)" left for lack of time
    seconds: float = 0.0

    @property
    def failed(self) -> list[dict]:
        from harness import status as st

        return [r for r in self.records if r["status"] in st.FAILED]


def cuda_available() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return torch.cuda.is_available()


def gpu_test_files(tests: Path = TESTS) -> list[str]:
    """Test files that use the ``gpu`` marker (only these are collected: the others may need Ray)."""
    return sorted(str(p) for p in tests.glob("test_*.py") if GPU_MARKER.search(p.read_text()))


def run_gpu_tests(timeout_s: float, tests: Path = TESTS) -> TestOutcome:
    """``pytest -m gpu`` over :func:`gpu_test_files` in a child process (a crashed kernel cannot take us down)."""
    files = gpu_test_files(tests)
    started = time.perf_counter()
    if not files:
        return TestOutcome(0, "no test is marked gpu", [], 0.0)
    cmd = [sys.executable, "-m", "pytest", "-q", "-m", "gpu", "-o", "addopts=-p no:cacheprovider", *files]
    try:
        proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        return TestOutcome(124, f"gpu tests timed out after {timeout_s:.0f} s", files, time.perf_counter() - started)
    lines = [ln for ln in proc.stdout.splitlines() if ln.strip()]
    closing = next((ln for ln in reversed(lines) if re.search(r"\b(passed|failed|skipped|error|deselected)\b", ln)),
                   lines[-1] if lines else proc.stderr.strip()[-300:])
    failures = [ln for ln in lines if ln.startswith(("FAILED", "ERROR"))]
    summary = "\n".join([closing.strip("= "), *failures[:10]])
    return TestOutcome(proc.returncode, summary, files, time.perf_counter() - started)


def gpu_methods() -> list[str]:
    """Methods that run on CUDA and whose probe passes on this machine."""
    from harness.catalog import methods

    return [m.name for m in methods().values() if "cuda" in m.devices and m.unavailable_reason() is None]


def suite_runs(method: str, decode: bool) -> list[Run]:
    """The short GPU suite of one method (see the module docstring)."""
    runs = [
        Run.make(method=method, mask=mask, mask_params=params, seqlen=s, direction=d, timing=SUITE_TIMING,
                 **SUITE_SHAPE)
        for mask, params in SUITE_MASKS for s in SUITE_SEQLENS for d in SUITE_DIRECTIONS
    ]
    if decode:
        runs.append(Run.make(method=method, mask="causal", seqlen=DECODE_SEQLEN, direction="decode",
                             decode_tokens=1, timing=SUITE_TIMING, **SUITE_SHAPE))
    return runs


class UntilScheduler:
    """The inline scheduler, but no run starts after ``deadline``; the runs it leaves are counted in ``left``."""

    def __init__(self, deadline: float) -> None:
        from harness.cluster.inline_scheduler import InlineScheduler

        self.deadline, self.left, self._inline = deadline, 0, InlineScheduler()

    def run(self, runs: list[Run]):
        for i, run in enumerate(runs):
            if time.perf_counter() >= self.deadline:
                self.left = len(runs) - i
                return
            yield from self._inline.run([run])

    def close(self) -> None:
        self._inline.close()


def run_suite(db: Path, deadline: float, only: Sequence[str] = ()) -> SuiteOutcome:
    """Each available GPU method's suite, inline, into ``db``, each within its share of the time to ``deadline``."""
    from harness.catalog import get_method
    from harness.cluster.sweep import run_sweep
    from harness.results.store import ResultStore

    started = time.perf_counter()
    out = SuiteOutcome()
    db.parent.mkdir(parents=True, exist_ok=True)
    store = ResultStore(db)
    names = [n for n in gpu_methods() if not only or n in only]
    out.not_run.extend(f"{n} (not runnable here)" for n in only if n not in names)
    try:
        for turn, name in enumerate(names):
            runs = suite_runs(name, decode=get_method(name).decode)
            now = time.perf_counter()
            scheduler = UntilScheduler(now + max(0.0, deadline - now) / (len(names) - turn))
            summary = run_sweep(f"gpu-check {name}", runs, store, scheduler, show_progress=False)
            out.records.extend(summary.records)
            if scheduler.left:
                out.not_run.append(f"{name} ({scheduler.left} of {len(runs)} runs)")
    finally:
        store.close()
    out.seconds = time.perf_counter() - started
    return out


def _device_line() -> str:
    import torch

    props = torch.cuda.get_device_properties(0)
    versions = [f"torch {torch.__version__}", f"CUDA {torch.version.cuda}"]
    try:
        import triton

        versions.append(f"triton {triton.__version__}")
    except ImportError:
        versions.append("no triton")
    return f"{props.name} ({props.total_memory / 2**30:.0f} GiB), {torch.cuda.device_count()} visible; " + \
        ", ".join(versions)


def summary_text(tests: TestOutcome, suite: SuiteOutcome, device: str, db: Path) -> str:
    """The one-screen summary: device, the tests' verdict, per method the suite's statuses and best TFLOP/s."""
    lines = [f"lcbench GPU check on {device}",
             f"gpu tests ({len(tests.files)} files, {tests.seconds:.0f} s): {tests.summary}"]
    by_method: dict[str, list[dict]] = {}
    for r in suite.records:
        by_method.setdefault(r["method"], []).append(r)
    lines.append(f"inline GPU suite ({suite.seconds:.0f} s) -> {db}:")
    width = max([14, *map(len, by_method)])
    lines.append(f"  {'method':<{width}} {'runs':>4} {'ok':>3} {'n/a':>4} {'failed':>6}  {'best TFLOP/s':>12}  "
                 f"{'fwd ms causal S=' + str(SUITE_SEQLENS[-1]):>22}")
    for method, records in by_method.items():
        ok = [r for r in records if r["status"] == "ok"]
        failed = [r for r in records if r in suite.failed]
        best = max((r.get("tflops") or 0.0 for r in ok), default=0.0)
        ref = next((r for r in ok if r["mask"] == "causal" and r["direction"] == "fwd"
                    and r["seqlen"] == SUITE_SEQLENS[-1]), None)
        ref_ms = f"{ref['time_ms_median']:.3f}" if ref else "-"
        lines.append(f"  {method:<{width}} {len(records):>4} {len(ok):>3} {len(records) - len(ok) - len(failed):>4} "
                     f"{len(failed):>6}  {best:>12.1f}  {ref_ms:>22}")
    for r in suite.failed[:8]:
        lines.append(f"  FAILED {r['method']} {r['mask']} S={r['seqlen']} {r['direction']}: {r['status']}: "
                     f"{str(r.get('reason'))[:120]}")
    if suite.not_run:
        lines.append(f"  not run (time share spent): {', '.join(suite.not_run)}")
    verdict = "PASS" if tests.ok and not suite.failed else "FAIL"
    lines.append(f"verdict: {verdict}")
    return "\n".join(lines)


def write_rate_tables(records: list[dict], device: str, out_dir: Path) -> list[Path]:
    """The device's kernel rate table of every method with ``ok`` suite runs (``lcbench predict``'s input for a
    profile of this device: ``device.rates: {method: FILE}``)."""
    from harness.errors import UserError
    from harness.prediction.rates import table_from_records

    written = []
    slug = re.sub(r"[^A-Za-z0-9]+", "-", device.split(" (")[0]).strip("-").lower()
    for method in sorted({r["method"] for r in records}):
        try:
            table = table_from_records(records, method, device, f"python -m harness.gpu_check on {device}, "
                                       f"{time.strftime('%Y-%m-%d')} (the self-check's inline suite)")
        except UserError:
            continue  # no ok run of this method
        if "causal" not in table.kinds():
            continue
        out_dir.mkdir(parents=True, exist_ok=True)
        path = out_dir / f"{slug}-{method}.yaml"
        path.write_text("# written by the GPU self-check: measured kernel times of one method\n" + table.dump())
        written.append(path)
    return written


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m harness.gpu_check", description=__doc__.split("\n\n")[0],
                                formatter_class=DefaultsFormatter)
    p.add_argument("--results", default="results/gpu_check.db", help="SQLite file of the suite's records")
    p.add_argument("--summary", default="results/gpu_check.txt", help="where the summary is written too")
    p.add_argument("--budget", type=float, default=480.0, help="seconds for tests + suite (default 8 minutes)")
    p.add_argument("--methods", default="", help="comma-separated: only these methods in the suite (default: all)")
    p.add_argument("--rates", default="results/rates", help="folder for the device's kernel rate tables "
                   "(lcbench predict; default results/rates)")
    a = p.parse_args(argv)
    only = [m for m in a.methods.split(",") if m]
    if only:
        from harness.catalog import methods
        from harness.errors import unknown

        for name in only:
            if name not in methods():
                print(f"error: --methods: {unknown('method', name, methods())}", file=sys.stderr)
                return 2
    if not cuda_available():
        print(NO_DEVICE)
        return 0
    started = time.perf_counter()
    deadline = started + a.budget
    tests = run_gpu_tests(timeout_s=max(a.budget / 2, 30.0))
    suite = run_suite(Path(a.results), deadline, only)
    text = summary_text(tests, suite, _device_line(), Path(a.results))
    tables = write_rate_tables(suite.records, _device_line().split(";")[0], Path(a.rates))
    text += "\nrate tables: " + (", ".join(str(p) for p in tables) or "none (no ok causal runs)")
    text += f"\ntotal {time.perf_counter() - started:.0f} s"
    print(text)
    Path(a.summary).parent.mkdir(parents=True, exist_ok=True)
    Path(a.summary).write_text(text + "\n")
    return 0 if tests.ok and not suite.failed else 1


if __name__ == "__main__":
    raise SystemExit(main())
