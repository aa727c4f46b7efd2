"""Suites: declarative YAML sweeps, validated (:mod:`suites.schema`) and expanded into runs.

A suite is the product of its lists, for three kinds of subject:

- ``methods`` — single-device kernels, run at world size 1, x ``directions``;
- ``strategies`` — context parallelism with ``local_method`` inside (when the suite names none, each
  strategy's fastest usable one: ``lcbench list strategies``), run at every ``world_sizes`` entry, x ``directions``;
- ``workloads`` — whole-model phases: names or ``{name: W, <param>: value, ...}`` mappings, x ``phases``
  (each workload runs the listed phases it has; all of its phases when ``phases`` is not given), at every
  world size when the workload is distributed, else at 1. Heads come from the workload's parameters, so
  ``shapes`` is optional for a workload-only suite, and ``masks`` defaults to ``[causal]``.

each x ``masks`` x ``seqlens`` (or ``seqlens_per_device``, weak scaling) x ``shapes`` x ``dtypes``.

**Sweep axes.** A workload parameter or an ``options`` value given as a LIST is a sweep axis: the runs are the
cartesian product of all axes (``options: {block_q: [64, 128]}`` -> two runs per point). A parameter whose
default is itself a list is a single value when given as a list; give a list of lists to sweep it
(``segments: [[8, 16], [16, 32]]``). ``decode`` is a direction; ``decode_tokens`` (default 1) is the query
rows of a decode step.

**Profiles.** ``profiles: {NAME: {<key>: value}}`` override top-level keys (``null`` removes one); the
default profile is ``gpu`` when CUDA is available else ``cpu``, when the suite defines it. Every shipped
suite has a ``smoke`` profile: a representative subset that runs in under two minutes on two cores.

**Checks before anything runs**, each one line naming the key, the bad value and what is allowed: the schema
(types, ranges, empty lists, unknown keys and names with suggestions), duplicate YAML keys and bounded alias
expansion, each mask's parameters (the mask is built at every sequence length and head count the suite uses),
every workload run's parameters against what its workload declares (:class:`~harness.interfaces.Param` specs
and cross-constraints, names resolved in the catalog), phases, keys that the suite's subjects would ignore
(``directions`` without methods or strategies), options against what the strategies, the methods that declare
options and the methods and strategies the workloads run accept, ``decode_tokens`` against the lengths, the
size of the sweep (at most :data:`MAX_RUNS` runs, counted before any is made) and of its lengths (a mask of
every length must fit in this machine's memory), and world sizes against the caller's ``max_world_size``.
"""

from __future__ import annotations

import functools
import itertools
import math
import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Iterable, Mapping, Optional

from harness.errors import UserError, unknown
from harness.interfaces.params import ParamError
from harness.run import DECODE, Run, Timing
from suites.schema import Keys, MaskEntry, SuiteFile, read_suite_file, validate_file

SUITES_DIR = Path(__file__).resolve().parent
SMOKE = "smoke"
# A strategy's local method when the suite names none and no method it runs is usable here (its runs are then
# recorded unavailable or unsupported with the reason): the one every strategy ran by default in lcbench 0.1.0.
FALLBACK_LOCAL_METHOD = "blocksparse"
DEFAULT_WORKLOAD_MASKS = (MaskEntry(name="causal"),)
LENGTH_KEYS = ("seqlens", "seqlens_per_device")  # a profile giving one form of lengths replaces both
# Run fields a workload run takes from its explicit parameters, when the workload has such a parameter.
RUN_FIELDS_FROM_PARAMS = ("method", "strategy")
# Parameters that give a workload's head count, in order of preference (for building its masks at load time).
HEADS_PARAMS = ("heads_q", "heads")
MAX_RUNS = 100_000  # a bigger sweep is a mistake (or a profile's job): refused before a single run is made
MASK_BYTES_PER_ROW = 64  # the least a mask costs per row at build time (lo, hi, step int64 + temporaries)


