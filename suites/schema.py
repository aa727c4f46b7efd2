"""The suite schema: pydantic models of a suite file, and the one-line errors its mistakes become.

The models check what can be checked from the file alone — key names, types, ranges, empty lists, and the
names of methods, strategies, masks (and their parameter names) and workloads (and their parameter names)
against the catalog. What needs the expanded sweep (mask parameter values at each sequence length, phases,
options, world-size limits) is checked by :mod:`suites.loader`.

Every pydantic error becomes one :class:`~harness.errors.UserError` line naming the dotted key
(``profiles.cpu.shapes[0].heads_q``), the bad value and what is allowed (:func:`user_error`).
A suite file is also read with a YAML loader that rejects a repeated key, a recursive alias and aliases that
expand to more than :data:`MAX_YAML_VALUES` values — a "billion laughs" bomb is one line at once, wherever it
hides in the file (:func:`load_yaml`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Callable, Optional

import yaml
from pydantic import (AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, ValidationError,
                      model_validator)
from pydantic_core import PydanticCustomError

from harness.errors import UserError, unknown
from harness.run import DIRECTIONS, DTYPES, Timing

DEVICES = ("cpu", "cuda")
MAX_WORLD_SIZE = 1 << 16  # a sanity bound; the cluster's real size is the caller's (``max_world_size``, or a
# profile's devices for ``lcbench predict``)
MAX_YAML_VALUES = 100_000  # values of a YAML document with its aliases expanded (shipped suites: < 1000)

# ----- YAML ----------------------------------------------------------------------------------------------


class _UniqueKeyLoader(yaml.SafeLoader):
    """A SafeLoader that refuses a mapping with the same key twice (PyYAML keeps the last one silently)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            line = key_node.start_mark.line + 1
            if key in seen:
                raise UserError(f"duplicate key {key!r} at line {line} (first given at line {seen[key]})")
            seen[key] = line
        return super().construct_mapping(node, deep=deep)


def expanded_size(node: yaml.Node, limit: int, sizes: Optional[dict[int, int]] = None,
                  open_: Optional[set[int]] = None) -> int:
    """How many values ``node`` holds with every alias expanded (each node counted once per use), without
    expanding anything: a node reached twice is counted from memory. More than ``limit``, or an alias inside
    itself, is a UserError naming the line."""
    sizes = {} if sizes is None else sizes
    open_ = set() if open_ is None else open_
    key = id(node)
    if key in sizes:
        return sizes[key]
    if key in open_:
        raise UserError(f"a recursive alias at line {node.start_mark.line + 1} (a value that contains itself)")
    open_.add(key)
    children = node.value if isinstance(node, yaml.SequenceNode) else (
        [n for pair in node.value for n in pair] if isinstance(node, yaml.MappingNode) else [])
    size = 1
    for child in children:
        size += expanded_size(child, limit, sizes, open_)
        if size > limit:
            raise UserError(f"the YAML aliases at line {node.start_mark.line + 1} expand to more than {limit} "
                            f"values (an alias bomb?); expected a suite of at most {limit} values")
    open_.discard(key)
    sizes[key] = size
    return size


def load_yaml(text: str, where: str) -> Any:
    """Parse a suite's YAML text; a syntax error, a repeated key or an alias bomb (:func:`expanded_size`) is one
    line naming the line number. The document is composed and measured before anything is constructed."""
    loader = _UniqueKeyLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        expanded_size(node, MAX_YAML_VALUES)
        return loader.construct_document(node)
    except UserError as e:
        raise UserError(f"{where}: {e}") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        at = f" at line {mark.line + 1}" if mark else ""
        raise UserError(f"{where}: not valid YAML{at}: {getattr(e, 'problem', e)}") from None
    except RecursionError:
        raise UserError(f"{where}: the YAML is nested too deeply to read") from None
    finally:
        loader.dispose()


# ----- validators that raise errors the converter understands --------------------------------------------


