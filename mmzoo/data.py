"""The input pipeline: task splits -> batches for ``model(**batch)``.

Three ways a split reaches the model, all through a ``torch.utils.data.DataLoader``:

- ``cache="memory"``: the whole split runs through the model's processor
  once and batches are slices of the resulting tensors (:class:`Encoded`);
  fastest for small data (the digits tasks, tests).
- ``cache="none"``: a map-style :class:`SplitDataset` loads and processes one
  sample at a time (image file -> PIL -> transform, augmented in training;
  text stays a string) and :class:`Collate` tokenises and pads the texts of a
  batch and stacks the images, in worker processes when ``num_workers > 0``.
- a :class:`StreamingSplit` (an iterable Hugging Face dataset) is read as a
  stream, split across ranks and workers with
  ``datasets.distributed.split_dataset_by_node``.

``cache="auto"`` keeps a split in memory when its encoded size is under
:data:`MEMORY_CACHE_BYTES` and no augmentation is asked for. Training order
comes from a ``DistributedSampler`` (one process or many: the same seeded
permutation, each rank a disjoint shard, ``set_epoch`` every epoch), so a run
is reproducible and the global RNG is never reseeded.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass
from typing import Any, Iterator, Mapping, Sequence

import torch
from torch import Tensor

from mmzoo.collate import Collate, seed_worker
from mmzoo.errors import InputError, MMZooError

__all__ = ["Encoded", "encode", "SplitDataset", "StreamingSplit", "Collate", "Batches", "make_loader",
           "take_rows", "seed_worker", "MEMORY_CACHE_BYTES", "CACHES"]

logger = logging.getLogger(__name__)

#: ``cache="auto"`` keeps an encoded split in memory up to this size
MEMORY_CACHE_BYTES = 256 * 2**20
CACHES = ("auto", "memory", "none")
#: texts read from a stream to fit an untrained scratch tokenizer
STREAM_TOKENIZER_TEXTS = 20_000


# ---------------------------------------------------------------- in-memory cache
@dataclass
class Encoded:
    """A split as tensors: ``inputs[slot]`` is a tensor or a dict of tensors
    (text: ``input_ids``/``attention_mask``), all with samples along dim 0."""

    inputs: dict[str, Any]
    labels: Tensor

    def __len__(self) -> int:
        return len(self.labels)

    def batch(self, index: Tensor, device: torch.device | str | None = None,
              drop: Sequence[str] = (), channels_last: bool = False) -> dict[str, Any]:
        return to_device({slot: take_rows(value, index) for slot, value in self.inputs.items() if slot not in drop},
                         device, channels_last)


def take_rows(value: Any, index) -> Any:
    """The rows ``index`` of a batch input: a tensor, or a mapping of tensors (token ids and mask)."""
    if isinstance(value, Mapping):
        return {k: take_rows(v, index) for k, v in value.items()}
    return value[index]


def to_device(value: Any, device, channels_last: bool = False) -> Any:
    """Move a batch (tensors, dicts of tensors) to ``device``; 4-D tensors in
    channels-last layout when asked."""
    if isinstance(value, Mapping):
        return {k: to_device(v, device, channels_last) for k, v in value.items()}
    if isinstance(value, Tensor):
        value = value.to(device, non_blocking=True) if device is not None else value
        if channels_last and value.dim() == 4:
            value = value.contiguous(memory_format=torch.channels_last)
    return value


def check_inputs(model, inputs: Sequence[str]) -> None:
    missing = [slot for slot in model.inputs if slot not in inputs]
    if missing:
        raise InputError(f"the model takes input(s) {list(model.inputs)} but the data has "
                         f"{sorted(inputs)}: no {missing}; build a model with one encoder per data input")


def encode(model, split) -> Encoded:
    """Turn a :class:`~mmzoo.tasks.Split` into tensors for ``model`` (raw
    values through ``model.processor``); inputs the model does not take are
    left out. An :class:`Encoded` is returned as is."""
    if isinstance(split, Encoded):
        return split
    if isinstance(split, StreamingSplit):
        raise InputError("a streaming split cannot be held in memory; train on it with cache='auto' or 'none'")
    inputs = getattr(split, "inputs", None)
    if inputs is None:
        raise InputError(f"expected a mmzoo.tasks.Split or mmzoo.train.Encoded, got {type(split).__name__}")
    check_inputs(model, inputs)
    out: dict[str, Any] = {}
    for slot in model.inputs:
        values = inputs[slot]
        if isinstance(values, (Tensor, Mapping)):
            out[slot] = values
        else:
            out[slot] = model.processor(**{slot: list(values)})[slot]
    return Encoded(out, torch.as_tensor(split.labels, dtype=torch.long))


class EncodedDataset(torch.utils.data.Dataset):
    """An :class:`Encoded` split fetched a whole batch at a time (``dataset[indices]``)."""

    def __init__(self, data: Encoded, drop: Sequence[str] = ()):
        self.data = data
        self.drop = tuple(drop)

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, indices) -> tuple[dict[str, Any], Tensor]:
        index = torch.as_tensor(indices, dtype=torch.long)
        return self.data.batch(index, drop=self.drop), self.data.labels[index]

    def input_batches(self, slot: str, batch_size: int) -> Iterator[Any]:
        for start in range(0, len(self.data), batch_size):
            yield take_rows(self.data.inputs[slot], slice(start, start + batch_size))

    def replace_input(self, slot: str, table: Mapping[str, Tensor]) -> None:
        self.data = Encoded({**self.data.inputs, slot: dict(table)}, self.data.labels)


# ---------------------------------------------------------------- one sample at a time
class SplitDataset(torch.utils.data.Dataset):
    """A map-style dataset over a :class:`~mmzoo.tasks.Split`: ``dataset[i]``
    is ``({input: value}, label)`` with images already through their
    processor's ``preprocess`` (``transforms[slot]``, e.g. an augmenting one,
    or the evaluation transform), tensors indexed, and texts and other raw
    values left for :class:`Collate`."""

    def __init__(self, split, processors: Mapping[str, Any], transforms: Mapping[str, Any] | None = None):
        self.inputs = {slot: split.inputs[slot] for slot in processors}
        self.labels = split.labels
        self.processors = dict(processors)
        self.transforms = dict(transforms or {})

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[dict[str, Any], int]:
        return ({slot: _sample(take_rows(values, i), self.processors[slot], self.transforms.get(slot), i)
                 for slot, values in self.inputs.items()}, int(self.labels[i]))

    def input_batches(self, slot: str, batch_size: int) -> Iterator[Any]:
        collate = Collate({slot: self.processors[slot]})
        for start in range(0, len(self), batch_size):
            samples = [({slot: _sample(take_rows(self.inputs[slot], i), self.processors[slot], None, i)}, 0)
                       for i in range(start, min(start + batch_size, len(self)))]
            yield collate(samples)[0][slot]

    def replace_input(self, slot: str, table: Mapping[str, Tensor]) -> None:
        self.inputs[slot] = dict(table)


def _sample(value: Any, processor, transform, index: int) -> Any:
    """Preprocess one raw image now; everything else waits for the batch."""
    if isinstance(value, (Tensor, Mapping)) or processor is None or not hasattr(processor, "preprocess"):
        return value
    return processor.preprocess(value, index, transform)


@dataclass
class StreamingSplit:
    """A split read as a stream: ``source`` is an iterable Hugging Face
    dataset (``load_dataset(..., streaming=True)``) whose rows hold
    ``columns[input]`` and ``label_column``. ``labels`` are the class names;
    a row's label is looked up by name, or taken as the class index when
    ``label_is_index`` (a ``ClassLabel`` column)."""

    source: Any
    columns: Mapping[str, str]
    label_column: str
    labels: Sequence[str]
    label_is_index: bool = False

    @property
    def inputs(self) -> dict[str, str]:
        return dict(self.columns)

    @functools.cached_property
    def _label_index(self) -> dict[str, int]:
        return {name: i for i, name in enumerate(self.labels)}

    def label(self, value: Any, row: int) -> int:
        if self.label_is_index:
            return int(value)
        index = self._label_index.get(str(value))
        if index is None:
            raise InputError(f"stream row {row}: label {value!r} in column {self.label_column!r} is not one "
                             f"of the task's labels {list(self.labels)[:20]}; pass labels= to the task")
        return index

    def texts(self, slot: str, limit: int = STREAM_TOKENIZER_TEXTS) -> list[str]:
        """The first ``limit`` texts of input ``slot`` (to fit a tokenizer)."""
        column = self.columns[slot]
        return [str(row[column]) for _, row in zip(range(limit), self.source.select_columns([column]))]


class StreamDataset(torch.utils.data.IterableDataset):
    """A :class:`StreamingSplit` as a torch iterable: this rank's and this
    worker's share of the rows, shuffled in a buffer when training."""

    def __init__(self, split: StreamingSplit, processors: Mapping[str, Any],
                 transforms: Mapping[str, Any] | None = None, *, rank: int = 0, world: int = 1,
                 shuffle: bool = False, seed: int = 0, shuffle_buffer: int = 1000):
        self.split = split
        self.processors = dict(processors)
        self.transforms = dict(transforms or {})
        self.rank, self.world = rank, world
        self.shuffle, self.seed, self.shuffle_buffer = shuffle, seed, shuffle_buffer
        self.epoch = 0

    def __iter__(self) -> Iterator[tuple[dict[str, Any], int]]:
        from datasets.distributed import split_dataset_by_node

        source = self.split.source
        if self.shuffle:
            source = source.shuffle(seed=self.seed, buffer_size=self.shuffle_buffer)
            source.set_epoch(self.epoch)
        if self.world > 1:
            source = split_dataset_by_node(source, rank=self.rank, world_size=self.world)
        worker = torch.utils.data.get_worker_info()
        # a datasets IterableDataset that is also a torch one shares its shards among workers itself
        if worker is not None and worker.num_workers > 1 and not isinstance(source, torch.utils.data.IterableDataset):
            source = split_dataset_by_node(source, rank=worker.id, world_size=worker.num_workers)
        columns = self.split.columns
        for row_no, row in enumerate(source):
            sample = {slot: _sample(row[column], self.processors[slot], self.transforms.get(slot), row_no)
                      for slot, column in columns.items()}
            yield sample, self.split.label(row[self.split.label_column], row_no)


