"""Time operator (chapter 7): attention along T per pixel; the §12 `.view` defect and masking."""
from __future__ import annotations

import pytest
import torch

from aef_lit.model.time import TimeOperator, key_mask
from aef_lit.model.timecodes import timecode_cfg


@pytest.fixture
def setup(tiny_cfg, gen):
    op = TimeOperator(tiny_cfg.d_time, tiny_cfg.heads_time, tiny_cfg.timecode_dim, tiny_cfg.mlp_ratio, depth=2).eval()
    B, T, h, w = 2, 5, 4, 6  # non-square
    x = torch.randn(B, T, tiny_cfg.d_time, h, w, generator=gen)
    t = 18_700 + torch.sort(torch.rand(B, T, generator=gen, dtype=torch.float64) * 365, 1).values
    mask = torch.ones(B, T, dtype=torch.bool)
    mask[0, -2:] = False
    mask[1, 1] = False
    tc = timecode_cfg(t, tiny_cfg)
    return op, x, t, tc, mask


@pytest.mark.parametrize("pix", [(0, 0), (1, 3), (3, 5), (2, 0)])
@pytest.mark.parametrize("frame", [0, 2, 4])
def test_pixels_never_mix(setup, pix, frame, gen):
    """§12: the port's `.view` reshape pooled neighbouring pixels instead of frames."""
    op, x, _, tc, mask = setup
    y = op(x, tc, mask)
    x2 = x.clone()
    x2[1, frame, :, pix[0], pix[1]] += torch.randn(x.shape[2], generator=gen)
    d = (op(x2, tc, mask) - y).abs().sum(2)  # B T h w
    d[1, :, pix[0], pix[1]] = 0
    assert d.max() == 0


def test_masked_frame_no_effect(setup, tiny_cfg, gen):
    op, x, t, tc, mask = setup
    y = op(x, tc, mask)
    x2, t2 = x.clone(), t.clone()
    x2[~mask] = 1e3 * torch.randn(x2[~mask].shape, generator=gen)
    t2[~mask] += 5000.0
    y2 = op(x2, timecode_cfg(t2, tiny_cfg), mask)
    assert torch.equal(y2[mask], y[mask])


def test_permutation_equivariance(setup, gen):
    op, x, _, tc, mask = setup
    y = op(x, tc, mask)
    perm = torch.randperm(x.shape[1], generator=gen)
    torch.testing.assert_close(op(x[:, perm], tc[:, perm], mask[:, perm]), y[:, perm], atol=1e-5, rtol=1e-5)


def test_timecode_conditions(setup, tiny_cfg):
    op, x, t, tc, mask = setup
    y = op(x, tc, mask)
    assert not torch.allclose(op(x, timecode_cfg(t + 50.0 * torch.arange(5), tiny_cfg), mask), y, atol=1e-4)


def test_all_masked_row_is_finite(setup):
    op, x, _, tc, mask = setup
    mask = mask.clone()
    mask[0] = False
    assert torch.isfinite(op(x, tc, mask)).all()
    assert key_mask(mask)[0].all() and torch.equal(key_mask(mask)[1], mask[1])


def test_rows_independent(setup, gen):
    op, x, _, tc, mask = setup
    y = op(x, tc, mask)
    x2 = x.clone()
    x2[0] += 1.0
    assert torch.equal(op(x2, tc, mask)[1], y[1])
