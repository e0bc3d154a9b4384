"""The tabular processor: table rows -> the tensors of a tabular encoder.

Fitted on the training split (:meth:`TabularProcessor.fit`): per numeric
column the mean and standard deviation, per categorical column a vocabulary
(the ``max_categories`` most frequent values). Saved as one JSON file next
to the model's weights and reloaded exactly.

Rows are dicts (missing keys are missing cells), sequences in column order,
or a 2-D numpy array. A missing cell is ``None``, ``""``, NaN or an absent
key; a categorical value not seen in training is *unseen*. The output holds
``numeric`` (B, N) standardised floats (0 where missing),
``numeric_missing`` (B, N) bools and ``categorical`` (B, K) ids: 0 missing,
1 unseen, 2.. the vocabulary.
"""

from __future__ import annotations

import json
import math
import numbers
from collections import Counter
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import torch
from torch import Tensor

from mmzoo.components import InputProcessor
from mmzoo.errors import InputError, WeightsError

__all__ = ["TabularProcessor", "MISSING_ID", "UNSEEN_ID", "FILE_NAME"]

MISSING_ID, UNSEEN_ID = 0, 1
FILE_NAME = "tabular.json"


def _is_missing(value: Any) -> bool:
    if value is None:
        return True
    if isinstance(value, str):
        return not value.strip()
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isnan(float(value))


