"""Tests of aef_lit.training.sampling: rows from keys, static shapes, sharding, resume, real tiles."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import aef_lit.data as D
from aef_lit.conventions import DEM, LANDCOVER, SourceSpec
from aef_lit.training.sampling import (
    MULTISITE_SITES,
    TileBatchSampler,
    TileDataset,
    cut_row,
    harmonise,
    load_sites,
    random_period,
    row_generator,
    tile_stream,
    training_dataset,
)


@pytest.fixture(scope="module")
def synth_ds():
    return TileDataset(load_sites("synthetic", ("a", "b"), seed=0, synthetic_size=48), tile=16, frames=4, seed=3)


def test_row_is_a_pure_function_of_seed_and_key(synth_ds):
    a, b = synth_ds[7], synth_ds[7]
    assert a.site == b.site and a.labels == b.labels
    for n in a.sources:
        assert np.array_equal(a.sources[n].values, b.sources[n].values)
        assert np.array_equal(a.sources[n].times, b.sources[n].times)
    other = TileDataset(synth_ds.samples, tile=16, frames=4, seed=4)
    assert any(other[k].labels != synth_ds[k].labels for k in range(5)), "the seed matters"
    assert len({(synth_ds[k].site, synth_ds[k].labels["row"], synth_ds[k].labels["col"]) for k in range(30)}) > 20


def test_rows_respect_tile_frames_and_order(synth_ds):
    for k in range(20):
        row = synth_ds[k]
        assert row.grid.shape == (16, 16)
        s2 = row.sources["s2"]
        assert 1 <= s2.T <= 4 and np.all(np.diff(s2.times) > 0)
        assert row.sources["dem"].T == 1 and row.sources["landcover"].T == 1
        assert s2.valid.reshape(s2.T, -1).mean(1).min() >= 0.05, "only frames with clear pixels"


def test_support_window_limits_the_frames():
    rng = row_generator(0, 1)
    site = load_sites("synthetic", ("a",), synthetic_size=32)[0]
    spans = []
    for _ in range(30):
        row = cut_row(site, rng, tile=16, frames=24, min_span_days=30)
        t = row.sources["s2"].times
        spans.append(t[-1] - t[0])
    full = np.ptp(site.sources["s2"].times)
    assert min(spans) < full * 0.8, "some rows use a shorter support window than the whole series"


def test_collate_gives_static_padded_shapes(synth_ds):
    b1 = synth_ds.collate([synth_ds[k] for k in range(3)])
    b2 = synth_ds.collate([synth_ds[k] for k in range(10, 13)])
    for name in b1:
        assert b1[name].x.shape == b2[name].x.shape
    sb = b1["s2"]
    assert sb.x.shape == (3, 4, 4, 16, 16)
    assert torch.all(sb.weight[~sb.frame_mask] == 0)
    assert sb.t.dtype == torch.float64


def test_sampler_shards_and_resumes():
    s0 = TileBatchSampler(3, rank=0, world_size=2)
    s1 = TileBatchSampler(3, rank=1, world_size=2)
    k0 = {k for m in range(10) for k in s0.keys(m)}
    k1 = {k for m in range(10) for k in s1.keys(m)}
    assert not k0 & k1 and len(k0) == len(k1) == 30
    assert k0 | k1 == set(range(60)), "together the ranks cover the stream with no gap"
    it = iter(TileBatchSampler(3, start=4))
    assert next(it) == TileBatchSampler(3).keys(4)
    with pytest.raises(ValueError):
        TileBatchSampler(3, rank=2, world_size=2)


def test_stream_resumed_equals_uninterrupted(synth_ds):
    full = tile_stream(synth_ds, 2)
    batches = [next(full) for _ in range(4)]
    resumed = tile_stream(synth_ds, 2, start=2)
    for want in batches[2:]:
        got = next(resumed)
        for n in want:
            assert torch.equal(want[n].x, got[n].x) and torch.equal(want[n].t, got[n].t)


def test_workers_give_the_same_batches(synth_ds):
    a = tile_stream(synth_ds, 2, workers=0)
    b = tile_stream(synth_ds, 2, workers=2)
    for _ in range(3):
        x, y = next(a), next(b)
        assert torch.equal(x["s2"].x, y["s2"].x)


def test_too_small_site_is_refused():
    site = load_sites("synthetic", ("a",), synthetic_size=16)[0]
    with pytest.raises(ValueError, match="smaller than the tile"):
        cut_row(site, row_generator(0, 0), tile=32, frames=4)


def test_random_period_inside_support():
    rng = np.random.default_rng(0)
    t = np.array([100.0, 130.0, 190.0])
    for _ in range(50):
        s, e = random_period(t, rng)
        assert e - s > 4.0 and s >= 100.0 and e <= 191.0


@pytest.mark.real
def test_real_greenearthnet_tiles(eo_real):
    ds = training_dataset("greenearthnet", ("portugal", "hungary"), tile=32, frames=8, seed=0)
    assert {s.site for s in ds.samples} == {"greenearthnet_portugal", "greenearthnet_hungary"}
    assert [s.name for s in ds.specs] == ["s2", "dem", "landcover"]
    batch = ds.collate([ds[k] for k in range(8)])
    sb = batch["s2"]
    assert sb.x.shape == (8, 8, 4, 32, 32)
    assert torch.isfinite(sb.x).all() and sb.x[sb.weight.bool().unsqueeze(2).expand_as(sb.x)].std() > 0.3
    assert (sb.t[sb.frame_mask] > 18_628).all(), "2021 dates, in days since 1970"


@pytest.mark.real
def test_real_geotiff_stack_tiles(eo_real):
    ds = training_dataset("greenearthnet_geotiff", ("sweden",), tile=32, frames=4, seed=0)
    row = ds[0]
    assert row.grid.shape == (32, 32) and 1 <= row.sources["s2"].T <= 4


def test_gain_augmentation_scales_optical_bands_only(synth_ds):
    aug = TileDataset(synth_ds.samples, tile=16, frames=4, seed=3, gain=0.4)
    for k in range(5):
        a, b = synth_ds[k], aug[k]
        assert a.labels == b.labels, "same window and frames as without augmentation"
        assert np.array_equal(a.sources["dem"].values, b.sources["dem"].values)
        s2a, s2b = a.sources["s2"], b.sources["s2"]
        ok = s2a.values > 1e-3
        ratio = s2b.values[ok] / s2a.values[ok]
        assert np.all((ratio > np.exp(-0.4) - 1e-4) & (ratio < np.exp(0.4) + 1e-4))
        per_band = s2b.values.sum((0, 2, 3)) / s2a.values.sum((0, 2, 3))
        assert np.allclose(s2b.values, s2a.values * per_band[None, :, None, None], rtol=1e-4, atol=1e-6)
    assert np.array_equal(aug[2].sources["s2"].values, aug[2].sources["s2"].values), "deterministic"


def _worldcereal_like(seed=0, size=32):
    """A synthetic 10 m site with WorldCereal's nine S2 bands (B08, no B8A), S1 and a DEM."""
    return D.synthetic_sample((D.WORLDCEREAL_S2, D.WORLDCEREAL_S1, DEM), height=size, width=size, seed=seed)