# ---------------------------------------------------------------- batches
class Batches:
    """One split's DataLoader and what was chosen for it: ``cache``
    (``"memory"``, ``"none"`` or ``"stream"``), ``augment``, ``num_samples``
    (this rank's per epoch, None for a stream) and ``steps`` per epoch. Errors
    raised in a worker process come back as the same mmzoo error, with the
    worker's message (the file, the row) instead of a wrapped traceback."""

    def __init__(self, loader, *, cache: str, augment: bool, num_samples: int | None, sampler=None,
                 stream: StreamDataset | None = None):
        self.loader = loader
        self.cache = cache
        self.augment = augment
        self.num_samples = num_samples
        self.sampler = sampler
        self.stream = stream

    @property
    def num_rows(self) -> int | None:
        """Samples in the split (every rank's; None for a stream)."""
        return None if self.stream is not None else len(self.loader.dataset)

    @property
    def steps(self) -> int | None:
        return len(self.loader) if self.stream is None else None

    @property
    def encoded(self) -> Encoded | None:
        """The whole split as tensors when it is held in memory (``cache="memory"``), else None."""
        dataset = self.loader.dataset
        return dataset.data if isinstance(dataset, EncodedDataset) else None

    def fixed_inputs(self) -> tuple[str, ...]:
        """Inputs that reach the model the same way every epoch (not augmented, no word
        dropout; never a stream's): what the model computes from them can be computed once."""
        if self.stream is not None:
            return ()
        dataset = self.loader.dataset
        if isinstance(dataset, EncodedDataset):
            return tuple(slot for slot in dataset.data.inputs if slot not in dataset.drop)
        collate = self.loader.collate_fn
        varied = {*dataset.transforms, *(collate.text_inputs if collate.word_dropout else ())}
        return tuple(slot for slot in dataset.inputs if slot not in varied)

    def input_batches(self, slot: str, batch_size: int) -> Iterator[Any]:
        """Input ``slot`` of every sample, in order, in batches as the model takes them."""
        return self.loader.dataset.input_batches(slot, batch_size)

    def replace_input(self, slot: str, table: Mapping[str, Tensor]) -> None:
        """Serve ``{key: (N, ...) tensor}`` (row i = sample i) as input ``slot`` from now on."""
        self.loader.dataset.replace_input(slot, table)

    def set_epoch(self, epoch: int) -> None:
        if self.sampler is not None:
            self.sampler.set_epoch(epoch)
        if self.stream is not None:
            self.stream.epoch = epoch

    def __iter__(self) -> Iterator[tuple[dict[str, Any], Tensor]]:
        iterator = iter(self.loader)
        while True:
            try:
                batch = next(iterator)
            except StopIteration:
                return
            except MMZooError as exc:
                raise _unwrap_worker_error(exc) from None
            yield batch


