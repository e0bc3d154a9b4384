"""Scores and logits over a split: ``evaluate`` and ``predict`` (eval mode, no grad)."""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from mmzoo.data import Batches, make_loader, take_rows, to_device
from mmzoo.errors import InputError
from mmzoo.train._amp import autocast

__all__ = ["predict", "evaluate", "scores", "logit_scores", "predicted_classes", "unwrap"]


def unwrap(model):
    """The model inside a DDP / ``torch.compile`` wrapper."""
    return getattr(model, "module", getattr(model, "_orig_mod", model))


def scores(labels: Tensor, preds: Tensor, num_classes: int) -> dict[str, float]:
    from sklearn.metrics import f1_score

    accuracy = float((preds == labels).float().mean()) if len(labels) else float("nan")
    f1 = float(f1_score(labels.numpy(), preds.numpy(), average="macro",
                        labels=list(range(num_classes)) if num_classes else None, zero_division=0))
    return {"accuracy": accuracy, "macro_f1": f1}


@torch.no_grad()
def run(model, batches: Batches, device, *, precision: str = "fp32", channels_last: bool = False
        ) -> tuple[Tensor, Tensor]:
    """(logits, labels) over every batch, in eval mode (NaN rows for samples with no input)."""
    module = unwrap(model)
    was_training = module.training
    module.eval()
    outputs, labels = [], []
    try:
        for inputs, target in batches:
            inputs = to_device(inputs, device, channels_last)
            with autocast(device, precision):
                logits = _logits(model, module, inputs)
            outputs.append(logits.float().cpu())
            labels.append(target)
    finally:
        module.train(was_training)
    if not outputs:
        return torch.empty(0, module.num_classes), torch.empty(0, dtype=torch.long)
    return torch.cat(outputs), torch.cat(labels)


def _logits(model, module, inputs) -> Tensor:
    """The model's logits for a batch; a sample left with no input (every input
    dropped, empty or blank) gets none: a row of NaN, scored as wrong, on every
    device (the model itself refuses such a sample on CPU)."""
    has_input = torch.stack(list(module.presence(**inputs).values())).any(0)
    if bool(has_input.all()):
        return model(**inputs)
    width = module.num_classes or module.num_features
    logits = torch.full((len(has_input), width), float("nan"), device=has_input.device)
    if bool(has_input.any()):
        logits[has_input] = model(**{slot: take_rows(x, has_input) for slot, x in inputs.items()}).to(logits.dtype)
    return logits


def _batches(model, data, batch_size: int, drop, num_workers: int, cache: str, device, prepared=None) -> Batches:
    if prepared is not None:
        if prepared.batch_size != batch_size:
            raise InputError(f"prepared= was computed in batches of {prepared.batch_size}, but these batches "
                             f"hold {batch_size}: give PreparedInputs the same batch_size")
        data = prepared.inputs_for(data)
    return make_loader(unwrap(model), data, batch_size=batch_size, drop=drop, num_workers=num_workers,
                       cache=cache, pin_memory=torch.device(device).type == "cuda")


def predict(model, data, *, batch_size: int = 256, device=None, drop: Sequence[str] = (),
            precision: str = "fp32", channels_last: bool = False, num_workers: int = 0,
            cache: str = "auto", prepared=None) -> Tensor:
    """Logits for every sample (eval mode, no grad; a row of NaN for a sample
    left with no input, see :func:`predicted_classes`); ``drop`` omits inputs;
    ``prepared``: a :class:`~mmzoo.train.PreparedInputs` that serves the inputs
    ``data`` shares with its split (the same logits, less work)."""
    device = torch.device(device) if device is not None else unwrap(model)._device()
    batches = _batches(model, data, batch_size, drop, num_workers, cache, device, prepared)
    return run(model, batches, device, precision=precision, channels_last=channels_last)[0]


def evaluate(model, data, *, batch_size: int = 256, device=None, drop: Sequence[str] = (),
             precision: str = "fp32", channels_last: bool = False, num_workers: int = 0,
             cache: str = "auto", prepared=None) -> dict[str, float]:
    """``{"accuracy", "macro_f1", "loss"}`` on ``data``; ``drop=("text",)``
    scores the model with that input missing (omitted); ``prepared`` as in :func:`predict`."""
    device = torch.device(device) if device is not None else unwrap(model)._device()
    batches = _batches(model, data, batch_size, drop, num_workers, cache, device, prepared)
    return evaluate_batches(model, batches, device, precision=precision, channels_last=channels_last)


def evaluate_batches(model, batches: Batches, device, *, precision: str = "fp32",
                     channels_last: bool = False) -> dict[str, float]:
    logits, labels = run(model, batches, device, precision=precision, channels_last=channels_last)
    return logit_scores(logits, labels, unwrap(model).num_classes)


def predicted_classes(logits: Tensor) -> Tensor:
    """The class of each row of (N, num_classes) logits; -1 for a row of NaN (a sample with no input)."""
    return torch.where(torch.isfinite(logits).all(1), logits.argmax(1), -1)


def logit_scores(logits: Tensor, labels: Tensor, num_classes: int) -> dict[str, float]:
    """``{"accuracy", "macro_f1", "loss"}`` of (N, num_classes) logits against (N,) labels.
    A row of NaN (a sample with no input) is a wrong prediction and left out of the loss."""
    predicted = torch.isfinite(logits).all(1)
    result = scores(labels, predicted_classes(logits), num_classes)
    result["loss"] = float(F.cross_entropy(logits[predicted], labels[predicted])) if bool(predicted.any()) \
        else float("nan")
    return result
