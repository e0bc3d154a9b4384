"""Uncertainty of a leaderboard entry: a two-level bootstrap over seeds and
test samples.

One resample draws the seeds with replacement and, inside each drawn seed,
that seed's test samples with replacement; the metric is the mean over the
drawn seeds of the metric on the drawn samples. The 2.5th and 97.5th
percentiles of the resampled metric form the 95% interval. Resamples depend
only on the seeds and the test-set sizes (a fixed generator seed), so two
entries evaluated on the same seeds and splits are resampled identically:
their difference is a *paired* bootstrap, and a difference whose interval
contains 0 is within noise.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

__all__ = ["bootstrap", "interval", "weighted_scores", "RESAMPLES"]

#: bootstrap resamples per entry
RESAMPLES = 1000
_SEED = 20240601
#: resamples drawn at once (bounds memory at about _CHUNK x test samples)
_CHUNK = 250


def weighted_scores(weights: np.ndarray, labels: np.ndarray, preds: np.ndarray,
                    num_classes: int) -> dict[str, np.ndarray]:
    """Accuracy and macro-F1 of each row of sample ``weights`` (R, n) (a
    bootstrap resample is a vector of counts); macro-F1 is over classes
    ``0..num_classes-1``, a class never true nor predicted scoring 0, as
    scikit-learn's ``f1_score(labels=range(num_classes), zero_division=0)``."""
    classes = np.arange(num_classes)
    true, pred = labels[:, None] == classes, preds[:, None] == classes
    columns = np.concatenate([(labels == preds)[:, None], true & pred, true, pred], axis=1)
    counts = (weights.astype(np.float32) @ columns.astype(np.float32)).astype(np.float64)  # (R, 1 + 3C), exact
    total = weights.sum(axis=1)
    tp, n_true, n_pred = np.split(counts[:, 1:], 3, axis=1)
    denominator = n_true + n_pred
    f1 = np.where(denominator > 0, 2 * tp / np.maximum(denominator, 1e-12), 0.0)
    return {"accuracy": counts[:, 0] / np.maximum(total, 1e-12), "macro_f1": f1.mean(axis=1)}


def bootstrap(samples: Mapping[int, tuple[Sequence[int], Sequence[int]]], *, num_classes: int,
              resamples: int = RESAMPLES) -> dict[str, np.ndarray]:
    """``{"accuracy": draws, "macro_f1": draws}``: ``resamples`` values of
    each metric (mean over resampled seeds of the metric on resampled test
    samples); ``samples`` maps seed -> (labels, predictions) of its test split."""
    seeds = sorted(samples)
    structure = [len(samples[s][0]) for s in seeds]
    rng = np.random.default_rng([_SEED, len(seeds), *structure])
    per_seed = {name: np.empty((len(seeds), resamples)) for name in ("accuracy", "macro_f1")}
    for i, seed in enumerate(seeds):
        labels, preds = (np.asarray(v, dtype=np.int64) for v in samples[seed])
        n = len(labels)
        for start in range(0, resamples, _CHUNK):
            count = min(_CHUNK, resamples - start)
            index = rng.integers(0, n, size=(count, n)) + n * np.arange(count)[:, None]
            weights = np.bincount(index.ravel(), minlength=count * n).reshape(count, n)
            for name, values in weighted_scores(weights, labels, preds, num_classes).items():
                per_seed[name][i, start:start + count] = values
    picks = rng.integers(0, len(seeds), size=(resamples, len(seeds)))
    columns = np.arange(resamples)[:, None]
    return {name: values[picks, columns].mean(axis=1) for name, values in per_seed.items()}


def interval(values: np.ndarray, level: float = 0.95) -> tuple[float, float]:
    """The central ``level`` percentile interval of bootstrap values."""
    tail = 100 * (1 - level) / 2
    low, high = np.percentile(values, [tail, 100 - tail])
    return float(low), float(high)
