"""The optimiser and schedule: AdamW parameter groups (no weight decay on
biases and norms, per-part learning-rate multipliers) and warm-up + cosine."""

from __future__ import annotations

import difflib
import math
from typing import Mapping

import torch

from mmzoo.errors import InputError

__all__ = ["param_groups", "lr_lambda"]


def _matches(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def param_groups(model, *, weight_decay: float, lr: float, lr_mult: Mapping[str, float] | None = None
                 ) -> list[dict]:
    """AdamW groups over the trainable parameters of ``model``.

    ``lr_mult={"encoders.image": 0.1}`` trains the parameters under that
    prefix at ``0.1 * lr`` (the longest matching prefix wins); parameters
    with ``requires_grad=False`` (frozen parts) are left out. A prefix that
    names no parameter is an :class:`InputError`.
    """
    lr_mult = dict(lr_mult or {})
    names = [n for n, _ in model.named_parameters()]
    for prefix, factor in lr_mult.items():
        if not any(_matches(n, prefix) for n in names):
            parts = sorted({".".join(n.split(".")[:2]) if n.startswith("encoders.") else n.split(".")[0]
                            for n in names})
            close = difflib.get_close_matches(prefix, parts, n=3)
            hint = f"; did you mean {', '.join(map(repr, close))}?" if close else ""
            raise InputError(f"lr_mult: {prefix!r} names no parameter of the model{hint} "
                             f"(parts: {', '.join(parts)})")
        if not isinstance(factor, (int, float)) or factor < 0 or factor != factor:
            raise InputError(f"lr_mult[{prefix!r}] must be a number >= 0, got {factor!r}")
    groups: dict[tuple[float, bool], list] = {}
    for name, parameter in model.named_parameters():
        if not parameter.requires_grad:
            continue
        matched = [p for p in lr_mult if _matches(name, p)]
        factor = float(lr_mult[max(matched, key=len)]) if matched else 1.0
        groups.setdefault((factor, parameter.dim() >= 2), []).append(parameter)
    if not groups:
        raise InputError("the model has no trainable parameter (all frozen?); nothing to fit")
    return [{"params": params, "lr": lr * factor, "weight_decay": weight_decay if decay else 0.0,
             "lr_mult": factor} for (factor, decay), params in groups.items()]


def lr_lambda(warmup: int, total_steps: int | None):
    """Linear warm-up over ``warmup`` steps, then cosine decay to 0 at
    ``total_steps`` (constant when the total is unknown)."""

    def schedule(step: int) -> float:
        if warmup and step < warmup:
            return (step + 1) / warmup
        if total_steps:
            progress = (step - warmup) / max(1, total_steps - warmup)
            return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))
        return 1.0

    return schedule


def make_optimizer(model, *, lr: float, weight_decay: float, lr_mult=None) -> torch.optim.Optimizer:
    return torch.optim.AdamW(param_groups(model, weight_decay=weight_decay, lr=lr, lr_mult=lr_mult), lr=lr)
