"""Source projectors (chapter 5): one width, the L/2 grid, T concatenated, weights never input."""
from __future__ import annotations

import torch

from aef_lit.conventions import random_batch
from aef_lit.model.projectors import InputProjection

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


def _gappy(gen, B=2, T=5, C=3, H=4, W=4):
    x = torch.randn(B, T, C, H, W, generator=gen)
    seen = torch.rand(B, T, 1, H, W, generator=gen) > 0.4
    mask = torch.ones(B, T, dtype=torch.bool)
    mask[0, 3] = False  # a held-out or dropped frame: its values must not leak into the fill
    mask[1, 4] = False
    return torch.where(seen, x, torch.zeros(())), seen[:, :, 0], mask


def test_fill_gaps_puts_the_mean_of_the_observed_frames_of_that_pixel(gen):
    from aef_lit.model.projectors import fill_gaps

    x, seen, mask = _gappy(gen)
    y = fill_gaps(x, mask)
    use = seen & mask[..., None, None]
    assert torch.equal(y[use[:, :, None].expand_as(x)], x[use[:, :, None].expand_as(x)]), "observations kept"
    for b in range(2):
        for i in range(4):
            for j in range(4):
                obs = use[b, :, i, j]
                for t in range(5):
                    if mask[b, t] and not seen[b, t, i, j]:
                        want = x[b, obs, :, i, j].mean(0) if obs.any() else torch.zeros(3)
                        assert torch.allclose(y[b, t, :, i, j], want, atol=1e-6)
    assert torch.equal(y[0, 3], x[0, 3]) and torch.equal(y[1, 4], x[1, 4]), "masked frames are left alone"


def test_fill_gaps_never_reads_masked_frames(gen):
    from aef_lit.model.projectors import fill_gaps

    x, _, mask = _gappy(gen)
    x2 = x.clone()
    x2[0, 3] = 5.0  # the held-out frame changes
    y, y2 = fill_gaps(x, mask), fill_gaps(x2, mask)
    keep = mask[:, :, None, None, None].expand_as(x)
    assert torch.equal(y[keep], y2[keep])


def test_gap_fill_option_changes_only_frames_with_gaps(tiny_cfg, gen):
    import pytest

    from aef_lit.model.projectors import SourceProjector

    spec = tiny_cfg.input_sources[0]
    zero, mean = SourceProjector(spec, 8), SourceProjector(spec, 8, gap_fill="mean")
    mean.load_state_dict(zero.state_dict())
    x = torch.randn(1, 3, spec.channels, 4, 4, generator=gen)
    mask = torch.ones(1, 3, dtype=torch.bool)
    assert torch.allclose(zero(x, mask), mean(x, mask)), "no gaps, no change"
    x[0, 1, :, :2, :2] = 0.0  # one 2x2 cell of frame 1 unobserved
    diff = (zero(x, mask) - mean(x, mask)).abs().sum(2)[0]
    assert diff.nonzero().tolist() == [[1, 0, 0]], "only the gap's own cell of its own frame changes"
    with pytest.raises(ValueError, match="gap_fill"):
        tiny_cfg.replace(gap_fill="nearest")


def test_raw_gap_fill_reads_cloud_radiance_only_under_gaps_of_real_frames(tiny_cfg, gen):
    """gap_fill="raw" (the paper's raw input): the measured radiance under a cloud reaches the
    patch embedding; a batch without it, the zero model, and a masked (held-out) frame do not."""
    from aef_lit.model.projectors import SourceProjector

    spec = tiny_cfg.input_sources[0]
    zero, raw = SourceProjector(spec, 8), SourceProjector(spec, 8, gap_fill="raw")
    raw.load_state_dict(zero.state_dict())
    x = torch.randn(1, 3, spec.channels, 4, 4, generator=gen)
    x[0, 1, :, :2, :2] = 0.0  # frame 1: one 2x2 cell under a cloud
    cloud = torch.zeros_like(x)
    cloud[0, 1, :, :2, :2] = 2.5  # what the sensor measured there
    mask = torch.ones(1, 3, dtype=torch.bool)
    assert torch.equal(raw(x, mask), zero(x, mask)), "without cloud values, raw is zero"
    assert torch.equal(zero(x, mask, cloud), zero(x, mask)), "the zero model never reads them"
    diff = (raw(x, mask, cloud) - zero(x, mask)).abs().sum(2)[0]
    assert diff.nonzero().tolist() == [[1, 0, 0]], "only the cloudy cell of its own frame changes"
    held = mask.clone()
    held[0, 1] = False  # the cloudy frame held out: nothing of it may reach the encoder
    assert torch.equal(raw(x, held, cloud)[0, 1], zero(x, held)[0, 1])
