"""The catalog: every method, strategy and workload lcbench knows, by name.

The only harness module that imports the plugin packages. Each registry is the built-ins (``methods.BUILTIN``,
``context_parallel.BUILTIN``, ``workloads.BUILTIN``), then the lists of the modules named in
``LCBENCH_PLUGINS`` (``METHODS``, ``STRATEGIES``, ``WORKLOADS``), then the entry points of the groups
``lcbench.methods``, ``lcbench.strategies``, ``lcbench.workloads``. A broken plugin is one clear line.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
import os
from importlib.metadata import entry_points
from types import CodeType, ModuleType
from typing import Any, Callable

from harness import quiet
from harness.errors import UserError, unknown
from harness.interfaces import LocalKernel, Method, Strategy, Workload
from harness.interfaces.linear_kernel import LinearKernel

PLUGINS_ENV = "LCBENCH_PLUGINS"
quiet.silence()  # before any plugin imports its libraries: their noise that does not concern the user


def plugin_modules() -> list[ModuleType]:
    """Modules named in ``LCBENCH_PLUGINS`` (comma-separated). Env vars reach Ray workers and ranks."""
    names = [n.strip() for n in os.environ.get(PLUGINS_ENV, "").split(",") if n.strip()]
    modules = []
    for name in names:
        try:
            modules.append(importlib.import_module(name))
        except Exception as e:  # noqa: BLE001 — any import failure of a user's module is theirs to fix
            raise UserError(f"{PLUGINS_ENV}: cannot import module {name!r}: {type(e).__name__}: {e}") from None
    return modules


def collect(builtin: list, group: str, attr: str, kind: type) -> dict:
    """Built-ins, then ``LCBENCH_PLUGINS`` modules' ``attr`` lists, then entry points of ``group``, by name."""
    found = {item.name: item for item in builtin}
    extra = [(f"{PLUGINS_ENV} module {m.__name__}.{attr}", item) for m in plugin_modules()
             for item in getattr(m, attr, [])]
    for ep in entry_points(group=group):
        try:
            extra.append((f"entry point {ep.name} of {group}", ep.load()))
        except Exception as e:  # noqa: BLE001
            raise UserError(f"entry point {ep.name} of {group} ({ep.value}) failed to load: "
                            f"{type(e).__name__}: {e}") from None
    for where, item in extra:
        if not isinstance(item, kind):
            raise UserError(f"{where}: {item!r} is not an lcbench {kind.__name__}")
        found.setdefault(item.name, item)
    return found


_BUILDING: set[str] = set()  # LCBENCH_PLUGINS values whose registries (any of them) are being built now


def _cached_per_plugins(build):
    """Cache a registry per value of ``LCBENCH_PLUGINS``: a process forked before the variable was set (a
    forkserver that warmed the catalog) sees the plugins of the run's environment. ``cache_clear`` empties it.

    A plugin module that looks an entry up while it is being imported (``get_strategy("ulysses")`` at its top
    level) re-enters the catalog: while *any* registry of that plugin value is being built, every registry it
    asks for is built partially (its own module is still half-imported, so its lists are missing) and returned
    uncached — one registry's build never caches another registry without the plugin's entries (a strategy
    plugin imported first by ``methods()``, as the rank processes' forkserver does, stays a known strategy)."""
    cache: dict[str, dict] = {}

    @functools.wraps(build)
    def registry():
        key = os.environ.get(PLUGINS_ENV, "")
        if key in cache:
            return cache[key]
        if key in _BUILDING:
            return build()
        _BUILDING.add(key)
        try:
            cache[key] = build()
        finally:
            _BUILDING.discard(key)
        return cache[key]

    registry.cache_clear = cache.clear
    return registry


@_cached_per_plugins
def methods() -> dict[str, Method]:
    """All registered methods by name."""
    from methods import BUILTIN

    return collect(BUILTIN, "lcbench.methods", "METHODS", Method)


@_cached_per_plugins
def strategies() -> dict[str, Strategy]:
    """All registered context-parallel strategies by name."""
    from context_parallel import BUILTIN

    return collect(BUILTIN, "lcbench.strategies", "STRATEGIES", Strategy)


