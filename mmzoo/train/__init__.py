"""Training and evaluation: ``fit(model, train, val)`` and ``evaluate(model, split)``.

- AdamW (per-part learning rates through ``lr_mult``, frozen parameters left
  out), cross-entropy, linear LR warm-up (then cosine decay when the number
  of steps is known), gradient clipping, optional bf16/fp16 autocast.
- Settings live in one :class:`FitConfig`; ``fit(model, train, val,
  config, **overrides)`` (``fit(model, train, val, epochs=3)`` still works).
- Data through :mod:`mmzoo.data`: a ``DataLoader`` over the split (in-memory
  cache for small splits, per-sample loading with worker processes and
  augmentation for large ones, streaming Hugging Face datasets).
- Modality dropout: ``fit(..., modality_dropout=p)`` sets the model's
  per-sample input dropout for the run only.
- Class weights for imbalanced labels: ``fit(..., class_weight="balanced")``
  (``n / (k * count)`` from the training labels, scikit-learn's formula) or
  ``{label: weight}`` (:func:`class_weights`).
- Early stopping on the validation score (``metric``: accuracy or macro-F1);
  the best weights are restored at the end and, with ``out=DIR``, saved with
  ``save_pretrained`` whenever the score improves.
- Data-parallel under ``torchrun`` (DDP; ``gloo`` on CPU, ``nccl`` on GPU):
  ``batch_size`` is per process, every process sees a disjoint shard of each
  epoch's permutation (``DistributedSampler``), and only rank 0 writes
  checkpoints and shows progress.

Modules: ``_config`` (FitConfig, FitResult), ``_fit`` (the loop),
``_evaluate`` (evaluate, predict), ``_frozen`` (frozen encoders' outputs and processed inputs computed once), ``_loss`` (class weights), ``_optim`` (parameter groups, schedule),
``_amp`` (autocast, synchronize), ``_distributed``, ``command`` (``mmzoo train``).
"""

from __future__ import annotations

import importlib
from typing import Any

#: public name -> module (imported on first use, so ``mmzoo.train.command`` and
#: the CLI parser stay free of torch)
_EXPORTS = {
    "Encoded": "mmzoo.data", "encode": "mmzoo.data",
    "PRECISIONS": "mmzoo.train._amp", "autocast": "mmzoo.train._amp", "synchronize": "mmzoo.train._amp",
    "FitConfig": "mmzoo.train._config", "FitResult": "mmzoo.train._config",
    "setup_distributed": "mmzoo.train._distributed",
    "evaluate": "mmzoo.train._evaluate", "predict": "mmzoo.train._evaluate",
    "logit_scores": "mmzoo.train._evaluate", "predicted_classes": "mmzoo.train._evaluate",
    "PreparedInputs": "mmzoo.train._frozen",
    "fit": "mmzoo.train._fit", "fit_tokenizers": "mmzoo.train._fit",
    "class_weights": "mmzoo.train._loss",
    "param_groups": "mmzoo.train._optim",
}

__all__ = list(_EXPORTS)


def __getattr__(name: str) -> Any:
    target = _EXPORTS.get(name)
    if target is None:
        raise AttributeError(f"module 'mmzoo.train' has no attribute {name!r}")
    module, _, attr = target.partition(":")
    value = getattr(importlib.import_module(module), attr or name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
