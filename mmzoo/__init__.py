"""mmzoo: a plugin-based multimodal model zoo for PyTorch.

    >>> import mmzoo
    >>> model = mmzoo.create("resnet+lstm/concat", num_classes=10)   # doctest: +SKIP

Importing this package imports no torch, timm or transformers: the public
names below load on first use.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

from mmzoo import errors
from mmzoo.hookspecs import hookimpl

__version__ = "0.1.0"

_LAZY = {
    "create": "mmzoo.hub",
    "load": "mmzoo.hub",
    "parse_name": "mmzoo.names",
    "list_encoders": "mmzoo.api",
    "list_fusions": "mmzoo.api",
    "list_models": "mmzoo.api",
    "list_tasks": "mmzoo.api",
    "get_task": "mmzoo.api",
    "Registry": "mmzoo.registry",
    "default_registry": "mmzoo.plugins",
    "MultimodalModel": "mmzoo.model",
    "Encoder": "mmzoo.components",
    "Fusion": "mmzoo.components",
    "EncoderOutput": "mmzoo.components",
    "InputSpec": "mmzoo.components",
    "InputProcessor": "mmzoo.components",
    "TextEncoder": "mmzoo.components",
}

__all__ = ["__version__", "errors", "hookimpl", *_LAZY]

if TYPE_CHECKING:  # pragma: no cover
    from mmzoo.api import get_task, list_encoders, list_fusions, list_models, list_tasks
    from mmzoo.hub import create
    from mmzoo.components import Encoder, EncoderOutput, Fusion, InputProcessor, InputSpec, TextEncoder
    from mmzoo.model import MultimodalModel
    from mmzoo.names import parse_name
    from mmzoo.plugins import default_registry
    from mmzoo.registry import Registry
    from mmzoo.hub import load


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'mmzoo' has no attribute {name!r}")
    value = getattr(import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