@_cached_per_plugins
def workloads() -> dict[str, Workload]:
    """All registered model-level workloads by name."""
    from workloads import BUILTIN

    return collect(BUILTIN, "lcbench.workloads", "WORKLOADS", Workload)


def get_method(name: str) -> Method:
    registry = methods()
    if name not in registry:
        raise unknown("method", name, registry)
    return registry[name]


def local_kernels() -> dict[str, LocalKernel]:
    """The methods that can be a context-parallel strategy's local kernel, by name (``Method.local_kernel``)."""
    return {name: m.local_kernel for name, m in methods().items() if m.local_kernel is not None}


def linear_kernels() -> dict[str, LinearKernel]:
    """The linear-attention methods a linear CP strategy can run, by name (``Method.linear_kernel``)."""
    return {name: m.linear_kernel for name, m in methods().items() if m.linear_kernel is not None}


def get_strategy(name: str) -> Strategy:
    registry = strategies()
    if name not in registry:
        raise unknown("strategy", name, registry)
    return registry[name]


def get_workload(name: str) -> Workload:
    registry = workloads()
    if name not in registry:
        raise unknown("workload", name, registry)
    return registry[name]


REGISTRIES = {"method": get_method, "strategy": get_strategy, "workload": get_workload}


def lookup(registry: str, name: str):
    """The entry ``name`` of ``registry`` ("method", "strategy", "workload"): the resolver of declared
    parameters that name one (:class:`harness.interfaces.params.Param`'s ``registry``)."""
    if registry not in REGISTRIES:
        raise unknown("registry", registry, REGISTRIES)
    return REGISTRIES[registry](name)


# ----- whose code is this? ---------------------------------------------------------------------------------

def _code_of(value: Any, default: Any, depth: int = 0) -> list[Callable]:
    """The functions an entry's field holds (a function, a partial, or a dataclass of functions such as a
    LocalKernel), unless it is the interface's own default."""
    if value is default or value is None:
        return []
    if isinstance(value, functools.partial):
        value = value.func
    if dataclasses.is_dataclass(value) and not isinstance(value, type) and depth == 0:
        return [fn for f in dataclasses.fields(value) for fn in _code_of(getattr(value, f.name), None, 1)]
    return [value] if callable(value) and hasattr(value, "__module__") else []


def _nested(code: CodeType) -> list[CodeType]:
    """A code object and those of the functions defined inside it (closures, lambdas), recursively."""
    return [code, *(c for const in code.co_consts if isinstance(const, CodeType) for c in _nested(const))]


@dataclasses.dataclass(frozen=True)
class CodeOwners:
    """Which registered methods, strategies and workloads a piece of code belongs to: by function (an entry's
    callables — build, flops, limits, attention, a local kernel's functions — and the functions defined inside
    them) and by module (the modules those callables live in; helpers of the module count as its owners')."""

    by_code: dict[CodeType, tuple[str, ...]]
    by_module: dict[str, tuple[str, ...]]


@_cached_per_plugins
def code_owners() -> CodeOwners:
    interfaces = Method.__module__.rpartition(".")[0]  # the interfaces are lcbench's code, not a plugin's
    by_code: dict[CodeType, list[str]] = {}
    by_module: dict[str, list[str]] = {}
    for registry in (methods(), strategies(), workloads()):
        for name, entry in registry.items():
            for fn in (fn for f in dataclasses.fields(entry) for fn in _code_of(getattr(entry, f.name), f.default)):
                module = fn.__module__ or ""
                if module == interfaces or module.startswith(interfaces + "."):
                    continue
                _add(by_module, module, name)
                for code in _nested(fn.__code__) if hasattr(fn, "__code__") else ():
                    _add(by_code, code, name)
    return CodeOwners({c: tuple(n) for c, n in by_code.items()}, {m: tuple(n) for m, n in by_module.items()})


def _add(owners: dict, key: Any, name: str) -> None:
    names = owners.setdefault(key, [])
    if name not in names:
        names.append(name)
