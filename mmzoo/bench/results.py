"""The results file: one JSON row per run in a JSONL file.

Appending (atomic per line, safe for shards sharing a file), reading (torn
lines skipped), the keys that make a rerun resume, the multimodal gain filled
from the rows, compact per-sample predictions, the git sha a row was produced
at, and the rule that keeps dirty-tree results out of ``benchmarks/results/``.
This module imports no torch.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from mmzoo._io import is_inside
from mmzoo.errors import InputError

__all__ = ["append_row", "read_rows", "row_key", "fill_gain", "encode_classes", "decode_classes", "git_sha",
           "check_publishable", "PUBLISHED_DIR"]

#: results under this folder of the repository must come from committed code
PUBLISHED_DIR = "benchmarks/results"
_REPO = Path(__file__).resolve().parents[2]
#: one character per class index in ``test_predictions`` / ``test_labels``
_ALPHABET = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
_NONE = "-"


def row_key(row: Mapping[str, Any]) -> tuple[str, str, int, str]:
    """Rows with the same key are the same run: a rerun skips it (resume)."""
    return (row.get("name"), row.get("task"), row.get("seed"), row.get("config_id"))


# ------------------------------------------------------------------ JSONL
def append_row(path: str | Path, row: Mapping[str, Any]) -> None:
    """Append one JSON line atomically: one ``write`` on an ``O_APPEND`` file
    under an exclusive lock, then fsync (safe for shards sharing a file)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = (json.dumps(_strict_json(row), sort_keys=True, default=str, allow_nan=False) + "\n").encode("utf-8")
    fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)  # read: torn-line check
    try:
        try:
            import fcntl

            fcntl.flock(fd, fcntl.LOCK_EX)
        except ImportError:  # pragma: no cover - Windows
            pass
        if _ends_torn(fd):  # a killed writer left half a line: never glue a row onto it
            data = b"\n" + data
        view = memoryview(data)
        while view:
            written = os.write(fd, view)
            view = view[written:]
        os.fsync(fd)
    finally:
        os.close(fd)


def _ends_torn(fd: int) -> bool:
    """Whether the file behind ``fd`` is non-empty and lacks a final newline."""
    size = os.fstat(fd).st_size
    return size > 0 and os.pread(fd, 1, size - 1) != b"\n"


def _strict_json(value: Any) -> Any:
    """NaN/inf -> None, so every line is standard JSON for any reader."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {k: _strict_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_strict_json(v) for v in value]
    return value


def read_rows(path: str | Path) -> list[dict[str, Any]]:
    """Rows of a results file (missing file: none). Lines that are not a JSON
    object (a torn line from a killed writer, a stray byte that is not UTF-8,
    a JSON array) are skipped and reported; a byte-order mark is ignored."""
    path = Path(path)
    if not path.exists():
        return []
    rows = []
    for line_no, raw in enumerate(path.read_bytes().split(b"\n"), 1):
        if line_no == 1 and raw.startswith(b"\xef\xbb\xbf"):
            raw = raw[3:]
        if not raw.strip():
            continue
        try:
            row = json.loads(raw.decode("utf-8"))
        except ValueError as exc:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
            print(f"mmzoo bench: skipping unreadable line {line_no} of {path} ({exc})", file=sys.stderr)
            continue
        if not isinstance(row, dict):
            print(f"mmzoo bench: skipping line {line_no} of {path}: a {type(row).__name__}, "
                  "not a JSON object", file=sys.stderr)
            continue
        rows.append(row)
    return rows


# ------------------------------------------------------------------ derived fields
def fill_gain(row: dict[str, Any], rows: Sequence[Mapping[str, Any]]) -> None:
    """``multimodal_gain``: test accuracy minus the best single-input
    baseline's (same task, seed and configuration), when those rows exist."""
    if row.get("status") != "ok" or not row.get("baselines"):
        return
    done = {row_key(r): r for r in rows if r.get("status") == "ok"}
    scores = []
    for name in row["baselines"]:
        base = done.get((name, row["task"], row["seed"], row["config_id"]))
        if base is None:
            return
        scores.append(base["accuracy"])
    row["best_single_accuracy"] = max(scores)
    row["multimodal_gain"] = row["accuracy"] - max(scores)


def encode_classes(values: Iterable[int], num_classes: int) -> str | list[int]:
    """Class indices -> one character each (up to 62 classes; a list beyond),
    so a row carries its per-sample predictions in a few kB; -1 (no
    prediction: a sample with no input) is ``-``."""
    values = [int(v) for v in values]
    if num_classes > len(_ALPHABET):
        return values
    return "".join(_NONE if v == -1 else _ALPHABET[v] for v in values)


def decode_classes(encoded: str | Sequence[int]) -> list[int]:
    """The inverse of :func:`encode_classes`."""
    if isinstance(encoded, str):
        return [-1 if ch == _NONE else _ALPHABET.index(ch) for ch in encoded]
    return [int(v) for v in encoded]


# ------------------------------------------------------------------ provenance
def git_sha(root: str | Path | None = None, *, outputs: Sequence[str] = (PUBLISHED_DIR,)) -> str | None:
    """``HEAD`` of the checkout at ``root``, with ``-dirty`` when tracked files
    differ from it (files under ``outputs``, by default ``benchmarks/results/``,
    do not count: they are results, not code); None outside a git checkout.
    ``root``: this checkout by default."""
    root = _REPO if root is None else root
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True,
                             timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", ".",
                                *(f":(exclude){folder}" for folder in outputs)], cwd=root,
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return (sha + ("-dirty" if dirty else "")) if sha else None


def write_results(out: str | Path, rows: Sequence[Mapping[str, Any]], markdown: str) -> None:
    """A benchmark script's output: ``rows`` as JSON lines in ``out`` and the
    ``markdown`` table beside it (same name, ``.md``), each written atomically."""
    from mmzoo._io import atomic_write_text

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out, "".join(json.dumps(r) + "\n" for r in rows))
    atomic_write_text(out.with_suffix(".md"), markdown + "\n")


def check_publishable(out: str | Path, root: str | Path | None = None) -> None:
    """Refuse to record results in the repository's ``benchmarks/results/``
    unless the tree is clean: committed results must be reproducible from the
    sha every row records. ``root``: this checkout by default."""
    root = _REPO if root is None else root
    if not is_inside(Path(root) / PUBLISHED_DIR, out):
        return
    sha = git_sha(root)
    if sha is None or sha.endswith("-dirty"):
        state = "not a git checkout" if sha is None else f"uncommitted changes (git sha {sha})"
        raise InputError(f"refusing to write results to {out}: the code has {state}. Results in "
                         f"{PUBLISHED_DIR}/ must come from committed code at the sha they record: commit "
                         "(or stash) your changes first, or write elsewhere, e.g. --out runs/results.jsonl")
