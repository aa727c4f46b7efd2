"""Progress of a long command (``run``, ``validate``, ``predict``, ``bench``): a live bar on a terminal, plain
lines in a log.

Where the stream progress is written to is a terminal, a rich progress bar; where it is not (CI, ``| tee``,
``> log``, ``2>&1``), one plain line at a time — done/total, failures, elapsed, ETA — at most every
:data:`INTERVAL_S` seconds or every 1/:data:`STEPS` of the total, and always the last, so that a log shows the
command is alive and how far it is without drowning in lines. A failure gets its own line when it happens.
"""

from __future__ import annotations

import contextlib
import time
from typing import Callable, Iterator, Optional, Protocol

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

INTERVAL_S = 10.0  # at most one line per this many seconds ...
STEPS = 10  # ... unless another tenth of the total is done


class Reporter(Protocol):
    """What a command tells its progress: ``update`` after each item, ``failure`` when one fails."""

    def update(self, done: int, failed: int = 0, skipped: int = 0) -> None: ...

    def failure(self, text: str) -> None: ...


def _duration(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    if seconds < 60:
        return f"{seconds} s"
    minutes, s = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes} min {s:02d} s"
    hours, m = divmod(minutes, 60)
    return f"{hours} h {m:02d} min"


class ProgressLines:
    """Plain progress lines for ``label``: ``label: 12/40 done (30%), 1 failed, 2 skipped; 1 min 05 s
    elapsed, ETA 2 min 31 s``, written through ``write`` when :data:`INTERVAL_S` has passed since the last
    line or another 1/:data:`STEPS` of ``total`` is done, and at the last item. ``clock``: seconds (tests)."""

    def __init__(self, label: str, total: int, write: Callable[[str], None], unit: str = "done",
                 interval_s: float = INTERVAL_S, steps: int = STEPS, clock: Callable[[], float] = time.monotonic):
        self.label, self.total, self.write, self.unit = label, total, write, unit
        self.interval_s, self.steps, self.clock = interval_s, steps, clock
        self.started = self.last_time = clock()
        self.last_step = 0

    def line(self, done: int, failed: int = 0, skipped: int = 0) -> str:
        """The progress line at ``done`` items (without deciding whether it is due)."""
        elapsed = self.clock() - self.started
        parts = [f"{self.label}: {done}/{self.total} {self.unit}"
                 + (f" ({done / self.total:.0%})" if self.total else "")]
        parts += [f"{failed} failed"] * bool(failed) + [f"{skipped} skipped"] * bool(skipped)
        timing = f"{_duration(elapsed)} elapsed"
        if 0 < done < self.total:
            timing += f", ETA {_duration(elapsed / done * (self.total - done))}"
        return ", ".join(parts) + "; " + timing

    def update(self, done: int, failed: int = 0, skipped: int = 0) -> None:
        now = self.clock()
        step = done * self.steps // self.total if self.total else 0
        if done >= self.total or now - self.last_time >= self.interval_s or step > self.last_step:
            self.write(self.line(done, failed, skipped))
            self.last_time, self.last_step = now, step

    def failure(self, text: str) -> None:
        self.write(f"{self.label}: {text}")


class ProgressBar:
    """A rich progress bar with the same counts (for a terminal)."""

    def __init__(self, progress: Progress, task: int):
        self.progress, self.task = progress, task

    def update(self, done: int, failed: int = 0, skipped: int = 0) -> None:
        self.progress.update(self.task, completed=done, failed=failed, skipped=skipped)

    def failure(self, text: str) -> None:
        self.progress.console.print(escape(text), highlight=False, soft_wrap=True)


class Silent:
    """No progress at all (``--quiet``)."""

    def update(self, done: int, failed: int = 0, skipped: int = 0) -> None:
        pass

    def failure(self, text: str) -> None:
        pass


@contextlib.contextmanager
def progress(label: str, total: int, console: Optional[Console] = None, enabled: bool = True,
             unit: str = "done") -> Iterator[Reporter]:
    """The reporter for ``total`` items: a bar when ``console`` (default: stderr) is a terminal, lines when it
    is not, nothing when not ``enabled``."""
    console = console or Console(stderr=True)
    if not enabled:
        yield Silent()
        return
    if not console.is_terminal:
        yield ProgressLines(label, total, lambda text: console.print(text, markup=False, highlight=False,
                                                                       soft_wrap=True), unit=unit)
        return
    bar = Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
        TextColumn("failed {task.fields[failed]} · skipped {task.fields[skipped]}"),
        TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(), console=console, transient=False,
    )
    with bar:
        yield ProgressBar(bar, bar.add_task(escape(label), total=total, failed=0, skipped=0))
