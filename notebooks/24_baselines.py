# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 24. Baselines: what an embedding must beat
#
# A probe score means little alone: 0.6 balanced accuracy is good if the best alternative
# gets 0.4 and bad if a median composite gets 0.7. The paper compares AEF with designed
# features (per-source composites, CCDC harmonics), location encodings (XY), random
# convolutional features (MOSAIKS) and other learned models, all probed the same way
# (§S3–S6, `AEF_NOTES.md` §10) {cite}`brown2025alphaearth`. This chapter builds the ones that
# need no downloaded weights, as functions of one site's frames and one period `[t_s, t_e)`:
#
# | name | what a pixel gets | after |
# |---|---|---|
# | `composite` | per band, the 10/25/50/75/90th percentiles of its clear observations in the period | the per-source composites of §S3 |
# | `harmonic` | per band, a mean and two annual harmonics fitted by least squares | CCDC {cite}`zhu2014ccdc` |
# | `…_5x5` | the same, averaged over the 5×5 neighbourhood | a cheap spatial context |
# | `xy` | its longitude and latitude | the paper's XY baseline |
# | `mosaiks` | responses of random convolution filters to the median composite | MOSAIKS {cite}`rolf2021mosaiks` |
#
# Chapter 26 adds an *untrained* network of the model's own architecture: whatever the
# trained model beats that by is what training bought. Every baseline reads the *same*
# frames the model reads, and only those inside the period: a property checked below.
# Everything here is exported to `aef_lit.evaluation.baselines` (NumPy and SciPy).

# %% tags=["parameters"]
# Parameters (papermill injects values here). Defaults are sized for a 2-core CPU.
preset = "tiny"  # model preset (unused: the baselines need no model)
device = "auto"  # unused
seed = 0
data = "auto"  # "auto" = the real Swedish GreenEarthNet cube if present, else a synthetic site

# %%
# Colab: install the package (and the text extra) from the repository; elsewhere a no-op.
import sys

if "google.colab" in sys.modules:  # pragma: no cover - only on Colab
    import subprocess

    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q",
         "aef-lit[text] @ git+https://github.com/aef-lit/aef-lit"],
        check=True,
    )

# %%
#| default_exp evaluation.baselines
# %%
#| export
from __future__ import annotations

from typing import Sequence

import numpy as np

from aef_lit.conventions import YEAR_DAYS
from aef_lit.data import TIMELESS, Sample, SourceFrames

Period = tuple[float, float]
"""`[t_s, t_e)` in days since 1970-01-01."""
QUANTILES = (0.10, 0.25, 0.50, 0.75, 0.90)


class NotApplicable(ValueError):
    """A baseline that the frames of a site and period cannot support (e.g. too few dates)."""


# %% [markdown]
# ## The frames a baseline may read
#
# A baseline is a function of a `Sample` (chapter 2: frames in physical units, a validity
# mask per pixel and frame) and a period. It reads the site's *input* time series (target-only
# sources such as the DEM or land cover never: they may be the very labels being probed), and
# only their frames with $t_s \le t < t_e$, and only their clear pixels. Invalid pixels become
# NaN so that every statistic ignores them.

# %%
#| export
def input_series(sample: Sample) -> dict[str, SourceFrames]:
    """The input time-series sources of a sample (targets and timeless sources left out)."""
    return {n: fr for n, fr in sample.sources.items()
            if sample.specs[n].role == "input" and sample.specs[n].modality not in TIMELESS}


def frames_in_period(fr: SourceFrames, period: Period) -> np.ndarray:
    """The frames of `fr` with t_s <= t < t_e as `T C H W` float64, NaN where not clear."""
    t_s, t_e = period
    if not t_e > t_s:
        raise ValueError(f"a period needs t_e > t_s, got [{t_s}, {t_e})")
    keep = (fr.times >= t_s) & (fr.times < t_e)
    v = fr.values[keep].astype(np.float64)
    return np.where(fr.valid[keep][:, None], v, np.nan)


