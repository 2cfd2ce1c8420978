"""Shared fixtures: the tiny config, a seeded generator, and the real samples (or a skip).

Shapes are checked at run time in the tests: every `aef_lit` module is imported under
jaxtyping's import hook (tests/shapecheck.py), so a function called with a tensor whose shape or
dtype contradicts its signature (`Float[Tensor, "B T D h w"]`, dimension names shared
across the arguments of one call) raises instead of computing something else.
`AEF_TYPECHECK=0` switches it off (to time the tests without the checks).
"""
from __future__ import annotations

import os

import pytest
import torch

if os.environ.get("AEF_TYPECHECK", "1") != "0":
    from jaxtyping import install_import_hook

    # installed for the whole session: every aef_lit module imported from here on is checked
    install_import_hook("aef_lit", "shapecheck.shapes_only")

from aef_lit.conventions import find_eo_real, get_config  # noqa: E402


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


@pytest.fixture
def no_shape_checks():
    """Switch the run-time shape checks off for one test (torch.compile cannot trace them)."""
    import jaxtyping

    before = jaxtyping.config.jaxtyping_disable
    jaxtyping.config.update("jaxtyping_disable", True)
    yield
    jaxtyping.config.update("jaxtyping_disable", before)