def _unwrap_worker_error(exc: MMZooError) -> MMZooError:
    """A DataLoader re-raises a worker's exception with the worker's whole
    traceback as its message: keep the original message."""
    text = str(exc)
    marker = f"{type(exc).__module__}.{type(exc).__qualname__}: "
    if not text.startswith("Caught ") or marker not in text:
        return exc
    try:
        return type(exc)(text.rsplit(marker, 1)[1].rstrip() + " (in a DataLoader worker process)")
    except TypeError:
        return exc


def _text_inputs(model) -> list[str]:
    return [slot for slot, encoder in model.encoders.items() if getattr(encoder, "modality", "") == "text"]


def _raw_image_inputs(model, split, processors) -> list[str]:
    if isinstance(split, StreamingSplit):
        return [slot for slot, p in processors.items() if hasattr(p, "train_transform")]
    return [slot for slot, p in processors.items()
            if hasattr(p, "train_transform") and not isinstance(split.inputs[slot], (Tensor, Mapping))]


def _encoded_bytes(model, split, processors, n: int) -> int:
    """Estimated size of the whole split once encoded, from its first samples."""
    k = min(n, 4)
    if k == 0:
        return 0
    dataset = SplitDataset(split, processors)
    inputs, labels = Collate(processors)([dataset[i] for i in range(k)])
    per_sample = (_nbytes(inputs) + labels.nbytes) / max(k, 1)
    return int(per_sample * n)


