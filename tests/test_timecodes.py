"""Timecodes (chapter 4): float64 days, similarity decays with the gap, periods, instants."""
from __future__ import annotations

import pytest
import torch

from aef_lit.conventions import to_days
from aef_lit.model.timecodes import (
    instant_code,
    normalise_in_period,
    period_code,
    period_code_cfg,
    timecode,
    timecode_cfg,
    wavelengths,
)

T0 = float(to_days("2021-06-01"))


def _cos(a, b):
    return torch.nn.functional.cosine_similarity(a, b, dim=-1)


def test_shape_dtype(tiny_cfg):
    t = torch.full((2, 5), T0, dtype=torch.float64)
    c = timecode_cfg(t, tiny_cfg)
    assert c.shape == (2, 5, tiny_cfg.timecode_dim) and c.dtype == torch.float32
    assert c.abs().max() <= 1.0


def test_refuses_float32():
    with pytest.raises(TypeError, match="float64"):
        timecode(torch.tensor([T0], dtype=torch.float32), 32)
    with pytest.raises(ValueError, match="even"):
        timecode(torch.tensor([T0], dtype=torch.float64), 31)


@pytest.mark.parametrize("dim", [32, 64, 128])
def test_one_day_apart_is_nearly_parallel(dim):
    """§12: the port's float32 ms epochs gave cosine 0.02 for codes one day apart."""
    for start in (T0, float(to_days("1985-03-01")), float(to_days("2035-12-31"))):
        a, b = timecode(torch.tensor([start, start + 1.0], dtype=torch.float64), dim)
        assert _cos(a, b) > 0.9


def test_similarity_decays_with_gap():
    t = T0 + torch.tensor([0.0, 1.0, 30.0, 730.0], dtype=torch.float64)
    c = timecode(t, 64)
    s = _cos(c[0:1], c)
    assert s[0] > s[1] > s[2] > s[3]
    assert s[3] < 0.3


def test_shift_invariant_kernel():
    """The cosine of two codes depends only on their gap (phases exact in float64)."""
    gaps = torch.tensor([0.5, 3.0, 100.0], dtype=torch.float64)
    sims = []
    for start in (T0, T0 + 12345.678):
        a = timecode(torch.full((3,), start, dtype=torch.float64), 64)
        b = timecode(start + gaps, 64)
        sims.append(_cos(a, b))
    torch.testing.assert_close(sims[0], sims[1], atol=1e-5, rtol=0)


def test_wavelengths_geometric():
    lam = wavelengths(8, 1.0, 1000.0)
    assert lam[0] == 1.0 and abs(lam[-1] - 1000.0) < 1e-9
    r = lam[1:] / lam[:-1]
    torch.testing.assert_close(r, r[0].expand_as(r))


def test_period_code(tiny_cfg):
    p = torch.tensor([[[T0, T0 + 365.0]]], dtype=torch.float64)
    c = period_code_cfg(p, tiny_cfg)
    assert c.shape == (1, 1, 2 * tiny_cfg.timecode_dim)
    d = tiny_cfg.timecode_dim
    torch.testing.assert_close(c[..., :d], timecode_cfg(p[..., 0], tiny_cfg))
    torch.testing.assert_close(c[..., d:], timecode_cfg(p[..., 1], tiny_cfg))
    # periods with different ends differ
    q = torch.tensor([[[T0, T0 + 30.0]]], dtype=torch.float64)
    assert not torch.allclose(c, period_code(q, d))


def test_normalise_in_period():
    per = torch.tensor([[T0, T0 + 100.0]] * 5, dtype=torch.float64)
    t = torch.tensor([T0 - 5, T0, T0 + 25, T0 + 100, T0 + 200], dtype=torch.float64)
    u = normalise_in_period(t, per)
    assert u.dtype == torch.float32
    assert (u >= 0).all() and (u < 1).all()
    torch.testing.assert_close(u[:3], torch.tensor([0.0, 0.0, 0.25]))
    # degenerate period does not produce NaNs
    assert torch.isfinite(normalise_in_period(t[:1], torch.tensor([[T0, T0]], dtype=torch.float64))).all()


def test_instant_code():
    u = torch.tensor([0.0, 0.01, 0.999])
    c = instant_code(u, 16)
    assert c.shape == (3, 16)
    assert _cos(c[0], c[1]) > 0.9
    assert _cos(c[0], c[2]) < 0.5, "no wrap-around: start and end of a period differ"
