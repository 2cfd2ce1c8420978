# generated from notebooks/24_baselines.py by tools/nb_export.py: do not edit.
# Edit the notebook, then run `python tools/nb_export.py`.

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


def smooth(features: np.ndarray, size: int = 5) -> np.ndarray:
    """NaN-aware `size x size` box mean of every `F H W` feature map (edges average what exists)."""
    from scipy.ndimage import uniform_filter

    f = np.asarray(features, np.float64)
    ok = np.isfinite(f)
    num = uniform_filter(np.where(ok, f, 0.0), size=(1, size, size), mode="constant")
    den = uniform_filter(ok.astype(np.float64), size=(1, size, size), mode="constant")
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 1e-9, num / np.maximum(den, 1e-12), np.nan).astype(np.float32)


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
