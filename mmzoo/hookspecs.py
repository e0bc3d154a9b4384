"""The plugin contract: pluggy hook specifications of the ``mmzoo`` project.

A plugin is a light module (no torch, timm or transformers at import time)
named by an entry point in the ``mmzoo`` group. It implements
:func:`mmzoo_register`. Hooks only ever gain arguments; none is removed
without a deprecation cycle, and pluggy passes an implementation only the
arguments it names, so an old implementation keeps working.
``@hookimpl(tryfirst=True)`` / ``@hookimpl(trylast=True)`` runs a plugin's
hook before / after the others' (see :mod:`mmzoo.plugins`).
"""

from __future__ import annotations

import pluggy

__all__ = ["hookspec", "hookimpl", "mmzoo_register"]

hookspec = pluggy.HookspecMarker("mmzoo")
hookimpl = pluggy.HookimplMarker("mmzoo")


@hookspec
def mmzoo_register(registry):
    """Register components with ``registry``.

    Use ``registry.add_encoder``, ``add_fusion``, ``add_resolver``,
    ``add_alias``, ``add_model`` and ``add_task``. Factories are
    ``"module:attr"`` strings imported only when a component is built.
    """
