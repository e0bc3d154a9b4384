"""Robustness beyond a missing input: corrupted and mismatched inputs.

- **Corruption curves** (MultiBench-style): for each input, accuracy with that
  input corrupted at increasing levels in [0, 1] (level 0 leaves the data
  untouched), summarised by the area under the curve relative to clean
  accuracy (1.0: no loss at any level).
- **Mismatched pairs** (misalignment): accuracy when every *other* input is
  shuffled across the evaluated samples while this input keeps its labels. A
  model that uses only this input loses nothing; one that relies on the
  pairing falls.

Corruptions act on raw split values, the way data arrives:

========  =================  ====================================================
modality  corruption         at level ``l``
========  =================  ====================================================
image     ``gaussian_noise`` pixel noise of std ``0.5 l`` (pixels scaled to [0, 1])
image     ``blur``           Gaussian blur, sigma ``l`` x (smaller side / 8)
text      ``word_dropout``   each word removed with probability ``l`` (one is kept)
text      ``char_typos``     each word gets a typo (swap, drop, insert, replace
                             a letter) with probability ``l``
tabular   ``blank_cells``    each cell set to missing (None) with probability ``l``
                             (one filled cell is kept)
audio     ``additive_noise`` white noise at ``l`` times the waveform's RMS
========  =================  ====================================================

Images are numpy arrays, PIL images, file paths or a (N, C, H, W) tensor
(corrupted images are float arrays in [0, 1]); texts are strings; tabular
rows are dicts ``{column: value}`` or sequences; audio is numpy arrays,
``(array, rate)`` pairs, PCM WAV paths or a (N, samples) tensor.

A corruption never removes an input entirely (at level 1 one word, one
filled cell is kept): a missing input is what the benchmark's missing-input
columns measure.

The scoring functions take ``predict(split) -> predicted class per sample``,
so they work for any classifier; :func:`model_predictor` wraps a mmzoo model.
A predictor may also offer ``reusing(split)``, a context manager under which
its work on ``split``'s untouched inputs is shared between calls:
:func:`robustness_report` enters it, and a mmzoo model then processes each
clean input (image transforms, tokenising) and runs its frozen encoders
(``freeze=True``) over it once, rather than once per corruption of another
input, with the same predictions.
This module imports no torch until a tensor input or a model needs it.
"""

from __future__ import annotations

import contextlib
import random
from typing import Any, Callable, Iterator, Mapping, Sequence

import numpy as np

from mmzoo.errors import InputError

__all__ = ["CORRUPTIONS", "LEVELS", "corrupt", "corruption_curves", "relative_auc", "mismatched_accuracy",
           "robustness_report", "model_predictor"]

#: default corruption levels (0 = clean)
LEVELS = (0.0, 0.25, 0.5, 0.75, 1.0)

Predict = Callable[[Any], Sequence[int]]


# ------------------------------------------------------------------ image
def _image_array(value: Any) -> np.ndarray:
    """An image as a float array in [0, 1] (H, W[, C])."""
    if isinstance(value, (str, bytes)) or hasattr(value, "__fspath__"):
        from PIL import Image

        with Image.open(value) as image:
            value = np.asarray(image)
    elif not isinstance(value, np.ndarray):
        value = np.asarray(value)  # PIL images
    if value.dtype == np.uint8:
        return value.astype(np.float32) / 255.0
    return value.astype(np.float32)


def _per_image(values: Any, fn: Callable[[np.ndarray, np.random.Generator], np.ndarray],
               rng: np.random.Generator):
    if _is_tensor(values):  # a ready (N, C, H, W) batch: corrupt in its own scale, keep its type
        import torch

        array = values.detach().cpu().numpy().astype(np.float32)
        out = np.stack([fn(np.moveaxis(a, 0, -1), rng, scaled=False) for a in array])
        return torch.from_numpy(np.moveaxis(out, -1, 1).copy()).to(values.dtype)
    return [fn(_image_array(v), rng) for v in values]


def _noise(image: np.ndarray, rng: np.random.Generator, level: float = 0.0, scaled: bool = True) -> np.ndarray:
    std = 0.5 * level * (1.0 if scaled else float(image.std()) or 1.0)
    noisy = image + rng.normal(0.0, std, image.shape).astype(np.float32)
    return np.clip(noisy, 0.0, 1.0) if scaled else noisy


