"""What :func:`~mmzoo.train.fit` is asked to do (:class:`FitConfig`) and what it did (:class:`FitResult`)."""

from __future__ import annotations

import dataclasses
import difflib
import os
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

from mmzoo.errors import InputError

__all__ = ["FitConfig", "FitResult"]

METRICS = ("accuracy", "macro_f1")


@dataclass
class FitConfig:
    """Settings of one training run; ``fit(model, train, val, config, **overrides)``.

    Optimisation: ``epochs``, ``batch_size`` (per process), ``lr``,
    ``weight_decay``, ``lr_mult`` ({parameter-name prefix: factor}, e.g.
    ``{"encoders.image": 0.1}``), ``warmup_steps`` (int steps, or a float
    fraction of all steps), ``grad_clip``, ``precision`` (fp32/bf16/fp16).

    Stopping: ``max_steps``, ``budget_seconds`` (training time, the first
    step not charged), ``patience`` epochs without a better ``metric`` on
    the validation split (None or 0: never early); ``metric`` picks the
    kept epoch too (``"accuracy"``, or ``"macro_f1"`` for imbalanced labels).

    Loss: ``class_weight`` weighs each class's cross-entropy term: None
    (all 1), ``"balanced"`` (``n / (k * count_c)`` from the training split's
    labels, scikit-learn's formula: n samples, k classes present, count_c of
    class c; a class absent from training gets 0) or ``{label: weight}``
    (labels by name or index; the others 1). See :func:`class_weights`.

    Data (see :mod:`mmzoo.data`): ``num_workers``, ``cache``
    (auto/memory/none), ``augment`` (None: images are augmented whenever they
    are loaded per sample), ``augment_options`` (keywords of
    ``timm.data.create_transform``), ``word_dropout``, ``shuffle``,
    ``eval_batch_size``, ``frozen_cache`` (True: a frozen encoder whose
    input is fixed runs once over train and val instead of every epoch,
    :mod:`mmzoo.train._frozen`; False: every epoch, the cache's baseline).

    Model: ``modality_dropout`` (None: the model's own; applied during
    fit only), ``compile``, ``channels_last``, ``find_unused_parameters``
    (DDP). Run: ``seed`` (data order and worker seeds; fit never reseeds
    torch's global RNG), ``device``, ``out`` (best checkpoint), ``progress``,
    ``log`` (called with each epoch's record on rank 0).
    """

    epochs: int = 10
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 0.01
    lr_mult: Mapping[str, float] = field(default_factory=dict)
    warmup_steps: int | float = 0.05
    grad_clip: float | None = 1.0
    precision: str = "fp32"
    max_steps: int | None = None
    budget_seconds: float | None = None
    patience: int | None = 5
    metric: str = "accuracy"
    class_weight: str | Mapping[Any, float] | None = None
    num_workers: int = 0
    cache: str = "auto"
    augment: bool | None = None
    augment_options: Mapping[str, Any] = field(default_factory=dict)
    word_dropout: float = 0.0
    shuffle: bool = True
    eval_batch_size: int = 256
    frozen_cache: bool = True
    modality_dropout: float | None = None
    compile: bool = False
    channels_last: bool = False
    find_unused_parameters: bool = False
    seed: int = 0
    device: Any = None
    out: str | os.PathLike | None = None
    progress: bool = True
    log: Callable[[dict], Any] | None = None

    def __post_init__(self) -> None:
        from mmzoo.data import CACHES
        from mmzoo.train._amp import check_precision

        check_precision(self.precision)
        if self.metric not in METRICS:
            raise InputError(f"metric must be 'accuracy' or 'macro_f1', got {self.metric!r}")
        if not (self.class_weight is None or self.class_weight == "balanced"
                or isinstance(self.class_weight, Mapping)):
            raise InputError(f"class_weight must be None, 'balanced' or a mapping {{label: weight}}, "
                             f"got {self.class_weight!r}")
        if self.cache not in CACHES:
            raise InputError(f"cache must be one of {list(CACHES)}, got {self.cache!r}")
        if self.modality_dropout is not None and not 0.0 <= self.modality_dropout < 1.0:
            raise InputError(f"modality_dropout must be in [0, 1), got {self.modality_dropout}")
        if not 0.0 <= self.word_dropout < 1.0:
            raise InputError(f"word_dropout must be in [0, 1), got {self.word_dropout}")
        for key in ("epochs", "batch_size", "eval_batch_size"):
            if int(getattr(self, key)) < 1:
                raise InputError(f"{key} must be >= 1, got {getattr(self, key)}")
        if self.num_workers < 0:
            raise InputError(f"num_workers must be >= 0, got {self.num_workers}")

    @classmethod
    def build(cls, config: "FitConfig | None" = None, **overrides: Any) -> "FitConfig":
        """``config`` (default: the defaults) with ``overrides`` replacing its fields."""
        if config is not None and not isinstance(config, cls):
            raise InputError(f"config must be a mmzoo.train.FitConfig, got {type(config).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(overrides) - known)
        if unknown:
            hints = [m for u in unknown for m in difflib.get_close_matches(u, known, n=1)]
            raise InputError(f"fit() got unknown setting(s) {unknown}"
                             + (f"; did you mean {', '.join(map(repr, hints))}?" if hints else "")
                             + f" (settings: {', '.join(sorted(known))})")
        return dataclasses.replace(config or cls(), **overrides)


@dataclass
class FitResult:
    """What :func:`fit` did: per-epoch ``history``, the best validation score
    and epoch, steps and samples trained, and timing (``first_step_s``
    includes one-off costs such as ``torch.compile``; ``train_samples_per_s``
    excludes the first step and evaluation). ``data`` says how the training
    split was fed (``cache``, ``augment``, ``num_workers``)."""

    history: list[dict[str, float]] = field(default_factory=list)
    best_score: float = float("nan")
    best_epoch: int = -1
    steps: int = 0
    samples: int = 0
    train_seconds: float = 0.0
    first_step_s: float = 0.0
    train_samples_per_s: float = float("nan")
    stopped: str = "epochs"
    checkpoint: str | None = None
    data: dict[str, Any] = field(default_factory=dict)
