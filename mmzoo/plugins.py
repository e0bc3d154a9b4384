"""Plugin discovery: built-in plugins, then entry points of group ``mmzoo``.

Each plugin is loaded and registered on its own, inside its own try/except,
so a broken plugin is reported and the others keep working (pluggy's own
``load_setuptools_entrypoints`` stops at the first failure and silently
keeps one of two same-named entry points, so it is not used).

Environment controls:

- ``MMZOO_LOAD_PLUGINS``: unset loads every installed plugin; empty loads
  the built-ins only; otherwise a comma list of third-party plugin names to
  load (built-ins are always loaded unless disabled).
- ``MMZOO_DISABLE_PLUGINS``: a comma list of plugin names (built-ins too) not to load.
- ``MMZOO_STRICT_PLUGINS=1``: a plugin that fails raises :class:`PluginError`.
"""

from __future__ import annotations

import os
import sys
import time
import warnings
from importlib import import_module, metadata
from typing import Any

import pluggy

from mmzoo import hookspecs
from mmzoo.errors import PluginError
from mmzoo.registry import PluginInfo, Registry

__all__ = ["BUILTIN_PLUGINS", "ENTRY_POINT_GROUP", "PluginWarning", "load_plugins", "register_plugin"]

ENTRY_POINT_GROUP = "mmzoo"
HEAVY_MODULES = ("torch", "timm", "transformers", "torchvision", "tokenizers")

#: Built-in plugins, registered first through the same hook a third-party plugin uses.
BUILTIN_PLUGINS = {
    "timm": "mmzoo.builtin.timm_plugin",
    "text": "mmzoo.builtin.text_plugin",
    "hf": "mmzoo.builtin.hf_plugin",
    "fusions": "mmzoo.builtin.fusions_plugin",
    "tasks": "mmzoo.builtin.tasks_plugin",
}


class PluginWarning(UserWarning):
    """A plugin failed to load; the others were loaded."""


def _env_list(name: str) -> list[str] | None:
    value = os.environ.get(name)
    if value is None:
        return None
    return [item.strip() for item in value.split(",") if item.strip()]


def _strict() -> bool:
    return os.environ.get("MMZOO_STRICT_PLUGINS", "").strip().lower() in {"1", "true", "yes", "on"}


def _fail(registry: Registry, info: PluginInfo, message: str, exc: BaseException | None) -> None:
    """Roll the plugin back and record why (anything it raised, ``SystemExit``
    included); a real Ctrl-C is recorded, then re-raised so that the program stops."""
    try:
        _record_failure(registry, info, message, exc)
    finally:
        if isinstance(exc, KeyboardInterrupt):
            raise exc


def _record_failure(registry: Registry, info: PluginInfo, message: str, exc: BaseException | None) -> None:
    registry._remove_plugin(info.name)
    info.status = "error"
    info.error = message
    info.components.clear()
    if _strict():
        raise PluginError(f"plugin {info.name!r} failed to load: {message}") from exc
    warnings.warn(
        f"mmzoo plugin {info.name!r} failed to load and was skipped: {message} "
        "(set MMZOO_STRICT_PLUGINS=1 to make this an error)",
        PluginWarning,
        stacklevel=4,  # the caller of _fail
    )


def _manager() -> pluggy.PluginManager:
    manager = pluggy.PluginManager("mmzoo")
    manager.add_hookspecs(hookspecs)
    return manager


