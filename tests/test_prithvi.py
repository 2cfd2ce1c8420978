"""aef_lit.prithvi: the masked autoencoder, the published-checkpoint loader, stacks, training, features."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from aef_lit.data import DataError, synthetic_sample
from aef_lit.data.sites import GREENEARTHNET_S2
from aef_lit.prithvi import (
    PrithviConfig,
    PrithviMAE,
    PrithviMethod,
    load_official,
    load_prithvi,
    official_key_map,
    official_layout,
    patchify,
    pick_frames,
    prithvi_config,
    prithvi_features,
    random_masking,
    ship_prithvi,
    sincos_1d,
    sincos_3d,
    train_prithvi,
    unpatchify,
)

MICRO = dict(img_size=16, patch=4, dim=32, depth=1, heads=2, decoder_dim=16, decoder_depth=1, decoder_heads=2)


def _micro(**kw) -> PrithviConfig:
    return prithvi_config("tiny", **{**MICRO, **kw})


def _sample(size=24, frames=6, seed=0):
    return synthetic_sample((GREENEARTHNET_S2,), height=size, width=size, n_frames={"s2": frames}, seed=seed)


def _x(cfg, b=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, cfg.in_chans, cfg.frames, cfg.img_size, cfg.img_size, generator=g)


# --- position codes and masking -------------------------------------------------------------

def test_sincos_1d_is_sin_then_cos_of_the_transformer_frequencies():
    e = sincos_1d(8, np.array([0.0, 2.0]))
    assert np.allclose(e[0], [0, 0, 0, 0, 1, 1, 1, 1])
    omega = 1.0 / 10000 ** (np.arange(4) / 4)
    assert np.allclose(e[1], np.concatenate([np.sin(2 * omega), np.cos(2 * omega)]))


def test_3d_codes_identify_every_token_and_split_the_width_column_row_frame():
    d, grid = 64, (3, 4, 5)
    pe = sincos_3d(d, grid, cls_token=False)
    assert pe.shape == (60, d) and len(np.unique(pe.round(8), axis=0)) == 60
    col, row, frame = (pe[:, a:b].reshape(3, 4, 5, -1) for a, b in ((0, 24), (24, 48), (48, 64)))
    assert np.allclose(col, col[:1, :1])          # the column code depends on the column only
    assert np.allclose(row, row[:1, :, :1])       # the row code on the row only
    assert np.allclose(frame, frame[:, :1, :1])   # the frame code on the frame only
    assert np.allclose(sincos_3d(d, grid)[0], 0)  # the class token's row


def test_masking_keeps_a_quarter_and_restore_inverts_the_shuffle():
    keep, mask, restore = random_masking(48, 3, 0.75, torch.Generator().manual_seed(0))
    assert keep.shape == (3, 12) and (mask.sum(1) == 36).all()
    assert (mask.gather(1, keep) == 0).all()
    shuffle = restore.argsort(1)
    assert torch.equal(shuffle.gather(1, restore), torch.arange(48).expand(3, -1))


def test_patchify_roundtrips_and_lays_a_patch_out_row_column_band():
    cfg = _micro()
    x = _x(cfg)
    p = patchify(x, cfg)
    assert torch.equal(unpatchify(p, cfg), x)
    # token 0 is frame 0, rows 0..3, columns 0..3; its first values are pixel (0, 0) in every band
    assert torch.equal(p[0, 0, :cfg.in_chans], x[0, :, 0, 0, 0])


# --- the loss and the encoder ------------------------------------------------------------------

def test_loss_counts_masked_patches_only_and_clear_weights_change_nothing():
    cfg = _micro()
    torch.manual_seed(0)
    mae = PrithviMAE(cfg)
    x = _x(cfg)
    loss, pred, mask = mae(x, generator=torch.Generator().manual_seed(1))
    p2 = pred.detach().clone()
    p2[mask == 0] += 3.0
    assert torch.allclose(mae.loss(x, p2, mask), loss)
    p2[mask == 1] += 3.0
    assert mae.loss(x, p2, mask) > loss + 1.0
    ones = torch.ones(2, cfg.frames, cfg.img_size, cfg.img_size)
    assert torch.allclose(mae.loss(x, pred, mask, ones), loss, atol=1e-6)


def test_unweighted_loss_is_mae_normalised_pixel_mse():
    cfg = _micro()
    mae = PrithviMAE(cfg)
    x = _x(cfg)
    _, pred, mask = mae(x, generator=torch.Generator().manual_seed(2))
    t = patchify(x, cfg)
    t = (t - t.mean(-1, keepdim=True)) / (t.var(-1, keepdim=True) + 1e-6).sqrt()
    ref = (((pred - t) ** 2).mean(-1) * mask).sum() / mask.sum()
    assert torch.allclose(mae.loss(x, pred, mask), ref, atol=1e-6)


def test_cloudy_pixels_do_not_reach_the_loss():
    cfg = _micro()
    mae = PrithviMAE(cfg)
    x = _x(cfg)
    _, pred, mask = mae(x, generator=torch.Generator().manual_seed(3))
    w = torch.ones(2, cfg.frames, cfg.img_size, cfg.img_size)
    w[:, :, :2, :2] = 0  # a cloud in the corner of every frame
    x2 = x.clone()
    x2[:, :, :, :2, :2] = 50.0
    assert torch.allclose(mae.loss(x, pred, mask, w), mae.loss(x2, pred, mask, w), atol=1e-6)
    assert not torch.allclose(mae.loss(x, pred, mask), mae.loss(x2, pred, mask))


def test_encoded_visible_tokens_do_not_see_hidden_pixels():
    cfg = _micro()
    mae = PrithviMAE(cfg).eval()
    x = _x(cfg)
    N = int(np.prod(cfg.grid))
    keep, mask, _ = random_masking(N, 2, cfg.mask_ratio, torch.Generator().manual_seed(4))
    hidden = unpatchify(mask[..., None].expand(-1, -1, cfg.patch ** 2 * cfg.in_chans), cfg).bool()
    x2 = torch.where(hidden, torch.randn_like(x), x)

    def enc(v):
        tok = mae.encoder.tokens(v)
        return mae.encoder(torch.gather(tok, 1, keep[..., None].expand(-1, -1, cfg.dim)))

    assert torch.allclose(enc(x), enc(x2), atol=1e-5)
    assert not torch.allclose(mae.features(x), mae.features(x2))  # unmasked, they do


def test_date_and_location_codes_reach_the_tokens_only_when_configured():
    plain, eo2 = _micro(), _micro(coords=("time", "location"))
    x = _x(plain)
    dates = torch.tensor([[[2021, 10], [2021, 100], [2021, 200]]] * 2, dtype=torch.float32)
    lonlat = torch.tensor([[10.0, 50.0]] * 2)
    m = PrithviMAE(plain)
    assert torch.equal(m.encoder.tokens(x, dates, lonlat), m.encoder.tokens(x))
    m2 = PrithviMAE(eo2)
    later = dates.clone()
    later[..., 0] += 1
    assert not torch.allclose(m2.encoder.tokens(x, dates, lonlat), m2.encoder.tokens(x, later, lonlat))


def test_config_refuses_impossible_settings():
    for bad in (dict(img_size=30), dict(dim=40), dict(mask_ratio=1.0), dict(coords=("place",)),
                dict(tubelet=3, coords=("time",))):
        with pytest.raises(ValueError):
            _micro(**bad)
    with pytest.raises(ValueError, match="unknown Prithvi preset"):
        prithvi_config("huge")
    with pytest.raises(ValueError, match="stacks"):
        PrithviMAE(_micro()).encoder.tokens(torch.zeros(1, 4, 2, 16, 16))


# --- the published checkpoints ------------------------------------------------------------------

def test_official_layout_has_the_names_and_shapes_of_prithvi_100m():
    layout = dict(official_layout(prithvi_config("100m")))
    # facts of Prithvi_100M.pt (hls-foundation-os MaskedAutoencoderViT, timm Block): 14 top-level
    # tensors, 12 per layer, 12 encoder and 8 decoder layers
    assert len(layout) == 14 + 12 * 12 + 8 * 12
    assert layout["pos_embed"] == (1, 3 * 14 * 14 + 1, 768)
    assert layout["patch_embed.proj.weight"] == (768, 6, 1, 16, 16)
    assert layout["blocks.11.attn.qkv.weight"] == (2304, 768)
    assert layout["decoder_blocks.7.mlp.fc2.weight"] == (512, 2048)
    assert layout["decoder_pred.weight"] == (16 * 16 * 6, 512)
    v2 = dict(official_layout(prithvi_config("eo2_300m"), v2=True))
    assert v2["encoder.pos_embed"] == (1, 4 * 14 * 14 + 1, 1024) and "decoder.decoder_pred.bias" in v2
    assert "encoder.temporal_embed_enc.scale" in v2 and "decoder.location_embed_dec.scale" in v2


@pytest.mark.parametrize("v2", [False, True])
def test_loader_puts_every_official_tensor_in_its_place(v2):
    cfg = prithvi_config("100m", depth=2, decoder_depth=1, coords=("time", "location") if v2 else ())
    g = torch.Generator().manual_seed(0)
    fake = {k: torch.randn(s, generator=g) for k, s in official_layout(cfg, v2)}
    model = load_official(fake, cfg)
    ours = model.state_dict()
    names = official_key_map(fake)
    e = "encoder." if v2 else ""
    assert names[f"{e}blocks.1.attn.proj.weight"] == "encoder.blocks.1.out.weight"
    for k, n in names.items():
        assert torch.equal(ours[n].reshape(fake[k].shape), fake[k]), k
    covered = set(names.values())
    assert covered == set(ours), set(ours) - covered  # every weight of ours came from the file


def test_loader_refuses_wrong_shapes_and_foreign_or_missing_keys(tmp_path):
    cfg = prithvi_config("100m", depth=1, decoder_depth=1)
    g = torch.Generator().manual_seed(1)
    fake = {k: torch.randn(s, generator=g) for k, s in official_layout(cfg)}
    with pytest.raises(ValueError, match="patch_embed.proj.weight"):
        load_official(fake, prithvi_config("100m", depth=1, decoder_depth=1, bands=("B02", "B03", "B04")))
    with pytest.raises(KeyError, match="no place"):
        load_official({**fake, "head.weight": torch.zeros(3)}, cfg)
    with pytest.raises(KeyError, match="lacks"):
        load_official({k: v for k, v in fake.items() if k != "norm.bias"}, cfg)
    with pytest.raises(KeyError, match="lacks"):  # a checkpoint deeper than the configuration
        load_official(fake, prithvi_config("100m", depth=2, decoder_depth=1))
    f = tmp_path / "Prithvi_fake.pt"
    torch.save({"model": fake}, f)  # the file, wrapped as training scripts save it
    assert torch.equal(load_official(f, cfg).decoder.pred.bias, fake["decoder_pred.bias"])


def test_a_model_written_with_official_names_loads_back_identical():
    cfg = _micro(coords=("time",))
    torch.manual_seed(3)
    src = PrithviMAE(cfg).eval()
    ours = src.state_dict()
    layout = official_layout(cfg, v2=True)
    inverse = official_key_map([k for k, _ in layout])
    official = {k: ours[inverse[k]].reshape(s) for k, s in layout if k in inverse}
    official.update({k: torch.ones(s) for k, s in layout if k not in inverse})  # the decoder scales we ignore
    back = load_official(official, cfg).eval()
    x = _x(cfg)
    assert torch.equal(back.features(x), src.features(x))


# --- stacks, features, training ---------------------------------------------------------------

def test_pick_frames_takes_the_clearest_of_each_part_in_time_order():
    t = np.array([0.0, 10, 20, 40, 50, 80, 90])
    clear = np.array([0.2, 0.9, 0.5, 0.1, 0.8, 0.3, 0.7])
    assert pick_frames(t, clear, 3, (0.0, 90.0)).tolist() == [1, 4, 5]  # [0,30) [30,60) [60,90)
    assert pick_frames(t, clear, 3, (0.0, 100.0)).tolist() == [1, 4, 6]
    # one part empty: the clearest unused frame fills in; too few frames: repeats
    assert pick_frames(t, clear, 3, (0.0, 30.0)).tolist() == [0, 1, 2]
    assert len(pick_frames(t, clear, 3, (35.0, 45.0))) == 3
    with pytest.raises(DataError):
        pick_frames(t, clear, 3, (200.0, 300.0))


def test_features_cover_any_site_size_and_a_lone_pixel_is_the_centre_of_its_tile():
    cfg = _micro()
    model = PrithviMAE(cfg).eval()
    s = _sample(size=20)
    t = s.sources["s2"].times
    period = (t[0], t[-1] + 1)
    f = prithvi_features(model, s, period)
    assert f.shape == (cfg.dim, 20, 20) and np.isfinite(f).all()
    lone = s.crop(5, 7, 1, 1)
    one = prithvi_features(model, lone, period)
    fr = lone.sources["s2"]
    rep = type(fr)(np.tile(fr.values, (1, 1, 16, 16)), fr.times, np.tile(fr.valid, (1, 16, 16)), None, fr.name)
    tiled = type(lone)(lone.site, s.grid.crop(0, 0, 16, 16), {"s2": rep}, lone.specs)
    centre = prithvi_features(model, tiled, period)[:, 8:9, 8:9]
    assert one.shape == (cfg.dim, 1, 1) and np.allclose(one, centre, atol=1e-5)


def test_features_read_only_frames_in_the_period():
    cfg = _micro()
    model = PrithviMAE(cfg).eval()
    s = _sample(size=16, frames=8)
    fr = s.sources["s2"]
    period = (fr.times[0], fr.times[4])
    a = prithvi_features(model, s, period)
    fr.values[5:] = 0.9  # change every frame after the period
    assert np.allclose(prithvi_features(model, s, period), a)
    with pytest.raises(DataError, match="no s2 frame"):
        prithvi_features(model, s, (fr.times[-1] + 10, fr.times[-1] + 20))


def test_method_returns_one_feature_map_per_sample():
    cfg = _micro()
    method = PrithviMethod(PrithviMAE(cfg).eval(), "p")
    s = [_sample(16, seed=0), _sample(16, seed=1)]
    per = [(x.sources["s2"].times[0], x.sources["s2"].times[-1] + 1) for x in s]
    out = method(s, per)
    assert [o.shape for o in out] == [(cfg.dim, 16, 16)] * 2 and not np.allclose(out[0], out[1])
    assert method.key().startswith("p/")


def test_training_resumes_to_the_same_weights_and_ships(tmp_path):
    cfg = _micro()
    samples = [_sample(24, seed=0), _sample(24, seed=1)]
    straight, log = train_prithvi(samples, cfg, steps=4, batch_size=2, warmup=2, progress=False)
    train_prithvi(samples, cfg, steps=2, batch_size=2, warmup=2, out_dir=tmp_path / "run", progress=False)
    # a rerun with more steps resumes from the checkpoint; the schedule depends on the total
    halves, log2 = train_prithvi(samples, cfg, steps=4, batch_size=2, warmup=2, out_dir=tmp_path / "run",
                                 progress=False)
    assert [r["loss"] for r in log2] == [r["loss"] for r in log]
    for a, b in zip(halves.state_dict().values(), straight.state_dict().values()):
        assert torch.equal(a, b)  # interrupted and resumed = trained straight
    assert (tmp_path / "run" / "metrics.csv").read_text().count("\n") == 5
    folder = ship_prithvi(halves, log2, tmp_path / "ship", {"name": "prithvi-test"})
    back = load_prithvi(folder)
    x = _x(cfg)
    assert torch.equal(back.features(x), halves.features(x))
    assert "prithvi-test" in (folder / "MODEL_CARD.md").read_text()
    with pytest.raises(ValueError, match="another configuration"):
        train_prithvi(samples, _micro(dim=48), steps=5, batch_size=2, out_dir=tmp_path / "run", progress=False)
    with pytest.raises(DataError, match="lacks the bands"):
        train_prithvi(samples, _micro(bands=("B02", "B11")), steps=1, progress=False)


def test_cli_has_help_on_every_flag_and_refuses_bad_input():
    from aef_lit.prithvi import build_prithvi_parser, main

    p = build_prithvi_parser()
    for a in p._actions:
        assert a.help, a.option_strings
    with pytest.raises(SystemExit, match="positive"):
        main(["--steps", "0"])
    with pytest.raises(SystemExit, match="unknown site"):
        main(["--sites", "atlantis", "--steps", "1"])


def test_cli_trains_and_ships_on_synthetic_data(tmp_path, monkeypatch):
    from aef_lit.prithvi import mae as _mae
    from aef_lit.prithvi import main

    monkeypatch.setitem(_mae.PRITHVI_PRESETS, "tiny", _micro())
    assert main(["--data", "synthetic", "--sites", "a", "--steps", "2", "--batch-size", "2", "--warmup", "1",
                 "--out-dir", str(tmp_path / "run"), "--ship", str(tmp_path / "ship"), "--no-progress"]) == 0
    model = load_prithvi(tmp_path / "ship")
    assert model.cfg == _micro() and "2 steps" in (tmp_path / "ship" / "MODEL_CARD.md").read_text()
