"""Atomic file writes and JSON helpers (a leaf: imports nothing from mmzoo but errors).

A write goes to a temporary file in the target's folder, is flushed and
fsynced, renamed over the target, and the folder itself is fsynced, so that
after a crash a reader finds the old file or the new one, never half of one.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

from mmzoo.errors import WeightsError

__all__ = ["atomic_write", "atomic_write_text", "write_json", "read_json", "fsync_dir", "is_inside",
           "TMP_SUFFIX"]

#: every temporary file written here ends with this (``.<name>.<random>.tmp``)
TMP_SUFFIX = ".tmp"


def fsync_dir(directory: str | Path) -> None:
    """Make renames inside ``directory`` durable (a no-op where folders cannot be opened)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` so that readers see the old or the new file, never half.

    The file gets the permissions a plain ``open(path, "w")`` would (umask
    applied), not ``mkstemp``'s private 0600."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TMP_SUFFIX, dir=path.parent)
    try:
        os.chmod(tmp, 0o666 & ~_umask())
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    fsync_dir(path.parent)
    return path


def atomic_write_text(path: str | Path, text: str) -> Path:
    """:func:`atomic_write` for UTF-8 text."""
    return atomic_write(path, text.encode("utf-8"))


def write_json(path: str | Path, data: Any) -> Path:
    """Write ``data`` as indented, key-sorted JSON, atomically."""
    return atomic_write_text(path, json.dumps(data, indent=2, sort_keys=True))


def read_json(path: str | Path) -> Any:
    """Parse the JSON file ``path``; a missing, unreadable or malformed file is a
    :class:`WeightsError` naming it."""
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise WeightsError(f"{path} is missing") from None
    except (OSError, ValueError) as exc:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        raise WeightsError(f"{path} is not valid JSON: {exc}") from exc


def is_inside(root: str | Path, path: str | Path) -> bool:
    """Whether ``path`` resolves (links followed) to ``root`` itself or below it."""
    root = Path(root).resolve()
    resolved = Path(path).resolve()
    return resolved == root or root in resolved.parents


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
