"""Tests of aef_lit.data.preprocess: normalisation, statistics, resampling, collation."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from aef_lit.conventions import DEFAULT_SOURCES, DEM, LANDCOVER, S1, S2, SourceSpec, get_config
from aef_lit.data import Grid, Sample, SourceFrames, load_worldcereal_belgium, synthetic_sample
from aef_lit.data.preprocess import (
    CLIP_SIGMA,
    DEFAULT_STATS,
    NormStats,
    collate,
    denormalise,
    fit_stats,
    from_db,
    normalise_frames,
    resample_sample,
    resample_to_grid,
    to_db,
    utm_grid_for,
)

UTM = Grid("EPSG:32631", (10.0, 0.0, 600_000.0, 0.0, -10.0, 5_650_000.0), 16, 16)


def test_db_round_trip_known_values():
    assert np.allclose(to_db([1.0, 0.1, 0.001, 10.0]), [0.0, -10.0, -30.0, 10.0])
    x = np.array([1e-4, 0.03, 2.5])
    assert np.allclose(from_db(to_db(x)), x)


def test_optical_is_log1p_zscore_and_clipped():
    spec = SourceSpec("s2", ("B04",), "optical")
    stats = NormStats({"s2": {"B04": (float(np.log1p(0.1)), 0.01)}})
    v = np.array([0.1, 0.102, 5.0, 0.0], np.float32).reshape(1, 1, 1, 4)
    z = normalise_frames(SourceFrames(v, [0.0]), spec, stats).values.ravel()
    assert z[0] == pytest.approx(0.0, abs=1e-6)
    assert z[1] == pytest.approx((np.log1p(0.102) - np.log1p(0.1)) / 0.01, rel=1e-4)
    assert z[2] == CLIP_SIGMA and z[3] == -CLIP_SIGMA
    back = denormalise(z[None, :2, None, None].reshape(1, 1, 1, 2), spec, stats)
    assert np.allclose(back.ravel(), [0.1, 0.102], atol=1e-6)


def test_normalised_values_of_every_modality_are_bounded_and_finite():
    s = synthetic_sample(seed=2)
    for name, fr in s.sources.items():
        z = normalise_frames(fr, s.specs[name])
        if s.specs[name].categorical:
            assert np.array_equal(z.values, fr.values)  # ids untouched
        else:
            assert np.isfinite(z.values).all() and np.abs(z.values).max() <= CLIP_SIGMA
            assert abs(z.values[z.valid[:, None].repeat(z.C, 1)].mean()) < 1.5  # roughly centred


def test_sar_window_masks_outside_minus30_to_10_db():
    v = np.array([-35.0, -30.0, 0.0, 10.0, 12.0, -12.0], np.float32).reshape(1, 1, 1, 6).repeat(2, 1)
    z = normalise_frames(SourceFrames(v, [0.0]), S1)
    assert z.valid.ravel().tolist() == [False, True, True, True, False, True]
    assert (z.values[0, :, 0, [0, 4]] == 0).all()


def test_cloud_pixels_do_not_change_stats():
    s = synthetic_sample(seed=0)
    s2 = s.sources["s2"]
    for fill in (0.0, 0.99):
        painted = SourceFrames(np.where(s2.valid[:, None], s2.values, fill), s2.times, s2.valid, name="s2")
        other = Sample(s.site, s.grid, {**s.sources, "s2": painted}, s.specs)
        assert fit_stats([other]).stats["s2"] == fit_stats([s]).stats["s2"]


def test_fit_stats_gives_unit_normal_on_its_own_data_and_json_round_trips(tmp_path):
    s = synthetic_sample(height=48, width=48, seed=5)
    st = fit_stats([s])
    z = normalise_frames(s.sources["s2"], s.specs["s2"], st)
    m = z.valid[:, None].repeat(z.C, 1)
    assert abs(z.values[m].mean()) < 0.05 and abs(z.values[m].std() - 1) < 0.1
    st.save(tmp_path / "stats.json")
    assert NormStats.load(tmp_path / "stats.json").stats == st.stats
    with pytest.raises(KeyError, match="fit_stats"):
        NormStats().get(S2)


def test_default_stats_cover_default_sources_and_put_synthetic_near_zero():
    for spec in DEFAULT_SOURCES:
        if not spec.categorical:
            mean, std = DEFAULT_STATS.get(spec)
            assert (std > 0).all()
    s = synthetic_sample(height=48, width=48, seed=7)
    z = normalise_frames(s.sources["s2"], S2)
    m = z.valid[:, None].repeat(z.C, 1)
    assert abs(z.values[m].mean()) < 0.7 and 0.5 < z.values[m].std() < 2.0


def test_resample_identity_and_nearest_keeps_class_ids():
    fr = SourceFrames(np.arange(256, dtype=np.float32).reshape(1, 1, 16, 16) % 5, [0.0], name="landcover")
    assert resample_to_grid(fr, UTM, UTM) is fr
    dst = Grid(UTM.crs, (7.0, 0.0, 600_003.0, 0.0, -7.0, 5_649_997.0), 20, 20)
    out = resample_to_grid(fr, UTM, dst, categorical=True)
    assert set(np.unique(out.values[out.valid[:, None]])) <= set(range(5))


def test_resample_bilinear_never_blends_clouds():
    v = np.full((1, 1, 16, 16), 0.1, np.float32)
    valid = np.ones((1, 16, 16), bool)
    v[0, 0, :, 8:] = 0.9  # a bright cloud on the right half
    valid[0, :, 8:] = False
    fr = SourceFrames(v, [0.0], valid)
    dst = Grid(UTM.crs, (5.0, 0.0, 600_000.0, 0.0, -5.0, 5_650_000.0), 32, 32)
    out = resample_to_grid(fr, UTM, dst)
    assert np.allclose(out.values[0, 0][out.valid[0]], 0.1, atol=1e-5)
    assert not out.valid[0, :, 17:].any()


def test_cloud_radiance_is_normalised_like_values_and_reaches_only_the_cloud_tensor():
    """A cloud's radiance goes through the same normalisation as a clear pixel's, into the
    batch's `cloud` tensor; `x` and the weights are those of the same frames without it."""
    v = np.full((2, S2.channels, 16, 16), 0.05, np.float32)
    v[1, :, :4, :4] = 0.6  # a bright cloud on frame 1
    valid = np.ones((2, 16, 16), bool)
    valid[1, :4, :4] = False
    cloudy = SourceFrames(v.copy(), [1.0, 20.0], valid, name="s2", cloud_values=v.copy())
    plain = SourceFrames(v.copy(), [1.0, 20.0], valid, name="s2")  # (the constructor zeroes its values in place)
    as_clear = normalise_frames(SourceFrames(v.copy(), [1.0, 20.0], name="s2"), S2)
    n = normalise_frames(cloudy, S2)
    assert np.allclose(n.cloud_values[1, :, :4, :4], as_clear.values[1, :, :4, :4])
    assert (n.cloud_values[:, :, 4:] == 0).all() and (n.values[1, :, :4, :4] == 0).all()
    grid = Grid(UTM.crs, UTM.transform, 16, 16)
    b = collate([Sample("a", grid, {"s2": cloudy}, {"s2": S2})], [S2])["s2"]
    b0 = collate([Sample("a", grid, {"s2": plain}, {"s2": S2})], [S2])["s2"]
    assert b0.cloud is None and torch.equal(b.x, b0.x) and torch.equal(b.weight, b0.weight)
    assert torch.allclose(b.cloud[0, 1, :, :4, :4], torch.from_numpy(as_clear.values[1, :, :4, :4]))
    assert (b.cloud * b.weight[:, :, None]).abs().max() == 0, "nothing where the pixel is valid"
    fine = Grid(UTM.crs, (5.0, 0.0, 600_000.0, 0.0, -5.0, 5_650_000.0), 32, 32)
    r = resample_to_grid(cloudy, UTM, fine)
    assert np.allclose(r.cloud_values[1, :, :6, :6], 0.6)
    assert np.allclose(r.values[r.valid[:, None].repeat(S2.channels, 1)], 0.05)