def test_harmonise_takes_the_band_set_its_aliases_and_the_grid():
    s = _worldcereal_like()
    h = harmonise(s)  # already 10 m UTM: the grid is kept, values untouched
    assert set(h.sources) == {"s2", "dem"}, "S1 is not a source of the GreenEarthNet layout: dropped"
    assert h.specs["s2"] == D.GREENEARTHNET_S2 and h.grid == s.grid
    src, bands = s.sources["s2"], D.WORLDCEREAL_S2.bands
    for j, b in enumerate(("B02", "B03", "B04", "B08")):  # B08 stands in for B8A
        np.testing.assert_array_equal(h.sources["s2"].values[:, j], src.values[:, bands.index(b)])
    coarse = harmonise(s, res=20.0)
    assert coarse.grid.res == (20.0, 20.0) and coarse.grid.shape == (16, 16)
    np.testing.assert_array_equal(coarse.sources["s2"].times, src.times)
    for j, b in enumerate(("B02", "B03", "B04", "B08")):
        fine = src.values[:, bands.index(b)][src.valid]
        assert abs(coarse.sources["s2"].values[:, j][coarse.sources["s2"].valid].mean() - fine.mean()) \
            < 0.02 * fine.mean() + 1e-3, "resampling keeps the band's level"
    # a grid in degrees (like the GreenEarthNet minicubes) is always brought to metres
    g = s.grid
    geo = D.Sample("geo", D.Grid("EPSG:4326", (0.0002, 0.0, 5.0, 0.0, -0.0002, 51.0), g.height, g.width),
                   dict(s.sources), dict(s.specs))
    hg = harmonise(geo)
    assert not hg.grid.rio_crs.is_geographic and hg.grid.res == (10.0, 10.0)
    assert hg.grid.shape[0] > g.height, "0.0002 degrees is more than 10 m: more pixels"