@dataclass(frozen=True)
class Suite:
    name: str
    description: str
    runs: tuple[Run, ...]
    path: Optional[Path] = None
    profile: Optional[str] = None  # the profile whose overrides were applied (None: the base keys)
    # key of a run whose local method the suite left to the strategy -> the same run with the local method
    # lcbench 0.1.0 chose for every strategy (FALLBACK_LOCAL_METHOD): what ``resumed`` finds in an old file.
    former: Mapping[str, Run] = field(default_factory=dict)

    def resumed(self, done: set[str]) -> list[Run]:
        """The runs, each replaced by its 0.1.0 form where that one is already stored (``done``: stored keys),
        so ``--resume`` on a results file of an older lcbench re-runs nothing it holds."""
        return [self.former[r.key] if r.key not in done and self.former.get(r.key, r).key in done else r
                for r in self.runs]


def suite_path(name_or_path: str) -> Path:
    """A suite by name (``suites/NAME.yaml``) or by path."""
    p = Path(name_or_path)
    if p.suffix in (".yaml", ".yml") and p.is_file():
        return p
    candidate = SUITES_DIR / f"{name_or_path}.yaml"
    if candidate.is_file():
        return candidate
    if p.suffix in (".yaml", ".yml") or len(p.parts) > 1:
        state = "is a directory" if p.is_dir() else "does not exist"
        raise UserError(f"suite file {name_or_path!r} {state} (suites by name: {', '.join(available_suites())})")
    raise unknown("suite", name_or_path, available_suites())


def available_suites() -> list[str]:
    return sorted(p.stem for p in SUITES_DIR.glob("*.yaml"))


def suite_profiles(name_or_path: str) -> list[str]:
    """The profiles a suite defines (validated: a broken suite is its one-line error)."""
    path = suite_path(name_or_path)
    return sorted(validate_file(read_suite_file(path), path.name).profiles or {})


def load_suite(name_or_path: str, profile: Optional[str] = None, max_world_size: Optional[int] = None) -> Suite:
    """Read, validate and expand a suite; ``max_world_size`` (when given) bounds its world sizes."""
    path = suite_path(name_or_path)
    return parse_suite(read_suite_file(path), path, profile, max_world_size)


def parse_suite(
    data: Any, path: Optional[Path] = None, profile: Optional[str] = None, max_world_size: Optional[int] = None
) -> Suite:
    """Validate parsed suite data and expand it into runs (see the module docstring)."""
    where = path.name if path else "suite"
    file = validate_file(data, where)
    profile = profile if profile is not None else _default_profile(file.profiles or {})
    keys = _Merged(file, profile, where)
    expansion = _Expansion(keys, where, max_world_size)
    runs = expansion.runs()
    return Suite(name=file.name, description=file.description or "", runs=tuple(runs), path=path, profile=profile,
                 former=expansion.former)


def _default_profile(profiles: dict) -> Optional[str]:
    if not profiles:
        return None
    import torch

    preferred = "gpu" if torch.cuda.is_available() else "cpu"
    return preferred if preferred in profiles else None


class _Merged:
    """The base keys with a profile's overrides applied, remembering where each key came from."""

    def __init__(self, file: SuiteFile, profile: Optional[str], where: str) -> None:
        self.values: dict[str, Any] = {k: getattr(file, k) for k in file.model_fields_set
                                       if k not in ("name", "profiles")}
        self.prefix: dict[str, str] = {}
        if profile is not None:
            profiles = file.profiles or {}
            if profile not in profiles:
                raise unknown(f"profile of {where}", profile, profiles or ["(none defined)"])
            overrides: Keys = profiles[profile]
            if set(LENGTH_KEYS) & overrides.model_fields_set:
                for k in LENGTH_KEYS:
                    self.values.pop(k, None)
            for k in overrides.model_fields_set:
                self.values[k] = getattr(overrides, k)
                self.prefix[k] = f"profiles.{profile}."
        self.values = {k: v for k, v in self.values.items() if v is not None}  # null removes a key

    def get(self, key: str, default: Any = None) -> Any:
        return self.values.get(key, default)

    def has(self, key: str) -> bool:
        return key in self.values

    def path(self, key: str, index: Optional[int] = None) -> str:
        """The dotted path of ``key`` (``profiles.cpu.masks[2]`` when the profile set it)."""
        return self.prefix.get(key, "") + key + (f"[{index}]" if index is not None else "")


def is_sweep(value: Any, default: Any) -> bool:
    """A list is a sweep axis, unless the default is itself a list: then only a list of lists is."""
    if not isinstance(value, list):
        return False
    if isinstance(default, (list, tuple)):
        return bool(value) and all(isinstance(v, list) for v in value)
    return True


