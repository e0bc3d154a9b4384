"""Isolated registries for tests: :func:`isolated_registry`, and
:func:`~mmzoo.plugins.use_registry` to make one the process default."""

from __future__ import annotations

from importlib import import_module, metadata
from typing import Any

from mmzoo.errors import PluginError
from mmzoo.plugins import BUILTIN_PLUGINS, ENTRY_POINT_GROUP, register_plugin, use_registry
from mmzoo.registry import Registry

__all__ = ["isolated_registry", "use_registry"]


def _entry_point(name: str) -> metadata.EntryPoint | None:
    for entry_point in metadata.entry_points(group=ENTRY_POINT_GROUP):
        if entry_point.name == name:
            return entry_point
    return None


def isolated_registry(*plugins: Any, builtins: bool = True) -> Registry:
    """A clean :class:`~mmzoo.registry.Registry` (no discovery) holding
    mmzoo's built-in plugins (unless ``builtins=False``) and ``plugins``:
    installed entry-point names (``"audio"``), module names
    (``"my_pkg.plugin"``), module objects, or ``(name, module)`` pairs.
    A plugin that fails to register raises :class:`~mmzoo.errors.PluginError`."""
    from mmzoo import __version__

    registry = Registry()

    def add(plugin: Any, name: str, **info: Any) -> None:
        result = register_plugin(registry, plugin, name, **info)
        if result.status != "ok":
            raise PluginError(f"plugin {name!r} failed to register: {result.error}")

    if builtins:
        for name, module_name in BUILTIN_PLUGINS.items():
            add(import_module(module_name), name, distribution="mmzoo", version=__version__, builtin=True)
    for plugin in plugins:
        if isinstance(plugin, tuple):
            name, module = plugin
            add(import_module(module) if isinstance(module, str) else module, name)
        elif isinstance(plugin, str):
            entry_point = _entry_point(plugin)
            if entry_point is not None:
                dist = getattr(entry_point, "dist", None)
                add(entry_point.load(), plugin, distribution=dist.metadata["Name"] if dist else None,
                    version=dist.version if dist else None)
            else:
                add(import_module(plugin), plugin)
        else:
            add(plugin, getattr(plugin, "__name__", repr(plugin)))
    return registry
