"""The memory a model's own tensors take during a training step or an inference batch.

A process's RSS says little about one model (on CPU it is mostly torch's own
libraries, about 1 GB for any model), and on CPU PyTorch keeps no allocator
statistics (``torch.cuda.max_memory_allocated`` is CUDA-only; the profiler's
``profile_memory`` reports per-op deltas, not a peak). :class:`TensorMemory`
is therefore a small :class:`~torch.utils._python_dispatch.TorchDispatchMode`,
the mechanism ``torch.utils.flop_counter.FlopCounterMode`` is built on: it
sees every tensor an op returns (forward and backward alike, on any device),
counts a storage the first time it appears (an in-place op or a view returns
its input's storage, which is not new) and uncounts it when the storage is
freed (a ``weakref.finalize`` on the storage), keeping the peak of the live
total. What existed before (the weights, the input batch) is not counted.
"""

from __future__ import annotations

import weakref
from typing import Callable

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

__all__ = ["TensorMemory", "peak_tensor_bytes"]


class TensorMemory(TorchDispatchMode):
    """Bytes of tensor storage allocated while the mode is active: ``current``
    (still alive) and ``peak`` (the most alive at once)."""

    def __init__(self):
        super().__init__()
        self._live: dict[int, int] = {}  # storage address -> bytes
        self.current = 0
        self.peak = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        inputs = {t.untyped_storage().data_ptr() for t in tree_leaves((args, kwargs))
                  if isinstance(t, torch.Tensor) and t.device.type != "meta"}
        for tensor in tree_leaves(out):
            if not isinstance(tensor, torch.Tensor) or tensor.device.type == "meta":
                continue
            storage = tensor.untyped_storage()
            address, size = storage.data_ptr(), storage.nbytes()
            if size == 0 or address in inputs or address in self._live:
                continue
            self._live[address] = size
            self.current += size
            self.peak = max(self.peak, self.current)
            weakref.finalize(storage, self._free, address)
        return out

    def _free(self, address: int) -> None:
        self.current -= self._live.pop(address, 0)


def peak_tensor_bytes(fn: Callable[[], object]) -> int:
    """The peak bytes of tensors ``fn()`` allocates (what it returns counts while alive)."""
    with TensorMemory() as memory:
        fn()
    return memory.peak