def test_utm_grid_for_a_latlon_grid():
    ll = Grid("EPSG:4326", (0.0002, 0.0, -8.575, 0.0, -0.00018, 39.30), 64, 64)
    g = utm_grid_for(ll, 10.0)
    assert g.crs == "EPSG:32629" and g.res == (10.0, 10.0)
    assert 100 < g.width < 150 and 100 < g.height < 150


def test_collate_contract():
    rows = [synthetic_sample(seed=k, n_frames={"s2": 12, "s1": 3, "landsat": 6}) for k in range(2)]
    cfg = get_config("tiny")
    batch = collate(rows, cfg.sources, {"s2": 8, "s1": 5, "landsat": 6})
    s2, s1, lc, dem = batch["s2"], batch["s1"], batch["landcover"], batch["dem"]
    assert s2.x.shape == (2, 8, 10, 32, 32) and s1.x.shape == (2, 5, 2, 32, 32)
    assert s1.frame_mask.sum(1).tolist() == [3, 3]  # padded to 5
    assert (s1.weight[:, 3:] == 0).all() and torch.isfinite(s1.t).all()
    assert s2.t.dtype == torch.float64 and (s2.t.diff(dim=1) > 0).all()
    for sb in batch.values():
        assert torch.isfinite(sb.x).all()
        assert (sb.x * (sb.weight[:, :, None] == 0)).abs().max() == 0  # invalid -> 0
    # timeless sources at the middle of the span; land cover holds class ids
    span = rows[0].time_span()
    assert dem.t[0, 0].item() == pytest.approx((span[0] + span[1]) / 2)
    assert set(lc.x.unique().tolist()) <= set(range(LANDCOVER.n_classes))
    assert s1.meta.shape == (2, 5, 1)
    assert set(batch) == {s.name for s in cfg.sources}


