"""Parameter counts (the ``mmzoo create`` table and benchmark rows)."""

from __future__ import annotations

from typing import Any

__all__ = ["count_parameters"]


def count_parameters(module: Any, trainable: bool = False) -> int:
    """Parameters of an ``nn.Module``; with ``trainable`` only those with ``requires_grad``."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable)