def _nan_quantiles(x: np.ndarray, q: Sequence[float]) -> np.ndarray:
    """Quantiles over axis 0 ignoring NaN, as `np.nanquantile` (linear), NaN where all are NaN.

    `np.nanquantile` loops over pixels in Python; sorting once (NaN sort last) and
    interpolating between order statistics is ~50x faster on a site."""
    q = np.asarray(q, np.float64)
    if x.shape[0] == 0:
        return np.full((len(q), *x.shape[1:]), np.nan)
    srt = np.sort(x, axis=0)
    n = np.isfinite(x).sum(0)  # clear values per pixel
    pos = q.reshape(-1, *([1] * (x.ndim - 1))) * np.maximum(n - 1, 0)  # Q ...
    lo = np.floor(pos).astype(np.int64)
    hi = np.minimum(lo + 1, np.maximum(n - 1, 0))
    v_lo = np.take_along_axis(srt, lo, 0)
    v_hi = np.take_along_axis(srt, hi, 0)
    out = v_lo + (pos - lo) * (v_hi - v_lo)
    return np.where(n > 0, out, np.nan)


def composite_features(sample: Sample, period: Period, quantiles: Sequence[float] = QUANTILES) -> np.ndarray:
    """Per input source and band, percentiles of the clear observations in the period
    (`F H W`, F = sources x bands x quantiles; NaN where a pixel has none)."""
    out = []
    for fr in input_series(sample).values():
        q = _nan_quantiles(frames_in_period(fr, period), quantiles)  # Q C H W
        out.append(np.moveaxis(q, 0, 1).reshape(-1, *q.shape[2:]))  # (C Q) H W
    if not out:
        raise NotApplicable(f"{sample.site} has no input time series")
    return np.concatenate(out).astype(np.float32)


# %% [markdown]
# ## Harmonics: the shape of the year
#
# CCDC {cite}`zhu2014ccdc` models each band of each pixel as a mean plus annual harmonics,
#
# $$ y(t) \approx c_0 + \sum_{k=1}^{K} \big( a_k \cos(2\pi k t / 365.25) + b_k \sin(2\pi k t / 365.25) \big), $$
#
# fitted to the clear observations by least squares; the coefficients describe when a pixel
# greens up and how strongly, which a median cannot. (CCDC also fits a trend and breaks
# the series at changes; within one year we keep the harmonics.) With $K = 2$ a pixel needs
# at least 5 clear dates. Where the dates bunch in one season (the Swedish cube's clear dates
# run from March to August) plain least squares extrapolates wildly: NIR amplitudes of 0.4 at
# the 90th percentile, four times what vegetation does. A ridge term of 0.1 on the harmonic
# coefficients only (a tenth of one observation's weight; we chose it on that site: 90th
# percentile 0.05) keeps the fit to what the dates support. A pixel with fewer dates than
# unknowns gets NaN. When the period itself has fewer frames than that, or they cover less
# than a quarter of a year, the baseline is **not applicable** and says so, rather than
# returning numbers without meaning.

# %%
#| export
def harmonic_design(t_days: np.ndarray, order: int = 2) -> np.ndarray:
    """The `T x (2 order + 1)` design matrix [1, cos(2 pi k t / year), sin(...)], k = 1..order."""
    w = 2.0 * np.pi * np.asarray(t_days, np.float64) / YEAR_DAYS
    cols = [np.ones_like(w)]
    for k in range(1, order + 1):
        cols += [np.cos(k * w), np.sin(k * w)]
    return np.stack(cols, 1)


def harmonic_features(sample: Sample, period: Period, order: int = 2, ridge: float = 0.1,
                      min_span_days: float = YEAR_DAYS / 4) -> np.ndarray:
    """Per input source and band, the least-squares harmonic coefficients of each pixel's clear
    observations in the period (`F H W`, F = sources x bands x (2 order + 1)); NaN where a pixel
    has fewer clear dates than coefficients. Raises NotApplicable when the period cannot
    support the fit."""
    P = 2 * order + 1
    out = []
    for name, fr in input_series(sample).items():
        keep = (fr.times >= period[0]) & (fr.times < period[1])
        t = fr.times[keep]
        if len(t) < P or (t.max() - t.min() if len(t) else 0.0) < min_span_days:
            raise NotApplicable(f"{sample.site}/{name}: {len(t)} frames over "
                                f"{(t.max() - t.min()) if len(t) else 0:.0f} days in the period; an order-{order} "
                                f"harmonic fit needs {P} frames over at least {min_span_days:.0f} days")
        x = frames_in_period(fr, period)  # T C H W
        T, C, H, W = x.shape
        X = harmonic_design(t - period[0], order)  # T P
        w = np.isfinite(x[:, 0]).reshape(T, -1).astype(np.float64)  # T N (bands share a mask)
        y = np.nan_to_num(x).reshape(T, C, -1)
        A = np.einsum("tp,tn,tq->npq", X, w, X) + ridge * np.diag([0.0] + [1.0] * (P - 1))
        b = np.einsum("tp,tn,tcn->ncp", X, w, y)
        enough = w.sum(0) >= P
        coef = np.full((H * W, C, P), np.nan)
        if enough.any():
            coef[enough] = np.linalg.solve(A[enough][:, None], b[enough][..., None])[..., 0]
        out.append(np.moveaxis(coef, 0, -1).reshape(C * P, H, W))
    if not out:
        raise NotApplicable(f"{sample.site} has no input time series")
    return np.concatenate(out).astype(np.float32)


