"""Samples -> batches: :class:`Collate` (stack tensors, run raw values through
their processor as one batch), training-time word dropout, and the seeded
``worker_init_fn`` of :mod:`mmzoo.data`'s loaders."""

from __future__ import annotations

import random
from typing import Any, Mapping, Sequence

import torch
from torch import Tensor

from mmzoo.errors import InputError

__all__ = ["Collate", "drop_words", "seed_worker"]


class Collate:
    """Samples -> ``(inputs, labels)``: tensors are stacked, texts (and any
    other raw values) go through their processor as one batch, which
    tokenises and pads them. ``word_dropout`` drops each word of a training
    text with that probability (never every word)."""

    def __init__(self, processors: Mapping[str, Any], text_inputs: Sequence[str] = (), word_dropout: float = 0.0):
        self.processors = dict(processors)
        self.text_inputs = tuple(text_inputs)
        self.word_dropout = word_dropout

    def __call__(self, samples: Sequence[tuple[Mapping[str, Any], int]]) -> tuple[dict[str, Any], Tensor]:
        batch: dict[str, Any] = {}
        for slot, processor in self.processors.items():
            values = [inputs[slot] for inputs, _ in samples]
            if all(_is_tensor_sample(v) for v in values):
                batch[slot] = torch.utils.data.default_collate(values)
                continue
            if self.word_dropout and slot in self.text_inputs:
                values = [drop_words(v, self.word_dropout) for v in values]
            if processor is None:
                raise InputError(f"input {slot!r} has raw values but no processor; pass tensors")
            batch[slot] = processor(values)
        return batch, torch.tensor([label for _, label in samples], dtype=torch.long)


def _is_tensor_sample(value: Any) -> bool:
    """Already a tensor, or a mapping of tensors (tokenised text); a raw
    table row is a mapping too, of cells, and goes through its processor."""
    if isinstance(value, Mapping):
        return all(isinstance(v, Tensor) for v in value.values())
    return isinstance(value, Tensor)


def drop_words(text: str, p: float) -> str:
    """Each whitespace-separated word dropped with probability ``p`` (torch's
    RNG: seeded per worker), keeping at least one."""
    words = text.split()
    if len(words) < 2:
        return text
    keep = torch.rand(len(words)) >= p
    if not bool(keep.any()):
        keep[int(torch.randint(len(words), ()))] = True
    return " ".join(w for w, k in zip(words, keep.tolist()) if k)


def seed_worker(worker_id: int) -> None:
    """``worker_init_fn``: seed ``random`` and numpy from the worker's torch
    seed (itself derived from the loader's seeded generator)."""
    import numpy as np

    seed = torch.initial_seed() % 2**32
    random.seed(seed)
    np.random.seed(seed)
