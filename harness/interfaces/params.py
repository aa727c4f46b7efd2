"""Declared parameters: what values a plugin's parameter takes, checked before anything runs.

A workload declares each of its parameters as a :class:`Param` — its type, bounds, choices, an alphabet for
strings, or the registry its value names (a method, a strategy) — and its cross-constraints as one hook,
``constraints(params) -> [(key, what is allowed), ...]``. :func:`check_params` applies both to resolved
parameters; the first violation is a :class:`ParamError`, a one-line :class:`~harness.errors.UserError` that
names the key, the value and what is allowed. The suite loader runs it on every expanded run, so a bad value
stops the sweep before it starts (exit 2) instead of becoming a stored ``error``.

The helpers (:func:`integer`, :func:`number`, :func:`one_of`, :func:`letters`, :func:`flag`, :func:`registered`)
build the common declarations. Names are resolved through a ``lookup(registry, name)`` the caller passes (the
catalog's), since this module imports no plugin.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Optional

from harness.errors import UserError

# (registry, name) -> the entry; raises UserError (unknown name, with close names) when not registered
Lookup = Callable[[str, str], Any]
# resolved parameters -> (key, what is allowed) for each violated cross-constraint
Constraints = Callable[[dict[str, Any]], Iterable[tuple[str, str]]]

_KIND_PHRASES = {int: "an integer", float: "a number", str: "a string", bool: "true or false", list: "a list"}


class ParamError(UserError):
    """A parameter value that is not allowed: ``KEY=VALUE is not allowed; expected ALLOWED``."""

    def __init__(self, owner: str, key: str, value: Any, expected: str):
        self.owner, self.key, self.value, self.expected = owner, key, value, expected
        super().__init__(f"{owner}: parameter {self.detail()}")

    def detail(self) -> str:
        """The mistake without its owner: ``key=value is not allowed; expected ...``."""
        return f"{self.key}={self.value!r} is not allowed; expected {self.expected}"


@dataclass(frozen=True)
class Param:
    """The values one parameter takes. Unset fields do not constrain."""

    kind: type  # int, float (an int is accepted), str, bool or list
    ge: Optional[float] = None
    gt: Optional[float] = None
    le: Optional[float] = None
    lt: Optional[float] = None
    choices: tuple = ()
    alphabet: str = ""  # a non-empty string of these letters
    registry: str = ""  # the value names an entry of this registry ("method", "strategy")
    needs: str = ""  # ... which must have this attribute set (e.g. "linear_kernel")
    item: Optional["Param"] = None  # for lists: every item
    doc: str = ""

    def allowed(self) -> str:
        """What is allowed, as a phrase (``an integer >= 1``)."""
        if self.choices:
            return "one of " + ", ".join(repr(c) for c in self.choices)
        if self.alphabet:
            return f"a non-empty string of the letters {', '.join(repr(c) for c in self.alphabet)}"
        if self.registry:
            return f"a registered {self.registry}" + (f" with {self.needs}" if self.needs else "")
        phrase = _KIND_PHRASES.get(self.kind, self.kind.__name__)
        if self.kind in (int, float):
            phrase = "a finite number" if self.kind is float else phrase
            bounds = [f"{op} {_num(b)}" for op, b in ((">=", self.ge), (">", self.gt), ("<=", self.le), ("<", self.lt))
                      if b is not None]
            phrase += (" " + " and ".join(bounds)) if bounds else ""
        if self.item is not None:
            phrase += f" of {self.item.allowed()}"
        return phrase + (f" ({self.doc})" if self.doc else "")

    def problem(self, value: Any, lookup: Optional[Lookup]) -> Optional[str]:
        """What is allowed, when ``value`` is not (None when it is)."""
        if not _is_kind(value, self.kind):
            return f"{self.allowed()}, not {type(value).__name__}"
        if self.kind in (int, float) and not self._in_range(value):
            return self.allowed()
        if self.choices and value not in self.choices:
            return self.allowed()
        if self.alphabet and (not value or set(value) - set(self.alphabet)):
            return self.allowed()
        if self.registry and lookup is not None:
            return self._registered(value, lookup)
        if self.item is not None:
            for i, v in enumerate(value):
                why = self.item.problem(v, lookup)
                if why:
                    return f"{self.allowed()} (item {i}={v!r}: {why})"
        return None

    def _in_range(self, value: float) -> bool:
        return (math.isfinite(value)
                and (self.ge is None or value >= self.ge) and (self.gt is None or value > self.gt)
                and (self.le is None or value <= self.le) and (self.lt is None or value < self.lt))

    def _registered(self, name: str, lookup: Lookup) -> Optional[str]:
        try:
            entry = lookup(self.registry, name)
        except UserError as e:
            return f"a registered {self.registry}: {e}"
        if self.needs and getattr(entry, self.needs, None) is None:
            return f"{self.allowed()}; {self.registry} {name!r} has no {self.needs}"
        return None


def _num(b: float) -> str:
    return str(b) if isinstance(b, int) else f"{b:g}"


def _is_kind(value: Any, kind: type) -> bool:
    if kind is bool or isinstance(value, bool):
        return kind is bool and isinstance(value, bool)
    if kind is float:
        return isinstance(value, (int, float))
    return isinstance(value, kind)


def check_params(owner: str, params: dict[str, Any], specs: dict[str, Param], constraints: Constraints,
                 lookup: Optional[Lookup] = None) -> None:
    """Every declared parameter of ``params`` against its :class:`Param`, then the cross-constraints (these only
    when every value is of its declared kind and range). The first violation raises :class:`ParamError`."""
    for key, spec in specs.items():
        if key in params and params[key] is not None:
            why = spec.problem(params[key], lookup)
            if why:
                raise ParamError(owner, key, params[key], why)
    for key, expected in constraints(params):
        raise ParamError(owner, key, params.get(key), expected)


def no_constraints(params: dict[str, Any]) -> Iterable[tuple[str, str]]:
    return ()


# ----- declarations ------------------------------------------------------------------------------------------

def integer(ge: Optional[int] = None, le: Optional[int] = None, doc: str = "") -> Param:
    return Param(int, ge=ge, le=le, doc=doc)


def number(ge: Optional[float] = None, gt: Optional[float] = None, le: Optional[float] = None,
           lt: Optional[float] = None, doc: str = "") -> Param:
    return Param(float, ge=ge, gt=gt, le=le, lt=lt, doc=doc)


def one_of(*choices: Any, doc: str = "") -> Param:
    return Param(type(choices[0]), choices=tuple(choices), doc=doc)


def letters(alphabet: str, doc: str = "") -> Param:
    return Param(str, alphabet=alphabet, doc=doc)


def flag(doc: str = "") -> Param:
    return Param(bool, doc=doc)


def registered(registry: str, needs: str = "", doc: str = "") -> Param:
    """A name of a registered ``registry`` entry ("method", "strategy"), optionally one with ``needs`` set."""
    return Param(str, registry=registry, needs=needs, doc=doc)


def seed() -> Param:
    return integer(ge=0, le=2**63 - 1, doc="random seed")  # what torch.manual_seed takes


def divides(params: dict[str, Any], key: str, multiple_key: str) -> Iterable[tuple[str, str]]:
    """The constraint ``params[multiple_key] % params[key] == 0`` (e.g. query heads over kv heads)."""
    if params[multiple_key] % params[key]:
        yield key, f"a divisor of {multiple_key}={params[multiple_key]}"
