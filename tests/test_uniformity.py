"""Batch uniformity (chapter 16): values on the sphere, the batch axis, one-row batches."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from aef_lit.objective.uniformity import batch_partners, batch_uniformity

E = 64
EXACT = math.exp(math.lgamma(E / 2) - math.lgamma((E + 1) / 2)) / math.sqrt(math.pi)


def _unit(*shape, dim, gen):
    return F.normalize(torch.randn(*shape, generator=gen), dim=dim)


def test_random_vectors_on_s63_give_about_0_1(gen):
    u = _unit(32, E, 8, 8, dim=1, gen=gen)
    assert abs(float(batch_uniformity(u)) - EXACT) < 0.01
    assert abs(EXACT - 0.0997) < 1e-3


def test_collapsed_batch_gives_one(gen):
    v = _unit(E, dim=0, gen=gen)
    u = v[None, :, None, None].expand(8, E, 4, 4)
    assert float(batch_uniformity(u)) == pytest.approx(1.0, abs=1e-5)
    assert float(batch_uniformity(-u)) == pytest.approx(1.0, abs=1e-5)  # absolute value


def test_spatially_constant_sample_does_not_change_the_loss(gen):
    """The port's defect: it compared neighbouring pixels of one image."""
    u = _unit(16, E, 8, 8, dim=1, gen=gen)
    smooth = u.clone()
    smooth[5] = u[5, :, :1, :1].expand(E, 8, 8)
    a, b = float(batch_uniformity(u)), float(batch_uniformity(smooth))
    assert abs(a - b) < 0.02
    # and a fully smooth batch of random rows is still ~0.1, not 1
    all_smooth = u[:, :, :1, :1].expand(16, E, 8, 8)
    assert abs(float(batch_uniformity(all_smooth)) - EXACT) < 0.05


def test_rotation_is_along_the_batch_axis_only(gen):
    u = _unit(4, 3, E, 2, 2, dim=2, gen=gen)  # B P E H W
    p = batch_partners(u)
    assert torch.equal(p[1], u[0]) and torch.equal(p[0], u[3])
    manual = (u * torch.roll(u, 1, 0)).sum(2).abs().mean()
    assert torch.allclose(batch_uniformity(u), manual)
    # identical periods within a row are never compared with each other
    same = u.clone()
    same[:, 1] = same[:, 0]
    assert float(batch_uniformity(same)) < 0.5


def test_vector_layout_and_gradient(gen):
    v = torch.randn(8, E, generator=gen, requires_grad=True)
    loss = batch_uniformity(F.normalize(v, dim=-1), embed_dim=-1)
    loss.backward()
    assert v.grad is not None and v.grad.abs().sum() > 0


def test_single_row_is_zero_and_warns_once(gen, caplog):
    import aef_lit.objective.uniformity as mod

    mod._warned_single_row = False
    u = _unit(1, E, 4, 4, dim=1, gen=gen).requires_grad_(True)
    with caplog.at_level("WARNING", logger="aef_lit"):
        out = batch_uniformity(u)
        batch_uniformity(u)
    assert float(out) == 0.0 and out.requires_grad
    assert sum("no partner" in r.message for r in caplog.records) == 1