def grid(values: dict[str, Any], defaults: dict[str, Any], where: str) -> list[dict[str, Any]]:
    """The cartesian product of the sweep axes of ``values`` (see :func:`is_sweep`), in key order."""
    axes = []
    for key, value in values.items():
        if is_sweep(value, defaults.get(key)):
            if not value:
                raise UserError(f"{where}.{key}=[] is empty; expected a value or a non-empty list to sweep")
            axes.append([(key, v) for v in value])
        else:
            axes.append([(key, value)])
    return [dict(point) for point in itertools.product(*axes)]


def grid_size(values: dict[str, Any], defaults: dict[str, Any]) -> int:
    """How many points :func:`grid` would make, without making them."""
    return math.prod(len(v) for k, v in values.items() if is_sweep(v, defaults.get(k)))


def _memory_bytes() -> int:
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def _lookup(registry: str, name: str) -> Any:
    from harness.catalog import lookup

    return lookup(registry, name)


@functools.lru_cache(maxsize=256)
def _check_mask(name: str, seqlen: int, heads: int, params: tuple) -> None:
    """Build the mask once per (length, heads, parameters): its own checks are the parameter checks."""
    from harness.masks import build_mask

    build_mask(name, seqlen, heads, **{k: list(v) if isinstance(v, tuple) else v for k, v in params})


def _freeze(params: dict) -> tuple:
    return tuple(sorted((k, tuple(v) if isinstance(v, list) else v) for k, v in params.items()))


