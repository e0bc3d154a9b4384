"""The name grammar: ``"resnet18+lstm(hidden_size=256)/attention"``.

::

    name     := encoders "/" fusion
    encoders := part ("+" part)*
    fusion   := part
    part     := ident [ "(" kwargs ")" ]
    ident    := [namespace ":"] id
    kwargs   := key "=" literal ("," key "=" literal)*

The fusion is split off at the last ``/`` outside parentheses, so Hugging Face
ids such as ``hf:org/model`` keep theirs. Literals are parsed with
:func:`ast.literal_eval`; nothing in a name is ever executed or imported.
This module knows no registry and no torch.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Mapping

from mmzoo.errors import NameSyntaxError

__all__ = ["NamePart", "ModelName", "parse_name", "parse_part", "format_part"]

_NAMESPACE = r"[A-Za-z_][A-Za-z0-9_.\-]*"
_ID = r"[A-Za-z0-9_.\-/~@]+"
_IDENT_RE = re.compile(rf"(?:(?P<namespace>{_NAMESPACE}):)?(?P<id>{_ID})")
_KEY_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_LITERAL_ERRORS = (SyntaxError, ValueError, TypeError, MemoryError, RecursionError)
#: longest name accepted; a longer string is refused before it is scanned
MAX_NAME_LENGTH = 10_000
#: integer literals are bounded so that every parsed name can be printed again
MAX_INT_DIGITS = 100
_LITERAL_TYPES = "int, float, bool, str, None or a tuple of them"


@dataclass(frozen=True)
class NamePart:
    """One encoder or fusion in a name: ``namespace:id(key=value, ...)``."""

    name: str
    kwargs: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "kwargs", MappingProxyType(dict(self.kwargs)))

    @property
    def namespace(self) -> str | None:
        return self.name.split(":", 1)[0] if ":" in self.name else None

    @property
    def id(self) -> str:
        return self.name.split(":", 1)[1] if ":" in self.name else self.name

    def __str__(self) -> str:
        return format_part(self.name, self.kwargs)


@dataclass(frozen=True)
class ModelName:
    """A parsed model name: encoder parts (in input order) and a fusion part."""

    encoders: tuple[NamePart, ...]
    fusion: NamePart

    def __str__(self) -> str:
        return "+".join(map(str, self.encoders)) + "/" + str(self.fusion)


def format_part(name: str, kwargs: Mapping[str, Any]) -> str:
    """The canonical spelling of a part: kwargs sorted by key, values as ``repr``."""
    if not kwargs:
        return name
    inner = ",".join(f"{key}={kwargs[key]!r}" for key in sorted(kwargs))
    return f"{name}({inner})"


def _scan(text: str, offset: int, full: str) -> list[tuple[str, int, int]]:
    """Return ``(char, index, depth)`` for every character outside string
    literals (``depth`` counts the parentheses open before it); check that
    parentheses balance and strings close. String literals only exist inside
    parentheses."""
    result: list[tuple[str, int, int]] = []
    depth = 0
    quote: str | None = None
    escaped = False
    open_at = -1
    for i, ch in enumerate(text):
        if quote:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == quote:
                quote = None
            continue
        if depth and ch in "'\"":
            quote = ch
            continue
        if ch == ")":
            if depth == 0:
                raise NameSyntaxError("unmatched ')'", full, offset + i)
            depth -= 1
        result.append((ch, i, depth))
        if ch == "(":
            if depth == 0:
                open_at = i
            depth += 1
    if quote:
        raise NameSyntaxError("unterminated string literal", full, offset + len(text) - 1)
    if depth:
        raise NameSyntaxError("'(' is never closed", full, offset + open_at)
    return result


def _top_level(text: str, offset: int, full: str) -> list[tuple[str, int]]:
    """Characters outside parentheses and string literals, with their index."""
    return [(ch, i) for ch, i, depth in _scan(text, offset, full) if depth == 0]


def _parse_kwargs(source: str, full: str, column: int) -> dict[str, Any]:
    """Parse ``key=literal, ...`` (the text between the parentheses)."""
    if not source.strip():
        return {}
    try:
        call = ast.parse(f"f({source})", mode="eval").body
    except _LITERAL_ERRORS as exc:
        where = getattr(exc, "offset", None)
        where = column + max(0, min(len(source), (where or 3) - 3))
        raise NameSyntaxError(
            "arguments must be key=literal pairs separated by commas", full, where
        ) from None
    if not isinstance(call, ast.Call) or call.args:
        raise NameSyntaxError(
            "arguments must be given by keyword (key=value), not by position", full, column
        )
    kwargs: dict[str, Any] = {}
    for keyword in call.keywords:
        where = column + max(0, getattr(keyword, "col_offset", 2) - 2)
        if keyword.arg is None:
            raise NameSyntaxError("'**' is not allowed in a name", full, where)
        if keyword.arg in kwargs:
            raise NameSyntaxError(f"argument {keyword.arg!r} is given twice", full, where)
        try:
            value = ast.literal_eval(keyword.value)
        except _LITERAL_ERRORS:
            raise NameSyntaxError(
                f"the value of {keyword.arg!r} is not a Python literal ({_LITERAL_TYPES})",
                full,
                where,
            ) from None
        problem = _literal_problem(value)
        if problem:
            raise NameSyntaxError(f"the value of {keyword.arg!r} {problem}", full, where)
        kwargs[keyword.arg] = value
    return kwargs


def _literal_problem(value: Any) -> str | None:
    """Why ``value`` may not appear in a name, or None: only the documented
    literal types, and integers short enough to be printed back."""
    if value is None or isinstance(value, (bool, float, str)):
        return None
    if isinstance(value, int):
        # bit_length first: str() of a huge integer is itself slow (or refused)
        if value.bit_length() > 4 * MAX_INT_DIGITS or len(str(abs(value))) > MAX_INT_DIGITS:
            return f"is an integer of more than {MAX_INT_DIGITS} digits"
        return None
    if isinstance(value, tuple):
        return next((p for p in map(_literal_problem, value) if p), None)
    return f"is a {type(value).__name__}; a name allows only {_LITERAL_TYPES}"


def _parse_part(text: str, offset: int, full: str, what: str) -> NamePart:
    stripped = text.strip()
    offset += len(text) - len(text.lstrip())
    if not stripped:
        raise NameSyntaxError(f"empty {what}", full, min(offset, max(len(full) - 1, 0)))
    top = _top_level(stripped, offset, full)
    opening = [i for ch, i in top if ch == "("]
    ident = stripped if not opening else stripped[: opening[0]]
    if not _IDENT_RE.fullmatch(ident):
        raise NameSyntaxError(
            f"{what} name {ident!r} may only contain letters, digits and _ . - / ~ @ "
            "(with an optional 'namespace:' prefix)",
            full,
            offset + _first_bad_char(ident),
        )
    if not opening:
        return NamePart(ident, {})
    closing = next(i for ch, i in top if ch == ")")
    if closing != len(stripped) - 1:
        raise NameSyntaxError(
            f"unexpected text after the arguments of {ident!r}", full, offset + closing + 1
        )
    kwargs = _parse_kwargs(stripped[opening[0] + 1 : closing], full, offset + opening[0] + 1)
    return NamePart(ident, kwargs)


def _first_bad_char(ident: str) -> int:
    """Index of the first character that cannot be part of an identifier
    (one regex match from the start: linear in the length of ``ident``)."""
    match = _IDENT_RE.match(ident)
    return match.end() if match else 0


def _split(text: str, offset: int, full: str, separator: str) -> list[tuple[str, int]]:
    """Split at each top-level ``separator``; returns ``(piece, start offset)``."""
    pieces, start = [], 0
    for ch, i in _top_level(text, offset, full):
        if ch == separator:
            pieces.append((text[start:i], offset + start))
            start = i + 1
    pieces.append((text[start:], offset + start))
    return pieces


def _check_length(text: str) -> None:
    if len(text) > MAX_NAME_LENGTH:
        raise NameSyntaxError(
            f"the name is {len(text):,} characters long; names are limited to {MAX_NAME_LENGTH:,}",
            text[:40] + "...", 40)


def parse_part(text: str) -> NamePart:
    """Parse one part on its own, e.g. ``"lstm(hidden_size=64)"``."""
    if not isinstance(text, str):
        raise TypeError(f"a name part must be a str, not {type(text).__name__}")
    _check_length(text)
    return _parse_part(text, 0, text, "part")


def parse_name(name: str) -> ModelName:
    """Parse ``"enc1+enc2(k=v)/fusion"`` into a :class:`ModelName`.

    Raises :class:`~mmzoo.errors.NameSyntaxError` pointing at the column of the
    first problem.
    """
    if not isinstance(name, str):
        raise TypeError(f"a model name must be a str, not {type(name).__name__}")
    _check_length(name)
    top = _top_level(name, 0, name)
    slashes = [i for ch, i in top if ch == "/"]
    if not slashes:
        raise NameSyntaxError(
            "a model name needs a fusion after '/', e.g. 'resnet18+lstm/concat'",
            name,
            len(name.rstrip()),
        )
    cut = slashes[-1]
    fusion = _parse_part(name[cut + 1 :], cut + 1, name, "fusion")
    if "+" in fusion.name:
        raise NameSyntaxError("the fusion must be a single part", name, cut + 1)
    encoders = tuple(
        _parse_part(piece, start, name, "encoder") for piece, start in _split(name[:cut], 0, name, "+")
    )
    return ModelName(encoders, fusion)