# %% [markdown]
# ## Context for free: a 5 × 5 average
#
# Per-pixel features know nothing of their neighbourhood, and much of what a learned model
# gains may be just that: spatial context. The `…_5x5` baselines give a designed feature the
# same gift, as the mean over the 5 × 5 window around each pixel (ignoring NaN, and only the
# pixels that exist at the edges), so that "the model beats the composite" cannot be explained
# by smoothing alone.

# %%
#| export
def smooth(features: np.ndarray, size: int = 5) -> np.ndarray:
    """NaN-aware `size x size` box mean of every `F H W` feature map (edges average what exists)."""
    from scipy.ndimage import uniform_filter

    f = np.asarray(features, np.float64)
    ok = np.isfinite(f)
    num = uniform_filter(np.where(ok, f, 0.0), size=(1, size, size), mode="constant")
    den = uniform_filter(ok.astype(np.float64), size=(1, size, size), mode="constant")
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 1e-9, num / np.maximum(den, 1e-12), np.nan).astype(np.float32)


# %% [markdown]
# ## Where, not what: XY, and random filters
#
# The **XY** baseline gives each pixel its longitude and latitude (pixel centres, WGS 84), and
# nothing about the land. Within one site, a probe on XY can only interpolate the label map;
# chapter 23 showed how a random pixel split rewards exactly that.
#
# **MOSAIKS** {cite}`rolf2021mosaiks` showed that random convolutional features, with no
# training at all, are a strong baseline for many mapping tasks. Its recipe: convolve the image
# with $K$ random patches, pass the responses through $\max(0, r - 1)$ and $\max(0, -r - 1)$, and
# average. Ours, per pixel: the median composite of the period in the model's own normalised
# input space (chapter 3: log1p and z-scored), $K = 32$ random 3 × 3 filters, both rectified
# responses, averaged over 3 × 3. MOSAIKS draws its patches from the images; we draw Gaussian
# filters from a seed instead, so that a filter means the same at every site (**a departure**,
# for leave-one-site-out trials).

# %%
#| export
def pixel_lonlat(sample: Sample) -> np.ndarray:
    """Longitude and latitude (degrees, WGS 84) of every pixel centre: `2 H W`."""
    from rasterio.warp import transform as warp

    g = sample.grid
    rows, cols = np.mgrid[0:g.height, 0:g.width]
    a, b, c, d, e, f = g.transform
    x = a * (cols + 0.5) + b * (rows + 0.5) + c
    y = d * (cols + 0.5) + e * (rows + 0.5) + f
    if g.rio_crs.is_geographic:
        return np.stack([x, y]).astype(np.float64)
    lon, lat = warp(g.rio_crs, "EPSG:4326", x.ravel().tolist(), y.ravel().tolist())
    return np.stack([np.reshape(lon, x.shape), np.reshape(lat, x.shape)]).astype(np.float64)


def pixel_metres(sample: Sample) -> np.ndarray:
    """Pixel centres in metres, `2 H W` (x east, y north): the grid's own units when projected,
    a local equirectangular projection about the site's centre when on degrees."""
    g = sample.grid
    if not g.rio_crs.is_geographic:
        rows, cols = np.mgrid[0:g.height, 0:g.width]
        a, b, c, d, e, f = g.transform
        return np.stack([a * (cols + 0.5) + b * (rows + 0.5) + c, d * (cols + 0.5) + e * (rows + 0.5) + f])
    lon, lat = pixel_lonlat(sample)
    r = 6_371_008.8
    lat0 = np.deg2rad(lat.mean())
    return np.stack([np.deg2rad(lon - lon.mean()) * r * np.cos(lat0), np.deg2rad(lat - lat.mean()) * r])


def xy_features(sample: Sample, period: Period | None = None) -> np.ndarray:
    """The XY baseline: longitude and latitude of each pixel (`2 H W`)."""
    return pixel_lonlat(sample).astype(np.float32)


