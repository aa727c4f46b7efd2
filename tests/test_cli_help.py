"""A clear, quiet CLI: every argument of ``lcbench`` and of every ``lcbench bench NAME`` has help text stating its
default, and the third-party warnings lcbench silences are silenced exactly (others still show) and listed."""

from __future__ import annotations

import argparse
import importlib
import warnings

import pytest

from harness import quiet
from harness.bench import BENCHES
from harness.user_input import DefaultsFormatter, OneLineParser
from harness.cli import build_parser, main


class _Parsed(Exception):
    def __init__(self, parser: argparse.ArgumentParser):
        self.parser = parser


def _bench_parser(name: str, monkeypatch) -> argparse.ArgumentParser:
    """The parser benchmark ``name`` builds, caught as it starts parsing (nothing is run)."""
    def capture(self, *args, **kwargs):
        raise _Parsed(self)

    monkeypatch.setattr(OneLineParser, "parse_args", capture)
    with pytest.raises(_Parsed) as caught:
        importlib.import_module(BENCHES[name][0]).main([], prog=f"lcbench bench {name}")
    return caught.value.parser


def _lcbench_parsers() -> dict[str, argparse.ArgumentParser]:
    top = build_parser()
    found = {"lcbench": top}
    for action in top._actions:
        if isinstance(action, argparse._SubParsersAction):
            found.update({f"lcbench {n}": p for n, p in action.choices.items()})
    return found


def _problems(parser: argparse.ArgumentParser) -> list[str]:
    formatter = DefaultsFormatter(parser.prog)
    problems = []
    for action in parser._actions:
        if isinstance(action, (argparse._HelpAction, argparse._SubParsersAction)):
            continue
        name = "/".join(action.option_strings) or action.dest
        if not action.help:
            problems.append(f"{name}: no help text")
        elif action.default not in (None, False) and (action.option_strings or action.nargs == "?") \
                and "default" not in formatter._get_help_string(action).lower():
            problems.append(f"{name}: default {action.default!r} not stated")
    return problems


@pytest.mark.parametrize("name", list(_lcbench_parsers()))
def test_every_lcbench_argument_has_help_with_its_default(name):
    assert _problems(_lcbench_parsers()[name]) == []


@pytest.mark.parametrize("name", list(BENCHES))
def test_every_bench_argument_has_help_with_its_default(name, monkeypatch):
    assert _problems(_bench_parser(name, monkeypatch)) == []


def test_a_default_is_appended_once():
    p = OneLineParser(prog="x")
    p.add_argument("--a", default=3, help="three")
    p.add_argument("--b", default=4, help="four (default 4)")
    text = " ".join(p.format_help().split())
    assert "three (default: 3)" in text and "four (default 4)" in text and "(default: 4)" not in text


# ----- quiet --------------------------------------------------------------------------------------------------------
SILENCED = quiet.SILENCED[0]
WARNINGS = [  # (module that warns, message, category, shown?)
    ("fla.utils._device", SILENCED.message, UserWarning, False),  # flash-linear-attention's Triton notice
    ("fla", SILENCED.message, UserWarning, False),
    ("fla.ops.nsa", "something else fla says", UserWarning, True),  # another warning of that library
    ("flashy", SILENCED.message, UserWarning, True),  # the same text from another module
    ("fla.utils._device", SILENCED.message, DeprecationWarning, True),  # another category
    ("harness.masks", "a warning of lcbench's own", UserWarning, True),
]


@pytest.mark.parametrize("module,message,category,shown", WARNINGS)
def test_silenced_warnings_are_only_those_named(module, message, category, shown):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        quiet.silence()
        warnings.warn_explicit(message, category, filename=f"{module.replace('.', '/')}.py", lineno=1,
                               module=module, registry={})
    assert bool(caught) == shown


def test_silenced_warnings_are_listed_and_recorded(capsys):
    from harness.execution.machine import machine_info

    assert main(["list", "warnings"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert all(w.message in out and w.why[:40] in out for w in quiet.SILENCED)
    assert machine_info()["silenced_warnings"] == quiet.describe()