def test_collate_subsamples_with_generator_and_pads_missing_sources():
    s = synthetic_sample(seed=0, specs=(S2, DEM))
    spec_l = DEFAULT_SOURCES[2]
    b1 = collate([s], [S2, DEM, spec_l], {"s2": 4, "landsat": 3}, generator=torch.Generator().manual_seed(1))
    b2 = collate([s], [S2, DEM, spec_l], {"s2": 4, "landsat": 3})
    assert b1["s2"].frame_mask.all() and (b1["s2"].t.diff(dim=1) > 0).all()
    assert b2["s2"].t[0, 0] == s.sources["s2"].times[0] and b2["s2"].t[0, -1] == s.sources["s2"].times[-1]
    assert not b1["landsat"].frame_mask.any() and (b1["landsat"].weight == 0).all()


@pytest.mark.real
def test_worldcereal_nodata_never_reaches_the_model_input(eo_real):
    s = load_worldcereal_belgium(eo_real)
    batch = collate([s], list(s.specs.values()), {"s2": 12, "s1": 12})
    x, w = batch["s2"].x, batch["s2"].weight
    assert torch.isfinite(x).all() and x.abs().max() <= CLIP_SIGMA
    assert batch["s2"].frame_mask.sum() == 10 and (w[:, 10:] == 0).all()
    z = x[w[:, :, None].expand_as(x) > 0]
    assert abs(z.mean()) < 1.0  # on the scale of the global statistics


@pytest.mark.real
def test_minicube_to_utm(eo_real):
    from aef_lit.data import load_greenearthnet_minicube

    s = load_greenearthnet_minicube("hungary", eo_real)
    u = resample_sample(s)
    assert u.grid.rio_crs.to_epsg() == 32634 and u.grid.res == (10.0, 10.0)
    assert set(np.unique(u.sources["landcover"].values)) <= set(np.unique(s.sources["landcover"].values))
    for name in ("s2", "dem"):
        a, b = s.sources[name], u.sources[name]
        assert abs(np.median(a.values[:, 0][a.valid]) - np.median(b.values[:, 0][b.valid])) < 0.05 * (
            np.abs(np.median(a.values[:, 0][a.valid])) + 1)
