"""Shared fixtures: the tiny config, a seeded generator, and the real samples (or a skip)."""
from __future__ import annotations

import pytest
import torch

from aef_lit.conventions import find_eo_real, get_config


@pytest.fixture
def tiny_cfg():
    return get_config("tiny")


@pytest.fixture
def gen():
    return torch.Generator().manual_seed(0)


@pytest.fixture(scope="session")
def eo_real():
    """Path to ../shared/eo_real; skips (with where to get it) when absent."""
    try:
        return find_eo_real(required=True)
    except FileNotFoundError as err:
        pytest.skip(str(err))