def normalised_median(sample: Sample, period: Period) -> np.ndarray:
    """The per-band median of the clear frames in the period, in the model's normalised input
    space (chapter 3), for every input source: `C H W`; 0 (the mean) where never clear."""
    from aef_lit.data.preprocess import normalise_frames

    out = []
    for name, fr in input_series(sample).items():
        keep = (fr.times >= period[0]) & (fr.times < period[1])
        if not keep.any():
            out.append(np.zeros((fr.C, *sample.grid.shape)))
            continue
        nf = normalise_frames(fr.select(np.flatnonzero(keep)), sample.specs[name])
        med = _nan_quantiles(np.where(nf.valid[:, None], nf.values, np.nan), [0.5])[0]
        out.append(np.nan_to_num(med))
    if not out:
        raise NotApplicable(f"{sample.site} has no input time series")
    return np.concatenate(out)


def random_filters(channels: int, n_filters: int = 32, size: int = 3, seed: int = 0) -> np.ndarray:
    """`n_filters x channels x size x size` Gaussian filters of unit norm (a pure function of the seed)."""
    w = np.random.default_rng([seed, channels, size]).normal(size=(n_filters, channels, size, size))
    return w / np.sqrt((w ** 2).sum(axis=(1, 2, 3), keepdims=True))


def mosaiks_features(sample: Sample, period: Period, n_filters: int = 32, size: int = 3, pool: int = 3,
                     bias: float = 1.0, seed: int = 0) -> np.ndarray:
    """Random convolutional features (after MOSAIKS): `2 n_filters H W`."""
    from scipy.ndimage import correlate, uniform_filter

    x = normalised_median(sample, period)  # C H W
    w = random_filters(x.shape[0], n_filters, size, seed) * np.sqrt(x.shape[0])
    resp = np.stack([sum(correlate(x[c], k[c], mode="nearest") for c in range(x.shape[0])) for k in w])
    feats = np.concatenate([np.maximum(resp - bias, 0.0), np.maximum(-resp - bias, 0.0)])
    pooled = uniform_filter(feats, size=(1, pool, pool), mode="nearest")
    return np.maximum(pooled, 0.0).astype(np.float32)  # the filter's running sums round below 0


# %% [markdown]
# ## The baselines by name
#
# The evaluation refers to baselines by name. `baseline_features` computes one for one site
# and period; the `_5x5` suffix smooths any of them.

# %%
#| export
BASELINES = ("composite", "composite_5x5", "harmonic", "harmonic_5x5", "xy", "mosaiks")
"""The designed baselines of chapter 24, by name (chapter 26 adds untrained networks)."""
_BASE_FNS = {"composite": composite_features, "harmonic": harmonic_features, "xy": xy_features,
             "mosaiks": mosaiks_features}


def baseline_features(name: str, sample: Sample, period: Period) -> np.ndarray:
    """Baseline `name` (see BASELINES) for one site and period: `F H W` float32 (NaN allowed)."""
    base, _, smoothed = name.partition("_")
    if base not in _BASE_FNS or smoothed not in ("", "5x5"):
        raise ValueError(f"unknown baseline {name!r}; choose from {', '.join(BASELINES)}")
    f = _BASE_FNS[base](sample, period)
    return smooth(f, 5) if smoothed else f


# %% [markdown]
# ## Checks
#
# Three properties, each of which a plausible bug would break. A harmonic fit recovers the
# coefficients of a clean seasonal curve; a composite is the median of what it was given; and
# **a frame outside the period changes nothing**, while a frame inside does. We test them on a
# real site when the samples are here (the Swedish GreenEarthNet cube: 17 dates of four bands,
# about 45 % of its pixel-frames cloudy), otherwise on chapter 2's synthetic site.

# %%
import matplotlib.pyplot as plt

from aef_lit.conventions import find_eo_real
from aef_lit.data import GREENEARTHNET_S2, load_greenearthnet_minicube, synthetic_sample

if data != "synthetic" and find_eo_real(required=data == "real") is not None:
    site = load_greenearthnet_minicube("sweden")
else:
    site = synthetic_sample((GREENEARTHNET_S2,), height=64, width=64, seed=seed, n_frames={"s2": 24})
t0, t1 = site.time_span()
y0 = np.datetime64(int(t0), "D").astype("datetime64[Y]")  # the calendar year of the site
period = tuple(float(y.astype("datetime64[D]").astype(np.int64)) for y in (y0, y0 + 1))
print(site.site, "period", np.datetime64(int(period[0]), "D"), "to", np.datetime64(int(period[1]), "D"))

