"""Data-parallel plumbing: process group set-up under ``torchrun``, rank and world size."""

from __future__ import annotations

import os

import torch

__all__ = ["setup_distributed", "is_distributed", "rank", "world_size", "agree"]


def is_distributed() -> bool:
    import torch.distributed as dist

    return dist.is_available() and dist.is_initialized()


def world_size() -> int:
    import torch.distributed as dist

    return dist.get_world_size() if is_distributed() else 1


def rank() -> int:
    import torch.distributed as dist

    return dist.get_rank() if is_distributed() else 0


def setup_distributed(device: str | None = None) -> torch.device:
    """Initialise ``torch.distributed`` when launched by ``torchrun`` (even
    with one process): ``nccl`` with one GPU per local rank, else ``gloo``.
    Returns the device this process trains on."""
    import torch.distributed as dist

    use_cuda = (device or ("cuda" if torch.cuda.is_available() else "cpu")).startswith("cuda")
    world = int(os.environ.get("WORLD_SIZE", "1"))
    launched = all(k in os.environ for k in ("RANK", "WORLD_SIZE", "MASTER_ADDR"))  # by torchrun
    if (launched or world > 1) and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    if use_cuda:
        local = int(os.environ.get("LOCAL_RANK", "0"))
        if world > 1 or device in (None, "cuda"):
            torch.cuda.set_device(local)
            return torch.device("cuda", local)
        return torch.device(device)
    return torch.device("cpu")


def agree(stop: str | None, device) -> str | None:
    """Every rank stops when any rank wants to (budget clocks differ)."""
    import torch.distributed as dist

    flag = torch.tensor([1.0 if stop else 0.0], device=device)
    dist.all_reduce(flag, op=dist.ReduceOp.MAX)
    return (stop or "budget") if flag.item() > 0 else None


def all_mean(value: torch.Tensor) -> torch.Tensor:
    """The mean of ``value`` over ranks (itself in one process)."""
    if world_size() > 1:
        import torch.distributed as dist

        dist.all_reduce(value)
        value = value / world_size()
    return value


def barrier() -> None:
    if world_size() > 1:
        import torch.distributed as dist

        dist.barrier()
