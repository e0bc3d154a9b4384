"""Built-in benchmark tasks on real, offline data.

``digits-sum`` and ``digits-pair`` pair scikit-learn's bundled handwritten
digits (1,797 8x8 scans, no download) with short text phrases:

- ``digits-sum`` needs **both** inputs: the image shows a digit ``d``, the
  text says "plus n", the label is ``(d + n) mod 10``. Either input alone
  carries no information about the label (a single-input model stays at
  chance, 10%); the interaction is multiplicative, so a purely additive
  fusion (a linear head over concatenated features) cannot solve it either.
- ``digits-pair`` is **redundant**: the text names the digit the image shows,
  so either input alone suffices; robustness to a missing input shows here.

``csv`` reads the user's own data: a CSV or JSONL file with an image-path
column, text columns, numeric and categorical columns (one ``tabular``
input) and a label column (plus an optional group column).

Images are given as uint8 arrays (or file paths) and texts as strings; the
model's processor turns them into tensors at the model's input size.
"""

from __future__ import annotations

import contextlib
import csv
import json
import math
import random
import sys
from pathlib import Path
from typing import Any, Sequence

from mmzoo._rows import LINE, read_table
from mmzoo._sort import natural_key as _natural_key
from mmzoo.errors import InputError
from mmzoo.tasks import Split, Task, split_indices

__all__ = ["DigitsSum", "DigitsPair", "CsvTask", "make_splits"]

WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")


def _digit_images(limit: int | None = None):
    import numpy as np
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = np.round(digits.images * (255.0 / 16.0)).astype(np.uint8)  # (1797, 8, 8), 0..16 -> 0..255
    if limit is not None:
        if limit < 10:
            raise InputError(f"limit must be >= 10 images, got {limit}")
        return images[:limit], digits.target[:limit].astype(int)
    return images, digits.target.astype(int)


def _number(n: int, rng: random.Random) -> str:
    return WORDS[n] if rng.random() < 0.5 else str(n)


def make_splits(inputs: dict[str, list[Any]], labels: list[int], groups: list[Any], seed: int,
                 fractions=(0.6, 0.2, 0.2)) -> dict[str, Split]:
    import torch

    parts = split_indices(len(labels), seed=seed, groups=groups, fractions=fractions)
    splits = {}
    for name, idx in parts.items():
        if not idx:
            raise InputError(f"the {name} split is empty: {len(set(groups))} group(s) are too few "
                             f"for fractions {tuple(fractions)}; add rows or change the fractions")
        splits[name] = Split(inputs={k: [v[i] for i in idx] for k, v in inputs.items()},
                             labels=torch.tensor([labels[i] for i in idx], dtype=torch.long),
                             groups=[groups[i] for i in idx])
    return splits


class DigitsSum(Task):
    """Image digit ``d`` + text "plus n" -> label ``(d + n) mod 10``.

    ``repeats`` pairs every image with that many random numbers; all pairs of
    one image stay in the same split (grouped by image). ``limit`` uses only
    the first that many images (quick tests).
    """

    TEMPLATES = ("plus {n}", "add {n}", "{n} more", "and then add {n}", "increase by {n}", "+ {n}")

    def __init__(self, seed: int = 0, repeats: int = 2, limit: int | None = None, data: str | None = None):
        if data is not None:
            raise InputError("task 'digits-sum' uses scikit-learn's bundled digits and takes no data=")
        super().__init__(name="digits-sum", description=self.__doc__.splitlines()[0],
                         inputs=("image", "text"), labels=[str(i) for i in range(10)], seed=seed)
        self.repeats = int(repeats)
        self.limit = limit

    def load_splits(self) -> dict[str, Split]:
        images, digits = _digit_images(self.limit)
        rng = random.Random(1000 + self.seed)
        image_values, texts, labels, groups = [], [], [], []
        for i, d in enumerate(digits):
            for _ in range(self.repeats):
                n = rng.randrange(10)
                image_values.append(images[i])
                texts.append(rng.choice(self.TEMPLATES).format(n=_number(n, rng)))
                labels.append((int(d) + n) % 10)
                groups.append(i)
        return make_splits({"image": image_values, "text": texts}, labels, groups, self.seed)


class DigitsPair(Task):
    """Image digit ``d`` + a phrase naming ``d`` -> label ``d`` (either input suffices)."""

    TEMPLATES = ("a handwritten {n}", "the digit {n}", "this is a {n}", "{n}", "number {n}",
                 "someone wrote {n}")

    def __init__(self, seed: int = 0, limit: int | None = None, data: str | None = None):
        if data is not None:
            raise InputError("task 'digits-pair' uses scikit-learn's bundled digits and takes no data=")
        super().__init__(name="digits-pair", description=self.__doc__.splitlines()[0],
                         inputs=("image", "text"), labels=[str(i) for i in range(10)], seed=seed)
        self.limit = limit

    def load_splits(self) -> dict[str, Split]:
        images, digits = _digit_images(self.limit)
        rng = random.Random(2000 + self.seed)
        texts = [rng.choice(self.TEMPLATES).format(n=_number(int(d), rng)) for d in digits]
        labels = [int(d) for d in digits]
        return make_splits({"image": list(images), "text": texts}, labels,
                            list(range(len(labels))), self.seed)


