"""Command-line pieces the study benchmarks share: comma-separated lengths, a choice of sections, heads as
``Q:KV``, registered names, running the chosen sections with their wall time printed, and a torch thread count
set for the run and restored after it. The benchmarks parse with
:class:`harness.user_input.OneLineParser`: a bad value is one line naming it, exit 2, before anything runs."""

from __future__ import annotations

import argparse
import contextlib
import time
from typing import Callable, Iterator, Mapping, Optional, Sequence


def lengths(text: str) -> list[int]:
    """``"1024,4096"`` -> ``[1024, 4096]``: comma-separated positive integers (an argparse ``type``)."""
    try:
        values = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected comma-separated integers, e.g. 1024,4096") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: expected positive integers")
    return sorted(set(values))  # ascending: the ratios and growths read them in order


def sections(choices: Sequence[str]) -> Callable[[str], list[str]]:
    """An argparse ``type`` for a comma-separated subset of ``choices``, in the order of ``choices``, each once."""
    def parse(text: str) -> list[str]:
        names = [x.strip() for x in text.split(",") if x.strip()]
        bad = [n for n in names if n not in choices]
        if bad or not names:
            raise argparse.ArgumentTypeError(f"{text!r}: expected some of {', '.join(choices)} (comma-separated)")
        return [c for c in choices if c in names]
    return parse


def heads_pair(text: str) -> tuple[int, int]:
    """``"8:2"`` -> ``(8, 2)``: query heads and kv heads, both >= 1, the first a multiple of the second."""
    try:
        q, kv = (int(x) for x in text.split(":"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected heads_q:heads_kv, e.g. 8:2") from None
    if q < 1 or kv < 1 or q % kv:
        raise argparse.ArgumentTypeError(f"{text!r}: both >= 1 and heads_q a multiple of heads_kv")
    return q, kv


def registered(kind: str) -> Callable[[str], list[str]]:
    """An argparse ``type``: comma-separated names registered as ``kind`` (method, strategy or mask); an
    unknown one names the closest."""

    def parse(text: str) -> list[str]:
        from harness.catalog import methods, strategies
        from harness.errors import unknown
        from harness.masks.registry import MASKS

        known = {"method": methods, "strategy": strategies, "mask": lambda: MASKS}[kind]()
        names = [x.strip() for x in text.split(",") if x.strip()]
        if not names:
            raise argparse.ArgumentTypeError(f"{text!r}: expected {kind} names, comma-separated")
        for name in names:
            if name not in known:
                raise argparse.ArgumentTypeError(str(unknown(kind, name, known)))
        return names

    return parse


method_names = registered("method")


def run_sections(jobs: Mapping[str, Callable[[], object]], chosen: Sequence[str], console,
                 label: str = "bench") -> None:
    """Run the chosen sections in order, each followed by its wall time and, on stderr, a progress line
    (sections done of those chosen, elapsed, ETA: :class:`harness.progress.ProgressLines`)."""
    from rich.console import Console

    from harness.progress import ProgressLines

    err = Console(stderr=True)
    report = ProgressLines(label, len(chosen), lambda text: err.print(text, markup=False, highlight=False),
                           unit="sections done", interval_s=0.0)
    for done, name in enumerate(chosen, 1):
        started = time.perf_counter()
        jobs[name]()
        console.print(f"{name}: {time.perf_counter() - started:.0f} s", markup=False)
        report.update(done)


@contextlib.contextmanager
def torch_threads(count: Optional[int]) -> Iterator[None]:
    """Run with ``count`` torch threads (None or 0: as set), then give in-process callers (tests) theirs back."""
    import torch

    before = torch.get_num_threads()
    if count:
        torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)
