"""Plugin discovery: built-in plugins, then entry points of group ``mmzoo``.

Every plugin of a registry sits on one pluggy :class:`~pluggy.PluginManager`
(:func:`plugin_manager`). Discovery has two steps:

1. each plugin is imported and added to the manager inside its own
   try/except, so a broken plugin is reported and the others keep working
   (pluggy's ``load_setuptools_entrypoints`` over the whole group stops at the
   first failure and silently keeps one of two same-named entry points).
   Entry points are imported by pluggy's ``load_setuptools_entrypoints``, one
   name at a time, so that ``list_plugin_distinfo`` holds each plugin's
   distribution (what :class:`PluginInfo` and ``mmzoo plugins`` report;
   built-ins are ``mmzoo <version>``);
2. each plugin's ``mmzoo_register`` is called through pluggy (which passes an
   implementation only the arguments it names) inside the registry's
   :meth:`~mmzoo.registry.Registry.plugin` transaction, so a plugin failing
   half-way leaves nothing behind. Plugins are called in discovery order
   (built-ins first); ``@hookimpl(tryfirst=True)`` / ``(trylast=True)`` move a
   plugin to the front / back (a ``trylast`` plugin sees what every other
   plugin registered).

Environment controls:

- ``MMZOO_LOAD_PLUGINS``: unset loads every installed plugin; empty loads
  the built-ins only; otherwise a comma list of third-party plugin names to
  load (built-ins are always loaded unless disabled).
- ``MMZOO_DISABLE_PLUGINS``: a comma list of plugin names (built-ins too) not
  to load; they are blocked on the plugin manager.
- ``MMZOO_STRICT_PLUGINS=1``: a plugin that fails raises :class:`PluginError`.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
import time
import warnings
import weakref
from dataclasses import dataclass, field
from importlib import import_module, metadata
from typing import Any, Callable, Iterator

import pluggy

from mmzoo import hookspecs
from mmzoo.errors import PluginError
from mmzoo.registry import Registry

__all__ = [
    "BUILTIN_PLUGINS",
    "ENTRY_POINT_GROUP",
    "HEAVY_MODULES",
    "PluginInfo",
    "PluginWarning",
    "default_registry",
    "discover",
    "plugin_manager",
    "register_plugin",
    "use_registry",
]

ENTRY_POINT_GROUP = "mmzoo"
HEAVY_MODULES = ("torch", "timm", "transformers", "torchvision", "tokenizers")

#: Built-in plugins, registered first through the same hook a third-party plugin uses.
BUILTIN_PLUGINS = {
    "timm": "mmzoo.builtin.timm_plugin",
    "text": "mmzoo.builtin.text_plugin",
    "hf": "mmzoo.builtin.hf_plugin",
    "tables": "mmzoo.builtin.tabular_plugin",
    "fusions": "mmzoo.builtin.fusions_plugin",
    "tasks": "mmzoo.builtin.tasks_plugin",
}


class PluginWarning(UserWarning):
    """A plugin failed to load; the others were loaded."""


@dataclass
class PluginInfo:
    """What discovery learned about one plugin."""

    name: str
    distribution: str | None = None
    version: str | None = None
    module: str | None = None
    builtin: bool = False
    status: str = "ok"  # "ok" | "error" | "disabled"
    error: str | None = None
    components: list[str] = field(default_factory=list)
    load_seconds: float = 0.0
    heavy_imports: list[str] = field(default_factory=list)


# ------------------------------------------------------------ the manager

_MANAGERS: weakref.WeakKeyDictionary[Registry, pluggy.PluginManager] = weakref.WeakKeyDictionary()
_MANAGERS_LOCK = threading.Lock()


def plugin_manager(registry: Registry) -> pluggy.PluginManager:
    """The one pluggy manager holding every plugin registered into ``registry``."""
    with _MANAGERS_LOCK:
        manager = _MANAGERS.get(registry)
        if manager is None:
            manager = _MANAGERS[registry] = pluggy.PluginManager("mmzoo")
            manager.add_hookspecs(hookspecs)
        return manager


# ------------------------------------------------------------ failures


def _env_list(name: str) -> list[str] | None:
    value = os.environ.get(name)
    if value is None:
        return None
    return [item.strip() for item in value.split(",") if item.strip()]


def _strict() -> bool:
    return os.environ.get("MMZOO_STRICT_PLUGINS", "").strip().lower() in {"1", "true", "yes", "on"}


def _fail(registry: Registry, info: PluginInfo, message: str, exc: BaseException | None) -> None:
    """Record why the plugin failed (anything it raised, ``SystemExit``
    included) and take it off the manager; a real Ctrl-C is recorded, then
    re-raised so that the program stops."""
    try:
        _record_failure(registry, info, message, exc)
    finally:
        if isinstance(exc, KeyboardInterrupt):
            raise exc


def _record_failure(registry: Registry, info: PluginInfo, message: str, exc: BaseException | None) -> None:
    manager = plugin_manager(registry)
    if manager.has_plugin(info.name):
        manager.unregister(name=info.name)
    registry.plugins[info.name] = info
    info.status = "error"
    info.error = message
    info.components.clear()
    if _strict():
        raise PluginError(f"plugin {info.name!r} failed to load: {message}") from exc
    warnings.warn(
        f"mmzoo plugin {info.name!r} failed to load and was skipped: {message} "
        "(set MMZOO_STRICT_PLUGINS=1 to make this an error)",
        PluginWarning,
        stacklevel=2,
    )


# ------------------------------------------------------------ the two steps


def _add(registry: Registry, plugin: Any, info: PluginInfo) -> bool:
    """Step 1: put ``plugin`` on the registry's manager; False when it was
    refused (recorded as an error, or as disabled when its name is blocked)."""
    manager = plugin_manager(registry)
    other = registry.plugins.get(info.name)
    if other is not None and other is not info and other.status == "ok":
        info.name = f"{info.name} ({info.distribution or info.module})"
        _fail(registry, info, f"plugin name {other.name!r} is already used by "
              f"{other.distribution or other.module}; plugin names must be unique", None)
        return False
    registry.plugins[info.name] = info
    if manager.is_blocked(info.name):
        info.status = "disabled"
        return False
    try:
        _require_hashable(plugin)
        if manager.get_plugin(info.name) is not plugin:  # an entry point pluggy has registered already
            manager.register(plugin, name=info.name)
        if not any(impl.plugin is plugin for impl in manager.hook.mmzoo_register.get_hookimpls()):
            raise PluginError(
                "it implements no hook; decorate a function 'mmzoo_register(registry)' "
                "with @mmzoo.hookimpl"
            )
    except BaseException as exc:  # a hook that names arguments the spec lacks, a plugin object registered twice...
        _fail(registry, info, f"{type(exc).__name__}: {exc}", exc)
        return False
    return True


def _require_hashable(plugin: Any) -> None:
    try:
        hash(plugin)
    except TypeError:
        raise PluginError(f"a plugin is a module or a class instance (pluggy keeps plugins in sets), "
                          f"not an unhashable {type(plugin).__name__}") from None


def _call_order(manager: pluggy.PluginManager, added: list[tuple[Any, PluginInfo]]) -> list[tuple[Any, PluginInfo]]:
    """Discovery order, ``tryfirst`` plugins first and ``trylast`` ones last."""
    rank = {id(impl.plugin): 0 if impl.tryfirst else 2 if impl.trylast else 1
            for impl in manager.hook.mmzoo_register.get_hookimpls()}
    return sorted(added, key=lambda pair: rank.get(id(pair[0]), 1))


def _call(registry: Registry, plugin: Any, info: PluginInfo) -> None:
    """Step 2: run ``plugin``'s ``mmzoo_register`` through pluggy, all or nothing."""
    manager = plugin_manager(registry)
    others = [p for p in manager.get_plugins() if p is not plugin]
    hook = manager.subset_hook_caller("mmzoo_register", remove_plugins=others)
    start = time.perf_counter()
    try:
        with registry.plugin(info.name) as registered:
            hook(registry=registry)
        info.components = list(registered)
    except BaseException as exc:  # a broken plugin (even one calling sys.exit) never takes the others down
        _fail(registry, info, f"{type(exc).__name__}: {exc}", exc)
    info.load_seconds += time.perf_counter() - start