def _nbytes(value: Any) -> int:
    if isinstance(value, Mapping):
        return sum(_nbytes(v) for v in value.values())
    return value.nbytes if isinstance(value, Tensor) else 0


def _resolve(model, data, processors, cache: str, augment: bool | None) -> tuple[str, bool, str]:
    """(cache, augment, why) for a training split; ``augment=None`` means:
    augment raw images whenever they are loaded per sample."""
    if cache not in CACHES:
        raise InputError(f"cache must be one of {list(CACHES)}, got {cache!r}")
    if isinstance(data, Encoded):
        if augment:
            raise InputError("augment=True needs raw images, but the split is already encoded "
                             "(mmzoo.train.Encoded); pass the task's Split")
        return "memory", False, "already encoded"
    images = bool(_raw_image_inputs(model, data, processors))
    if augment and not images:
        raise InputError(f"augment=True needs a raw image input (PIL images, arrays or paths); the model's "
                         f"inputs {list(model.inputs)} have none")
    per_sample = images if augment is None else augment
    if isinstance(data, StreamingSplit):
        if cache == "memory":
            raise InputError("cache='memory' cannot hold a streaming split; use cache='auto' or 'none'")
        return "stream", per_sample, "streaming dataset"
    if cache == "memory":
        if augment:
            raise InputError("augment=True transforms every image at every draw, so it cannot use "
                             "cache='memory'; use cache='auto' or 'none'")
        return "memory", False, "cache='memory'"
    if cache == "none" or augment:
        return "none", per_sample, f"cache={cache!r}" + (", augment=True" if augment else "")
    size, limit = _encoded_bytes(model, data, processors, len(data)) / 2**20, MEMORY_CACHE_BYTES / 2**20
    if size <= limit:
        return "memory", False, f"encoded split ~{size:.1f} MiB <= {limit:.0f} MiB"
    return "none", per_sample, f"encoded split ~{size:.0f} MiB > {limit:.0f} MiB"


