"""Fixtures for the mmzoo-audio tests."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from mmzoo.testing import isolated_registry

#: where the FSDD recordings are found for the task tests (the data is never copied)
FSDD_CANDIDATES = [os.environ.get("MMZOO_FSDD_ROOT"), Path(__file__).resolve().parents[4] / "shared/data/fsdd"]


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture(scope="session")
def registry():
    """mmzoo's built-in plugins plus the installed ``audio`` entry point."""
    return isolated_registry("audio")


@pytest.fixture(scope="session")
def fsdd_root():
    for candidate in FSDD_CANDIDATES:
        if candidate and (Path(candidate) / "recordings").is_dir():
            return Path(candidate)
    pytest.skip("FSDD recordings not found (set MMZOO_FSDD_ROOT)")
