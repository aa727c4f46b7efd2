"""Errors that are the user's to fix: printed as one line, never as a traceback."""

from __future__ import annotations

import difflib
from typing import Any, Iterable


class UserError(Exception):
    """A mistake in the user's input (suite file, CLI argument, mask parameter)."""


def unknown(kind: str, name: str, known: Iterable[str]) -> UserError:
    """An 'unknown X' error that suggests the closest known names."""
    known = sorted(known)
    close = difflib.get_close_matches(name, known, n=3, cutoff=0.5)
    hint = f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
    return UserError(f"unknown {kind} {name!r}{hint} (known: {', '.join(known)})")


def same_kind(default: Any, value: Any) -> bool:
    """Whether ``value`` may stand where a parameter defaults to ``default`` (the one rule for masks' and
    workloads' parameters): a bool only for a bool, an int or float for a float, an int for an int, a list or
    tuple for either, else the default's own type."""
    if isinstance(default, bool) or isinstance(value, bool):
        return isinstance(default, bool) and isinstance(value, bool)
    if isinstance(default, float):
        return isinstance(value, (int, float))
    if isinstance(default, (list, tuple)):
        return isinstance(value, (list, tuple))
    return isinstance(value, type(default))


def wrong_kind(owner: str, key: str, value: Any, default: Any) -> UserError:
    """The error for a parameter whose value fails :func:`same_kind`."""
    return UserError(f"{owner}: parameter {key}={value!r} has type {type(value).__name__}; "
                     f"expected {type(default).__name__} like the default {default!r}")
