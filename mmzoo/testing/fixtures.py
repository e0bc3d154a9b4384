"""mmzoo's pytest plugin (entry point ``pytest11``: ``mmzoo``): fixtures for
an isolated default registry, available to every test suite by name."""

from __future__ import annotations

import contextlib
from typing import Any, Callable, Iterator

import pytest

from mmzoo.registry import Registry
from mmzoo.testing.registries import isolated_registry, use_registry

__all__ = ["make_mmzoo_registry", "mmzoo_registry"]


@pytest.fixture
def make_mmzoo_registry() -> Iterator[Callable[..., Registry]]:
    """A factory: ``make_mmzoo_registry(*plugins, builtins=True)`` returns an
    :func:`~mmzoo.testing.isolated_registry` and makes it the default
    registry (what ``mmzoo.create``, ``mmzoo.list_*`` and ``mmzoo.load`` use)
    until the test ends."""
    with contextlib.ExitStack() as stack:
        def make(*plugins: Any, builtins: bool = True) -> Registry:
            return stack.enter_context(use_registry(isolated_registry(*plugins, builtins=builtins)))

        yield make


@pytest.fixture
def mmzoo_registry(make_mmzoo_registry: Callable[..., Registry]) -> Registry:
    """A clean default registry holding mmzoo's built-in plugins only."""
    return make_mmzoo_registry()