def _register_all(registry: Registry, added: list[tuple[Any, PluginInfo]]) -> None:
    for plugin, info in _call_order(plugin_manager(registry), added):
        _call(registry, plugin, info)


def register_plugin(registry: Registry, plugin: Any, name: str | None = None, *,
                    distribution: str | None = None, version: str | None = None,
                    builtin: bool = False) -> PluginInfo:
    """Add one plugin (a module or object implementing ``mmzoo_register``) to
    ``registry`` and run its hook.

    A plugin that raises or misbehaves is rolled back, recorded with status
    ``error`` and reported as a :class:`PluginWarning` (raised as
    :class:`PluginError` in strict mode).
    """
    info = PluginInfo(name=name or getattr(plugin, "__name__", repr(plugin)), distribution=distribution,
                      version=version, builtin=builtin, module=getattr(plugin, "__name__", None))
    if _add(registry, plugin, info):
        _register_all(registry, [(plugin, info)])
    return info


# ------------------------------------------------------------ discovery


def _distribution(entry_point: metadata.EntryPoint) -> tuple[str | None, str | None]:
    dist = getattr(entry_point, "dist", None)
    if dist is None:
        return None, None
    return dist.metadata["Name"], dist.version


def _import_timed(load: Callable[[], Any], info: PluginInfo) -> Any:
    """``load()``, recording its time and the heavy modules it pulled in on ``info``."""
    before = set(sys.modules)
    start = time.perf_counter()
    module = load()
    info.load_seconds = time.perf_counter() - start
    info.heavy_imports = sorted(m for m in HEAVY_MODULES if m in sys.modules and m not in before)
    return module