def _blur(image: np.ndarray, rng: np.random.Generator, level: float = 0.0, scaled: bool = True) -> np.ndarray:
    from scipy.ndimage import gaussian_filter

    sigma = level * min(image.shape[:2]) / 8
    sigmas = (sigma, sigma) + (0,) * (image.ndim - 2)  # never across channels
    return gaussian_filter(image, sigma=sigmas, mode="nearest").astype(np.float32)


def gaussian_noise(values, level, rng):
    return _per_image(values, lambda im, r, scaled=True: _noise(im, r, level, scaled), rng)


def blur(values, level, rng):
    return _per_image(values, lambda im, r, scaled=True: _blur(im, r, level, scaled), rng)


# ------------------------------------------------------------------ text
def _texts(values: Any) -> list:
    if _is_tensor(values) or isinstance(values, Mapping):
        raise InputError("text corruptions act on raw strings, not token ids: give the split's texts as str")
    return list(values)


def word_dropout(values, level, rng):
    out = []
    for text in _texts(values):
        if not text:
            out.append(text)
            continue
        words = text.split()
        kept = [w for w in words if rng.random() >= level]
        if words and not kept:  # never remove the input itself: that is a missing input
            kept = [words[int(rng.integers(len(words)))]]
        out.append(" ".join(kept))
    return out


def _typo(word: str, rng: np.random.Generator) -> str:
    i = int(rng.integers(len(word)))
    letter = chr(ord("a") + int(rng.integers(26)))
    kind = int(rng.integers(4)) if len(word) > 1 else 2 + int(rng.integers(2))
    if kind == 0:  # swap with the next letter (or the previous one at the end)
        j = i + 1 if i + 1 < len(word) else i - 1
        chars = list(word)
        chars[i], chars[j] = chars[j], chars[i]
        return "".join(chars)
    if kind == 1:
        return word[:i] + word[i + 1:]
    if kind == 2:
        return word[:i] + letter + word[i:]
    return word[:i] + letter + word[i + 1:]


def char_typos(values, level, rng):
    out = []
    for text in _texts(values):
        if not text:
            out.append(text)
            continue
        out.append(" ".join(_typo(w, rng) if rng.random() < level else w for w in text.split()))
    return out


# ------------------------------------------------------------------ tabular
def blank_cells(values, level, rng):
    out = []
    for row in values:
        if isinstance(row, Mapping):
            keys, cells = list(row), list(row.values())
        elif isinstance(row, (list, tuple)):
            keys, cells = None, list(row)
        else:
            raise InputError(f"tabular corruption needs rows as dicts or sequences, got {type(row).__name__}")
        filled = [i for i, v in enumerate(cells) if v is not None]
        blanked = [None if rng.random() < level else v for v in cells]
        if filled and all(v is None for v in blanked):  # never remove the input itself
            keep = filled[int(rng.integers(len(filled)))]
            blanked[keep] = cells[keep]
        out.append(dict(zip(keys, blanked)) if keys is not None else type(row)(blanked))
    return out


# ------------------------------------------------------------------ audio
def _waveform(value: Any) -> tuple[np.ndarray, int | None]:
    if isinstance(value, (str, bytes)) or hasattr(value, "__fspath__"):
        from scipy.io import wavfile

        rate, data = wavfile.read(value)
        if data.dtype.kind in "iu":  # PCM -> [-1, 1]
            info = np.iinfo(data.dtype)
            data = (data.astype(np.float32) - (info.max + info.min + 1) / 2) / ((info.max - info.min + 1) / 2)
        return data.astype(np.float32), int(rate)
    if isinstance(value, tuple):
        return np.asarray(value[0], dtype=np.float32), value[1]
    return np.asarray(value, dtype=np.float32), None


