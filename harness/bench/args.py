"""Command-line pieces the study benchmarks share: comma-separated lengths, a choice of sections, and running
the chosen sections with their wall time printed (a bad value is argparse's one-line error, exit 2)."""

from __future__ import annotations

import argparse
import time
from typing import Callable, Mapping, Sequence


def lengths(text: str) -> list[int]:
    """``"1024,4096"`` -> ``[1024, 4096]``: comma-separated positive integers (an argparse ``type``)."""
    try:
        values = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected comma-separated integers, e.g. 1024,4096") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: expected positive integers")
    return values


def sections(choices: Sequence[str]) -> Callable[[str], list[str]]:
    """An argparse ``type`` for a comma-separated subset of ``choices``."""
    def parse(text: str) -> list[str]:
        names = [x.strip() for x in text.split(",") if x.strip()]
        bad = [n for n in names if n not in choices]
        if bad or not names:
            raise argparse.ArgumentTypeError(f"{text!r}: expected some of {', '.join(choices)} (comma-separated)")
        return names
    return parse


def run_sections(jobs: Mapping[str, Callable[[], object]], chosen: Sequence[str], console) -> None:
    """Run the chosen sections in order, each followed by its wall time."""
    for name in chosen:
        started = time.perf_counter()
        jobs[name]()
        console.print(f"{name}: {time.perf_counter() - started:.0f} s", markup=False)