def test_harmonise_refuses_a_sample_without_the_band_or_the_source():
    s = D.synthetic_sample((SourceSpec("s2", ("B02", "B03", "B04"), "optical"), DEM), height=16, width=16)
    with pytest.raises(D.DataError, match="no band B8A .*B08"):
        harmonise(s)
    with pytest.raises(D.DataError, match="no 's2' source"):
        harmonise(D.synthetic_sample((DEM,), height=16, width=16))


def test_sites_may_lack_target_sources_but_not_input_sources():
    full = D.synthetic_sample((D.GREENEARTHNET_S2, DEM, LANDCOVER), height=32, width=32, seed=1, site="full")
    bare = D.synthetic_sample((D.GREENEARTHNET_S2, DEM), height=32, width=32, seed=2, site="bare")
    ds = TileDataset([full, bare], tile=16, frames=4, seed=0)
    assert [s.name for s in ds.specs] == ["s2", "dem", "landcover"]
    rows = [ds[k] for k in range(12)]
    batch = ds.collate(rows)
    has_lc = torch.tensor(["landcover" in r.sources for r in rows])
    assert has_lc.any() and (~has_lc).any(), "both sites drawn"
    lc = batch["landcover"]
    assert (lc.weight[~has_lc] == 0).all() and (lc.weight[has_lc].sum((1, 2, 3)) > 0).all()
    with pytest.raises(ValueError, match="share their input sources"):
        TileDataset([full, D.synthetic_sample((D.GREENEARTHNET_S2, D.WORLDCEREAL_S1, DEM), height=32,
                                             width=32, site="with_s1")], tile=16)


@pytest.mark.real
def test_real_multisite_sites_share_one_layout(eo_real):
    names = ("portugal", "belgium", "slovenia", "hungary_geotiff")
    sites = load_sites("multisite", names)
    for s in sites:
        assert s.specs["s2"] == D.GREENEARTHNET_S2, s.site
        assert np.allclose(s.grid.res, 10.0, rtol=0.01) and not s.grid.rio_crs.is_geographic, s.site
        fr = s.sources["s2"]
        nir, red = fr.values[:, 3][fr.valid], fr.values[:, 2][fr.valid]
        assert 0.1 < np.median(nir) < 0.5 and np.median(red) < np.median(nir), f"{s.site}: vegetation NIR > red"
    ds = TileDataset(sites, tile=16, frames=8, seed=0)
    batch = ds.collate([ds[k] for k in range(16)])
    assert torch.isfinite(batch["s2"].x).all() and batch["s2"].weight.sum() > 0
    with pytest.raises(ValueError, match="unknown multisite site 'atlantis'"):
        load_sites("multisite", ("atlantis",))
    assert set(names) < set(MULTISITE_SITES)


def test_occlusion_masks_input_frames_only_and_zeroes_them(synth_ds):
    from aef_lit.training.sampling import augment_occlusion

    occ = TileDataset(synth_ds.samples, tile=16, frames=4, seed=3, occlude=1.0)
    fracs = []
    for k in range(20):
        a, b = synth_ds[k], occ[k]
        assert a.labels == b.labels, "same window as without augmentation"
        assert np.array_equal(a.sources["dem"].valid, b.sources["dem"].valid), "target-only sources untouched"
        sa, sb = a.sources["s2"], b.sources["s2"]
        assert sb.T >= 1 and set(sb.times) <= set(sa.times), "frames are only ever dropped, never invented"
        keep = np.isin(sa.times, sb.times)
        assert not (sb.valid & ~sa.valid[keep]).any(), "a gap never makes a pixel valid"
        assert (sb.values[~np.broadcast_to(sb.valid[:, None], sb.values.shape)] == 0).all(), "gaps are zeroed"
        fracs.append(sb.valid.sum() / max(sa.valid[keep].sum(), 1))
    assert 0.3 < np.mean(fracs) < 0.7, f"gaps cover 10-90 % of a frame: kept {np.mean(fracs):.2f}"
    assert np.array_equal(occ[4].sources["s2"].valid, occ[4].sources["s2"].valid), "deterministic"
    row = synth_ds[0]
    unchanged = augment_occlusion(row, np.random.default_rng(0), 0.0)
    assert unchanged.sources["s2"].valid.sum() == row.sources["s2"].valid.sum()
    with pytest.raises(ValueError, match="probability"):
        TileDataset(synth_ds.samples, tile=16, occlude=1.5)


