"""The plugin contract: :func:`check_plugin`."""

from __future__ import annotations

import subprocess
import sys
from importlib import import_module

from mmzoo.plugins import HEAVY_MODULES, register_plugin
from mmzoo.testing._common import check
from mmzoo.testing.registries import isolated_registry

__all__ = ["check_plugin"]


def check_plugin(module: str, *, name: str | None = None) -> None:
    """Check a plugin module: it imports no heavy module (torch, timm,
    transformers, ...) when loaded (in a fresh interpreter), implements
    ``mmzoo_register`` and registers cleanly into an isolated registry."""
    subject = f"plugin module {module!r}"
    with check(subject, "light import"):
        code = ("import sys, importlib; importlib.import_module(%r); "
                "print(','.join(m for m in %r if m in sys.modules))" % (module, HEAVY_MODULES))
        result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, f"importing it fails: {result.stderr.strip()[-500:]}"
        heavy = [m for m in result.stdout.strip().split(",") if m]
        assert not heavy, (f"importing it pulls in {heavy}; import those inside the component "
                           "modules named by 'module:attr' factories instead")
    with check(subject, "registers"):
        registry = isolated_registry(builtins=False)
        info = register_plugin(registry, import_module(module), name or module)
        assert info.status == "ok", f"status {info.status}: {info.error}"
        assert info.components, "mmzoo_register registered no component"
