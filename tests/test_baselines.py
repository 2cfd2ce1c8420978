"""aef_lit.evaluation.baselines: designed features read only the period's clear input frames."""
from __future__ import annotations

import warnings

import numpy as np
import pytest

from aef_lit.conventions import DEM, LANDCOVER
from aef_lit.data import GREENEARTHNET_S2, Grid, Sample, SourceFrames, synthetic_sample
from aef_lit.evaluation import baselines as B

PERIOD = (18_628.0, 18_993.0)  # 2021


@pytest.fixture(scope="module")
def site():
    return synthetic_sample((GREENEARTHNET_S2, DEM, LANDCOVER), height=32, width=32, seed=0,
                            n_frames={"s2": 20}, start="2021-01-01")


def _with_frame(s: Sample, t: float, value: float) -> Sample:
    f = s.sources["s2"]
    order = np.argsort(np.r_[f.times, t])
    v = np.concatenate([f.values, np.full((1, *f.values.shape[1:]), value, np.float32)])[order]
    m = np.concatenate([f.valid, np.ones((1, *f.valid.shape[1:]), bool)])[order]
    return Sample(s.site, s.grid, {**s.sources, "s2": SourceFrames(v, np.r_[f.times, t][order], m, name="s2")}, s.specs)


def test_fast_nan_quantiles_match_numpy():
    r = np.random.default_rng(0)
    x = r.normal(size=(9, 3, 12, 11))
    x[r.random(x.shape) < 0.4] = np.nan
    x[:, :, 0, 0] = np.nan
    x[1:, :, 0, 1] = np.nan  # one value only
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        want = np.nanquantile(x, B.QUANTILES, axis=0)
    assert np.allclose(B._nan_quantiles(x, B.QUANTILES), want, equal_nan=True)


@pytest.mark.parametrize("name", B.BASELINES)
def test_baselines_read_only_frames_inside_the_period(site, name):
    t_s, t_e = site.time_span()
    period = (t_s, t_e + 1.0)
    before = B.baseline_features(name, site, period)
    assert before.dtype == np.float32 and before.shape[1:] == site.grid.shape
    for t in (period[0] - 2.0, period[1], period[1] + 40.0):  # before, at t_e (excluded), after
        assert np.array_equal(before, B.baseline_features(name, _with_frame(site, t, 0.95), period), equal_nan=True)
    if name != "xy":
        assert not np.allclose(before, B.baseline_features(name, _with_frame(site, t_s + 3.5, 0.95), period),
                               equal_nan=True)


def test_baselines_never_read_target_sources(site):
    changed = Sample(site.site, site.grid, {**site.sources, "dem": SourceFrames(
        site.sources["dem"].values + 1000.0, site.sources["dem"].times, name="dem")}, site.specs)
    for name in B.BASELINES:
        assert np.array_equal(B.baseline_features(name, site, PERIOD), B.baseline_features(name, changed, PERIOD),
                              equal_nan=True)


def test_composite_is_the_percentiles_of_the_clear_values(site):
    comp = B.composite_features(site, PERIOD)
    x = B.frames_in_period(site.sources["s2"], PERIOD)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        assert np.allclose(comp[:5], np.nanquantile(x[:, 0], B.QUANTILES, axis=0), equal_nan=True)
    assert comp.shape[0] == 4 * len(B.QUANTILES)


def test_harmonic_fit_recovers_a_clean_curve_and_refuses_short_periods(site):
    fr = site.sources["s2"]
    truth = np.array([0.3, 0.1, -0.05, 0.02, 0.01])
    curve = B.harmonic_design(fr.times - PERIOD[0], 2) @ truth
    vals = np.broadcast_to(curve[:, None, None, None], fr.values.shape).astype(np.float64)
    s2 = SourceFrames(vals, fr.times, fr.valid, name="s2")
    s = Sample(site.site, site.grid, {"s2": s2}, {"s2": site.specs["s2"]})
    coef = B.harmonic_features(s, PERIOD, ridge=0.0)
    ok = np.isfinite(coef[0])
    assert ok.mean() > 0.9
    assert np.allclose(coef[:5, ok], truth[:, None], atol=1e-4)
    t = fr.times
    with pytest.raises(B.NotApplicable, match="harmonic"):
        B.harmonic_features(site, (t[0], t[3]))  # 3 frames cannot carry 5 coefficients


def test_smooth_ignores_nan_and_averages_a_constant_to_itself():
    f = np.full((2, 9, 9), 3.0)
    f[0, 4, 4] = np.nan
    out = B.smooth(f, 5)
    assert np.allclose(out, 3.0)
    f = np.zeros((1, 9, 9))
    f[0, 4, 4] = 25.0
    assert np.isclose(B.smooth(f)[0, 4, 4], 1.0) and B.smooth(f)[0, 0, 0] == 0.0


def test_pixel_coordinates_in_degrees_and_metres():
    g = Grid("EPSG:32633", (10.0, 0.0, 500_000.0, 0.0, -10.0, 5_000_000.0), 4, 6)
    s = Sample("x", g, {"s2": SourceFrames(np.zeros((1, 4, 4, 6)), [18_700.0], name="s2")}, {"s2": GREENEARTHNET_S2})
    m = B.pixel_metres(s)
    assert np.allclose(m[0, 0, :2], [500_005.0, 500_015.0]) and np.allclose(m[1, :2, 0], [4_999_995.0, 4_999_985.0])
    lonlat = B.xy_features(s)
    assert np.allclose(lonlat[0, 0, 0], 15.0, atol=1e-3)  # x = 500 km is the zone's central meridian
    geo = Sample("g", Grid("EPSG:4326", (0.001, 0.0, 10.0, 0.0, -0.001, 50.0), 3, 3),
                 {"s2": SourceFrames(np.zeros((1, 4, 3, 3)), [18_700.0], name="s2")}, {"s2": GREENEARTHNET_S2})
    m = B.pixel_metres(geo)
    assert np.isclose(m[1, 0, 0] - m[1, 1, 0], 111.19, atol=0.1)  # 0.001 deg of latitude
    assert np.isclose(m[0, 0, 1] - m[0, 0, 0], 111.19 * np.cos(np.deg2rad(49.9985)), atol=0.1)


def test_mosaiks_filters_depend_only_on_the_seed(site):
    assert np.array_equal(B.random_filters(4, seed=1), B.random_filters(4, seed=1))
    assert not np.allclose(B.random_filters(4, seed=1), B.random_filters(4, seed=2))
    f = B.mosaiks_features(site, PERIOD)
    assert f.shape == (64, 32, 32) and (f >= 0).all() and np.isfinite(f).all()


def test_unknown_baseline_and_bad_period(site):
    with pytest.raises(ValueError, match="unknown baseline"):
        B.baseline_features("median_7x7", site, PERIOD)
    with pytest.raises(ValueError, match="t_e > t_s"):
        B.composite_features(site, (PERIOD[1], PERIOD[0]))
