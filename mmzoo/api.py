"""Listing functions of the public API (timm-style fnmatch filters)."""

from __future__ import annotations

from typing import Any, Iterable

from mmzoo.plugins import default_registry
from mmzoo.registry import Registry, import_factory

__all__ = ["list_encoders", "list_fusions", "list_models", "list_tasks", "get_task"]

Filter = str | Iterable[str] | None


def list_encoders(filter: Filter = "", *, modality: str | None = None,
                  exclude_filters: Filter = None, registry: Registry | None = None) -> list[str]:
    """Encoder names matching ``filter`` (fnmatch), optionally of one ``modality``.

    Includes open namespaces such as every timm model (``resnet*``).
    """
    return (registry or default_registry()).list(
        "encoder", filter, exclude_filters=exclude_filters, modality=modality)


def list_fusions(filter: Filter = "", *, exclude_filters: Filter = None,
                 registry: Registry | None = None) -> list[str]:
    """Fusion names matching ``filter``."""
    return (registry or default_registry()).list("fusion", filter, exclude_filters=exclude_filters)


def list_models(filter: Filter = "", *, exclude_filters: Filter = None, pretrained: bool = False,
                registry: Registry | None = None) -> list[str]:
    """Named model presets matching ``filter`` (each stands for a full model
    name); ``pretrained=True``: only zoo entries, which come with trained
    weights (their scores: :func:`mmzoo.zoo.cards`)."""
    names = (registry or default_registry()).list("model", filter, exclude_filters=exclude_filters)
    if pretrained:
        from mmzoo.zoo import has_weights

        names = [n for n in names if has_weights(n, registry or default_registry())]
    return names


def list_tasks(filter: Filter = "", *, exclude_filters: Filter = None,
               registry: Registry | None = None) -> list[str]:
    """Benchmark task names matching ``filter``."""
    return (registry or default_registry()).list("task", filter, exclude_filters=exclude_filters)


def get_task(name: str, *, registry: Registry | None = None, **kwargs: Any) -> Any:
    """Build the task registered as ``name`` with ``kwargs``."""
    entry = (registry or default_registry()).get("task", name)
    return import_factory(entry.factory)(**kwargs)