def additive_noise(values, level, rng):
    if _is_tensor(values):
        import torch

        rms = values.float().pow(2).mean(dim=-1, keepdim=True).sqrt()
        noise = torch.from_numpy(rng.standard_normal(tuple(values.shape)).astype(np.float32))
        return (values.float() + level * rms * noise).to(values.dtype)
    out = []
    for value in values:
        wave, rate = _waveform(value)
        rms = float(np.sqrt(np.mean(np.square(wave)))) if wave.size else 0.0
        noisy = (wave + level * rms * rng.standard_normal(wave.shape)).astype(np.float32)
        out.append(noisy if rate is None else (noisy, rate))
    return out


#: modality -> corruption name -> ``fn(values, level, rng) -> values``
CORRUPTIONS: dict[str, dict[str, Callable]] = {
    "image": {"gaussian_noise": gaussian_noise, "blur": blur},
    "text": {"word_dropout": word_dropout, "char_typos": char_typos},
    "tabular": {"blank_cells": blank_cells},
    "audio": {"additive_noise": additive_noise},
}


def _is_tensor(values: Any) -> bool:
    return type(values).__module__.startswith("torch") and hasattr(values, "shape")


def corrupt(values: Any, modality: str, corruption: str, level: float, *, seed: int = 0) -> Any:
    """``values`` (one input of a split) corrupted at ``level`` in [0, 1];
    level 0 returns them unchanged."""
    table = CORRUPTIONS.get(modality)
    if table is None or corruption not in table:
        known = {m: sorted(c) for m, c in CORRUPTIONS.items()}
        raise InputError(f"no corruption {corruption!r} for modality {modality!r}; known: {known}")
    if not 0.0 <= level <= 1.0:
        raise InputError(f"corruption level must be in [0, 1], got {level}")
    if level == 0:
        return values
    rng = np.random.default_rng([seed, int(round(level * 1_000_000))])
    return table[corruption](values, float(level), rng)


# ------------------------------------------------------------------ scoring
def _with_inputs(split, inputs: Mapping[str, Any]):
    from mmzoo.tasks import Split

    return Split(dict(inputs), split.labels, getattr(split, "groups", None))


def _accuracy(predict: Predict, split) -> float:
    preds = np.asarray(predict(split)).reshape(-1)
    labels = np.asarray(split.labels).reshape(-1)
    if len(labels) == 0:
        raise InputError("cannot score robustness on an empty split")
    return float((preds == labels).mean())


def relative_auc(levels: Sequence[float], accuracies: Sequence[float], clean: float) -> float | None:
    """Trapezoid area under ``accuracies`` over ``levels``, divided by the
    area of a flat curve at ``clean`` accuracy (None when clean is 0)."""
    if len(levels) != len(accuracies) or len(levels) < 2:
        raise InputError("relative_auc needs one accuracy per level and at least two levels")
    if clean <= 0:
        return None
    x, y = np.asarray(levels, dtype=float), np.asarray(accuracies, dtype=float)
    area = float(np.sum((x[1:] - x[:-1]) * (y[1:] + y[:-1]) / 2))
    return area / (clean * float(x[-1] - x[0]))


def corruption_curves(predict: Predict, split, modalities: Mapping[str, str], *,
                      levels: Sequence[float] = LEVELS, seed: int = 0,
                      clean: float | None = None) -> dict[str, dict[str, list[float]]]:
    """``{input: {corruption: [accuracy at each level]}}`` for every input in
    ``modalities`` (input name -> modality) that has corruptions; level 0
    is the clean accuracy (computed once, or ``clean`` when given)."""
    levels = [float(v) for v in levels]
    if not levels or levels[0] != 0.0 or sorted(levels) != levels:
        raise InputError(f"corruption levels must be increasing and start at 0 (clean), got {levels}")
    clean = _accuracy(predict, split) if clean is None else clean
    curves: dict[str, dict[str, list[float]]] = {}
    for slot, modality in modalities.items():
        for name in CORRUPTIONS.get(modality, {}):
            curve = [clean]
            for level in levels[1:]:
                corrupted = corrupt(split.inputs[slot], modality, name, level, seed=seed)
                curve.append(_accuracy(predict, _with_inputs(split, {**split.inputs, slot: corrupted})))
            curves.setdefault(slot, {})[name] = curve
    return curves