def register_plugin(registry: Registry, plugin: Any, name: str, *, distribution: str | None = None,
                    version: str | None = None, builtin: bool = False,
                    load_seconds: float = 0.0, heavy_imports: list[str] | None = None) -> PluginInfo:
    """Run one plugin's ``mmzoo_register`` hook against ``registry``.

    A plugin that raises or misbehaves is rolled back, recorded with status
    ``error`` and reported as a warning (or raised in strict mode).
    """
    info = PluginInfo(
        name=name, distribution=distribution, version=version, builtin=builtin,
        module=getattr(plugin, "__name__", None), load_seconds=load_seconds,
        heavy_imports=list(heavy_imports or []),
    )
    if name in registry.plugins and registry.plugins[name].status == "ok":
        other = registry.plugins[name]
        info.name = f"{name} ({distribution or info.module})"
        registry.plugins[info.name] = info
        _fail(registry, info, f"plugin name {name!r} is already used by "
              f"{other.distribution or other.module}; plugin names must be unique", None)
        return info
    registry.plugins[name] = info
    manager = _manager()
    start = time.perf_counter()
    try:
        manager.register(plugin, name=name)
        impls = [i for i in manager.hook.mmzoo_register.get_hookimpls() if i.plugin is plugin]
        if not impls:
            raise PluginError(
                "it implements no hook; decorate a function 'mmzoo_register(registry)' "
                "with @mmzoo.hookimpl"
            )
        with registry._plugin_context(name):
            for impl in impls:
                impl.function(registry=registry)
    except BaseException as exc:  # a broken plugin (even one calling sys.exit) never takes the others down
        _fail(registry, info, f"{type(exc).__name__}: {exc}", exc)
    info.load_seconds += time.perf_counter() - start
    return info


def _distribution(entry_point: metadata.EntryPoint) -> tuple[str | None, str | None]:
    dist = getattr(entry_point, "dist", None)
    if dist is None:
        return None, None
    return dist.metadata["Name"], dist.version


def _import_timed(module_name: str) -> tuple[Any, float, list[str]]:
    before = set(sys.modules)
    start = time.perf_counter()
    module = import_module(module_name)
    elapsed = time.perf_counter() - start
    heavy = sorted(m for m in HEAVY_MODULES if m in sys.modules and m not in before)
    return module, elapsed, heavy


def load_plugins(registry: Registry) -> None:
    """Register the built-in plugins, then every installed entry point."""
    disabled = set(_env_list("MMZOO_DISABLE_PLUGINS") or [])
    wanted = _env_list("MMZOO_LOAD_PLUGINS")
    from mmzoo import __version__

    for name, module_name in BUILTIN_PLUGINS.items():
        if name in disabled:
            registry.plugins[name] = PluginInfo(name, "mmzoo", __version__, module_name,
                                                builtin=True, status="disabled")
            continue
        try:
            module, seconds, heavy = _import_timed(module_name)
        except BaseException as exc:
            info = registry.plugins[name] = PluginInfo(name, "mmzoo", __version__, module_name, builtin=True)
            _fail(registry, info, f"{type(exc).__name__}: {exc}", exc)
            continue
        register_plugin(registry, module, name, distribution="mmzoo", version=__version__,
                        builtin=True, load_seconds=seconds, heavy_imports=heavy)

    for entry_point in metadata.entry_points(group=ENTRY_POINT_GROUP):
        dist_name, dist_version = _distribution(entry_point)
        name = entry_point.name
        if name in disabled or (wanted is not None and name not in wanted):
            if name not in registry.plugins:
                registry.plugins[name] = PluginInfo(name, dist_name, dist_version, entry_point.value,
                                                    status="disabled")
            continue
        if name in BUILTIN_PLUGINS or (name in registry.plugins and registry.plugins[name].status != "disabled"):
            other = registry.plugins[name]
            key = f"{name} ({dist_name})"
            info = registry.plugins[key] = PluginInfo(key, dist_name, dist_version, entry_point.value)
            _fail(registry, info,
                  f"entry point name {name!r} is already used by {other.distribution or other.module}; "
                  "two plugins cannot share a name: uninstall one or rename its entry point", None)
            continue
        try:
            start = time.perf_counter()
            before = set(sys.modules)
            module = entry_point.load()
            seconds = time.perf_counter() - start
            heavy = sorted(m for m in HEAVY_MODULES if m in sys.modules and m not in before)
        except BaseException as exc:
            info = registry.plugins[name] = PluginInfo(name, dist_name, dist_version, entry_point.value)
            _fail(registry, info, f"cannot import {entry_point.value!r}: {type(exc).__name__}: {exc}", exc)
            continue
        register_plugin(registry, module, name, distribution=dist_name, version=dist_version,
                        load_seconds=seconds, heavy_imports=heavy)
