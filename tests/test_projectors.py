"""Source projectors (chapter 5): one width, the L/2 grid, T concatenated, weights never input."""
from __future__ import annotations

import torch

from aef_lit.conventions import random_batch
from aef_lit.projectors import InputProjection

T = {"s2": 4, "s1": 2, "landsat": 3}


def _setup(cfg, gen, H=32, W=48):
    proj = InputProjection(cfg)
    batch = random_batch(cfg, B=2, T=T, H=H, W=W, generator=gen)
    return proj, batch, proj(batch)


def test_shapes_and_order(tiny_cfg, gen):
    proj, batch, (x, t, mask) = _setup(tiny_cfg, gen)
    assert x.shape == (2, 9, tiny_cfg.d_precision, 16, 24)
    assert t.dtype == torch.float64 and mask.dtype == torch.bool
    assert torch.equal(t, torch.cat([batch[n].t for n in ("s2", "s1", "landsat")], 1))
    assert torch.equal(mask, torch.cat([batch[n].frame_mask for n in ("s2", "s1", "landsat")], 1))
    assert set(proj.projectors) == {s.name for s in tiny_cfg.input_sources}


def test_weight_is_never_input(tiny_cfg, gen):
    proj, batch, (x, _, _) = _setup(tiny_cfg, gen)
    b2 = {k: v.replace(weight=torch.zeros_like(v.weight)) for k, v in batch.items()}
    assert torch.equal(proj(b2)[0], x)


def test_padded_frames_ignored_even_nan(tiny_cfg, gen):
    proj, batch, (x, _, mask) = _setup(tiny_cfg, gen)
    b2 = {k: v.replace(x=torch.where(v.frame_mask[..., None, None, None], v.x, torch.nan)) for k, v in batch.items()}
    y = proj(b2)[0]
    assert torch.isfinite(y).all() and torch.equal(y, x)


def test_local_patch_embedding(tiny_cfg, gen):
    proj, batch, (x, _, _) = _setup(tiny_cfg, gen)
    s1 = batch["s1"].replace(x=batch["s1"].x.clone())
    s1.x[1, 0, :, 5, 30] += 1.0
    diff = (proj(dict(batch, s1=s1))[0] - x).abs().sum(2)
    assert diff.nonzero().tolist() == [[1, 4, 2, 15]]  # s1 frame 0 is T index 4


def test_source_embedding_distinguishes_sources(tiny_cfg):
    """Two sources with identical zero inputs still give different features."""
    proj = InputProjection(tiny_cfg)
    z = {n: proj.projectors[n](torch.zeros(1, 1, s.channels, 4, 4), torch.ones(1, 1, dtype=torch.bool))
         for n, s in ((s.name, s) for s in tiny_cfg.input_sources)}
    assert not torch.allclose(z["s2"], z["s1"])