def _load(registry: Registry, info: PluginInfo, load: Callable[[], Any], what: str,
          added: list[tuple[Any, PluginInfo]]) -> None:
    """Import one plugin and add it to the manager; failures are recorded."""
    registry.plugins[info.name] = info
    try:
        plugin = _import_timed(load, info)
    except BaseException as exc:
        _fail(registry, info, f"cannot import {what!r}: {type(exc).__name__}: {exc}", exc)
        return
    if _add(registry, plugin, info):
        added.append((plugin, info))


def _load_entry_point(manager: pluggy.PluginManager, entry_point: metadata.EntryPoint, info: PluginInfo) -> Any:
    """Import one entry point through pluggy, which records its distribution
    (``list_plugin_distinfo``); ``info`` takes its name and version from there."""
    manager.load_setuptools_entrypoints(ENTRY_POINT_GROUP, name=entry_point.name)
    plugin = manager.get_plugin(entry_point.name)
    if plugin is None:
        raise PluginError(f"pluggy found no entry point {entry_point.name!r} in group {ENTRY_POINT_GROUP!r}")
    for registered, dist in manager.list_plugin_distinfo():
        if registered is plugin:
            info.distribution, info.version = dist.project_name, dist.version
    return plugin


def discover() -> Registry:
    """A new registry holding the built-in plugins, then every installed
    entry point of group ``mmzoo`` (as the environment controls allow)."""
    from mmzoo import __version__

    registry = Registry()
    manager = plugin_manager(registry)
    disabled = set(_env_list("MMZOO_DISABLE_PLUGINS") or [])
    wanted = _env_list("MMZOO_LOAD_PLUGINS")
    for name in disabled:
        manager.set_blocked(name)
    added: list[tuple[Any, PluginInfo]] = []

    for name, module_name in BUILTIN_PLUGINS.items():
        info = PluginInfo(name, "mmzoo", __version__, module_name, builtin=True)
        if manager.is_blocked(name):
            info.status = "disabled"
            registry.plugins[name] = info
            continue
        _load(registry, info, lambda m=module_name: import_module(m), module_name, added)

    for entry_point in metadata.entry_points(group=ENTRY_POINT_GROUP):
        dist_name, dist_version = _distribution(entry_point)
        name = entry_point.name
        info = PluginInfo(name, dist_name, dist_version, entry_point.value)
        if manager.is_blocked(name) or (wanted is not None and name not in wanted):
            if name not in registry.plugins:
                info.status = "disabled"
                registry.plugins[name] = info
            continue
        if name in registry.plugins:
            other = registry.plugins[name]
            info.name = f"{name} ({dist_name})"
            _fail(registry, info,
                  f"entry point name {name!r} is already used by {other.distribution or other.module}; "
                  "two plugins cannot share a name: uninstall one or rename its entry point", None)
            continue
        _load(registry, info, lambda ep=entry_point, i=info: _load_entry_point(manager, ep, i),
              entry_point.value, added)

    _register_all(registry, added)
    return registry


# ------------------------------------------------------------ the process default

_DEFAULT: Registry | None = None
_DEFAULT_LOCK = threading.RLock()
_DISCOVERING = False


def default_registry() -> Registry:
    """The process-wide registry: :func:`discover` on first use. In strict
    mode a discovery that failed is retried (and fails again) on every use."""
    global _DEFAULT, _DISCOVERING
    with _DEFAULT_LOCK:
        if _DEFAULT is None:
            if _DISCOVERING:  # a plugin's hook asked for it: that would discover forever
                raise PluginError("the default registry was used while it is being discovered; "
                                  "a plugin's mmzoo_register must use the registry it is given")
            _DISCOVERING = True
            try:
                _DEFAULT = discover()
            finally:
                _DISCOVERING = False
        return _DEFAULT


@contextlib.contextmanager
def use_registry(registry: Registry | None) -> Iterator[Registry | None]:
    """Make ``registry`` the process default (what ``mmzoo.create``,
    ``mmzoo.list_*`` and ``mmzoo.load`` use) inside the block; ``None``
    means "not discovered yet": the next use discovers afresh."""
    global _DEFAULT
    with _DEFAULT_LOCK:
        previous, _DEFAULT = _DEFAULT, registry
    try:
        yield registry
    finally:
        with _DEFAULT_LOCK:
            _DEFAULT = previous
