"""Mixed precision and device synchronisation, shared by training, evaluation and the benchmark."""

from __future__ import annotations

import torch

from mmzoo.errors import InputError

__all__ = ["PRECISIONS", "autocast", "synchronize"]

PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def check_precision(precision: str) -> None:
    if precision not in PRECISIONS:
        raise InputError(f"precision must be one of {sorted(PRECISIONS)}, got {precision!r}")


def autocast(device, precision: str):
    """``torch.autocast`` for ``precision`` (``fp32``: a disabled context) on ``device``'s type."""
    check_precision(precision)
    dtype = PRECISIONS[precision]
    return torch.autocast(torch.device(device).type, dtype=dtype or torch.float32, enabled=dtype is not None)


def synchronize(device) -> None:
    """Wait for queued GPU work (a no-op on CPU): call before reading a clock."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)
