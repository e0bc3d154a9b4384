"""Natural sort order for names and labels (``resnet18`` before ``resnet101``)."""

from __future__ import annotations

import re

__all__ = ["natural_key"]

_DIGITS = re.compile(r"(\d+)")


def natural_key(text: str) -> list[object]:
    """Sort key: digit runs compare as numbers, the rest case-insensitively
    (ties broken by case, so the order is total and stable across runs)."""
    pieces = _DIGITS.split(text)  # text at even positions, digit runs at odd ones
    return [int(piece) if i % 2 else (piece.lower(), piece) for i, piece in enumerate(pieces)]