def make_loader(model, data, *, batch_size: int, train: bool = False, seed: int = 0, shuffle: bool = True,
                num_workers: int = 0, cache: str = "auto", augment: bool | None = None,
                augment_options: Mapping[str, Any] | None = None, word_dropout: float = 0.0,
                drop: Sequence[str] = (), rank: int = 0, world: int = 1, pin_memory: bool = False,
                name: str = "") -> Batches:
    """The :class:`Batches` of ``data`` (a Split, :class:`Encoded` or
    :class:`StreamingSplit`) for ``model``. ``train``: shuffled (seeded),
    sharded over ``world`` ranks, augmented (``augment=None``: images are
    augmented when they are streamed or loaded per sample, never from the
    memory cache), word dropout. Evaluation: in order, never augmented."""
    if num_workers < 0:
        raise InputError(f"num_workers must be >= 0, got {num_workers}")
    if not isinstance(data, Encoded):
        check_inputs(model, getattr(data, "inputs", None) or {})
    processors = {slot: model.processor[slot] for slot in model.inputs if slot not in drop}
    if train:
        cache, augment, why = _resolve(model, data, processors, cache, augment)
    else:
        cache, _, why = _resolve(model, data, processors, cache, False)
        augment = False
    logger.info("data%s: cache=%s (%s), augment=%s, num_workers=%d", f" [{name}]" if name else "",
                cache, why, augment, 0 if cache == "memory" else num_workers)
    generator = torch.Generator().manual_seed(seed)

    if cache == "memory":
        dataset = EncodedDataset(encode(model, data), drop)
        sampler = _sampler(dataset, train, shuffle, seed, rank, world)
        batch_sampler = torch.utils.data.BatchSampler(sampler, batch_size, drop_last=False)
        loader = torch.utils.data.DataLoader(dataset, sampler=batch_sampler, batch_size=None,
                                             pin_memory=pin_memory, generator=generator)
        return Batches(loader, cache=cache, augment=False, num_samples=len(batch_sampler.sampler),
                       sampler=sampler if train else None)

    transforms = {}
    if augment:
        transforms = {slot: processors[slot].train_transform(**dict(augment_options or {}))
                      for slot in _raw_image_inputs(model, data, processors)}
    text_inputs = [slot for slot in _text_inputs(model) if slot in processors]
    collate = Collate(processors, text_inputs, word_dropout if train else 0.0)
    workers = dict(num_workers=num_workers, worker_init_fn=seed_worker if num_workers else None,
                   pin_memory=pin_memory, generator=generator)
    if cache == "stream":
        stream = StreamDataset(data, processors, transforms, rank=rank if train else 0, world=world if train else 1,
                               shuffle=train and shuffle, seed=seed)
        # workers are not persistent: each epoch's workers must see the new epoch (shuffle order)
        loader = torch.utils.data.DataLoader(stream, batch_size=batch_size, collate_fn=collate, **workers)
        return Batches(loader, cache=cache, augment=bool(augment), num_samples=None, stream=stream)
    dataset = SplitDataset(data, processors, transforms)
    sampler = _sampler(dataset, train, shuffle, seed, rank, world)
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, sampler=sampler, collate_fn=collate,
                                         persistent_workers=num_workers > 0, **workers)
    return Batches(loader, cache=cache, augment=bool(augment), num_samples=len(sampler),
                   sampler=sampler if train else None)


def _sampler(dataset, train: bool, shuffle: bool, seed: int, rank: int, world: int):
    if not train:
        return torch.utils.data.SequentialSampler(dataset)
    from torch.utils.data.distributed import DistributedSampler

    # one process or many: the same seeded permutation per epoch, padded by
    # wrap-around so every rank runs the same steps, rank r taking every world-th sample
    return DistributedSampler(dataset, num_replicas=world, rank=rank, shuffle=shuffle, seed=seed)


def split_texts(split, slot: str) -> list[str] | None:
    """The raw texts of input ``slot`` (a stream: its first texts), or None
    when the split holds tensors there."""
    if isinstance(split, StreamingSplit):
        return split.texts(slot) if slot in split.columns else None
    values = getattr(split, "inputs", {}).get(slot)
    if values is None or isinstance(values, (Tensor, Mapping)):
        return None
    return list(values)

