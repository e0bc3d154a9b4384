"""The ``hf-dataset`` task: data through Hugging Face ``datasets``.

Local CSV / JSON / Parquet files, an ``imagefolder`` or WebDataset ``.tar``
shards (or a hub dataset id where the network allows) are loaded with
``datasets.load_dataset``: memory-mapped Arrow tables by default, or an
iterable stream with ``streaming=True`` (read shard by shard, split across
ranks and DataLoader workers, never held whole). Needs the optional extra
``pip install "mmzoo[data]"``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from mmzoo.errors import InputError
from mmzoo.tasks import SPLITS, Split, Task, split_indices

__all__ = ["HfDatasetTask"]

#: file suffix -> datasets builder
FORMATS = {".csv": "csv", ".tsv": "csv", ".json": "json", ".jsonl": "json", ".ndjson": "json",
           ".parquet": "parquet", ".tar": "webdataset"}
#: split names datasets may use for our train/val/test
SPLIT_NAMES = {"train": ("train",), "val": ("validation", "val", "valid", "dev"), "test": ("test",)}
#: columns tried when the default column name is absent (WebDataset keys are file suffixes)
FALLBACKS = {"image": ("png", "jpg", "jpeg", "webp", "img"), "text": ("txt", "caption", "sentence"),
             "label": ("cls", "labels", "target", "class")}


class Column:
    """One column of a map-style dataset as a lazy sequence (``column[i]``
    reads and decodes row i only), so a Split of a million images holds no image."""

    def __init__(self, dataset, column: str):
        self.dataset = dataset.select_columns([column])
        self.column = column

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> Any:
        return self.dataset[int(index)][self.column]

    def __iter__(self):
        for row in self.dataset:
            yield row[self.column]


class HfDatasetTask(Task):
    """Your data through Hugging Face ``datasets`` (``path=`` or ``data=``).

    ``path``: a file, a folder of files (``format=`` csv/json/parquet/
    imagefolder/webdataset, else inferred from the files) or a hub id.
    Splits named train/validation/test in the data are used as they are;
    otherwise the one split is divided by ``fractions`` (seeded, rows of one
    ``group_column`` value together). Columns: ``image_column``,
    ``text_column`` (``""`` leaves that input out), ``label_column``;
    defaults ``image``/``text``/``label``, falling back to the WebDataset
    keys ``png``/``jpg``, ``txt``, ``cls``. ``labels`` fixes the class names
    (needed with ``streaming=True`` unless the label column is a ClassLabel).
    ``streaming=True`` reads the data as a stream (it must have named splits).
    """

    def __init__(self, path: str | None = None, seed: int = 0, *, data: str | None = None,
                 format: str | None = None, name: str | None = None, streaming: bool = False,
                 image_column: str | None = "image", text_column: str | None = "text",
                 label_column: str = "label", group_column: str | None = None,
                 labels: Sequence[str] | str | None = None, fractions: Sequence[float] = (0.6, 0.2, 0.2),
                 cache_dir: str | None = None):
        source = path if path is not None else data
        if source is None:
            raise InputError("task 'hf-dataset' needs path= (a file, a folder of files or a hub id; "
                             "mmzoo train/bench: --data PATH or --task-arg path=PATH)")
        if path is not None and data is not None:
            raise InputError("task 'hf-dataset': give path= or data=, not both")
        try:
            import datasets  # noqa: F401
        except ImportError:
            raise InputError("task 'hf-dataset' needs Hugging Face datasets: pip install 'mmzoo[data]'") from None
        self.source = str(source)
        self.format = format
        self.config_name = name
        self.streaming = bool(streaming)
        self.group_column = group_column or None
        self.fractions = tuple(float(f) for f in fractions)
        self.cache_dir = cache_dir
        if isinstance(labels, str):
            labels = [s.strip() for s in labels.split(",") if s.strip()]
        self._fixed_labels = list(labels) if labels is not None else None
        self._data = self._load()
        first = next(iter(self._data.values()))
        columns = list(first.column_names or first.features or [])
        self.columns = {slot: self._column(slot, wanted, columns)
                        for slot, wanted in (("image", image_column), ("text", text_column)) if wanted}
        self.label_column = self._column("label", label_column, columns)
        if not self.columns:
            raise InputError("task 'hf-dataset' needs at least one of image_column and text_column")
        feature = (first.features or {}).get(self.label_column)
        self._label_is_index = type(feature).__name__ == "ClassLabel" and self._fixed_labels is None
        super().__init__(name="hf-dataset", description=f"Hugging Face datasets from {self.source}",
                         inputs=tuple(self.columns), labels=[], seed=seed)
        self.labels = self._class_names(feature)

    # ------------------------------------------------------------ loading
    def _load(self) -> dict[str, Any]:
        from datasets import load_dataset

        local = Path(self.source)
        kwargs: dict[str, Any] = {"streaming": self.streaming, "cache_dir": self.cache_dir}
        if local.is_file():
            builder = self.format or FORMATS.get(local.suffix.lower())
            if builder is None:
                raise InputError(f"task 'hf-dataset': cannot tell the format of {self.source!r}; "
                                 f"pass format= (one of {sorted(set(FORMATS.values()) | {'imagefolder'})})")
            args, kwargs["data_files"] = (builder,), str(local)
        elif local.is_dir():
            args = (self.format, ) if self.format else (str(local),)
            if self.format:
                kwargs["data_dir"] = str(local)
        elif local.is_absolute() or self.source.startswith("."):
            raise InputError(f"task 'hf-dataset': {self.source!r} does not exist")
        else:  # a hub id
            args = (self.source,)
        if self.config_name:
            kwargs["name"] = self.config_name
        try:
            loaded = load_dataset(*args, **kwargs)
        except (FileNotFoundError, ValueError, ConnectionError) as exc:
            raise InputError(f"task 'hf-dataset': cannot load {self.source!r}: {exc}") from exc
        return dict(loaded)

    def _column(self, slot: str, wanted: str, columns: list[str]) -> str:
        if wanted in columns:
            return wanted
        if wanted == slot:  # the default name: try the usual alternatives
            for candidate in FALLBACKS[slot]:
                if candidate in columns:
                    return candidate
        raise InputError(f"task 'hf-dataset': {self.source} has no column {wanted!r} for the {slot}; it has "
                         f"{columns} (set {slot}_column=, or {slot}_column='' to leave the input out)"
                         if slot != "label" else
                         f"task 'hf-dataset': {self.source} has no label column {wanted!r}; it has {columns} "
                         "(set label_column=)")

    def _class_names(self, feature) -> list[str]:
        if self._fixed_labels is not None:
            return self._fixed_labels
        if self._label_is_index:
            return list(feature.names)
        if self.streaming:
            raise InputError("task 'hf-dataset' with streaming=True needs labels= (the class names, e.g. "
                             "--task-arg labels=cat,dog) unless the label column is a ClassLabel")
        from mmzoo._sort import natural_key

        return sorted({str(v) for split in self._data.values() for v in split[self.label_column]}, key=natural_key)

    def _named(self) -> dict[str, str] | None:
        """Our split name -> the data's split name, when the data has all three."""
        found = {}
        for ours, names in SPLIT_NAMES.items():
            match = next((n for n in names if n in self._data), None)
            if match is None:
                return None
            found[ours] = match
        return found

    # ------------------------------------------------------------ splits
    def load_splits(self) -> dict[str, Any]:
        named = self._named()
        if self.streaming:
            from mmzoo.data import StreamingSplit

            if named is None:
                raise InputError(f"task 'hf-dataset' with streaming=True needs the data split into train, "
                                 f"validation and test (files or folders named train-*, validation-*, "
                                 f"test-*); {self.source} has {sorted(self._data)}")
            return {ours: StreamingSplit(self._data[theirs], self.columns, self.label_column, self.labels,
                                         label_is_index=self._label_is_index)
                    for ours, theirs in named.items()}
        if named is not None:
            return {ours: self._split(self._data[theirs]) for ours, theirs in named.items()}
        if len(self._data) != 1:
            raise InputError(f"task 'hf-dataset': {self.source} has splits {sorted(self._data)}; expected "
                             f"one, or {', '.join(SPLITS)}")
        dataset = next(iter(self._data.values()))
        groups = list(dataset[self.group_column]) if self.group_column else None
        parts = split_indices(len(dataset), seed=self.seed, groups=groups, fractions=self.fractions)
        empty = [name for name, idx in parts.items() if not idx]
        if empty:
            raise InputError(f"task 'hf-dataset': the {empty[0]} split is empty ({len(dataset)} rows); "
                             "add rows or change fractions=")
        return {name: self._split(dataset.select(idx)) for name, idx in parts.items()}

    def _split(self, dataset) -> Split:
        import torch

        index = {name: i for i, name in enumerate(self.labels)}
        labels = []
        for row, value in enumerate(dataset[self.label_column]):
            if self._label_is_index:
                labels.append(int(value))
            elif str(value) in index:
                labels.append(index[str(value)])
            else:
                raise InputError(f"task 'hf-dataset': row {row}: label {value!r} is not one of {self.labels}")
        groups = list(dataset[self.group_column]) if self.group_column else None
        return Split(inputs={slot: Column(dataset, column) for slot, column in self.columns.items()},
                     labels=torch.tensor(labels, dtype=torch.long), groups=groups)
