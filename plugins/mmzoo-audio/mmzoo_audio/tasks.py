"""``fsdd-digits``: an AV-MNIST style task on real data.

Each recording of the Free Spoken Digit Dataset (FSDD: 3,000 WAV clips, six
speakers, 8 kHz) is paired with a scikit-learn handwritten digit image
(``sklearn.datasets.load_digits``, 8x8) of the same label. The inputs are
redundant (either one alone identifies the digit), which makes the task a
test of robustness to a missing input.

Splits follow FSDD's standard split: recordings with index 0-4 are the test
set (300); of the standard training recordings (index 5-49), index 5-9 form
the validation set (300) and 10-49 the training set (2,400). Every speaker
appears in every split. The digit images are split per class into disjoint
train/val/test pools (70/15/15 %, seeded), so no image is seen both in
training and testing.

The data is read from a folder you pass (``data=`` or ``data_root=``), else
from ``$MMZOO_FSDD_ROOT``; it is never copied.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from mmzoo.errors import InputError
from mmzoo.tasks import Split, Task

__all__ = ["FSDDDigits", "ENV_VAR", "find_recordings"]

ENV_VAR = "MMZOO_FSDD_ROOT"
SOURCE = "https://github.com/Jakobovski/free-spoken-digit-dataset"
_FILE_RE = re.compile(r"(?P<digit>\d)_(?P<speaker>[A-Za-z]+)_(?P<index>\d+)\.wav\Z")
TEST_INDICES = range(0, 5)
VAL_INDICES = range(5, 10)
IMAGE_FRACTIONS = (0.70, 0.15, 0.15)


def _how_to_get() -> str:
    return (f"Download the Free Spoken Digit Dataset ({SOURCE}, folder recordings/, CC BY-SA 4.0), "
            f"e.g. `git clone --depth 1 {SOURCE}`, then pass the folder that holds recordings/ as "
            f"data=... (or --data on the command line) or set {ENV_VAR}.")


def find_recordings(root: str | os.PathLike | None) -> tuple[Path, list[tuple[Path, int, str, int]]]:
    """The recordings folder under ``root`` and its (path, digit, speaker, index)
    entries, sorted by file name. Raises :class:`InputError` saying what to
    download when the data is not there."""
    if root is None or str(root) == "":
        root = os.environ.get(ENV_VAR)
        if not root:
            raise InputError(f"fsdd-digits needs the FSDD recordings: no data folder given and "
                             f"${ENV_VAR} is not set. {_how_to_get()}")
    root = Path(root).expanduser()
    folder = root / "recordings" if (root / "recordings").is_dir() else root
    if not folder.is_dir():
        raise InputError(f"fsdd-digits: data folder {str(root)!r} does not exist. {_how_to_get()}")
    entries = []
    for path in sorted(folder.iterdir()):
        match = _FILE_RE.match(path.name)
        if match:
            entries.append((path, int(match["digit"]), match["speaker"], int(match["index"])))
    if not entries:
        raise InputError(f"fsdd-digits: no recordings named '{{digit}}_{{speaker}}_{{index}}.wav' in "
                         f"{str(folder)!r}. {_how_to_get()}")
    return folder, entries


class FSDDDigits(Task):
    """Spoken digit (``audio``: WAV paths, 8 kHz) + handwritten digit image
    (``image``: 8x8 uint8 arrays) of the same label; 10 classes.

    Both inputs are raw values for the model's processor (see
    :class:`mmzoo.tasks.Split`); ``groups`` holds each sample's speaker.
    """

    def __init__(self, data: str | os.PathLike | None = None, *, data_root: str | os.PathLike | None = None,
                 seed: int = 0):
        if data is not None and data_root is not None and Path(data) != Path(data_root):
            raise InputError("fsdd-digits: give the data folder once (data= or data_root=), not both")
        super().__init__(
            name="fsdd-digits",
            description="FSDD spoken digit + scikit-learn digit image of the same label (AV-MNIST style)",
            inputs=("image", "audio"),
            labels=[str(d) for d in range(10)],
            seed=seed,
        )
        self.data = data if data is not None else data_root
        self.sample_rate = 8000

    def load_splits(self) -> dict[str, Split]:
        import numpy as np
        import torch
        from sklearn.datasets import load_digits

        _, entries = find_recordings(self.data)
        digits = load_digits()
        images = np.round(digits.images * (255.0 / 16.0)).astype(np.uint8)  # 0..16 -> 0..255
        rng = np.random.default_rng(self.seed)
        pools: dict[str, dict[int, np.ndarray]] = {"train": {}, "val": {}, "test": {}}
        for label in range(10):
            index = rng.permutation(np.flatnonzero(digits.target == label))
            n_train = round(IMAGE_FRACTIONS[0] * index.size)
            n_val = round(IMAGE_FRACTIONS[1] * index.size)
            pools["train"][label] = index[:n_train]
            pools["val"][label] = index[n_train:n_train + n_val]
            pools["test"][label] = index[n_train + n_val:]

        rows: dict[str, list[tuple[Path, int, str, int]]] = {"train": [], "val": [], "test": []}
        for entry in entries:
            split = "test" if entry[3] in TEST_INDICES else "val" if entry[3] in VAL_INDICES else "train"
            rows[split].append(entry)
        splits = {}
        self.image_indices: dict[str, list[int]] = {}  # which sklearn digit each sample shows
        for split, items in rows.items():
            if not items:
                raise InputError(f"fsdd-digits: the {split} split is empty; is {self.data!r} complete?")
            labels = [digit for _, digit, _, _ in items]
            chosen = [int(rng.choice(pools[split][digit])) for digit in labels]
            self.image_indices[split] = chosen
            inputs: dict[str, Any] = {
                "image": [images[i] for i in chosen],
                "audio": [str(path) for path, _, _, _ in items],
            }
            splits[split] = Split(inputs, torch.tensor(labels, dtype=torch.long),
                                  groups=[speaker for _, _, speaker, _ in items])
        return splits
