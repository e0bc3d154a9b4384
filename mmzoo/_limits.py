"""The parameter limit: a name cannot ask for an absurdly large model.

:func:`mmzoo.create` first builds the model on PyTorch's ``meta`` device
(shapes only: no memory, initialisation skipped) while counting every
parameter and buffer as it is registered, and stops at the first one that
passes the limit; then it builds the model for real, still counting. A
component that knows its size before building (a deep stack of layers) calls
:func:`check_params` first, so that ``depth=100000`` is refused before its
first layer exists.

The limit is the environment variable ``MMZOO_MAX_PARAMS`` (default
:data:`DEFAULT_MAX_PARAMS`, about 8 GB of float32 weights); ``inf`` turns the
check and the dry run off. The same count also stops at :data:`MAX_MODULES`
layers: a stack of tiny layers (``depth=100000``) stays under any parameter
limit but would take minutes to build; the largest real models have a few
thousand modules.
"""

from __future__ import annotations

import contextlib
import contextvars
import math
import os
import warnings
from typing import Iterator

import torch
from torch.nn.modules.module import (
    register_module_buffer_registration_hook,
    register_module_module_registration_hook,
    register_module_parameter_registration_hook,
)
from torch.overrides import TorchFunctionMode

from mmzoo._fills import is_value_fill
from mmzoo.errors import InputError

__all__ = ["MAX_PARAMS_ENV", "DEFAULT_MAX_PARAMS", "MAX_MODULES", "ModelTooLarge", "max_params", "check_params",
           "counting", "dry_run"]

MAX_PARAMS_ENV = "MMZOO_MAX_PARAMS"
DEFAULT_MAX_PARAMS = 2_000_000_000
#: the most modules (layers) one model may register while the limit is on
MAX_MODULES = 20_000


class ModelTooLarge(InputError):
    """The model would pass the parameter limit."""


def max_params() -> float:
    """The limit from ``MMZOO_MAX_PARAMS`` (``inf`` = none)."""
    raw = os.environ.get(MAX_PARAMS_ENV, "").strip()
    if not raw:
        return DEFAULT_MAX_PARAMS
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not value > 0:
        raise InputError(f"{MAX_PARAMS_ENV}={raw!r} is not a positive number of parameters; "
                         "set it to e.g. 5e9, or to inf for no limit")
    return value


class _Budget:
    def __init__(self, limit: float):
        self.limit = limit
        self.used = 0
        self.modules = 0
        self.part = ""  # the part being built, for the message

    def add_module(self, what: str) -> None:
        self.modules += 1
        if self.modules > MAX_MODULES:
            where = f" (reached at {what} of {self.part})" if self.part else f" (reached at {what})"
            raise ModelTooLarge(
                f"the model would have more than {MAX_MODULES:,} modules (layers){where}; the limit guards "
                f"against names that ask for absurd depths. If you mean it, build without limits: "
                f"{MAX_PARAMS_ENV}=inf"
            )

    def refuse_if_over(self, count: int, what: str) -> None:
        if self.used + count > self.limit:
            where = f" (reached at {what} of {self.part})" if self.part else f" (reached at {what})"
            raise ModelTooLarge(
                f"the model would have more than {self.limit:,.0f} parameters{where}; "
                f"the limit guards against names that ask for absurd sizes. If you mean it, "
                f"raise it: {MAX_PARAMS_ENV}=5e9 (or inf for no limit)"
            )


_ACTIVE: contextvars.ContextVar[_Budget | None] = contextvars.ContextVar("mmzoo_budget", default=None)


def check_params(what: str, count: int) -> None:
    """Refuse to build ``what`` if ``count`` more parameters would pass the limit.

    Call it before allocating a large or deep part; inside :func:`mmzoo.create`
    the parts built so far count too.
    """
    budget = _ACTIVE.get() or _Budget(max_params())
    budget.refuse_if_over(count, what)


@contextlib.contextmanager
def counting(limit: float) -> Iterator[_Budget]:
    """Count the parameters and buffers registered in this thread; raise
    :class:`ModelTooLarge` at the first one past ``limit``."""
    budget = _Budget(limit)
    token = _ACTIVE.set(budget)

    def count(module: torch.nn.Module, name: str, tensor: torch.Tensor | None) -> None:
        if tensor is not None and _ACTIVE.get() is budget:  # a context variable: other threads are not counted
            budget.refuse_if_over(tensor.numel(), f"{type(module).__name__}.{name}")
            budget.used += tensor.numel()

    def count_module(module: torch.nn.Module, name: str, submodule: torch.nn.Module | None) -> None:
        if submodule is not None and _ACTIVE.get() is budget:
            budget.add_module(f"{type(module).__name__}.{name}")

    handles = [register_module_parameter_registration_hook(count),
               register_module_buffer_registration_hook(count),
               register_module_module_registration_hook(count_module)]
    try:
        yield budget
    finally:
        for handle in handles:
            handle.remove()
        _ACTIVE.reset(token)


class _MetaValues(TorchFunctionMode):
    """A meta tensor has no values: skip in-place fills on it (``normal_``,
    ``nn.init.trunc_normal_``, ``copy_``..., which would otherwise run through
    slow Python decompositions) and read it as zeros (``item``, ``tolist``;
    e.g. timm's per-block drop-path rates). A part whose shapes depend on such
    values is mis-sized here, but the real build is counted too."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        name = getattr(func, "__name__", "")
        target = args[0] if args and isinstance(args[0], torch.Tensor) and args[0].is_meta else None
        if target is None:
            return func(*args, **(kwargs or {}))
        if is_value_fill(func):
            return target
        if name == "item":
            return False if target.dtype == torch.bool else 0 if not target.is_floating_point() else 0.0
        if name == "tolist":
            return torch.zeros(target.shape, dtype=target.dtype).tolist()
        return func(*args, **(kwargs or {}))


@contextlib.contextmanager
def dry_run() -> Iterator[None]:
    """Build on the meta device, initialisation skipped, warnings silenced
    (the real build that follows reports its own)."""
    with warnings.catch_warnings(), torch.device("meta"), _MetaValues():
        warnings.simplefilter("ignore")
        yield