def _unknown_name(kind: str, name: Any, known: Any) -> PydanticCustomError:
    return PydanticCustomError("unknown_name", "unknown {kind} {name}",
                               {"kind": kind, "name": str(name), "known": sorted(known)})


def _user(e: UserError) -> PydanticCustomError:
    """A catalog's own UserError, carried through pydantic so that it gets the key's path."""
    return PydanticCustomError("user_error", "{message}", {"message": str(e)})


def _choice(kind: str, allowed: tuple[str, ...]) -> Callable[[str], str]:
    def check(value: str) -> str:
        if value not in allowed:
            raise _unknown_name(kind, value, allowed)
        return value

    return check


def _catalog(lookup: Callable[[], Callable[[str], Any]]) -> Callable[[str], str]:
    """A name that must be in a catalog registry (looked up lazily: the catalog imports the plugins)."""

    def check(value: str) -> str:
        try:
            lookup()(value)
        except UserError as e:
            raise _user(e) from None
        return value

    return check


def _get_method() -> Callable[[str], Any]:
    from harness.catalog import get_method

    return get_method


def _get_strategy() -> Callable[[str], Any]:
    from harness.catalog import get_strategy

    return get_strategy


def _get_workload() -> Callable[[str], Any]:
    from harness.catalog import get_workload

    return get_workload


def _named_entry(what: str) -> Callable[[Any], Any]:
    """A list entry that is a bare name or a ``{name: ..., <param>: ...}`` mapping -> the mapping."""

    def normalise(value: Any) -> Any:
        if isinstance(value, str):
            return {"name": value}
        if isinstance(value, dict) and isinstance(value.get("name"), str):
            return value
        raise PydanticCustomError("bad_entry", "bad entry", {"expected": f"a {what} name or a mapping with 'name'"})

    return normalise


def _non_empty(item: Any) -> Any:
    """A list of ``item`` with at least one entry (an empty list is a mistake, never "run nothing")."""
    return Annotated[list[item], Field(min_length=1)]


PosInt = Annotated[int, Field(ge=1)]
MethodName = Annotated[str, AfterValidator(_catalog(_get_method))]
StrategyName = Annotated[str, AfterValidator(_catalog(_get_strategy))]
WorldSize = Annotated[int, Field(ge=1, le=MAX_WORLD_SIZE)]
Dtype = Annotated[str, AfterValidator(_choice("dtype", DTYPES))]
Direction = Annotated[str, AfterValidator(_choice("direction", DIRECTIONS))]
Device = Annotated[str, AfterValidator(_choice("device", DEVICES))]


# ----- models -----------------------------------------------------------------------------------------


class Strict(BaseModel):
    """No coercion ("8" is not 8), no unknown keys (reported with close-name suggestions)."""

    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)

    @model_validator(mode="before")
    @classmethod
    def _known_keys(cls, data: Any) -> Any:
        if isinstance(data, dict):
            for key in data:
                if key not in cls.model_fields:
                    raise _unknown_name("key", key, cls.model_fields)
        return data


class Shape(Strict):
    heads_q: PosInt = Field(8, description="query heads")
    heads_kv: Optional[PosInt] = Field(None, description="key/value heads (default: heads_q)")
    head_dim: PosInt = Field(64, description="head dimension")
    batch: PosInt = Field(1, description="batch size")

    @model_validator(mode="after")
    def _gqa(self) -> "Shape":
        if self.heads_q % (self.heads_kv or self.heads_q):
            raise PydanticCustomError(
                "not_allowed_msg", "heads_q={heads_q} is not a multiple of heads_kv={heads_kv}",
                {"heads_q": self.heads_q, "heads_kv": self.heads_kv},
            )
        return self

    def run_fields(self) -> dict[str, int]:
        return {"heads_q": self.heads_q, "heads_kv": self.heads_kv or self.heads_q, "head_dim": self.head_dim,
                "batch": self.batch}


_T = Timing()