# a clean seasonal curve in every pixel of one band: the fit must recover it
fr = site.sources["s2"]
truth = np.array([0.2, 0.05, -0.03, 0.01, 0.02])
clean = harmonic_design(fr.times - period[0], 2) @ truth
fake = SourceFrames(np.broadcast_to(clean[:, None, None, None], fr.values.shape).copy(), fr.times,
                    fr.valid, name="s2")
test_site = Sample(site.site, site.grid, {"s2": fake}, {"s2": site.specs["s2"]})
coef = harmonic_features(test_site, period, ridge=0.0)
ok = np.isfinite(coef[0])
assert np.allclose(coef[:5, ok].mean(1), truth, atol=1e-4), coef[:5, ok].mean(1)  # float32 frames
print("harmonic fit of a clean curve: recovered", np.round(coef[:5, ok].mean(1), 4), "true", truth)

# a composite is the median of the clear values it reads
comp = composite_features(site, period)
vals = frames_in_period(site.sources["s2"], period)
import warnings

with warnings.catch_warnings():  # nanmedian warns about never-clear pixels; they stay NaN
    warnings.simplefilter("ignore", RuntimeWarning)
    assert np.allclose(comp[2], np.nanmedian(vals[:, 0], 0), equal_nan=True)


def with_extra_frame(s: Sample, t: float, value: float) -> Sample:
    """The site with one extra, fully clear frame of constant `value` at day t."""
    f = s.sources["s2"]
    order = np.argsort(np.r_[f.times, t])
    v = np.concatenate([f.values, np.full((1, *f.values.shape[1:]), value, np.float32)])[order]
    m = np.concatenate([f.valid, np.ones((1, *f.valid.shape[1:]), bool)])[order]
    return Sample(s.site, s.grid, {**s.sources, "s2": SourceFrames(v, np.r_[f.times, t][order], m, name="s2")},
                  s.specs)


before = {n: baseline_features(n, site, period) for n in BASELINES}
outside = with_extra_frame(site, period[1] + 3.0, 0.9)  # a bright frame after the period
inside = with_extra_frame(site, float(np.mean(site.time_span())) + 0.5, 0.9)  # and one inside it
for n in BASELINES:
    assert np.array_equal(before[n], baseline_features(n, outside, period), equal_nan=True), n
    if n != "xy":  # location knows no frames at all
        assert not np.allclose(before[n], baseline_features(n, inside, period), equal_nan=True), n
print("a frame after the period changes no baseline; a frame inside it changes every one but xy")

# %% [markdown]
# What the baselines look like on this site: the median composite in false colour, how
# strongly each pixel's NIR follows the annual cycle (harmonic amplitude), one MOSAIKS
# feature, and the longitude.

# %%
def stretch(rgb):
    lo, hi = np.nanpercentile(rgb, [2, 98])
    return np.clip((rgb - lo) / (hi - lo + 1e-9), 0, 1)


comp = before["composite"]
bands = site.specs["s2"].bands
nq = len(QUANTILES)
med = lambda b: comp[bands.index(b) * nq + 2]  # noqa: E731
harm = before["harmonic"]
nir = bands.index(bands[-1]) * 5
amplitude = np.hypot(harm[nir + 1], harm[nir + 2])
fig, ax = plt.subplots(1, 4, figsize=(14, 3.6))
ax[0].imshow(stretch(np.dstack([med(bands[-1]), med(bands[2]), med(bands[1])])))
ax[0].set_title("median composite (NIR, red, green)")
im = ax[1].imshow(amplitude, cmap="viridis")
ax[1].set_title(f"annual harmonic amplitude, {bands[-1]}")
plt.colorbar(im, ax=ax[1], fraction=0.046)
ax[2].imshow(before["mosaiks"][int(np.argmax(before["mosaiks"].std((1, 2))))], cmap="magma")
ax[2].set_title("a MOSAIKS feature")
im = ax[3].imshow(before["xy"][0], cmap="twilight")
ax[3].set_title("xy: longitude")
plt.colorbar(im, ax=ax[3], fraction=0.046)
for a in ax:
    a.set_axis_off()
plt.tight_layout()
plt.show()
print({n: f.shape[0] for n, f in before.items()}, "features per pixel")

# %% [markdown]
# ## What this chapter exported
# `aef_lit.evaluation.baselines`: `composite_features`, `harmonic_features` (`harmonic_design`),
# `smooth`, `xy_features`, `mosaiks_features` (`random_filters`, `normalised_median`),
# `pixel_lonlat`, `pixel_metres`, `input_series`, `frames_in_period`, `baseline_features` by
# name (`BASELINES`), and `NotApplicable`.
