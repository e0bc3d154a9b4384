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
column, a text column and a label column (plus an optional group column).

Images are given as uint8 arrays (or file paths) and texts as strings; the
model's processor turns them into tensors at the model's input size.
"""

from __future__ import annotations

import csv
import json
import random
from pathlib import Path
from typing import Any, Sequence

from mmzoo.errors import InputError
from mmzoo.tasks import Split, Task, split_indices

__all__ = ["DigitsSum", "DigitsPair", "CsvTask"]

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


def _make_splits(inputs: dict[str, list[Any]], labels: list[int], groups: list[Any], seed: int,
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
        return _make_splits({"image": image_values, "text": texts}, labels, groups, self.seed)


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
        return _make_splits({"image": list(images), "text": texts}, labels,
                            list(range(len(labels))), self.seed)


class CsvTask(Task):
    """Your own data: a CSV or JSONL file with image paths, texts and labels.

    ``data`` is the file (``.csv``, or ``.jsonl``/``.json`` with one object a
    line). Image paths are relative to the file's folder. Column names
    default to ``image``, ``text``, ``label``; set ``image_column=""`` or
    ``text_column=""`` for a single-input task. ``group_column`` keeps rows
    of one group on the same side of the seeded split. ``labels`` (a list or
    a comma-separated string) fixes the class names and their order; a row
    with another label is an error. Without it, the sorted distinct labels.
    """

    def __init__(self, data: str | Path | None = None, seed: int = 0, *, image_column: str = "image",
                 text_column: str = "text", label_column: str = "label", group_column: str | None = None,
                 labels: Sequence[str] | str | None = None,
                 fractions: Sequence[float] = (0.6, 0.2, 0.2), check_images: bool = True):
        if data is None:
            raise InputError("task 'csv' reads your data file: pass data=PATH "
                             "(mmzoo train/bench: --data PATH) to a .csv or .jsonl file")
        self.path = Path(data)
        self.image_column = image_column or None
        self.text_column = text_column or None
        self.label_column = label_column
        self.group_column = group_column or None
        self.fractions = tuple(float(f) for f in fractions)
        self.check_images = check_images
        if self.image_column is None and self.text_column is None:
            raise InputError("task 'csv' needs at least one of image_column and text_column")
        if isinstance(labels, str):
            labels = [s.strip() for s in labels.split(",") if s.strip()]
        self._fixed_labels = list(labels) if labels is not None else None
        inputs = tuple(k for k, c in (("image", self.image_column), ("text", self.text_column)) if c)
        super().__init__(name="csv", description=f"user data from {self.path}", inputs=inputs,
                         labels=[], seed=seed)
        self._rows = self._read()
        self.labels = self._fixed_labels or sorted({r[self.label_column] for r in self._rows},
                                                   key=_natural_key)

    # ------------------------------------------------------------ reading
    def _read(self) -> list[dict[str, str]]:
        if not self.path.is_file():
            raise InputError(f"task 'csv': data file {str(self.path)!r} does not exist")
        suffix = self.path.suffix.lower()
        try:
            text = self.path.read_text(encoding="utf-8-sig")
        except (OSError, UnicodeDecodeError) as exc:
            raise InputError(f"task 'csv': cannot read {self.path}: {exc}") from exc
        if suffix in (".jsonl", ".json", ".ndjson"):
            rows = []
            for line_no, line in enumerate(text.splitlines(), 1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except ValueError as exc:
                    raise InputError(f"{self.path}:{line_no}: not a JSON object ({exc})") from None
                if not isinstance(row, dict):
                    raise InputError(f"{self.path}:{line_no}: expected a JSON object, got {type(row).__name__}")
                rows.append({k: "" if v is None else str(v) for k, v in row.items()})
            first_row = 1
        else:
            reader = csv.DictReader(text.splitlines())
            rows = [{k: (v or "") for k, v in row.items() if k is not None} for row in reader]
            first_row = 2  # line 1 is the header
        if not rows:
            raise InputError(f"task 'csv': {self.path} has no data rows")
        wanted = [c for c in (self.image_column, self.text_column, self.label_column, self.group_column) if c]
        columns = set().union(*(r.keys() for r in rows))
        missing = [c for c in wanted if c not in columns]
        if missing:
            raise InputError(f"task 'csv': {self.path} has no column(s) {missing}; it has "
                             f"{sorted(columns)} (set image_column=, text_column=, label_column=, "
                             "group_column= to choose others)")
        self._line = lambda i: i + first_row  # noqa: E731 - row index -> file line
        problems: list[str] = []
        base = self.path.parent
        for i, row in enumerate(rows):
            line = self._line(i)
            label = row.get(self.label_column, "").strip()
            if not label:
                problems.append(f"line {line}: empty label")
            elif self._fixed_labels is not None and label not in self._fixed_labels:
                problems.append(f"line {line}: unknown label {label!r} (labels are {self._fixed_labels})")
            row[self.label_column] = label
            if self.text_column and not row.get(self.text_column, "").strip():
                problems.append(f"line {line}: empty text in column {self.text_column!r}")
            if self.image_column:
                value = row.get(self.image_column, "").strip()
                if not value:
                    problems.append(f"line {line}: empty image path in column {self.image_column!r}")
                    continue
                path = Path(value)
                path = path if path.is_absolute() else base / path
                row[self.image_column] = str(path)
                if not path.is_file():
                    problems.append(f"line {line}: image file {str(path)!r} does not exist")
                elif self.check_images:
                    problem = _check_image(path)
                    if problem:
                        problems.append(f"line {line}: cannot read image {str(path)!r} ({problem})")
        if problems:
            shown = "\n  ".join(problems[:20])
            more = f"\n  ... and {len(problems) - 20} more" if len(problems) > 20 else ""
            raise InputError(f"task 'csv': {len(problems)} problem(s) in {self.path}:\n  {shown}{more}")
        return rows

    def load_splits(self) -> dict[str, Split]:
        rows = self._rows
        index = {label: i for i, label in enumerate(self.labels)}
        labels = [index[r[self.label_column]] for r in rows]
        groups = [r[self.group_column] for r in rows] if self.group_column else list(range(len(rows)))
        inputs: dict[str, list[Any]] = {}
        if self.image_column:
            inputs["image"] = [r[self.image_column] for r in rows]
        if self.text_column:
            inputs["text"] = [r[self.text_column] for r in rows]
        return _make_splits(inputs, labels, groups, self.seed, self.fractions)


def _check_image(path: Path) -> str | None:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            image.verify()
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        return str(exc) or type(exc).__name__
    return None


def _natural_key(text: str):
    import re

    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", text)]
