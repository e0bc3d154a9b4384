"""The benchmark task contract.

A task is registered by a plugin with ``registry.add_task(name, "module:attr")``
and built with ``mmzoo.get_task(name, **kwargs)`` (``seed``, and ``data`` for
tasks that read files). It provides labelled splits whose inputs are keyed by
input name (``"image"``, ``"text"``, ``"audio"``, ...), matching the slots of
a model built from one encoder per input.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

from mmzoo.errors import InputError

__all__ = ["Split", "Task", "SPLITS", "split_indices"]

SPLITS = ("train", "val", "test")


@dataclass
class Split:
    """One split: ``inputs[name]`` is either a tensor with the samples along
    dim 0 (ready for the model), a mapping of such tensors (a tokenizer's
    ``input_ids`` and ``attention_mask``) or a list of raw values for the
    model's processor (strings, images, waveforms, table rows); ``labels`` is
    an (N,) LongTensor."""

    inputs: Mapping[str, Any]
    labels: Any
    groups: Sequence[Any] | None = None

    def __post_init__(self) -> None:
        n = len(self.labels)
        for name, values in self.inputs.items():
            parts = values.items() if isinstance(values, Mapping) else [("", values)]
            for key, part in parts:
                if len(part) != n:
                    where = f"{name!r}" + (f" ({key!r})" if key else "")
                    raise InputError(f"split input {where} has {len(part)} samples for {n} labels")

    def __len__(self) -> int:
        return len(self.labels)


@dataclass
class Task:
    """Base class of tasks: subclasses implement :meth:`load_splits`.

    ``inputs`` lists the input names the task provides, ``model_inputs`` the
    modality of each (used to choose encoders), ``labels`` the class names.
    """

    name: str = ""
    description: str = ""
    inputs: tuple[str, ...] = ()
    labels: list[str] = field(default_factory=list)
    seed: int = 0

    @property
    def num_classes(self) -> int:
        return len(self.labels)

    def load_splits(self) -> dict[str, Split]:  # pragma: no cover - abstract
        raise NotImplementedError

    def splits(self) -> dict[str, Split]:
        """The train/val/test splits (loaded once, then cached)."""
        cached = getattr(self, "_splits", None)
        if cached is None:
            cached = self.load_splits()
            missing = [s for s in SPLITS if s not in cached]
            if missing:
                raise InputError(f"task {self.name!r} did not provide split(s) {missing}")
            self._splits = cached
        return cached


def split_indices(n: int, *, seed: int = 0, groups: Sequence[Any] | None = None,
                  fractions: tuple[float, float, float] = (0.6, 0.2, 0.2)) -> dict[str, list[int]]:
    """Seeded train/val/test indices of ``n`` samples.

    Samples sharing a group (``groups[i]``) always land in the same split, so
    related rows (the same image paired with two texts, one speaker's
    recordings) never leak from train into test. Plain Python, no torch.
    """
    import random

    if len(fractions) != 3 or any(f < 0 for f in fractions) or sum(fractions) <= 0:
        raise InputError(f"fractions must be three non-negative numbers (train, val, test), got {fractions}")
    if groups is not None and len(groups) != n:
        raise InputError(f"{len(groups)} groups given for {n} samples")
    keys = list(range(n)) if groups is None else list(groups)
    order: dict[Any, list[int]] = {}
    for i, key in enumerate(keys):
        order.setdefault(key, []).append(i)
    unique = list(order)
    random.Random(seed).shuffle(unique)
    total = sum(fractions)
    n_train = round(len(unique) * fractions[0] / total)
    n_val = round(len(unique) * fractions[1] / total)
    parts = {"train": unique[:n_train], "val": unique[n_train:n_train + n_val],
             "test": unique[n_train + n_val:]}
    return {split: sorted(i for key in part for i in order[key]) for split, part in parts.items()}
