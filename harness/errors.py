"""Errors that are the user's to fix: printed as one line, never as a traceback."""

from __future__ import annotations

import difflib
from typing import Iterable


class UserError(Exception):
    """A mistake in the user's input (suite file, CLI argument, mask parameter)."""


def unknown(kind: str, name: str, known: Iterable[str]) -> UserError:
    """An 'unknown X' error that suggests the closest known names."""
    known = sorted(known)
    close = difflib.get_close_matches(name, known, n=3, cutoff=0.5)
    hint = f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
    return UserError(f"unknown {kind} {name!r}{hint} (known: {', '.join(known)})")
