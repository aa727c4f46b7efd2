"""Progress where nobody watches a terminal: plain lines, rate-limited, always the last, failures at once."""

from __future__ import annotations

import io

import pytest
from rich.console import Console

from harness.progress import ProgressBar, ProgressLines, Silent, progress


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _lines(total: int, seconds_per_item: float) -> list[str]:
    clock, out = Clock(), []
    report = ProgressLines("suite", total, out.append, unit="runs done", interval_s=10.0, steps=10, clock=clock)
    for done in range(1, total + 1):
        clock.now += seconds_per_item
        report.update(done, failed=done // 50)
    return out


# (total, seconds per item, how many lines): a tenth of the total or 10 s, whichever comes first, and the last
@pytest.mark.parametrize("total,per_item,expected", [
    (1000, 0.001, 10),  # fast: one line per 10%
    (5, 30.0, 5),  # slow: every item is 10 s past the last line (and 20% of the total)
    (100, 1.0, 10),  # 1 s each: a tenth (10 items) every 10 s — one line each time, not two
    (3, 0.0, 3),  # every item is a third
])
def test_lines_are_rate_limited_and_end_with_the_last(total, per_item, expected):
    lines = _lines(total, per_item)
    assert len(lines) == expected
    assert lines[-1].startswith(f"suite: {total}/{total} runs done (100%)") and "ETA" not in lines[-1]


def test_a_line_says_done_total_failures_elapsed_and_eta():
    clock, out = Clock(), []
    report = ProgressLines("kernels", 40, out.append, unit="runs done", clock=clock)
    clock.now = 65.0
    report.update(10, failed=1, skipped=2)
    assert out == ["kernels: 10/40 runs done (25%), 1 failed, 2 skipped; 1 min 05 s elapsed, ETA 3 min 15 s"]


@pytest.mark.parametrize("terminal,enabled,kind", [(False, True, ProgressLines), (True, True, ProgressBar),
                                                   (False, False, Silent), (True, False, Silent)])
def test_the_reporter_follows_the_stream(terminal, enabled, kind):
    console = Console(file=io.StringIO(), force_terminal=terminal, width=120)
    with progress("x", 3, console, enabled=enabled) as report:
        assert isinstance(report, kind)
        report.update(1)
        report.failure("error: run 2: boom")
        report.update(3)
    text = console.file.getvalue()
    assert ("boom" in text) == enabled
    if kind is ProgressLines:
        assert text.splitlines() == ["x: 1/3 done (33%); 0 s elapsed, ETA 0 s", "x: error: run 2: boom",
                                     "x: 3/3 done (100%); 0 s elapsed"]


def test_validate_reports_progress_and_failures_as_lines(monkeypatch, capsys):
    """``lcbench validate`` with stderr not a terminal: a line per tenth of the checks, the invalid ones named."""
    from harness.cli import main
    from harness.execution import validate

    checks = [validate.Check("sdpa", "causal", {}, "float32", "fwd", "ok", "out 1e-7"),
              validate.Check("sdpa", "causal", {}, "bfloat16", "fwd", "invalid", "out 0.3"),
              validate.Check("sdpa", "causal", {}, "float32", "decode", "unsupported", "no decode")]
    monkeypatch.setattr(validate, "count_checks", lambda methods, masks: len(checks))
    monkeypatch.setattr(validate, "validate_all", lambda methods, masks: iter(checks))
    assert main(["validate"]) == 1
    err = capsys.readouterr().err.splitlines()
    assert err[0].startswith("validate: 1/3 checks done (33%)")
    assert "validate: invalid: sdpa on causal bfloat16 fwd: out 0.3" in err
    assert err[-1].startswith("validate: 3/3 checks done (100%), 1 failed, 1 skipped")
    assert main(["validate", "--quiet"]) == 1 and capsys.readouterr().err == ""
