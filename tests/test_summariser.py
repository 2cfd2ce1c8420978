"""Summariser (chapter 11): time pooling per pixel, masks, periods, L/2 -> L, unit norm."""
from __future__ import annotations

import pytest
import torch
from einops import rearrange

from aef_lit.model.summariser import Summariser, TimePooling, bilinear_kernel

T0 = 18_700.0


def _inputs(cfg, gen, B=2, T=6, h=8, w=6, span=140.0):
    feats = torch.randn(B, T, cfg.d_precision, h, w, generator=gen)
    t = T0 + torch.sort(torch.rand(B, T, generator=gen, dtype=torch.float64) * span, dim=1).values
    mask = torch.ones(B, T, dtype=torch.bool)
    mask[:, -1] = False
    periods = torch.tensor([[[T0, T0 + 100], [T0 + 150, T0 + 300]]] * B, dtype=torch.float64)
    return feats, t, mask, periods


@pytest.fixture
def summ(tiny_cfg):
    torch.manual_seed(0)
    return Summariser(tiny_cfg).eval()


def test_shape_and_unit_norm_at_full_resolution(tiny_cfg, gen, summ):
    for h, w in ((8, 6), (4, 10), (16, 16)):  # L/2 grids of non-square and square tiles
        feats, t, mask, periods = _inputs(tiny_cfg, gen, h=h, w=w)
        mu = summ(feats, t, mask, periods)
        assert mu.shape == (2, 2, tiny_cfg.embed_dim, 2 * h, 2 * w)
        assert torch.allclose(mu.norm(dim=2), torch.ones(()), atol=1e-5)


@pytest.mark.parametrize("frame", [0, 3])
def test_time_pooling_never_mixes_pixels(tiny_cfg, gen, summ, frame):
    """§12: the port pooled neighbouring pixels (a `.view` over B T H W C)."""
    feats, t, mask, periods = _inputs(tiny_cfg, gen)
    with torch.no_grad():
        ref = summ.pool(feats, t, mask, periods)
        for i, j in ((0, 0), (3, 4), (7, 5)):
            bumped = feats.clone()
            bumped[1, frame, :, i, j] += 3.0
            diff = (summ.pool(bumped, t, mask, periods) - ref).abs().amax(dim=2)  # B P h w
            changed = (diff > 0).nonzero().tolist()
            assert {(b, y, x) for b, _, y, x in changed} == {(1, i, j)}, changed


def test_viewlike_pooling_defect_is_caught(tiny_cfg, gen):
    """The locality check must fail for a pooling fed by the port's `.view`-like reshape."""
    pool = TimePooling(tiny_cfg).eval()
    feats, t, mask, periods = _inputs(tiny_cfg, gen)

    def port_like(f):  # reinterpret (B, T, H, W, D) memory as (B, H, W, T, D), as the port did
        B, T, D, h, w = f.shape
        flat = rearrange(f, "b t d h w -> b t h w d").reshape(B, h, w, T, D)
        return rearrange(flat, "b h w t d -> b t d h w")

    with torch.no_grad():
        ref = pool(port_like(feats), t, mask, periods)
        bumped = feats.clone()
        bumped[1, 0, :, 3, 4] += 3.0
        diff = (pool(port_like(bumped), t, mask, periods) - ref).abs().amax(dim=(1, 2))
    changed = {tuple(x) for x in (diff > 0).nonzero().tolist()}
    assert changed and changed != {(1, 3, 4)}, "a view-like reshape moves the change to another pixel"


def test_upsampling_is_local(tiny_cfg, gen, summ):
    feats, t, mask, periods = _inputs(tiny_cfg, gen)
    with torch.no_grad():
        ref = summ(feats, t, mask, periods)
        bumped = feats.clone()
        bumped[0, 1, :, 3, 4] += 3.0
        diff = (summ(bumped, t, mask, periods) - ref).abs().amax(dim=(0, 1, 2))
    rows, cols = (diff > 0).nonzero(as_tuple=True)
    assert rows.min() >= 5 and rows.max() <= 8 and cols.min() >= 7 and cols.max() <= 10