def _is_number(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


class TabularProcessor(InputProcessor):
    """Rows of a table -> ``{"numeric", "numeric_missing", "categorical"}`` tensors.

    ``on_fit(schema)`` is called with the fitted column schema (the encoder
    builds its per-column parameters from it; see :meth:`schema`).
    """

    def __init__(self, max_categories: int = 256, on_fit: Callable[[dict[str, Any]], None] | None = None):
        if max_categories < 1:
            raise InputError(f"max_categories must be >= 1, got {max_categories}")
        self.max_categories = int(max_categories)
        self.on_fit = on_fit
        self.columns: list[dict[str, Any]] | None = None

    @property
    def fitted(self) -> bool:
        return self.columns is not None

    def schema(self) -> dict[str, Any]:
        """What fixes the encoder's shapes: numeric column names and, per
        categorical column, its name and vocabulary size."""
        self._require_fit()
        return {"numeric": [c["name"] for c in self.columns if c["kind"] == "numeric"],
                "categorical": [[c["name"], len(c["vocabulary"])] for c in self.columns
                                if c["kind"] == "categorical"]}

    def source_columns(self) -> list[str] | None:
        """The fitted column names: ``mmzoo predict`` reads a row's cells from them."""
        return [c["name"] for c in self.columns] if self.columns is not None else None

    def example(self, batch: int) -> list[dict[str, Any]]:
        """``batch`` rows to trace the encoder with: numeric cells spread around
        their mean, categorical ones through the vocabulary; the first row
        misses its first cell and the last (of three or more) has unseen categories."""
        self._require_fit()
        rows = []
        for i in range(batch):
            row: dict[str, Any] = {}
            for j, column in enumerate(self.columns):
                if i == 0 and j == 0 and batch > 1:
                    continue
                if column["kind"] == "numeric":
                    row[column["name"]] = column["mean"] + (i - batch / 2) * column["std"] / batch
                else:
                    vocabulary = column["vocabulary"]
                    unseen = (i == batch - 1 and batch > 2) or not vocabulary
                    row[column["name"]] = "<unseen>" if unseen else vocabulary[i % len(vocabulary)]
            rows.append(row)
        return rows

    # ------------------------------------------------------------ fitting
    def fit(self, values: Any, *, numeric: Sequence[str] | None = None,
            categorical: Sequence[str] | None = None) -> "TabularProcessor":
        """Learn column statistics from training rows.

        Column names come from the dict keys (first-seen order) or are
        ``"0"``, ``"1"``, ... for sequences and arrays. A column whose
        present values are all numbers is numeric, any other categorical;
        ``numeric=`` / ``categorical=`` fix the kinds (and the columns) instead.
        """
        rows = self._rows(values, names=None)
        names: list[str] = list(numeric or []) + list(categorical or [])
        if not names:
            for row in rows:
                names.extend(k for k in row if k not in names)
        if not names:
            raise InputError("the tabular processor cannot be fitted: the rows have no columns")
        columns = []
        for name in names:
            present = [row[name] for row in rows if not _is_missing(row.get(name))]
            if numeric is not None or categorical is not None:
                kind = "numeric" if name in (numeric or ()) else "categorical"
            else:
                kind = "numeric" if present and all(_is_number(v) for v in present) else "categorical"
            if kind == "numeric":
                numbers_ = [self._number(v, name, i) for i, v in enumerate(present)]
                mean = sum(numbers_) / len(numbers_) if numbers_ else 0.0
                var = sum((x - mean) ** 2 for x in numbers_) / len(numbers_) if numbers_ else 0.0
                std = math.sqrt(var) if var > 0 else 1.0
                columns.append({"name": name, "kind": kind, "mean": mean, "std": std})
            else:
                counts = Counter(str(v).strip() for v in present)
                ranked = sorted(counts, key=lambda v: (-counts[v], v))[: self.max_categories]
                columns.append({"name": name, "kind": kind, "vocabulary": ranked})
        self._set_columns(columns)
        return self

    def _set_columns(self, columns: list[dict[str, Any]]) -> None:
        self.columns = columns
        self._index = {c["name"]: i for i, c in enumerate(columns)}
        self._vocab = [{v: i + 2 for i, v in enumerate(c["vocabulary"])} if c["kind"] == "categorical" else None
                       for c in columns]
        if self.on_fit is not None:
            self.on_fit(self.schema())

    # ------------------------------------------------------------ processing
    def _require_fit(self) -> None:
        if self.columns is None:
            raise InputError("the tabular processor is not fitted: call model.processor.fit(train_split) "
                             "(mmzoo.train.fit does it on the training split), or load a trained model")

    def _rows(self, values: Any, names: list[str] | None) -> list[dict[str, Any]]:
        """Normalise the input forms to one dict per row (None: all cells missing)."""
        if hasattr(values, "ndim") and hasattr(values, "tolist"):  # numpy array / tensor
            if values.ndim != 2:
                raise InputError(f"a tabular array must be 2-D (rows, columns), got shape {tuple(values.shape)}")
            values = values.tolist()
        if isinstance(values, (str, bytes, Mapping)) or not isinstance(values, Sequence):
            raise InputError(f"tabular input must be a list of rows (dicts or sequences) or a 2-D array, "
                             f"got {type(values).__name__}")
        rows = []
        for i, row in enumerate(values):
            if row is None:
                rows.append({})
            elif isinstance(row, Mapping):
                rows.append({str(k): v for k, v in row.items()})
            elif isinstance(row, Sequence) and not isinstance(row, (str, bytes)):
                keys = names if names is not None else [str(j) for j in range(len(row))]
                if len(row) != len(keys):
                    raise InputError(f"tabular row {i} has {len(row)} values for {len(keys)} columns "
                                     f"{keys}")
                rows.append(dict(zip(keys, row)))
            else:
                raise InputError(f"tabular row {i} must be a dict, a sequence or None, got {type(row).__name__}")
        return rows

    @staticmethod
    def _number(value: Any, column: str, row: int) -> float:
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise InputError(f"tabular row {row}, column {column!r}: {value!r} is not a number "
                             "(the column is numeric)") from None
        if math.isinf(number):
            raise InputError(f"tabular row {row}, column {column!r}: {value!r} is infinite; "
                             "pass None or NaN for a missing cell")
        return number

    def __call__(self, values: Any) -> dict[str, Tensor]:
        self._require_fit()
        rows = self._rows(values, [c["name"] for c in self.columns])
        if not rows:
            raise InputError("no tabular rows given")
        known = set(self._index)
        numeric_cols = [(i, c) for i, c in enumerate(self.columns) if c["kind"] == "numeric"]
        categorical_cols = [(i, c) for i, c in enumerate(self.columns) if c["kind"] == "categorical"]
        numeric = torch.zeros(len(rows), len(numeric_cols))
        missing = torch.ones(len(rows), len(numeric_cols), dtype=torch.bool)
        categorical = torch.full((len(rows), len(categorical_cols)), MISSING_ID, dtype=torch.long)
        for r, row in enumerate(rows):
            unknown = sorted(set(row) - known)
            if unknown:
                raise InputError(f"tabular row {r} has unknown column(s) {unknown}; the processor was "
                                 f"fitted on {sorted(known)}")
            for j, (i, column) in enumerate(numeric_cols):
                value = row.get(column["name"])
                if not _is_missing(value):
                    numeric[r, j] = (self._number(value, column["name"], r) - column["mean"]) / column["std"]
                    missing[r, j] = False
            for j, (i, column) in enumerate(categorical_cols):
                value = row.get(column["name"])
                if not _is_missing(value):
                    categorical[r, j] = self._vocab[i].get(str(value).strip(), UNSEEN_ID)
        return {"numeric": numeric, "numeric_missing": missing, "categorical": categorical}

    # ------------------------------------------------------------ files
    def save(self, directory: Path) -> None:
        from mmzoo.weights import atomic_write

        if self.columns is None:
            return  # nothing learned yet; load() keeps an unfitted processor
        state = {"max_categories": self.max_categories, "columns": self.columns}
        atomic_write(directory / FILE_NAME, json.dumps(state, indent=2, sort_keys=True).encode("utf-8"))

    def load(self, directory: Path) -> None:
        path = directory / FILE_NAME
        if not path.is_file():
            return  # saved before it was fitted
        try:
            state = json.loads(path.read_text(encoding="utf-8"))
            columns = [dict(c) for c in state["columns"]]
            for c in columns:
                if c["kind"] == "numeric":
                    c["mean"], c["std"] = float(c["mean"]), float(c["std"])
                elif c["kind"] == "categorical":
                    c["vocabulary"] = [str(v) for v in c["vocabulary"]]
                else:
                    raise ValueError(f"unknown column kind {c['kind']!r}")
            self.max_categories = int(state["max_categories"])
        except (OSError, KeyError, TypeError, ValueError) as exc:
            raise WeightsError(f"{path} is malformed: {type(exc).__name__}: {exc}") from exc
        self._set_columns(columns)
