"""Skipping value fills: the meta-device dry run and a strict load need no random initialisation.

A layer initialises its parameters with in-place fills (``normal_``,
``nn.init.kaiming_uniform_``, ``zero_``, ``copy_``, ...). On the ``meta``
device those fills have no values to write (:mod:`mmzoo._limits`), and while
a strict :func:`mmzoo.load` rebuilds a model they are wasted: every parameter
is overwritten from the folder (for ``resnet18`` the random draws are about
half of the build). PyTorch has no public switch for the second case short of
building on ``meta`` (which would leave non-persistent buffers and plain
tensor attributes without values), so :class:`SkipParameterFills` is a small
:class:`~torch.overrides.TorchFunctionMode`: the torch-function mode stack is
per thread, so nothing outside the build is affected.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

__all__ = ["is_value_fill", "SkipParameterFills"]

#: in-place ops that change a tensor's metadata (or autograd flags), not only its values
_METADATA_INPLACE = frozenset({
    "requires_grad_", "resize_", "resize_as_", "squeeze_", "unsqueeze_", "t_", "transpose_",
    "as_strided_", "set_", "swapdims_", "swapaxes_", "detach_", "share_memory_",
})


def is_value_fill(func) -> bool:
    """Whether ``func`` is an in-place op that only writes values into its first
    argument (``uniform_``, ``nn.init.trunc_normal_``, ``copy_``, ...)."""
    name = getattr(func, "__name__", "")
    return name.endswith("_") and not name.endswith("__") and name not in _METADATA_INPLACE


class SkipParameterFills(TorchFunctionMode):
    """Skip value fills whose target is an ``nn.Parameter``; everything else runs.

    Buffers (``BatchNorm``'s running statistics, a mel filterbank) and values
    computed out of place are untouched, so a non-persistent buffer keeps its
    real value. Only use it when every parameter is overwritten afterwards:
    a skipped fill leaves zeros (a memset, no random draws), and
    :func:`mmzoo.weights.load_state` refuses a strict load that would leave
    one of them without a value from the file.
    """

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        # a method's target is its first argument; ``nn.init`` functions pass theirs as ``tensor=``
        # (the calls inside a function this mode passes on are not seen again)
        target = args[0] if args else kwargs.get("tensor")
        if isinstance(target, nn.Parameter) and is_value_fill(func):
            # zeros, not torch.empty's leftovers: code after a fill may read the values (torch's
            # trunc_normal_ redraws out-of-range ones), and zeros are in range and deterministic
            with torch.no_grad():
                return target.zero_()
        return func(*args, **kwargs)