class _Expansion:
    """The runs of merged suite keys, and the checks that need the whole sweep."""

    def __init__(self, keys: _Merged, where: str, max_world_size: Optional[int]) -> None:
        self.k, self.where, self.max_world_size = keys, where, max_world_size
        self._require()
        self.timing: Timing = keys.get("timing").timing() if keys.has("timing") else Timing()
        self.device: str = keys.get("device", "cpu")
        self.dtypes: list[str] = keys.get("dtypes", ["float32"])
        self.directions: list[str] = keys.get("directions", ["fwd"])
        self.decode_tokens: int = keys.get("decode_tokens", 1)
        self.world_sizes: list[int] = keys.get("world_sizes", [1])
        self.per_device = keys.has("seqlens_per_device")
        self.seqlens: list[int] = keys.get("seqlens_per_device" if self.per_device else "seqlens")
        self.masks: tuple[MaskEntry, ...] = tuple(keys.get("masks", ()))
        self.mask_checks: set[tuple[int, int, int]] = set()  # (mask index, seqlen, heads) to build once
        self.former: dict[str, Run] = {}  # see Suite.former

    # ----- structure ------------------------------------------------------------------------------------

    def _require(self) -> None:
        k, where = self.k, self.where
        if not (k.has("methods") or k.has("strategies") or k.has("workloads")):
            raise UserError(f"{where}: needs 'methods', 'strategies' or 'workloads' (a non-empty list)")
        if k.has("seqlens") == k.has("seqlens_per_device"):
            raise UserError(f"{where}: give exactly one of 'seqlens' (total length) or 'seqlens_per_device' "
                            f"(weak scaling)")
        attention = k.has("methods") or k.has("strategies")
        for key in ("masks", "shapes"):
            if attention and not k.has(key):
                raise UserError(f"{where}: missing required key {key!r} (needed by methods and strategies)")
        if k.has("phases") and not k.has("workloads"):
            raise UserError(f"{where}: {k.path('phases')}={k.get('phases')!r} is given but the suite has no "
                            f"'workloads'; expected 'directions' for methods and strategies")
        if k.has("directions") and not attention:
            raise UserError(f"{where}: {k.path('directions')}={k.get('directions')!r} is given but the suite has "
                            f"no 'methods' or 'strategies'; expected 'phases' for workloads")
        if k.has("local_method") and not k.has("strategies"):
            raise UserError(f"{where}: {k.path('local_method')}={k.get('local_method')!r} is given but the suite "
                            f"has no 'strategies'")

    def runs(self) -> list[Run]:
        from harness.catalog import get_method, get_strategy

        k = self.k
        methods = [get_method(m) for m in k.get("methods", [])]
        strategies = [get_strategy(s) for s in k.get("strategies", [])]
        points = self._workload_points()
        self.options = self._options(methods, strategies, points)
        self._check_size(methods, strategies, points)
        self._check_lengths()
        runs = self._attention_runs(methods, strategies) + self._workload_runs(points)
        self._check_decode_tokens(runs)
        self._check_world_sizes(runs)
        self._check_masks()
        runs.sort(key=lambda r: r.world_size)  # a group of ranks is built once per size
        return runs

    def _seqlen(self, seqlen: int, world_size: int) -> int:
        return seqlen * world_size if self.per_device else seqlen

    def _decode_tokens(self, direction: str) -> int:
        return self.decode_tokens if direction == DECODE else 1

    # ----- methods and strategies -----------------------------------------------------------------------

    def _attention_runs(self, methods: list, strategies: list) -> list[Run]:
        from harness.catalog import get_method

        k = self.k
        if not methods and not strategies:
            return []
        local = k.get("local_method")
        if local is not None:
            get_method(local)
        options = self.options
        who = [(m.name, None, 1) for m in methods] + [(local or self._default_local(s), s.name, ws)
                                                      for s in strategies for ws in self.world_sizes]
        implicit = {s.name for s in strategies} if local is None else set()
        shapes = k.get("shapes")
        runs = []
        for (method, strategy, ws), opts, (i, mask), seqlen, shape, dtype, direction in itertools.product(
            who, options, enumerate(self.masks), self.seqlens, shapes, self.dtypes, self.directions
        ):
            fields = shape.run_fields()
            self.mask_checks.add((i, self._seqlen(seqlen, ws), fields["heads_q"]))
            runs.append(Run.make(
                method=method, strategy=strategy, world_size=ws, mask=mask.name, mask_params=mask.params,
                seqlen=self._seqlen(seqlen, ws), dtype=dtype, direction=direction, device=self.device,
                timing=self.timing, options=opts, decode_tokens=self._decode_tokens(direction), **fields,
            ))
            if strategy in implicit and method != FALLBACK_LOCAL_METHOD:
                self.former[runs[-1].key] = replace(runs[-1], method=FALLBACK_LOCAL_METHOD)
        return runs

    def _default_local(self, strategy) -> str:
        """A strategy's local method when the suite names none: the fastest it runs on the suite's device
        (``KernelSource.default_method``; ``lcbench list strategies`` shows it)."""
        from harness.catalog import methods

        return strategy.local_methods.default_method(self.device, methods()) or FALLBACK_LOCAL_METHOD

    def _options(self, methods: list, strategies: list, points: list["_Point"]) -> list[dict[str, Any]]:
        """The option sets (sweep axes expanded), after checking the keys against the declared options.

        Strategies declare theirs (plus the common ones and every method's, which their local kernels take);
        methods only when their ``options`` is non-empty;
        a workload the options of the methods and strategies its parameters name (plus the common ones when it
        runs on rank groups). An option must be known to at least one declaring subject; the check is skipped
        when none declares (a suite of methods that declare no options)."""
        from harness.catalog import methods as registered_methods
        from harness.interfaces.strategy import COMMON_OPTIONS

        given: dict[str, Any] = self.k.get("options", {})
        # as at run time (CPProblem.of): a strategy takes the common options, its own and any method's
        local = {name: None for m in registered_methods().values() for name in m.options} if strategies else {}
        declaring = [(f"strategy {s.name!r}", {**dict.fromkeys(COMMON_OPTIONS), **local, **s.options})
                     for s in strategies]
        declaring += [(f"method {m.name!r}", m.options) for m in methods if m.options]
        declaring += _workload_options(points)
        defaults: dict[str, Any] = {}
        for _, opts in declaring:
            for name, default in opts.items():
                defaults.setdefault(name, default)
        if declaring:
            for key in given:
                if key not in defaults:
                    owners = ", ".join(who for who, _ in declaring[:3]) + (", ..." if len(declaring) > 3 else "")
                    raise UserError(f"{self.where}: {self.k.path('options')}.{key}: "
                                    f"{unknown(f'option of {owners}', key, defaults or ['(none)'])}")
        self._check_size_of("options", grid_size(given, defaults))
        return grid(given, defaults, f"{self.where}: {self.k.path('options')}")

    # ----- workloads ------------------------------------------------------------------------------------

    def _workload_points(self) -> list["_Point"]:
        """Every workload entry's parameter points (its sweep axes expanded), each resolved and checked against
        what the workload declares: a bad value is one line naming ``workloads[i].KEY``."""
        from harness.catalog import get_workload

        points = []
        for i, entry in enumerate(self.k.get("workloads", [])):
            workload, at = get_workload(entry.name), self.k.path("workloads", i)
            self._check_size_of(at, grid_size(entry.params, workload.params))
            for params in grid(entry.params, workload.params, f"{self.where}: {at}"):
                try:
                    resolved = workload.resolve_params(params, _lookup)
                except ParamError as e:
                    raise UserError(f"{self.where}: {at}.{e.detail()} (workload {workload.name!r})") from None
                except UserError as e:
                    raise UserError(f"{self.where}: {at}: {e}") from None
                points.append(_Point(i, at, workload, params, resolved, self._run_fields(params, workload, at)))
        return points

    def _workload_runs(self, points: list["_Point"]) -> list[Run]:
        if not points:
            return []
        phases = self._phases([p.workload for p in points])
        masks = self.masks or DEFAULT_WORKLOAD_MASKS
        runs = []
        for point in points:
            workload, params = point.workload, point.params
            own_phases = [p for p in (phases or workload.phases) if p in workload.phases]
            sizes = self.world_sizes if workload.distributed else [1]
            heads = next((point.resolved[p] for p in HEADS_PARAMS if isinstance(point.resolved.get(p), int)), 1)
            for ws, opts, (j, mask), seqlen, dtype, phase in itertools.product(
                sizes, self.options, enumerate(masks), self.seqlens, self.dtypes, own_phases
            ):
                if self.masks:
                    self.mask_checks.add((j, self._seqlen(seqlen, ws), heads))
                runs.append(Run.make(
                    workload=workload.name, params=params, world_size=ws, mask=mask.name,
                    mask_params=mask.params, seqlen=self._seqlen(seqlen, ws), dtype=dtype, phase=phase,
                    device=self.device, timing=self.timing, options=opts,
                    decode_tokens=self._decode_tokens(phase), **point.subject,
                ))
        return runs

    def _phases(self, workloads: list) -> Optional[list[str]]:
        phases: Optional[list[str]] = self.k.get("phases")
        if phases is None:
            return None
        known = {p for w in workloads for p in w.phases}
        for j, phase in enumerate(phases):
            if phase not in known:
                raise UserError(f"{self.where}: {self.k.path('phases', j)}: {unknown('phase', phase, known)}")
        return phases

    def _run_fields(self, params: dict, workload: Any, at: str) -> dict[str, str]:
        """``method`` / ``strategy`` of a workload run: the ones its explicit parameters name (checked)."""
        from harness.catalog import get_method, get_strategy

        lookups = {"method": get_method, "strategy": get_strategy}
        out = {}
        for name in RUN_FIELDS_FROM_PARAMS:
            value = params.get(name)
            if name in workload.params and isinstance(value, str):
                try:
                    lookups[name](value)
                except UserError as e:
                    raise UserError(f"{self.where}: {at}.{name}: {e}") from None
                out[name] = value
        return out

    # ----- checks over the whole sweep ------------------------------------------------------------------

    def _check_size_of(self, what: str, count: int) -> None:
        if count > MAX_RUNS:
            raise UserError(f"{self.where}: {what} sweeps {count} points; expected at most {MAX_RUNS} runs in a "
                            f"suite (split it, or give a profile a subset)")

    def _check_size(self, methods: list, strategies: list, points: list["_Point"]) -> None:
        """The number of runs, counted from the lists before any run is made (at most :data:`MAX_RUNS`)."""
        k = self.k
        common = len(self.options) * len(self.seqlens) * len(self.dtypes)
        subjects = len(methods) + len(strategies) * len(self.world_sizes)
        count = subjects * common * len(self.masks) * len(k.get("shapes") or [None]) * len(self.directions)
        for point in points:
            sizes = len(self.world_sizes) if point.workload.distributed else 1
            count += sizes * common * len(self.masks or DEFAULT_WORKLOAD_MASKS) * len(point.workload.phases)
        if count > MAX_RUNS:
            axes = {key: len(k.get(key)) for key in ("methods", "strategies", "workloads", "masks", "seqlens",
                                                     "seqlens_per_device", "shapes", "dtypes", "directions",
                                                     "world_sizes") if isinstance(k.get(key), list)}
            largest = ", ".join(f"{k.path(key)} ({n})" for key, n in sorted(axes.items(), key=lambda a: -a[1])[:3])
            raise UserError(f"{self.where}: the sweep expands to {count} runs; expected at most {MAX_RUNS} "
                            f"(the longest lists: {largest}; option and parameter axes multiply them)")

    def _check_lengths(self) -> None:
        """Every run's length must leave room for its mask in this machine's memory (masks are built here)."""
        have = _memory_bytes()
        key = "seqlens_per_device" if self.per_device else "seqlens"
        for j, seqlen in enumerate(self.seqlens):
            longest = self._seqlen(seqlen, max(self.world_sizes))
            need = longest * MASK_BYTES_PER_ROW
            if need > have:
                raise UserError(f"{self.where}: {self.k.path(key, j)}={seqlen} is not allowed; a mask of {longest} "
                                f"rows needs at least {need / 2**30:.0f} GiB, more than this machine's "
                                f"{have / 2**30:.0f} GiB (expected at most {have // MASK_BYTES_PER_ROW} tokens)")

    def _check_decode_tokens(self, runs: Iterable[Run]) -> None:
        """A decode step's rows are the last ``decode_tokens`` of the sequence: never more than the sequence."""
        shortest = min((r.seqlen for r in runs if r.timed == DECODE), default=None)
        if shortest is not None and self.decode_tokens > shortest:
            raise UserError(f"{self.where}: {self.k.path('decode_tokens')}={self.decode_tokens} is not allowed; "
                            f"expected at most the shortest decode run's length ({shortest} tokens)")

    def _check_world_sizes(self, runs: Iterable[Run]) -> None:
        if self.max_world_size is None:
            return
        used = {r.world_size for r in runs}
        for j, ws in enumerate(self.world_sizes):
            if ws in used and ws > self.max_world_size:
                raise UserError(f"{self.where}: {self.k.path('world_sizes', j)}={ws} is not allowed; expected "
                                f"world sizes <= {self.max_world_size} (the devices available)")

    def _check_masks(self) -> None:
        for i, seqlen, heads in sorted(self.mask_checks):
            mask = self.masks[i]
            try:
                _check_mask(mask.name, seqlen, heads, _freeze(mask.params))
            except UserError as e:
                raise UserError(f"{self.where}: {self.k.path('masks', i)} ({mask.name} at seqlen {seqlen}, "
                                f"{heads} heads): {e}") from None
            except Exception as e:  # noqa: BLE001 — any failure to build is a parameter the pattern rejects
                raise UserError(f"{self.where}: {self.k.path('masks', i)} ({mask.name} at seqlen {seqlen}, "
                                f"{heads} heads): parameters {mask.params!r} fail: {type(e).__name__}: {e}") from None