class TimingSpec(Strict):
    warmup: int = Field(_T.warmup, ge=0, description="untimed calls before sampling")
    min_samples: PosInt = Field(_T.min_samples, description="timed samples at least")
    min_run_time: float = Field(_T.min_run_time, gt=0, description="seconds of timed work at least")
    max_samples: PosInt = Field(_T.max_samples, description="timed samples at most")

    @model_validator(mode="after")
    def _bounds(self) -> "TimingSpec":
        if self.max_samples < self.min_samples:
            raise PydanticCustomError(
                "not_allowed_at", "at", {"key": "max_samples", "value": self.max_samples,
                                         "expected": f"max_samples >= min_samples ({self.min_samples})"},
            )
        return self

    def timing(self) -> Timing:
        return Timing(**self.model_dump())


class MaskEntry(BaseModel):
    """A mask pattern by name, with some of its parameters (values are checked when the mask is built)."""

    model_config = ConfigDict(strict=True, extra="allow", frozen=True)
    name: str

    @model_validator(mode="after")
    def _pattern(self) -> "MaskEntry":
        from harness.masks import get_mask_pattern

        try:
            pattern = get_mask_pattern(self.name)
        except UserError as e:
            raise _user(e) from None
        for key in self.params:
            if key not in pattern.defaults:
                raise _unknown_name(f"parameter of mask {self.name!r}", key, pattern.defaults)
        return self

    @property
    def params(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


class WorkloadEntry(BaseModel):
    """A workload by name, with parameters; a list-valued parameter is a sweep axis (see the loader)."""

    model_config = ConfigDict(strict=True, extra="allow", frozen=True)
    name: str

    @model_validator(mode="after")
    def _workload(self) -> "WorkloadEntry":
        try:
            workload = _get_workload()(self.name)
        except UserError as e:
            raise _user(e) from None
        for key in self.params:
            if key not in workload.params:
                raise _unknown_name(f"parameter of workload {self.name!r}", key, workload.params)
        return self

    @property
    def params(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


MaskItem = Annotated[MaskEntry, BeforeValidator(_named_entry("mask"))]
WorkloadItem = Annotated[WorkloadEntry, BeforeValidator(_named_entry("workload"))]


class Keys(Strict):
    """Every key a suite (or a profile's overrides) may set. All optional here; :class:`SuiteFile` and the
    loader say what a complete suite needs."""

    description: Optional[str] = Field(None, description="what the suite measures")
    methods: Optional[_non_empty(MethodName)] = Field(None, description="single-device methods (lcbench list methods)")
    strategies: Optional[_non_empty(StrategyName)] = Field(
        None, description="context-parallel strategies (lcbench list strategies)")
    workloads: Optional[_non_empty(WorkloadItem)] = Field(
        None, description="workload names or {name: ..., <param>: value or list} mappings")
    local_method: Optional[MethodName] = Field(None, description="single-device kernel used inside strategies")
    masks: Optional[_non_empty(MaskItem)] = Field(None, description="mask names or {name: ..., <param>: ...} mappings")
    seqlens: Optional[_non_empty(PosInt)] = Field(None, description="sequence lengths (integers >= 1)")
    seqlens_per_device: Optional[_non_empty(PosInt)] = Field(
        None, description="tokens per device (weak scaling: seqlen = tokens x world size)")
    shapes: Optional[_non_empty(Shape)] = Field(None, description="{heads_q, heads_kv, head_dim, batch} mappings")
    dtypes: Optional[_non_empty(Dtype)] = Field(None, description=f"dtypes from {', '.join(DTYPES)}")
    directions: Optional[_non_empty(Direction)] = Field(None, description=f"directions from {', '.join(DIRECTIONS)}")
    phases: Optional[_non_empty(str)] = Field(None, description="workload phases (each workload runs those it has)")
    decode_tokens: Optional[PosInt] = Field(None, description="query rows of a decode step")
    world_sizes: Optional[_non_empty(WorldSize)] = Field(
        None, description=f"world sizes (integers 1..{MAX_WORLD_SIZE})")
    device: Optional[Device] = Field(None, description="cpu or cuda")
    timing: Optional[TimingSpec] = Field(None, description="warmup, min_samples, min_run_time, max_samples")
    options: Optional[dict[str, Any]] = Field(
        None, description="options of every method/strategy; a list value is a sweep axis")


class SuiteFile(Keys):
    """A whole suite file: the keys, a name, and profiles of overrides."""

    name: str = Field(description="suite name")
    profiles: Optional[dict[str, Keys]] = Field(None, description="profile name -> overrides of the keys above")


KEYS = tuple(SuiteFile.model_fields)

# field name -> description, for "expected ..." phrases of type errors deep in a suite
_DESCRIPTIONS: dict[str, str] = {
    name: f.description for model in (SuiteFile, Shape, TimingSpec) for name, f in model.model_fields.items()
    if f.description
}

# ----- pydantic error -> one line -------------------------------------------------------------------------

_TYPE_PHRASES = {
    "list_type": "a list", "int_type": "an integer", "float_type": "a number", "string_type": "a string",
    "dict_type": "a mapping", "model_type": "a mapping", "model_attributes_type": "a mapping",
    "bool_type": "true or false", "int_from_float": "an integer",
}


def dotted(loc: tuple) -> str:
    """``('profiles', 'cpu', 'shapes', 0, 'heads_q')`` -> ``profiles.cpu.shapes[0].heads_q``."""
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _describe(loc: tuple) -> str:
    names = [p for p in loc if isinstance(p, str) and p in _DESCRIPTIONS]
    return f" ({_DESCRIPTIONS[names[-1]]})" if names else ""


def _bound(err: dict) -> str:
    ctx = err.get("ctx", {})
    for key, op in (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<")):
        if key in ctx:
            kind = "a number" if isinstance(ctx[key], float) else "an integer"
            return f"{kind} {op} {ctx[key]:g}"
    return err["msg"]


def user_error(e: ValidationError, where: str) -> UserError:
    """The first error of ``e`` as one line: ``WHERE: KEY=VALUE <what is wrong>; expected <what is allowed>``."""
    err = e.errors(include_url=False)[0]
    kind, loc, value, ctx = err["type"], tuple(err["loc"]), err.get("input"), err.get("ctx", {})
    path = dotted(loc)
    at = f"{where}: {path}" if path else where
    if kind == "unknown_name":
        return UserError(f"{at}: {unknown(ctx['kind'], ctx['name'], ctx['known'])}")
    if kind == "user_error":
        return UserError(f"{at}: {ctx['message']}")
    if kind == "missing":
        return UserError(f"{where}: missing required key {path!r}{_describe(loc)}")
    if kind == "too_short":
        return UserError(f"{at}={value!r} is empty; expected at least one entry{_describe(loc)}")
    if kind in _TYPE_PHRASES:
        return UserError(f"{at}={value!r} has type {type(value).__name__}; expected {_TYPE_PHRASES[kind]}"
                         f"{_describe(loc)}")
    if kind == "bad_entry":
        return UserError(f"{at}={value!r} has type {type(value).__name__}; expected {ctx['expected']}")
    if kind in ("greater_than_equal", "greater_than", "less_than_equal", "less_than"):
        return UserError(f"{at}={value!r} is not allowed; expected {_bound(err)}")
    if kind == "not_allowed_at":
        key = dotted((*loc, ctx["key"]))
        return UserError(f"{where}: {key}={ctx['value']!r} is not allowed; expected {ctx['expected']}")
    if kind == "not_allowed_msg":
        return UserError(f"{at}: {err['msg']}")
    return UserError(f"{at}={value!r}: {err['msg']}")


def validate_file(data: Any, where: str) -> SuiteFile:
    """A parsed suite file as a :class:`SuiteFile`, or the one-line UserError of its first mistake."""
    if not isinstance(data, dict):
        raise UserError(f"{where}: expected a mapping of keys ({', '.join(KEYS)}), got {type(data).__name__}")
    try:
        return SuiteFile.model_validate(data)
    except ValidationError as e:
        raise user_error(e, where) from None


def read_suite_file(path: Path) -> Any:
    return load_yaml(path.read_text(), path.name)
