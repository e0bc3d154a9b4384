"""Run a saved model over new data: ``mmzoo predict`` / ``mmzoo embed`` and
``model.predict(batch)``.

A data file is a CSV or JSONL with one column per model input, named as in
training (``image`` holds file paths, ``text`` strings, ...); a table input
is read from its own columns, the ones its processor was fitted on (``age``,
``dept``, ...), unless the file has a column named after the input (JSONL
objects). An empty cell (or a JSON ``null``) means that input (or that
table cell) is missing for that row; a row with no input at all gets an
empty prediction rather than stopping the run. Rows go through the model's
own processor in batches, with a progress bar.
"""

from __future__ import annotations

import csv
import json
import logging
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import torch
from torch import Tensor

from mmzoo._rows import LINE, read_table
from mmzoo.errors import InputError

__all__ = ["load_model", "read_rows", "model_rows", "predict_batch", "predict_file", "embed_file",
           "predict_command", "embed_command"]

ID_COLUMN = "id"

logger = logging.getLogger(__name__)


def load_model(source: str):
    """A saved model folder, or ``zoo:NAME`` (a zoo entry with its weights)."""
    import mmzoo

    return mmzoo.load(source)


def read_rows(path: str | Path) -> list[dict[str, Any]]:
    """The rows of a ``.csv`` or ``.jsonl`` file (``.gz``/``.xz`` too) as dicts,
    read as the csv task reads them; empty cells become None."""
    rows, _ = read_table(Path(path), "mmzoo predict")
    return [{k: (v if v != "" else None) for k, v in row.items() if k != LINE} for row in rows]


def model_rows(model, rows: Sequence[Mapping[str, Any]], path: str) -> list[dict[str, Any]]:
    """The file's rows with the model's inputs as keys: an input's own column,
    or the cells of the columns its processor reads (a table row as a dict of
    its present cells; None when every cell is empty)."""
    columns = set().union(*(row.keys() for row in rows)) if rows else set()
    gathered = {}
    for slot in model.inputs:
        source = model.processor[slot].source_columns() if slot not in columns else None
        if source and columns & set(source):
            gathered[slot] = source
    if not columns & set(model.inputs) and not gathered:
        wanted = [f"{slot!r}" + (f" (or its columns {source})" if (source := model.processor[slot].source_columns())
                                 else "") for slot in model.inputs]
        raise InputError(f"{path} has columns {sorted(columns)} but the model reads {', '.join(wanted)}: "
                         "name the columns as in training")

    absent = [slot for slot in model.inputs if slot not in columns and slot not in gathered]
    if absent:
        logger.warning("%s has no column for input(s) %s (columns: %s): every row is predicted without "
                       "them; name a column as the input to give it", path, absent, sorted(columns))

    def cells(row: Mapping[str, Any], source: Sequence[str]) -> dict[str, Any] | None:
        present = {c: row[c] for c in source if row.get(c) is not None}
        return present or None

    return [{**row, **{slot: cells(row, source) for slot, source in gathered.items()}} for row in rows]


def _scatter(value: Any, index: Tensor, batch: int) -> Any:
    """Processed values of the present rows -> a batch-sized tensor (zeros elsewhere)."""
    if isinstance(value, Mapping):
        return {k: _scatter(v, index, batch) for k, v in value.items()}
    out = value.new_zeros((batch, *value.shape[1:]))
    out[index] = value
    return out


def _encode_rows(model, rows: Sequence[Mapping[str, Any]]) -> tuple[dict[str, Any], dict[str, Tensor]]:
    """Model inputs and presence masks for a batch of raw rows."""
    inputs: dict[str, Any] = {}
    present: dict[str, Tensor] = {}
    for slot in model.inputs:
        mask = torch.tensor([row.get(slot) is not None for row in rows], dtype=torch.bool)
        present[slot] = mask
        if mask.any():
            values = [row[slot] for row in rows if row.get(slot) is not None]
            processed = model.processor(**{slot: values})[slot]
            inputs[slot] = _scatter(processed, mask.nonzero().flatten(), len(rows))
    return inputs, present


def _batches(rows: Sequence[Any], batch_size: int, progress: bool, desc: str) -> Iterator[Sequence[Any]]:
    from tqdm.auto import tqdm

    if batch_size < 1:
        raise InputError(f"batch size must be >= 1, got {batch_size}")
    with tqdm(total=len(rows), disable=not progress, desc=desc, unit="row", leave=False) as bar:
        for start in range(0, len(rows), batch_size):
            chunk = rows[start:start + batch_size]
            yield chunk
            bar.update(len(chunk))