@dataclass(frozen=True)
class _Point:
    """One parameter point of a workload entry: where it is (``workloads[i]``), as given and resolved."""

    index: int
    at: str
    workload: Any
    params: dict[str, Any]
    resolved: dict[str, Any]
    subject: dict[str, str]  # the run fields its parameters name (method, strategy), checked


def _workload_options(points: list[_Point]) -> list[tuple[str, dict[str, Any]]]:
    """(who, the options it accepts) of each workload point: the options of the methods and strategies its
    parameters name (declared :class:`~harness.interfaces.Param` registries, or a plain ``method`` /
    ``strategy`` parameter), and the common strategy options when the workload runs on rank groups."""
    from harness.interfaces.strategy import COMMON_OPTIONS

    out = []
    for point in points:
        workload, accepted = point.workload, {}
        if workload.distributed:
            accepted.update(dict.fromkeys(COMMON_OPTIONS))
        for key, value in point.resolved.items():
            spec = workload.specs.get(key)
            registry = spec.registry if spec is not None else (key if key in RUN_FIELDS_FROM_PARAMS else "")
            if registry in RUN_FIELDS_FROM_PARAMS and isinstance(value, str):
                accepted.update(_lookup(registry, value).options)
        out.append((f"workload {workload.name!r}", accepted))
    return out
