"""Shared fixtures: tiny models so the CPU suite stays fast."""

from __future__ import annotations

import pytest
import torch

# mmzoo's pytest plugin reaches installed copies through its pytest11 entry
# point; a checkout on PYTHONPATH gets the same fixtures from here
from mmzoo.testing.fixtures import make_mmzoo_registry, mmzoo_registry  # noqa: F401


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture
def images():
    return torch.randn(2, 3, 32, 32)


@pytest.fixture
def token_ids():
    ids = torch.randint(1, 300, (2, 6))
    ids[1, 3:] = 0  # right padding
    return ids


@pytest.fixture(autouse=True, scope="session")
def _one_thread():
    """Tiny tensors: thread start-up costs more than it saves on 2 busy cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