def test_time_shift_moves_every_source_of_a_row_by_one_offset(synth_ds):
    shifted = TileDataset(synth_ds.samples, tile=16, frames=4, seed=3, time_shift=200.0)
    offsets = []
    for k in range(20):
        a, b = synth_ds[k], shifted[k]
        assert a.labels == b.labels, "same window and frames as without augmentation"
        d = {n: b.sources[n].times - a.sources[n].times for n in a.sources}
        u = float(d["s2"][0])
        for n, dn in d.items():
            assert np.allclose(dn, u), f"{n}: one offset for every frame and source of a row"
            assert np.array_equal(a.sources[n].values, b.sources[n].values)
            assert np.array_equal(a.sources[n].valid, b.sources[n].valid)
        assert np.allclose(np.diff(b.sources["s2"].times), np.diff(a.sources["s2"].times)), "relative times kept"
        offsets.append(u)
    offsets = np.array(offsets)
    assert np.all(np.abs(offsets) <= 200.0) and offsets.std() > 50, "offsets spread over U(-200, 200)"
    assert np.array_equal(shifted[5].sources["s2"].times, shifted[5].sources["s2"].times), "deterministic"
    with pytest.raises(ValueError, match="time_shift"):
        TileDataset(synth_ds.samples, tile=16, time_shift=-1.0)
    with pytest.raises(ValueError, match="time_shift"):
        TileDataset(synth_ds.samples, tile=16, time_shift=float("nan"))


def test_keep_targets_drops_targets_and_refuses_unknown_names():
    from aef_lit.conventions import DEM, LANDCOVER
    from aef_lit.data import GREENEARTHNET_S2, synthetic_sample
    from aef_lit.training.sampling import keep_targets

    s = synthetic_sample((GREENEARTHNET_S2, DEM, LANDCOVER), height=16, width=16)
    assert set(keep_targets(s, None).sources) == {"s2", "dem", "landcover"}
    assert set(keep_targets(s, ()).sources) == {"s2"}
    assert set(keep_targets(s, ("landcover",)).specs) == {"s2", "landcover"}
    with pytest.raises(ValueError, match="unknown target"):
        keep_targets(s, ("worldcover",))


def test_row_caption_says_what_the_row_shows_and_no_label(synth_ds):
    from aef_lit.conventions import WORLDCOVER_CLASSES, from_days
    from aef_lit.data import Sample, SourceFrames
    from aef_lit.training.sampling import row_caption

    row = synth_ds[0]
    s2 = row.sources["s2"]
    months = {str(d)[:7] for d in from_days(s2.times)}
    cap = row_caption(row)
    first = min(months)
    month_names = ("January", "February", "March", "April", "May", "June", "July", "August",
                   "September", "October", "November", "December")
    last = max(months)
    for ym in (first, last):
        assert month_names[int(ym[5:7]) - 1] in cap and ym[:4] in cap, cap
    # the sky follows the frames' valid share: all clear, then all but a sliver invalid
    def with_valid(valid):
        fr = SourceFrames(s2.values, s2.times, valid, s2.meta, s2.name)
        return Sample(row.site, row.grid, {**row.sources, "s2": fr}, dict(row.specs), labels=row.labels)
    assert row_caption(with_valid(np.ones_like(s2.valid))).endswith(", clear")
    sliver = np.zeros_like(s2.valid)
    sliver[:, 0, 0] = True
    assert row_caption(with_valid(sliver)).endswith(", mostly cloudy")
    # labels never enter: class names in the labels change nothing
    labelled = Sample(row.site, row.grid, row.sources, dict(row.specs),
                      labels={**row.labels, "classes": list(WORLDCOVER_CLASSES)})
    assert row_caption(labelled) == cap and not any(c in cap.lower() for c in WORLDCOVER_CLASSES)
    # the calendar moves the caption with the timestamps (time_shift by a year changes the year)
    shifted = TileDataset(synth_ds.samples, tile=16, frames=4, seed=3, time_shift=365.0, captions="row")
    moved = [k for k in range(20) if row_caption(shifted[k]) != row_caption(synth_ds[k])]
    assert len(moved) >= 10, "a shift of up to a year moves the months or the year of most rows"
    _, caps = shifted.collate_with_captions([shifted[k] for k in range(4)])
    assert caps == [row_caption(shifted[k]) for k in range(4)]
    _, site_caps = synth_ds.collate_with_captions([synth_ds[k] for k in range(4)])
    assert site_caps == [D.captions_for(synth_ds[k]) for k in range(4)], "site captions stay the default"
    with pytest.raises(ValueError, match="captions"):
        TileDataset(synth_ds.samples, tile=16, captions="label")


def test_train_config_refuses_an_unknown_caption_kind():
    from aef_lit.training import TrainConfig

    assert TrainConfig(captions="row").captions == "row"
    with pytest.raises(ValueError, match="captions"):
        TrainConfig(captions="classes")