def _derangement(n: int, seed: int) -> list[int]:
    """A random permutation with no fixed point (n >= 2): a random cycle."""
    order = list(range(n))
    random.Random(seed).shuffle(order)
    target = [0] * n
    for i in range(n):
        target[order[i]] = order[(i + 1) % n]
    return target


def _reorder(values: Any, index: list[int]) -> Any:
    if isinstance(values, Mapping):
        return {k: _reorder(v, index) for k, v in values.items()}
    if _is_tensor(values):
        import torch

        return values[torch.as_tensor(index)]
    return [values[i] for i in index]


def mismatched_accuracy(predict: Predict, split, *, seed: int = 0) -> dict[str, float]:
    """``{input: accuracy}`` with every other input shuffled across the split
    (no sample keeps its own partner) while ``input`` keeps its labels."""
    slots = list(split.inputs)
    if len(slots) < 2 or len(split) < 2:
        return {}
    index = _derangement(len(split), seed)
    out = {}
    for slot in slots:
        inputs = {s: (v if s == slot else _reorder(v, index)) for s, v in split.inputs.items()}
        out[slot] = _accuracy(predict, _with_inputs(split, inputs))
    return out


def robustness_report(predict: Predict, split, modalities: Mapping[str, str], *,
                      levels: Sequence[float] = LEVELS, seed: int = 0,
                      max_samples: int | None = None) -> dict[str, Any]:
    """Everything above for one model on one split (on a seeded random
    subset of ``max_samples`` samples when the split is larger):
    ``samples``, ``clean_accuracy``, ``levels``, ``curves``, ``auc``
    (relative, per input and corruption), ``corruption_auc`` (per input: mean
    over its corruptions) and ``mismatched_accuracy`` (per input)."""
    inputs, labels = {s: split.inputs[s] for s in modalities}, split.labels
    if max_samples is not None and len(split) > max_samples:
        index = sorted(random.Random(seed).sample(range(len(split)), max_samples))
        inputs = {s: _reorder(v, index) for s, v in inputs.items()}
        labels = _reorder(labels, index)
    from mmzoo.tasks import Split

    split = Split(inputs, labels)
    levels = [float(v) for v in levels]
    with getattr(predict, "reusing", _no_reuse)(split):
        clean = _accuracy(predict, split)
        curves = corruption_curves(predict, split, modalities, levels=levels, seed=seed, clean=clean)
        mismatched = mismatched_accuracy(predict, split, seed=seed)
    auc = {slot: {name: relative_auc(levels, curve, clean) for name, curve in by_name.items()}
           for slot, by_name in curves.items()}
    per_input = {}
    for slot, by_name in auc.items():
        scores = [v for v in by_name.values() if v is not None]
        per_input[slot] = float(np.mean(scores)) if scores else None
    return {"samples": len(split), "clean_accuracy": clean, "levels": levels, "curves": curves, "auc": auc, "corruption_auc": per_input,
            "mismatched_accuracy": mismatched}


def _no_reuse(split) -> contextlib.AbstractContextManager:
    return contextlib.nullcontext()


class _ModelPredictor:
    def __init__(self, model, predict_kwargs: Mapping[str, Any]):
        self.model, self.kwargs, self.prepared = model, dict(predict_kwargs), None

    def __call__(self, split) -> list[int]:
        from mmzoo.train import predict, predicted_classes

        return predicted_classes(predict(self.model, split, prepared=self.prepared, **self.kwargs)).tolist()

    @contextlib.contextmanager
    def reusing(self, split) -> Iterator[None]:
        from mmzoo.train import PreparedInputs

        options = {k: self.kwargs[k] for k in ("batch_size", "device", "precision") if k in self.kwargs}
        with PreparedInputs(self.model, split, **options) as self.prepared:
            try:
                yield
            finally:
                self.prepared = None


def model_predictor(model, **predict_kwargs) -> Predict:
    """``predict(split)`` for a mmzoo model: argmax of
    :func:`mmzoo.train.predict` (``device``, ``precision``, ... pass through);
    its ``reusing(split)`` processes ``split``'s inputs and runs the frozen
    encoders over them once (:class:`mmzoo.train.PreparedInputs`)."""
    return _ModelPredictor(model, predict_kwargs)
