"""Precision operator (chapter 6): 3x3 convs per frame, residual, local."""
from __future__ import annotations

import torch

from aef_lit.model.precision import PrecisionOperator


def test_shape_nonsquare(gen):
    op = PrecisionOperator(8)
    x = torch.randn(2, 3, 8, 16, 24, generator=gen)
    assert op(x).shape == x.shape


def test_frames_independent_and_local(gen):
    op = PrecisionOperator(8)
    x = torch.randn(2, 3, 8, 12, 12, generator=gen)
    y = op(x)
    x2 = x.clone()
    x2[1, 2, :, 6, 6] += 1.0
    d = (op(x2) - y).abs().sum(2)
    assert d[0].max() == 0 and d[1, :2].max() == 0
    nz = d[1, 2].nonzero()
    assert nz.min() >= 4 and nz.max() <= 8  # two 3x3 convs: 5x5 receptive field


def test_padded_frame_no_effect(gen):
    """No normalisation over T: changing one frame changes no other frame."""
    op = PrecisionOperator(8)
    x = torch.randn(1, 4, 8, 8, 8, generator=gen)
    x2 = x.clone()
    x2[0, 3] = 1e3 * torch.randn(8, 8, 8, generator=gen)
    assert torch.equal(op(x)[:, :3], op(x2)[:, :3])