def _run(model, rows: Sequence[Mapping[str, Any]], batch_size: int, progress: bool, desc: str,
         embed: bool, device=None) -> Tensor:
    """Probabilities (or embeddings) per row; NaN for rows with no input."""
    if device is not None:
        model.to(device)
    model.eval()
    width = model.num_features if embed or not model.num_classes else model.num_classes
    outputs = []
    with torch.no_grad():
        for chunk in _batches(rows, batch_size, progress, desc):
            out = torch.full((len(chunk), width), float("nan"))
            usable = [i for i, row in enumerate(chunk) if any(row.get(s) is not None for s in model.inputs)]
            if usable:
                inputs, present = _encode_rows(model, [chunk[i] for i in usable])
                device_ = model._device()
                inputs = _to(inputs, device_)
                present = {k: v.to(device_) for k, v in present.items()}
                if embed:
                    values = model.forward_features(**inputs, present=present)
                else:
                    values = model(**inputs, present=present)
                    if model.num_classes:
                        values = values.float().softmax(-1)
                out[usable] = values.float().cpu()
            outputs.append(out)
    return torch.cat(outputs) if outputs else torch.empty(0, width)


def _to(value: Any, device) -> Any:
    if isinstance(value, Mapping):
        return {k: _to(v, device) for k, v in value.items()}
    return value.to(device)


def class_names(model) -> list[str]:
    return list(model.labels) if model.labels else [str(i) for i in range(model.num_classes)]


def predict_batch(model, batch: Mapping[str, Any], present: Mapping[str, Any] | None = None
                  ) -> tuple[list[str], Tensor]:
    """Predicted label names and (B, num_classes) probabilities for ``batch``:
    model inputs as tensors, or raw values (lists) that go through the
    model's processor."""
    if not model.num_classes:
        raise InputError("predict() needs a classifier (num_classes > 0); use forward_features for embeddings")
    raw = {k: v for k, v in batch.items() if isinstance(v, (list, tuple))}
    inputs = {**batch, **(model.processor(**raw) if raw else {})}
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            probabilities = model(**_to(inputs, model._device()), present=present).float().softmax(-1).cpu()
    finally:
        model.train(was_training)
    names = class_names(model)
    return [names[i] for i in probabilities.argmax(-1).tolist()], probabilities


def predict_file(model, data: str | Path, out: str | Path, *, batch_size: int = 64,
                 progress: bool = True, device=None) -> int:
    """Write ``out`` (CSV): row id, predicted label, one probability column per class."""
    from mmzoo.weights import atomic_write

    if not model.num_classes:
        raise InputError("mmzoo predict needs a classifier (num_classes > 0); use mmzoo embed")
    rows = model_rows(model, read_rows(data), str(data))
    probabilities = _run(model, rows, batch_size, progress, "predict", embed=False, device=device)
    names = class_names(model)
    import io

    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow([ID_COLUMN, "label", *(f"prob_{name}" for name in names)])
    for number, (row, p) in enumerate(zip(rows, probabilities)):
        row_id = row.get(ID_COLUMN) if row.get(ID_COLUMN) is not None else number
        if torch.isnan(p).any():  # no input at all in this row
            writer.writerow([row_id, "", *([""] * len(names))])
        else:
            writer.writerow([row_id, names[int(p.argmax())], *(f"{float(v):.6g}" for v in p)])
    atomic_write(Path(out), buffer.getvalue().encode("utf-8"))
    return len(rows)


def embed_file(model, data: str | Path, out: str | Path, *, batch_size: int = 64,
               progress: bool = True, device=None) -> tuple[int, int]:
    """Write the fused (N, num_features) embeddings to ``out`` (.npy, float32; NaN rows have no input)."""
    import io

    import numpy as np

    from mmzoo.weights import atomic_write

    if Path(out).suffix != ".npy":
        raise InputError(f"embeddings are written as .npy; got {out}")
    if model.fusion.decision_level and model.num_classes:
        raise InputError(f"{model.name!r} fuses decisions, so it has no shared embedding to write")
    rows = model_rows(model, read_rows(data), str(data))
    embeddings = _run(model, rows, batch_size, progress, "embed", embed=True, device=device)
    buffer = io.BytesIO()
    np.save(buffer, embeddings.numpy().astype(np.float32))
    atomic_write(Path(out), buffer.getvalue())
    return tuple(embeddings.shape)


def predict_command(args) -> int:
    model = load_model(args.model)
    n = predict_file(model, args.data, args.out, batch_size=args.batch_size,
                     progress=not args.no_progress, device=args.device)
    print(f"wrote {n} predictions to {args.out}")
    return 0


def embed_command(args) -> int:
    model = load_model(args.model)
    shape = embed_file(model, args.data, args.out, batch_size=args.batch_size,
                       progress=not args.no_progress, device=args.device)
    print(f"wrote {shape[0]} embeddings of width {shape[1]} to {args.out}")
    return 0