def test_masked_frame_has_no_effect(tiny_cfg, gen, summ):
    feats, t, mask, periods = _inputs(tiny_cfg, gen)
    with torch.no_grad():
        ref = summ(feats, t, mask, periods)
        changed = feats.clone()
        changed[:, -1] = torch.randn_like(changed[:, -1]) * 1e3
        t2 = t.clone()
        t2[:, -1] += 1234.5
        assert torch.equal(summ(changed, t2, mask, periods), ref)
        # and the mask really is used: unmasking the frame changes the result
        assert not torch.equal(summ(changed, t2, torch.ones_like(mask), periods), ref)


def test_all_masked_row_is_finite(tiny_cfg, gen, summ):
    feats, t, mask, periods = _inputs(tiny_cfg, gen)
    mask[0] = False
    with torch.no_grad():
        mu = summ(feats, t, mask, periods)
    assert torch.isfinite(mu).all()
    assert torch.allclose(mu.norm(dim=2), torch.ones(()), atol=1e-5)


def test_frame_permutation_invariance_and_timestamp_dependence(tiny_cfg, gen, summ):
    feats, t, mask, periods = _inputs(tiny_cfg, gen)
    perm = torch.tensor([4, 2, 0, 5, 1, 3])
    with torch.no_grad():
        ref = summ(feats, t, mask, periods)
        out = summ(feats[:, perm], t[:, perm], mask[:, perm], periods)
        assert torch.allclose(out, ref, atol=1e-5)
        shifted = summ(feats, t + 37.0, mask, periods)
        assert (shifted - ref).abs().max() > 1e-4


def test_periods_change_the_embedding_and_empty_periods_work(tiny_cfg, gen, summ):
    feats, t, mask, periods = _inputs(tiny_cfg, gen)
    assert (t[mask].max() < periods[:, 1, 0]).all()  # period 2 holds no frame
    with torch.no_grad():
        mu, attn = summ(feats, t, mask, periods, return_attention=True)
        single = summ(feats, t, mask, periods[:, 1:])
    assert torch.isfinite(mu).all()
    assert (mu[:, 0] - mu[:, 1]).norm(dim=1).min() > 1e-3
    # several periods in one pass equal one pass per period
    assert torch.allclose(single[:, 0], mu[:, 1], atol=1e-5)
    assert attn.shape == (2, 2, 6, 8, 6) and (attn[:, :, -1] == 0).all()
    assert (attn.sum(2) <= 1 + 1e-5).all() and (attn[:, :, :-1] > 0).all()


def test_bilinear_init_upsamples_a_constant_to_a_constant():
    k = bilinear_kernel(3)
    up = torch.nn.ConvTranspose2d(3, 3, 4, stride=2, padding=1, bias=False)
    with torch.no_grad():
        up.weight.copy_(k)
        y = up(torch.ones(1, 3, 5, 5))
    assert torch.allclose(y[..., 1:-1, 1:-1], torch.ones(()))


def test_every_parameter_gets_a_gradient(tiny_cfg, gen):
    summ = Summariser(tiny_cfg).train()
    feats, t, mask, periods = _inputs(tiny_cfg, gen)
    mu = summ(feats.requires_grad_(), t, mask, periods)
    (mu * torch.randn(mu.shape, generator=gen)).sum().backward()
    missing = [n for n, p in summ.named_parameters() if p.grad is None or p.grad.abs().sum() == 0]
    assert not missing, missing


def test_bf16_autocast_gives_float32_unit_vectors(tiny_cfg, gen, summ):
    feats, t, mask, periods = _inputs(tiny_cfg, gen)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        mu = summ(feats, t, mask, periods)
    assert mu.dtype == torch.float32 and torch.isfinite(mu).all()
    assert torch.allclose(mu.norm(dim=2), torch.ones(()), atol=1e-5)
