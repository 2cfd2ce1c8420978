"""Space operator (chapter 8): attention within each frame, 2-D RoPE, non-square grids."""
from __future__ import annotations

import pytest
import torch

from aef_lit.model.space import SpaceOperator, apply_rope, rope_2d_angles


def test_frames_never_mix_and_global_within(tiny_cfg, gen):
    op = SpaceOperator(tiny_cfg.d_space, tiny_cfg.heads_space, tiny_cfg.mlp_ratio, depth=2).eval()
    x = torch.randn(2, 3, tiny_cfg.d_space, 2, 3, generator=gen)
    y = op(x)
    assert y.shape == x.shape
    x2 = x.clone()
    x2[0, 1, :, 1, 2] += 1.0
    d = (op(x2) - y).abs().sum(2)
    assert d[1].max() == 0 and d[0, 0].max() == 0 and d[0, 2].max() == 0
    assert (d[0, 1] > 0).all()


@pytest.mark.parametrize("hw", [(1, 1), (2, 4), (4, 2), (3, 5)])
def test_nonsquare(tiny_cfg, gen, hw):
    op = SpaceOperator(tiny_cfg.d_space, tiny_cfg.heads_space)
    x = torch.randn(1, 2, tiny_cfg.d_space, *hw, generator=gen)
    assert op(x).shape == x.shape


def test_rope_relative(gen):
    e = 16
    ang = rope_2d_angles(10, 7, e)
    q, k = torch.randn(2, e, generator=gen)

    def s(i, j):
        return (apply_rope(q, ang[i]) * apply_rope(k, ang[j])).sum()

    # offset (+2 rows, -1 col) from two different places; row-major index r*7+c
    torch.testing.assert_close(s(0 * 7 + 3, 2 * 7 + 2), s(6 * 7 + 5, 8 * 7 + 4), atol=1e-4, rtol=1e-4)
    # rotation keeps norms
    torch.testing.assert_close(apply_rope(q, ang[33]).norm(), q.norm())


def test_head_width_checked():
    with pytest.raises(ValueError, match="multiple of 4"):
        SpaceOperator(24, 4)  # head width 6
