"""Shared fixtures. Tests run on CPU only and never touch the network."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO


@pytest.fixture(autouse=True, scope="session")
def _cpu_only():
    # A lent GPU must not change what the tests check; trials also read this.
    os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")
    yield
