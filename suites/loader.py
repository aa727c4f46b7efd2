"""Suites: declarative YAML sweeps, validated against a schema and expanded into runs.

A suite is the product of its lists: methods (single-device kernels, run at world size 1) and strategies
(context-parallel, run at every world size) x masks x seqlens x shapes x dtypes x directions. A profile
(``cpu`` / ``gpu``) overrides any top-level key, so one file holds CPU-sized and GPU-sized lengths.
Every mistake is reported in one line naming the key, the bad value and what is allowed.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import yaml

from harness.errors import UserError, unknown
from harness.spec import DIRECTIONS, DTYPES, Run, Timing

SUITES_DIR = Path(__file__).resolve().parent

# The schema: key -> (expected type, description). Lists are lists of the named element type.
SCHEMA: dict[str, tuple[type, str]] = {
    "name": (str, "suite name"),
    "description": (str, "what the suite measures"),
    "methods": (list, "single-device methods (lcbench list methods)"),
    "strategies": (list, "context-parallel strategies (lcbench list strategies)"),
    "local_method": (str, "single-device kernel used inside strategies"),
    "masks": (list, "mask names, or {name: ..., <param>: ...} mappings"),
    "seqlens": (list, "sequence lengths (integers > 0)"),
    "seqlens_per_device": (list, "tokens per device (weak scaling: seqlen = tokens x world size)"),
    "shapes": (list, "{heads_q, heads_kv, head_dim, batch} mappings"),
    "dtypes": (list, f"dtypes from {', '.join(DTYPES)}"),
    "directions": (list, f"directions from {', '.join(DIRECTIONS)}"),
    "world_sizes": (list, "world sizes for strategies (integers >= 1)"),
    "device": (str, "cpu or cuda"),
    "timing": (dict, "warmup, min_samples, min_run_time, max_samples"),
    "options": (dict, "options passed to every method/strategy"),
    "profiles": (dict, "profile name -> overrides of the keys above"),
}
REQUIRED = ("name", "masks", "shapes")
SHAPE_KEYS = {"heads_q": 8, "heads_kv": 8, "head_dim": 64, "batch": 1}
TIMING_KEYS = set(Timing.__dataclass_fields__)


@dataclass(frozen=True)
class Suite:
    name: str
    description: str
    runs: tuple[Run, ...]
    path: Optional[Path] = None


def suite_path(name_or_path: str) -> Path:
    """A suite by name (``suites/NAME.yaml``) or by path."""
    p = Path(name_or_path)
    if p.suffix in (".yaml", ".yml") and p.is_file():
        return p
    candidate = SUITES_DIR / f"{name_or_path}.yaml"
    if candidate.is_file():
        return candidate
    raise unknown("suite", name_or_path, available_suites())


def available_suites() -> list[str]:
    return sorted(p.stem for p in SUITES_DIR.glob("*.yaml"))


def load_suite(name_or_path: str, profile: Optional[str] = None) -> Suite:
    path = suite_path(name_or_path)
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise UserError(f"{path.name}: not valid YAML{where}: {getattr(e, 'problem', e)}") from None
    return parse_suite(data, path, profile)


def parse_suite(data: Any, path: Optional[Path] = None, profile: Optional[str] = None) -> Suite:
    where = path.name if path else "suite"
    if not isinstance(data, dict):
        raise UserError(f"{where}: expected a mapping of keys ({', '.join(SCHEMA)}), got {type(data).__name__}")
    _check_keys(data, where)
    profiles = data.get("profiles") or {}
    if profile is None:
        profile = _default_profile(profiles)
    if profile is not None:
        if profile not in profiles:
            raise unknown(f"profile of {where}", profile, profiles or ["(none defined)"])
        overrides = profiles[profile]
        if not isinstance(overrides, dict):
            raise UserError(f"{where}: profiles.{profile} must be a mapping, got {overrides!r}")
        _check_keys(overrides, f"{where} profiles.{profile}")
        lengths = {"seqlens", "seqlens_per_device"}
        if lengths & set(overrides):  # a profile's lengths replace the base's, whichever form they take
            data = {k: v for k, v in data.items() if k not in lengths}
        data = {**data, **overrides}
    for key in REQUIRED:
        if key not in data:
            raise UserError(f"{where}: missing required key {key!r} ({SCHEMA[key][1]})")
    if ("seqlens" in data) == ("seqlens_per_device" in data):
        raise UserError(f"{where}: give exactly one of 'seqlens' (total length) or 'seqlens_per_device' (weak scaling)")
    if not data.get("methods") and not data.get("strategies"):
        raise UserError(f"{where}: needs 'methods' or 'strategies' (a non-empty list)")
    runs = _expand(data, where)
    return Suite(name=str(data["name"]), description=str(data.get("description", "")), runs=tuple(runs), path=path)


def _default_profile(profiles: dict) -> Optional[str]:
    if not profiles:
        return None
    import torch

    preferred = "gpu" if torch.cuda.is_available() else "cpu"
    return preferred if preferred in profiles else None


def _check_keys(data: dict, where: str) -> None:
    for key, value in data.items():
        if key not in SCHEMA:
            raise unknown(f"key in {where}", str(key), SCHEMA)
        expected, what = SCHEMA[key]
        if not isinstance(value, expected):
            raise UserError(
                f"{where}: {key}={value!r} has type {type(value).__name__}; expected a {expected.__name__} of {what}"
            )


def _ints(values: list, key: str, where: str, minimum: int) -> list[int]:
    for v in values:
        if isinstance(v, bool) or not isinstance(v, int) or v < minimum:
            raise UserError(f"{where}: {key} has {v!r}; expected integers >= {minimum}")
    return values


def _choices(values: list, key: str, where: str, allowed: tuple) -> list[str]:
    for v in values:
        if v not in allowed:
            raise unknown(f"{key[:-1]} in {where}", str(v), allowed)
    return values


def _masks(values: list, where: str) -> list[tuple[str, dict]]:
    from harness.masks import get_mask_pattern

    out = []
    for entry in values:
        if isinstance(entry, str):
            name, params = entry, {}
        elif isinstance(entry, dict) and isinstance(entry.get("name"), str):
            params = {k: v for k, v in entry.items() if k != "name"}
            name = entry["name"]
        else:
            raise UserError(f"{where}: masks has {entry!r}; expected a mask name or a mapping with 'name'")
        pattern = get_mask_pattern(name)
        for k, v in params.items():
            if k not in pattern.defaults:
                raise unknown(f"parameter of mask {name!r} in {where}", k, pattern.defaults)
        out.append((name, params))
    return out


def _shapes(values: list, where: str) -> list[dict]:
    out = []
    for entry in values:
        if not isinstance(entry, dict):
            raise UserError(f"{where}: shapes has {entry!r}; expected a mapping of {', '.join(SHAPE_KEYS)}")
        for k, v in entry.items():
            if k not in SHAPE_KEYS:
                raise unknown(f"shape key in {where}", str(k), SHAPE_KEYS)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise UserError(f"{where}: shapes.{k}={v!r}; expected an integer >= 1")
        shape = {**SHAPE_KEYS, **entry}
        if "heads_kv" not in entry:
            shape["heads_kv"] = shape["heads_q"]
        if shape["heads_q"] % shape["heads_kv"]:
            raise UserError(
                f"{where}: shape heads_q={shape['heads_q']} is not a multiple of heads_kv={shape['heads_kv']}"
            )
        out.append(shape)
    return out


def _expand(data: dict, where: str) -> list[Run]:
    from harness.registry import get_method

    methods = data.get("methods") or []
    for m in methods:
        get_method(str(m))
    strategies = data.get("strategies") or []
    if strategies:
        from harness.catalog import get_strategy

        for s in strategies:
            get_strategy(str(s))
    local = data.get("local_method", "blocksparse")
    get_method(local)
    masks = _masks(data["masks"], where)
    per_device = "seqlens_per_device" in data
    seqlens = _ints(data["seqlens_per_device" if per_device else "seqlens"], "seqlens", where, 1)
    shapes = _shapes(data["shapes"], where)
    dtypes = _choices(data.get("dtypes", ["float32"]), "dtypes", where, DTYPES)
    directions = _choices(data.get("directions", ["fwd"]), "directions", where, DIRECTIONS)
    world_sizes = _ints(data.get("world_sizes", [1]), "world_sizes", where, 1)
    device = data.get("device", "cpu")
    if device not in ("cpu", "cuda"):
        raise unknown(f"device in {where}", device, ("cpu", "cuda"))
    timing = data.get("timing", {})
    for k in timing:
        if k not in TIMING_KEYS:
            raise unknown(f"timing key in {where}", str(k), TIMING_KEYS)
    timing = Timing(**timing)
    options = data.get("options", {})

    who = [(m, None, 1) for m in methods] + [(local, s, ws) for s in strategies for ws in world_sizes]
    runs = []
    for (method, strategy, ws), (mask, params), seqlen, shape, dtype, direction in itertools.product(
        who, masks, seqlens, shapes, dtypes, directions
    ):
        runs.append(
            Run.make(
                method=method, strategy=strategy, world_size=ws, mask=mask, mask_params=params,
                seqlen=seqlen * ws if per_device else seqlen,
                dtype=dtype, direction=direction, device=device, timing=timing, options=options, **shape,
            )
        )
    # Bucket by world size so a group of ranks is built once per size.
    runs.sort(key=lambda r: r.world_size)
    return runs
