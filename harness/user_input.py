"""Checks of user-given values before anything runs: numbers in range, paths that can be written — and the
one way an output file is written (:func:`write_output`), so that a write that fails later (a full device) is
one line too.

Each check raises ``argparse.ArgumentTypeError`` (argparse then names the argument) or :class:`UserError`, so a
mistake is one line naming the argument, the value and what is allowed — never a traceback.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Callable

from harness.errors import UserError


class DefaultsFormatter(argparse.RawDescriptionHelpFormatter):
    """Help that states every argument's default: ``(default: X)`` appended where the help text does not
    already say it (descriptions printed as written)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if action.default in (None, False, argparse.SUPPRESS) or "default" in text.lower():
            return text
        if not action.option_strings and action.nargs not in ("?", "*"):
            return text  # a required positional: its default is never used
        return f"{text} (default: %(default)s)".lstrip()


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a mistake is one line (``error: ...``, exit 2) like every other user error, and every
    argument's help states its default (:class:`DefaultsFormatter`)."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", DefaultsFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str):
        raise UserError(f"{self.prog}: {message}")


def integer(minimum: int, maximum: int | None = None) -> Callable[[str], int]:
    """An argparse type: an integer in [minimum, maximum]."""
    allowed = f"an integer >= {minimum}" + (f" and <= {maximum}" if maximum is not None else "")

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer (allowed: {allowed})") from None
        if value < minimum or (maximum is not None and value > maximum):
            raise argparse.ArgumentTypeError(f"{value} is out of range (allowed: {allowed})")
        return value

    parse.__name__ = "integer"
    return parse


def positive(text: str) -> float:
    """An argparse type: a finite number > 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number (allowed: a number > 0)") from None
    if not (value > 0 and value != float("inf")):
        raise argparse.ArgumentTypeError(f"{text} is out of range (allowed: a finite number > 0)")
    return value


def _probe_create(directory: Path, what: str, path: str | Path) -> None:
    """Create and remove a file in ``directory``: the only check that holds for root and odd filesystems."""
    probe = directory / f".lcbench-write-probe-{os.getpid()}"
    try:
        probe.open("wb").close()
        probe.unlink()
    except OSError as e:
        raise UserError(f"{what} {str(path)!r}: cannot write in {str(directory)!r} ({e.strerror or e})") from None


def _not_empty(path: str | Path, what: str, expected: str) -> None:
    if not str(path).strip():
        raise UserError(f"{what} {str(path)!r} is an empty path; expected {expected}")


def writable_file(path: str | Path, what: str, create_parents: bool = False) -> Path:
    """``path`` can be created or overwritten as a file: not empty, not a directory, in an existing writable
    directory (``create_parents``: in a directory that can be created)."""
    _not_empty(path, what, "a file path")
    p = Path(path)
    if p.is_dir():
        raise UserError(f"{what} {str(path)!r} is a directory; expected a file path")
    parent = p.parent
    if not parent.exists():
        if not create_parents:
            raise UserError(f"{what} {str(path)!r}: directory {str(parent)!r} does not exist")
        writable_dir(parent, what)
        return p
    if not parent.is_dir():
        raise UserError(f"{what} {str(path)!r}: {str(parent)!r} is a file, not a directory")
    if p.exists():
        try:
            p.open("ab").close()
        except OSError as e:
            raise UserError(f"{what} {str(path)!r} is not writable ({e.strerror or e})") from None
    else:
        _probe_create(parent, what, path)
    return p


def writable_dir(path: str | Path, what: str) -> Path:
    """``path`` is, or can be created as, a writable directory (not empty, not a file or a device)."""
    _not_empty(path, what, "a directory path")
    p = Path(path)
    if p.exists() and not p.is_dir():
        raise UserError(f"{what} {str(path)!r} is a file; expected a directory")
    base = next((a for a in [p, *p.parents] if a.exists()), Path("."))
    if not base.is_dir():
        raise UserError(f"{what} {str(path)!r}: {str(base)!r} is a file, not a directory")
    _probe_create(base, what, path)
    return p


def write_output(path: str | Path, data: str | bytes, what: str) -> Path:
    """Write ``data`` to the file ``path`` (checked by :func:`writable_file` first); a failure while writing or
    closing it — a full device, a vanished directory — is one line naming the path and the system's reason."""
    p = writable_file(path, what)
    try:
        with open(p, "wb") as f:
            f.write(data.encode() if isinstance(data, str) else data)
            f.flush()
    except OSError as e:
        raise UserError(f"{what} {str(path)!r}: could not write {len(data)} bytes ({e.strerror or e})") from None
    return p
