"""Pyramid exchange (chapter 9): blur-initialised REDUCE, every operator reaches every operator."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from aef_lit.model.pyramid import BINOMIAL_3x3, Downsample, FinalResample, PyramidExchange, Upsample


def _states(cfg, gen, H=32, W=48, B=1, T=2):
    return (torch.randn(B, T, cfg.d_space, H // 16, W // 16, generator=gen),
            torch.randn(B, T, cfg.d_time, H // 8, W // 8, generator=gen),
            torch.randn(B, T, cfg.d_precision, H // 2, W // 2, generator=gen))


def test_shapes(gen):
    x = torch.randn(2, 3, 8, 16, 24, generator=gen)
    assert Downsample(8, 5, 4)(x).shape == (2, 3, 5, 4, 6)
    assert Upsample(8, 5, 8)(x).shape == (2, 3, 5, 128, 192)
    with pytest.raises(ValueError, match="power of two"):
        Downsample(8, 8, 3)


def test_downsample_init_is_binomial_reduce(gen):
    d = Downsample(3, 3, 2)
    w = d.blurs[0].weight
    torch.testing.assert_close(w, BINOMIAL_3x3.expand(3, 1, 3, 3))
    x = torch.randn(4, 3, 8, 8, generator=gen)
    ref = F.conv2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), w, stride=2, groups=3)
    torch.testing.assert_close(d.blurs[0](x), ref)


def test_exchange_reaches_all_and_keeps_frames(tiny_cfg, gen):
    ex = PyramidExchange(tiny_cfg)
    s, t, p = _states(tiny_cfg, gen)
    out = ex(s, t, p)
    assert [o.shape for o in out] == [s.shape, t.shape, p.shape]
    for k in range(3):
        new = [s, t, p]
        new[k] = new[k].clone()
        new[k][:, 0] += 1.0 + torch.randn(new[k][:, 0].shape, generator=gen)
        res = ex(*new)
        for j in range(3):
            assert not torch.allclose(res[j][:, 0], out[j][:, 0])
            assert torch.equal(res[j][:, 1], out[j][:, 1])


def test_final_resample(tiny_cfg, gen):
    s, t, p = _states(tiny_cfg, gen, H=48, W=32)
    y = FinalResample(tiny_cfg)(s, t, p)
    assert y.shape == p.shape
    torch.testing.assert_close(y.mean(2), torch.zeros_like(y.mean(2)), atol=1e-5, rtol=0)  # LayerNorm'd