def _named_or_default(column: str | None, default: str, header: Sequence[str]) -> str | None:
    """The column asked for (``""``: none); when not asked, ``default`` if the file has it."""
    if column is None:
        return default if default in header else None
    return column or None


class CsvTask(Task):
    """Your own data: a CSV or JSONL file with images, texts, table columns and labels.

    ``data`` is the file (``.csv``, or ``.jsonl``/``.json`` with one object a
    line; ``.gz``/``.xz`` compressed too). Image paths are relative to the
    file's folder. Inputs:

    - ``image_column`` (default: ``image`` when the file has that column;
      ``""`` for none; a column named here must exist);
    - texts: ``text_columns`` (a list or comma string; default the one
      ``text_column``, itself by default ``text`` when the file has that
      column) are joined with ``text_separator`` into one ``text`` input, or
      kept as inputs ``text``, ``text_2``, ... with ``separate_texts=True``.
      An empty text is a missing input for that sample;
    - ``numeric_columns`` and ``categorical_columns`` form one ``tabular``
      input (one dict per row; an empty cell is a missing cell);
    - ``detect_columns=True`` assigns every other column (except label and
      group) to text, numeric or categorical from its values and prints what
      it chose.

    ``group_column`` keeps rows of one group on the same side of the seeded
    split. ``labels`` (a list or a comma-separated string) fixes the class
    names and their order; a row with another label is an error. Without it,
    the sorted distinct labels. Classification only (no regression targets).
    """

    def __init__(self, data: str | Path | None = None, seed: int = 0, *, image_column: str | None = None,
                 text_column: str | None = None, label_column: str = "label", group_column: str | None = None,
                 labels: Sequence[str] | str | None = None,
                 fractions: Sequence[float] = (0.6, 0.2, 0.2), check_images: bool = True,
                 text_columns: Sequence[str] | str | None = None, numeric_columns: Sequence[str] | str = (),
                 categorical_columns: Sequence[str] | str = (), separate_texts: bool = False,
                 text_separator: str = " | ", detect_columns: bool = False, name: str = "csv"):
        if data is None:
            raise InputError(f"task {name!r} reads your data file: pass data=PATH "
                             "(mmzoo train/bench: --data PATH) to a .csv or .jsonl file")
        self.path = Path(data)
        self.label_column = label_column
        self.group_column = group_column or None
        self.fractions = tuple(float(f) for f in fractions)
        self.check_images = check_images
        self.separate_texts = separate_texts
        self.text_separator = text_separator
        if isinstance(labels, str):
            labels = _column_list(labels)
        self._fixed_labels = list(labels) if labels is not None else None
        super().__init__(name=name, description=f"user data from {self.path}", inputs=(), labels=[], seed=seed)
        rows, header = self._read_rows()
        self.image_column = _named_or_default(image_column, "image", header)
        if text_columns is not None:
            self.text_columns = _column_list(text_columns)
        else:
            text = _named_or_default(text_column, "text", header)
            self.text_columns = [text] if text else []
        self.numeric_columns = _column_list(numeric_columns)
        self.categorical_columns = _column_list(categorical_columns)
        if detect_columns:
            self._detect(rows, header)
        if not (self.image_column or self.text_columns or self.numeric_columns or self.categorical_columns):
            defaults = image_column is None and text_columns is None and text_column is None
            found = f"{self.path} has no 'image' or 'text' column" if defaults else "none is chosen"
            raise InputError(f"task {name!r} needs at least one input column: {found} (it has {sorted(header)}); "
                             "set image_column, text_columns, numeric_columns, categorical_columns or "
                             "detect_columns=True")
        texts = ([f"text_{i + 1}" if i else "text" for i in range(len(self.text_columns))]
                 if separate_texts else ["text"] * bool(self.text_columns))
        self.inputs = tuple([*(["image"] if self.image_column else []), *texts,
                             *(["tabular"] if self.numeric_columns or self.categorical_columns else [])])
        self._rows = self._check_rows(rows, header)
        self.labels = self._fixed_labels or sorted({r[self.label_column] for r in self._rows},
                                                   key=_natural_key)

    # ------------------------------------------------------------ reading
    def _read_rows(self) -> tuple[list[dict[str, str]], list[str]]:
        """Rows as dicts of strings with their first file line, and the column names."""
        return read_table(self.path, f"task {self.name!r}")

    def _detect(self, rows: list[dict[str, str]], header: list[str]) -> None:
        """Assign the unassigned columns to text / numeric / categorical and say so."""
        taken = {self.label_column, self.group_column, self.image_column, *self.text_columns,
                 *self.numeric_columns, *self.categorical_columns}
        chosen: dict[str, list[str]] = {"text": [], "numeric": [], "categorical": []}
        for column in header:
            if column in taken:
                continue
            values = [r.get(column, "").strip() for r in rows]
            present = [v for v in values if v]
            if not present:
                continue
            if all(_is_float(v) for v in present):
                kind = "numeric"
            elif len(set(present)) <= max(2, min(50, len(rows) // 10)) and \
                    sum(map(len, present)) / len(present) <= 40:
                kind = "categorical"
            else:
                kind = "text"
            chosen[kind].append(column)
        self.text_columns += chosen["text"]
        self.numeric_columns += chosen["numeric"]
        self.categorical_columns += chosen["categorical"]
        print(f"task {self.name!r}: detected columns in {self.path.name}: "
              + "; ".join(f"{kind} {cols}" for kind, cols in chosen.items())
              + f" (image {self.image_column!r}, label {self.label_column!r}; pass text_columns=, "
              "numeric_columns=, categorical_columns= to choose yourself)", file=sys.stderr)

    def _check_rows(self, rows: list[dict[str, Any]], header: list[str]) -> list[dict[str, Any]]:
        wanted = [c for c in (self.image_column, *self.text_columns, *self.numeric_columns,
                              *self.categorical_columns, self.label_column, self.group_column) if c]
        missing = [c for c in dict.fromkeys(wanted) if c not in header]
        if missing:
            raise InputError(f"task {self.name!r}: {self.path} has no column(s) {missing}; it has "
                             f"{sorted(header)} (set image_column=, text_columns=, numeric_columns=, "
                             "categorical_columns=, label_column=, group_column= to choose others)")
        problems: list[str] = []
        base = self.path.parent
        for row in rows:
            line = row[LINE]
            label = row.get(self.label_column, "").strip()
            if not label:
                problems.append(f"line {line}: empty label")
            elif self._fixed_labels is not None and label not in self._fixed_labels:
                problems.append(f"line {line}: unknown label {label!r} (labels are {self._fixed_labels})")
            row[self.label_column] = label
            for column in self.numeric_columns:
                value = row.get(column, "").strip()
                if value and not _is_float(value):
                    problems.append(f"line {line}: column {column!r} is numeric but holds {value[:40]!r}")
            has_content = any(row.get(c, "").strip() for c in
                              (*self.text_columns, *self.numeric_columns, *self.categorical_columns))
            if self.image_column:
                value = row.get(self.image_column, "").strip()
                if not value:
                    problems.append(f"line {line}: empty image path in column {self.image_column!r}")
                    continue
                has_content = True
                path = Path(value)
                path = path if path.is_absolute() else base / path
                row[self.image_column] = str(path)
                if not path.is_file():
                    problems.append(f"line {line}: image file {str(path)!r} does not exist")
                elif self.check_images:
                    problem = _check_image(path)
                    if problem:
                        problems.append(f"line {line}: cannot read image {str(path)!r} ({problem})")
            if not has_content:
                problems.append(f"line {line}: every input is empty (columns {wanted[:-1 - bool(self.group_column)]})")
        if problems:
            shown = "\n  ".join(problems[:20])
            more = f"\n  ... and {len(problems) - 20} more" if len(problems) > 20 else ""
            raise InputError(f"task {self.name!r}: {len(problems)} problem(s) in {self.path}:\n  {shown}{more}")
        return rows

    def load_splits(self) -> dict[str, Split]:
        rows = self._rows
        index = {label: i for i, label in enumerate(self.labels)}
        labels = [index[r[self.label_column]] for r in rows]
        groups = [r[self.group_column] for r in rows] if self.group_column else list(range(len(rows)))
        inputs: dict[str, list[Any]] = {}
        if self.image_column:
            inputs["image"] = [r[self.image_column] for r in rows]
        texts = [[r.get(c, "").strip() for c in self.text_columns] for r in rows]
        if self.separate_texts:
            for i in range(len(self.text_columns)):
                inputs[f"text_{i + 1}" if i else "text"] = [t[i] for t in texts]
        elif self.text_columns:
            inputs["text"] = [self.text_separator.join(p for p in t if p) for t in texts]
        if self.numeric_columns or self.categorical_columns:
            inputs["tabular"] = [{**{c: float(r[c]) if r.get(c, "").strip() else None for c in self.numeric_columns},
                                  **{c: r.get(c, "").strip() or None for c in self.categorical_columns}}
                                 for r in rows]
        return make_splits(inputs, labels, groups, self.seed, self.fractions)


#: the longest CSV field read (Python's csv default is 131,072 characters)


def _column_list(columns: Sequence[str] | str | None) -> list[str]:
    if columns is None:
        return []
    if isinstance(columns, str):
        return [c.strip() for c in columns.split(",") if c.strip()]
    return [str(c) for c in columns]


def _is_float(value: str) -> bool:
    try:
        return math.isfinite(float(value))
    except ValueError:
        return False


def _check_image(path: Path) -> str | None:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            image.verify()
    except Image.DecompressionBombError as exc:
        return f"too many pixels to decode safely, a possible decompression bomb: {exc}"
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        return str(exc) or type(exc).__name__
    return None
