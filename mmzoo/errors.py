"""Errors raised by mmzoo.

Every error says what was wrong, where, and what to do about it.
"""

from __future__ import annotations

__all__ = [
    "MMZooError",
    "NameSyntaxError",
    "UnknownNameError",
    "AmbiguousNameError",
    "PluginError",
    "WeightsError",
    "InputError",
]


class MMZooError(Exception):
    """Base class of every error mmzoo raises on purpose."""


class NameSyntaxError(MMZooError, ValueError):
    """A model name does not follow the grammar; ``column`` is 0-based."""

    def __init__(self, message: str, name: str, column: int):
        self.name = name
        self.column = column
        pointer = " " * column + "^"
        super().__init__(f"{message} at column {column + 1} of the name:\n  {name}\n  {pointer}")


class UnknownNameError(MMZooError, KeyError):
    """A name part matches no registered component."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0]) if self.args else ""


class AmbiguousNameError(MMZooError, LookupError):
    """A short name is registered by two or more plugins."""


class PluginError(MMZooError, RuntimeError):
    """A plugin failed to load or register, or a needed plugin is not installed."""


class WeightsError(MMZooError, RuntimeError):
    """A checkpoint cannot be written or read, or does not match the model."""


class InputError(MMZooError, ValueError):
    """Inputs given to a model or processor are missing, misnamed or malformed."""
