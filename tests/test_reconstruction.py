"""Held-out reconstruction (chapter 15): selection, periods, the loss, and no leakage."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from aef_lit.conventions import SourceSpec, random_batch
from aef_lit.model import build_model
from aef_lit.objective.reconstruction import (
    MIN_PERIOD_DAYS,
    HeldOut,
    hold_out,
    pick_frames,
    pixel_errors,
    random_periods_containing,
    reconstruct,
    reconstruction_loss,
)


def test_pick_frames_only_picks_existing_frames(gen):
    mask = torch.zeros(500, 6, dtype=torch.bool)
    mask[:, 1] = mask[:, 4] = True
    mask[0] = False
    idx, valid = pick_frames(mask, gen)
    assert not valid[0] and valid[1:].all()
    assert set(idx[1:].tolist()) == {1, 4}  # both chosen, nothing else


def test_held_out_frame_is_removed_from_the_input_only(tiny_cfg, gen):
    batch = random_batch(tiny_cfg, B=3, T=5, generator=gen)
    held = hold_out(batch, tiny_cfg, gen)
    for s in tiny_cfg.sources:
        tg = held.targets[s.name]
        rows = torch.arange(3)
        assert batch[s.name].frame_mask[rows, tg.index].all()  # picked an existing frame
        if s.role == "input":
            assert not held.inputs[s.name].frame_mask[rows, tg.index].any()  # and removed it
            others = batch[s.name].frame_mask.clone()
            others[rows, tg.index] = False
            assert torch.equal(held.inputs[s.name].frame_mask, others)  # nothing else changed
        else:
            assert held.inputs[s.name] is batch[s.name]  # target-only: untouched
        assert torch.equal(tg.x, batch[s.name].x[rows, tg.index])
    assert held.periods.shape == (3, len(tiny_cfg.sources), 2)
    assert held.sources == [s.name for s in tiny_cfg.sources]


def test_each_target_has_its_own_valid_period(tiny_cfg, gen):
    batch = random_batch(tiny_cfg, B=64, T=5, generator=gen)
    held = hold_out(batch, tiny_cfg, gen)
    for tg in held.targets.values():
        length = tg.period[:, 1] - tg.period[:, 0]
        assert (length > MIN_PERIOD_DAYS).all() and (length <= 365.25).all()
        assert ((tg.period[:, 0] <= tg.t) & (tg.t < tg.period[:, 1])).all()
        assert ((tg.t_norm >= 0) & (tg.t_norm < 1)).all()
        expected = ((tg.t - tg.period[:, 0]) / length).float()
        assert torch.allclose(tg.t_norm, expected, atol=1e-6)
    # periods differ across sources of one row (own period each)
    assert (held.periods[:, 0] != held.periods[:, 1]).any()


def test_random_periods_are_float64_and_contain_t(gen):
    t = torch.full((1000,), 18_700.25, dtype=torch.float64)
    p = random_periods_containing(t, gen, 4.0, 30.0)
    assert p.dtype == torch.float64
    assert ((p[:, 0] <= t) & (t < p[:, 1])).all() and ((p[:, 1] - p[:, 0]) > 4).all()


def test_a_row_is_never_emptied(tiny_cfg, gen):
    batch = random_batch(tiny_cfg, B=2, T=3, generator=gen, n_padded=0)
    for name in ("s2", "s1", "landsat"):  # row 0: a single input frame overall
        m = batch[name].frame_mask.clone()
        m[0] = False
        batch[name] = batch[name].replace(frame_mask=m)
    m = batch["s2"].frame_mask.clone()
    m[0, 1] = True
    batch["s2"] = batch["s2"].replace(frame_mask=m)
    held = hold_out(batch, tiny_cfg, gen)
    assert held.inputs["s2"].frame_mask[0, 1]  # put back
    assert not held.targets["s2"].valid[0] and held.targets["s2"].weight[0].sum() == 0
    assert not held.targets["s1"].valid[0]  # no s1 frame at all in row 0
    assert held.targets["s2"].valid[1]


def test_l1_and_cross_entropy_with_pixel_and_source_weights(tiny_cfg, gen):
    cfg = tiny_cfg.replace(sources=(
        SourceSpec("s2", ("a", "b")),
        SourceSpec("lc", ("class",), "categorical", role="target", n_classes=3, loss_weight=0.5)))
    batch = random_batch(cfg, B=2, T=3, H=4, generator=gen)
    held = hold_out(batch, cfg, gen)
    held.targets["s2"].weight.fill_(1.0)
    held.targets["lc"].weight.fill_(1.0)
    pred_s2 = held.targets["s2"].x + 0.5  # L1 error exactly 0.5 everywhere
    y = held.targets["lc"].x[:, 0].long()
    logits = torch.randn(2, 3, 4, 4, generator=gen)
    ce = F.cross_entropy(logits, y, reduction="none")
    total, per = reconstruction_loss({"s2": pred_s2, "lc": logits}, held, cfg)
    assert float(per["s2"]) == pytest.approx(0.5, abs=1e-6)
    assert float(per["lc"]) == pytest.approx(float(ce.mean()), abs=1e-6)
    n = 2 * 4 * 4
    assert float(total) == pytest.approx((0.5 * n + 0.5 * float(ce.sum())) / (2 * n), abs=1e-5)


def test_zero_weight_pixels_do_not_count(tiny_cfg, gen):
    batch = random_batch(tiny_cfg, B=2, T=3, generator=gen)
    held = hold_out(batch, tiny_cfg, gen)
    preds = {n: torch.zeros(2, tiny_cfg.source(n).decoded_channels, *tg.x.shape[-2:], requires_grad=True)
             for n, tg in held.targets.items()}
    held.targets["s2"].weight[:, :5] = 0.0
    total, _ = reconstruction_loss(preds, held, tiny_cfg)
    total.backward()
    assert preds["s2"].grad[:, :, :5].abs().sum() == 0
    assert preds["s2"].grad[:, :, 5:].abs().sum() > 0


def test_categorical_ignores_out_of_range_ids_under_zero_weight():
    spec = SourceSpec("lc", ("class",), "categorical", role="target", n_classes=3)
    y = torch.tensor([[[[5.0, 1.0]]]])  # an illegal id (e.g. a boundary code)
    err = pixel_errors(spec, torch.zeros(1, 3, 1, 2), y)
    assert torch.isfinite(err).all()


def _poke_held_out(batch, held, names):
    """The batch with every held-out input frame overwritten by huge noise."""
    poked = dict(batch)
    g = torch.Generator().manual_seed(7)
    for name in names:
        x = batch[name].x.clone()
        rows = torch.arange(x.shape[0])
        x[rows, held.targets[name].index] = 1e3 * torch.randn(x[:, 0].shape, generator=g)
        poked[name] = batch[name].replace(x=x)
    return poked


def test_the_held_out_frame_cannot_influence_its_embedding(tiny_cfg):
    torch.manual_seed(0)
    model = build_model(tiny_cfg).eval()
    names = [s.name for s in tiny_cfg.input_sources]
    batch = random_batch(tiny_cfg, B=2, T=4, H=16, generator=torch.Generator().manual_seed(0))
    held = hold_out(batch, tiny_cfg, torch.Generator().manual_seed(1))
    poked = _poke_held_out(batch, held, names)
    with torch.no_grad():
        preds, mu, _ = reconstruct(model, batch, held=held)
        # the same selection (masks) on the poked values: the held-out frames stay out
        held2 = hold_out(poked, tiny_cfg, torch.Generator().manual_seed(1))
        assert all(torch.equal(held2.inputs[n].frame_mask, held.inputs[n].frame_mask) for n in names)
        _, mu2, _ = reconstruct(model, poked, held=held2)
        # the port's defect, held-out frames left in the input, must be caught by the same check
        leaky = {**held2.inputs, **{n: poked[n] for n in names}}
        _, mu3, _ = reconstruct(model, poked, held=HeldOut(leaky, held2.targets, held2.periods))
    assert torch.equal(mu, mu2)  # bit-identical: the held-out frame is not attended at all
    assert (mu - mu3).abs().max() > 1e-3
    assert mu.shape == (2, len(tiny_cfg.sources), tiny_cfg.embed_dim, 16, 16)
    for name, p in preds.items():
        assert p.shape == (2, tiny_cfg.source(name).decoded_channels, 16, 16)
        assert torch.isfinite(p).all()


def test_reconstruction_loss_trains_the_model(tiny_cfg):
    torch.manual_seed(0)
    model = build_model(tiny_cfg).train()
    batch = random_batch(tiny_cfg, B=2, T=3, H=16, generator=torch.Generator().manual_seed(0))
    gen = torch.Generator().manual_seed(1)
    preds, mu, held = reconstruct(model, batch, generator=gen)
    total, per_source = reconstruction_loss(preds, held, tiny_cfg)
    assert torch.isfinite(total) and float(total.detach()) > 0
    assert set(per_source) == {s.name for s in tiny_cfg.sources}
    total.backward()
    for part in (model.projection, model.encoder, model.summariser, model.decoders):
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in part.parameters())
