"""Reading a user's table file (CSV or JSONL, optionally .gz/.xz) into rows.

One reader for the csv task and ``mmzoo predict``, hardened against hostile
files: the csv module reads the file object (``newline=''``, so quoted
newlines and U+2028 stay inside their field), a field longer than
:data:`MAX_FIELD_CHARS` is an error naming the line, a BOM is dropped, and
deeply nested or non-object JSON lines are errors naming the line. Light: no
torch.
"""

from __future__ import annotations

import contextlib
import csv
import json
from pathlib import Path
from typing import Iterator

from mmzoo.errors import InputError

__all__ = ["LINE", "MAX_FIELD_CHARS", "read_table"]

LINE = "\0line"  # key of a row's first file line (no real column can be named so)
MAX_FIELD_CHARS = 1 << 24


def read_table(path: Path, who: str) -> tuple[list[dict[str, str]], list[str]]:
    """Rows of ``path`` as dicts of strings (an empty or null cell is ``""``),
    each with its first file line under :data:`LINE`, and the column names in
    order of appearance. ``who`` starts every error message."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{who}: data file {str(path)!r} does not exist")
    suffixes = [s.lower() for s in path.suffixes[-2:]]
    compression = suffixes[-1] if suffixes and suffixes[-1] in (".gz", ".xz") else None
    kind = (suffixes[-2] if compression and len(suffixes) == 2 else suffixes[-1]) if suffixes else ""
    jsonl = kind in (".jsonl", ".json", ".ndjson")
    try:
        with _open_text(path, compression, newline=None if jsonl else "") as f:
            rows = _read_jsonl(f, path) if jsonl else _read_csv(f, path)
    except (OSError, EOFError, UnicodeDecodeError) as exc:  # EOFError: a truncated .gz/.xz
        raise InputError(f"{who}: cannot read {path}: {exc}") from exc
    if not rows:
        raise InputError(f"{who}: {path} has no data rows")
    header: list[str] = []
    for row in rows:
        header.extend(k for k in row if k != LINE and k not in header)
    return rows, header


def _read_jsonl(f, path: Path) -> list[dict[str, str]]:
    rows = []
    for line_no, line in enumerate(f, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except RecursionError:
            raise InputError(f"{path}:{line_no}: the JSON is nested too deeply to read; rows must be "
                             "flat objects of column -> value") from None
        except ValueError as exc:
            raise InputError(f"{path}:{line_no}: not a JSON object ({exc})") from None
        if not isinstance(row, dict):
            raise InputError(f"{path}:{line_no}: expected a JSON object, got {type(row).__name__}")
        rows.append({**{str(k): "" if v is None else str(v) for k, v in row.items()}, LINE: line_no})
    return rows


def _read_csv(f, path: Path) -> list[dict[str, str]]:
    rows = []
    reader = csv.DictReader(f)
    line_no = 1
    with _field_size_limit(MAX_FIELD_CHARS):
        try:
            for row in reader:
                rows.append({**{k: (v or "") for k, v in row.items() if k is not None}, LINE: line_no + 1})
                line_no = reader.line_num
        except csv.Error as exc:
            if "field larger than field limit" in str(exc):
                raise InputError(f"{path}:{line_no + 1}: a field is longer than {MAX_FIELD_CHARS:,} "
                                 "characters, the limit; shorten it or keep long content in files "
                                 "named by the CSV") from None
            raise InputError(f"{path}:{line_no + 1}: malformed CSV ({exc})") from None
    return rows


def _open_text(path: Path, compression: str | None, newline: str | None):
    if compression == ".gz":
        import gzip

        return gzip.open(path, "rt", encoding="utf-8-sig", newline=newline)
    if compression == ".xz":
        import lzma

        return lzma.open(path, "rt", encoding="utf-8-sig", newline=newline)
    return open(path, encoding="utf-8-sig", newline=newline)


@contextlib.contextmanager
def _field_size_limit(limit: int) -> Iterator[None]:
    """Raise the csv module's (process-wide) field limit while reading, then restore it."""
    old = csv.field_size_limit(limit)
    try:
        yield
    finally:
        csv.field_size_limit(old)
