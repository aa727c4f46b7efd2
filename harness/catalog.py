"""The catalog: every method, strategy and workload lcbench knows, by name.

The only harness module that imports the plugin packages. Each registry is the built-ins (``methods.BUILTIN``,
``context_parallel.BUILTIN``, ``harness.workloads.BUILTIN``), then the lists of the modules named in
``LCBENCH_PLUGINS`` (``METHODS``, ``STRATEGIES``, ``WORKLOADS``), then the entry points of the groups
``lcbench.methods``, ``lcbench.strategies``, ``lcbench.workloads``. A broken plugin is one clear line.
"""

from __future__ import annotations

import functools
import importlib
import os
from importlib.metadata import entry_points
from types import ModuleType

from harness.errors import UserError, unknown
from harness.interfaces import LocalKernel, Method, Strategy, Workload
from harness.interfaces.linear_kernel import LinearKernel

PLUGINS_ENV = "LCBENCH_PLUGINS"


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
    from harness.workloads import BUILTIN

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
