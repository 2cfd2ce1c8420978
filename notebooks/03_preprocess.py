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
# # 3. Preprocessing: normalisation, masks as weights, one grid, one batch
#
# Chapter 2 left us with `Sample`s in physical units. The model of
# {cite}`brown2025alphaearth` wants something else: numbers of order one, the same grid
# for every source, and a fixed-shape batch in which holes (clouds, nodata, missing
# frames) are switched off by *weights and masks*, never by changing shapes and never by
# telling the encoder where the clouds are. The supplement (§S1, `AEF_NOTES.md` §1) is
# short and precise:
#
# > optical bands → log(x+1), then per-band z-score with global statistics, clipped to
# > ±6σ. S1 → dB; values below −30 dB or above 10 dB masked. Cloud masks are used only
# > to weight the loss, never as model input.
#
# This chapter exports `aef_lit.data.preprocess`: `NormStats` (global statistics, fitted or the
# defaults below), `normalise_frames`, `resample_to_grid` / `resample_sample`, and
# `collate`, which turns a list of samples into the `SourceBatch` layout of chapter 1; and
# `aef_lit.data.harmonise`: `harmonise` (one band set, one 10 m grid for many sites),
# `load_sites`, and `aef_lit.data.rows`: `cut_row` and `cut_rows`, which later chapters read
# their sites and training rows with.

# %% tags=["parameters"]
# Parameters (papermill injects values here). Defaults are sized for a 2-core CPU.
preset = "tiny"  # model preset: "tiny" (CI), "small", "paper"
device = "auto"  # "auto" = XLA if importable, then CUDA, MPS, CPU
seed = 0
data = "auto"  # "auto" = the real samples if present, else the synthetic generator

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
#| default_exp data.preprocess
# %% [markdown]
# ## The transforms
#
# **Optical: log(x+1).** Reflectance is bounded below by 0 and has a long bright tail
# (clouds, snow, roofs reach 1 and beyond). `log(1+x)` compresses that tail while staying
# almost linear for the dark vegetation and water values where most of the information
# is. It is defined for $x > -1$, so it also accepts NDVI (Slovenia's only band).
#
# **SAR: decibels with a window.** Backscatter power spans orders of magnitude; in dB it
# becomes roughly Gaussian per land-cover type. Values outside $[-30, 10]$ dB are
# noise-floor artefacts, layover or corner reflectors: the paper *masks* them, which here
# means `valid = False`, i.e. zero loss weight. Our samples store S1 already in dB
# (chapter 2), and `to_db` / `from_db` convert linear power where a loader needs it.
#
# **Z-score with global statistics, clipped at ±6σ.** One mean and standard deviation per
# band (in the transformed space), fitted once over many sites, not per sample: a per-sample
# z-score would erase exactly the differences between sites that the embedding must
# represent. Clipping at ±6σ stops a saturated pixel from producing a 40σ input. The paper
# says this for optical bands; we clip every continuous modality (SAR and elevation too):
# **our choice**, since an unclipped outlier is as harmful there.
#
# **Static layers** (elevation) get the same clipped z-score without the log;
# **categorical** layers keep their class ids.

# %%
#| export
from __future__ import annotations

import json
import logging
import warnings
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import torch

from aef_lit.conventions import SourceBatch, SourceSpec
from aef_lit.data.containers import TIMELESS, DataError, Grid, Sample, SourceFrames

log = logging.getLogger("aef_lit.data.preprocess")

SAR_DB_RANGE = (-30.0, 10.0)
"""S1 backscatter outside this window (dB) is masked (paper §S1)."""
CLIP_SIGMA = 6.0
"""Normalised values are clipped to +-CLIP_SIGMA (paper §S1)."""


def to_db(linear: np.ndarray) -> np.ndarray:
    """Linear backscatter power to decibels, 10 log10(x) (non-positive -> -inf)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return 10.0 * np.log10(np.asarray(linear, np.float64))


def from_db(db: np.ndarray) -> np.ndarray:
    """Decibels to linear power, 10^(dB/10)."""
    return 10.0 ** (np.asarray(db, np.float64) / 10.0)


def transform_values(values: np.ndarray, spec: SourceSpec) -> np.ndarray:
    """Physical units -> the space statistics live in: log1p for optical, identity otherwise."""
    if spec.modality == "optical":
        return np.log1p(np.maximum(values, -0.999))
    return np.asarray(values)


def physical_valid(frames: SourceFrames, spec: SourceSpec) -> np.ndarray:
    """The frames' valid mask, narrowed by the S1 dB window for SAR sources (`T H W`)."""
    if spec.modality != "sar":
        return frames.valid
    lo, hi = SAR_DB_RANGE
    inside = ((frames.values >= lo) & (frames.values <= hi)).all(axis=1)
    return frames.valid & inside


# %% [markdown]
# ## Global statistics
#
# `NormStats` keeps, per source name and **per band name**, the mean and standard
# deviation in the transformed space. Keying by band name lets one set of statistics
# serve datasets with different band subsets (GreenEarthNet's four bands, WorldCereal's
# nine). `fit_stats` uses **valid pixels only**, so clouds and nodata do not bias them.

# %%
#| export
@dataclass
class NormStats:
    """Per-source, per-band (mean, std) in the transformed space, with their provenance."""

    stats: dict[str, dict[str, tuple[float, float]]] = field(default_factory=dict)
    provenance: str = ""

    def get(self, spec: SourceSpec) -> tuple[np.ndarray, np.ndarray]:
        """Mean and std arrays (`C`) for the bands of `spec`."""
        table = self.stats.get(spec.name, {})
        missing = [b for b in spec.bands if b not in table]
        if missing:
            raise KeyError(f"no normalisation statistics for {spec.name!r} bands {missing}; fit them "
                           "with aef_lit.preprocess.fit_stats(samples) or extend DEFAULT_STATS")
        mean = np.array([table[b][0] for b in spec.bands], np.float64)
        std = np.array([max(table[b][1], 1e-6) for b in spec.bands], np.float64)
        return mean, std

    def updated(self, other: "NormStats") -> "NormStats":
        """A copy with `other`'s entries added (and winning)."""
        merged = {k: dict(v) for k, v in self.stats.items()}
        for k, v in other.stats.items():
            merged.setdefault(k, {}).update(v)
        return NormStats(merged, "; ".join(p for p in (self.provenance, other.provenance) if p))

    def to_json(self) -> str:
        return json.dumps({"provenance": self.provenance, "stats": self.stats}, indent=1)

    @classmethod
    def from_json(cls, text: str) -> "NormStats":
        d = json.loads(text)
        stats = {s: {b: (float(m), float(sd)) for b, (m, sd) in bands.items()} for s, bands in d["stats"].items()}
        return cls(stats, d.get("provenance", ""))

    def save(self, path: str | Path) -> None:
        Path(path).write_text(self.to_json())

    @classmethod
    def load(cls, path: str | Path) -> "NormStats":
        return cls.from_json(Path(path).read_text())


def fit_stats(samples: Sequence[Sample], provenance: str = "") -> NormStats:
    """Fit per-band mean/std over the valid pixels of every continuous source of `samples`."""
    acc: dict[str, dict[str, np.ndarray]] = {}
    for s in samples:
        for name, fr in s.sources.items():
            spec = s.specs[name]
            if spec.categorical or fr.T == 0:
                continue
            ok = physical_valid(fr, spec)
            v = transform_values(fr.values, spec)
            for c, band in enumerate(spec.bands):
                x = v[:, c][ok].astype(np.float64)
                a = acc.setdefault(name, {}).setdefault(band, np.zeros(3))
                a += (x.size, x.sum(), (x * x).sum())
    stats = {}
    for name, bands in acc.items():
        for band, (n, s1, s2) in bands.items():
            if n == 0:
                continue
            mean = s1 / n
            stats.setdefault(name, {})[band] = (round(float(mean), 5),
                                                round(float(np.sqrt(max(s2 / n - mean**2, 0.0))), 5))
    return NormStats(stats, provenance or f"fit_stats over {[s.site for s in samples]}")


# %% [markdown]
# ### Default statistics
#
# The constants below were computed **once** with `fit_stats` (the cell after them shows
# the computation and checks it when the real data are present). Provenance:
#
# * `s2`: valid pixels of the Sentinel-2 L2A frames of WorldCereal Belgium
#   {cite}`vantricht2023worldcereal` and the three GreenEarthNet minicubes
#   {cite}`benson2024greenearthnet`, plus the three clear 13-band L1C reference scenes of
#   eo-learn Slovenia {cite}`eolearn` (the only source of B01, B09, B10);
# * `s1` (VV, VH in dB): WorldCereal Belgium, the only real S1 here;
# * `dem`: all four real DEMs; `ndvi`: eo-learn Slovenia;
# * `landsat`: **the synthetic generator** (no real Landsat data is available offline):
#   replace them with `fit_stats` on real Landsat frames before trusting a model with it.
#
# Pixel-weighted pooling means the 128 × 128 minicubes weigh more than the 100 × 100 cube.
# These are a handful of sites in Europe, not the paper's global statistics: good enough to
# put inputs on the order of one, not a claim about the world.

# %%
#| export
DEFAULT_STATS = NormStats(
    stats={
        "s2": {"B01": (0.10324, 0.00457), "B02": (0.05627, 0.02866), "B03": (0.08055, 0.0356),
               "B04": (0.0831, 0.05292), "B05": (0.11073, 0.04164), "B06": (0.20882, 0.05683),
               "B07": (0.24304, 0.06904), "B08": (0.2511, 0.07582), "B8A": (0.27343, 0.08366),
               "B09": (0.07865, 0.0176), "B10": (0.00102, 0.00018), "B11": (0.17425, 0.0549),
               "B12": (0.1183, 0.06101)},
        "s1": {"VV": (-9.79461, 2.60988), "VH": (-16.6627, 2.68024)},
        "dem": {"elevation": (168.15129, 229.92287)},
        "ndvi": {"NDVI": (0.41748, 0.13964)},
        "landsat": {"B2": (0.06043, 0.02521), "B3": (0.09604, 0.02514), "B4": (0.09593, 0.04671),
                    "B5": (0.26187, 0.08148), "B6": (0.21899, 0.07124), "B7": (0.15945, 0.06969),
                    "B10": (5.63888, 0.02494)},
    },
    provenance=("fit_stats (log1p space for optical, dB for s1, metres for dem) on the valid pixels of "
                "worldcereal_belgium, greenearthnet_{portugal,hungary,sweden} minicubes and "
                "eolearn_slovenia (NDVI + 3 clear reference scenes); landsat from 3 synthetic_sample "
                "draws (seeds 0-2, 64x64): no real Landsat offline"),
)
# Global statistics usable without fitting (see chapter 3 for their provenance).


# %% [markdown]
# ## Normalising the frames of one source

# %%
#| export
def normalise_frames(frames: SourceFrames, spec: SourceSpec, stats: NormStats | None = None) -> SourceFrames:
    """Physical units -> model input: optical log1p + z-score, SAR dB window + z-score,
    static z-score, all clipped to +-6; categorical ids untouched. Invalid pixels
    (including S1 outside -30..10 dB) get valid=False and value 0; frames left with no
    valid pixel are dropped."""
    if spec.categorical or frames.T == 0:
        return frames
    mean, std = (stats or DEFAULT_STATS).get(spec)
    valid = physical_valid(frames, spec)

    def norm(v: np.ndarray) -> np.ndarray:
        return np.clip((transform_values(v, spec) - mean[:, None, None]) / std[:, None, None], -CLIP_SIGMA, CLIP_SIGMA)

    x = np.where(valid[:, None], norm(frames.values), 0.0).astype(np.float32)
    cloud = None
    if frames.cloud_values is not None:  # the same transform under clouds; 0 where nothing was measured
        cv = frames.cloud_values
        cloud = np.where((cv != 0).any(axis=1, keepdims=True), norm(cv), 0.0).astype(np.float32)
    return SourceFrames.build(x, frames.times, valid, frames.meta, frames.name, empty="drop", cloud_values=cloud)


def denormalise(x: np.ndarray, spec: SourceSpec, stats: NormStats | None = None) -> np.ndarray:
    """Inverse of `normalise_frames` for values (`... C H W`) inside the clip range."""
    if spec.categorical:
        return x
    mean, std = (stats or DEFAULT_STATS).get(spec)
    v = np.asarray(x, np.float64) * std[:, None, None] + mean[:, None, None]
    return np.expm1(v) if spec.modality == "optical" else v


# %% [markdown]
# ## One grid for every source
#
# AEF stacks all sources on one 10 m grid (§1). Where a source comes on another grid
# (GreenEarthNet's minicubes are on a lat/lon grid of about 20 m), `resample_to_grid`
# warps it with `rasterio.warp.reproject`: **bilinear** for continuous values, **nearest**
# for class ids and masks (a bilinear class id 2.5 means nothing; a bilinear mask 0.5
# would half-trust a cloud). Invalid pixels are handed to GDAL as nodata, so bilinear
# never blends a cloud into a clear neighbour; a destination pixel is valid only if its
# nearest source pixel was valid and the bilinear value is defined. `utm_grid_for` gives
# the UTM grid at 10 m that covers a grid's footprint.

# %%
#| export
def resample_to_grid(frames: SourceFrames, src_grid: Grid, dst_grid: Grid,
                     categorical: bool = False) -> SourceFrames:
    """Warp frames onto `dst_grid`: bilinear for values (nearest when `categorical`),
    nearest for the valid mask. Pixels outside the source footprint become invalid."""
    from rasterio.warp import Resampling, reproject

    T, C = frames.T, frames.C
    if T == 0 or not src_grid.mismatch(dst_grid):
        return frames
    kw = dict(src_transform=src_grid.affine, src_crs=src_grid.rio_crs,
              dst_transform=dst_grid.affine, dst_crs=dst_grid.rio_crs)

    def warp(seen: np.ndarray, values: np.ndarray) -> np.ndarray:  # T H W, T C H W -> T C h w
        src = np.where(seen[:, None], values, np.nan).reshape(T * C, *src_grid.shape)
        dst = np.full((T * C, *dst_grid.shape), np.nan, np.float32)
        reproject(src.astype(np.float32), dst, src_nodata=np.nan, dst_nodata=np.nan,
                  resampling=Resampling.nearest if categorical else Resampling.bilinear, **kw)
        return dst.reshape(T, C, *dst_grid.shape)

    values = warp(frames.valid, frames.values)
    ok = np.zeros((T, *dst_grid.shape), np.uint8)
    reproject(frames.valid.astype(np.uint8), ok, src_nodata=255, dst_nodata=0,
              resampling=Resampling.nearest, **kw)
    valid = ok.astype(bool) & np.isfinite(values).all(axis=1)
    cloud = None
    if frames.cloud_values is not None:  # the measured values, clear or cloudy, warped alike
        seen = frames.valid | (frames.cloud_values != 0).any(axis=1)
        cloud = np.nan_to_num(warp(seen, frames.values + frames.cloud_values))
    return SourceFrames.build(np.nan_to_num(values), frames.times, valid, frames.meta, frames.name,
                              empty="drop", cloud_values=cloud)


def utm_grid_for(grid: Grid, res: float = 10.0) -> Grid:
    """The north-up UTM grid at `res` metres covering `grid`'s footprint."""
    from rasterio.warp import calculate_default_transform, transform_bounds

    a, _, c, _, e, f = grid.transform
    bounds = (c, f + e * grid.height, c + a * grid.width, f)
    lon0, lat0, lon1, lat1 = transform_bounds(grid.rio_crs, "EPSG:4326", *bounds)
    lon, lat = (lon0 + lon1) / 2, (lat0 + lat1) / 2
    epsg = (32600 if lat >= 0 else 32700) + int((lon + 180) // 6) + 1
    with warnings.catch_warnings():  # rasterio's own Affine `*` deprecation, not ours
        warnings.simplefilter("ignore", PendingDeprecationWarning)
        tr, w, h = calculate_default_transform(grid.rio_crs, f"EPSG:{epsg}", grid.width, grid.height,
                                               *bounds, resolution=res)
    return Grid(f"EPSG:{epsg}", tuple(tr)[:6], h, w)


def resample_sample(sample: Sample, dst_grid: Grid | None = None, res: float = 10.0) -> Sample:
    """Every source of a sample onto `dst_grid` (default: its UTM grid at `res` metres)."""
    dst = dst_grid or utm_grid_for(sample.grid, res)
    srcs = {n: resample_to_grid(fr, sample.grid, dst, sample.specs[n].categorical)
            for n, fr in sample.sources.items()}
    return replace(sample, grid=dst, sources=srcs)


# %% [markdown]
# ## From samples to a batch
#
# `collate` builds, for each source of the model, the `SourceBatch` of chapter 1:
#
# * `x` `B T C H W`: normalised values, **0 wherever the pixel is invalid** (so no NaN and
#   no cloud radiance reaches the encoder through `x`: the mask is a loss weight only, §1);
# * `cloud` `B T C H W` or None: where the reader kept what the sensor measured under a
#   cloud (`SourceFrames.cloud_values`; the GreenEarthNet minicubes do), that radiance,
#   normalised like `x`, and 0 elsewhere. The paper feeds raw radiance and uses the mask
#   only as a loss weight (§1); only a model built with `gap_fill="raw"` (chapter 5) reads
#   it, so every other reader of a batch is unchanged;
# * `t` `B T` float64 days; `frame_mask` `B T`: False for padding and for sources a
#   sample lacks;
# * `weight` `B T H W`: 1 for valid pixels, 0 for nodata, cloud, the S1 window and padding;
# * `meta` `B T M` for sources with per-frame metadata.
#
# Every source is padded to its own fixed `T` (`frames_per_source`), so shapes do not
# depend on the data (static shapes for `torch.compile` and XLA). A sample with more
# frames than `T` keeps `T` of them: evenly spaced over its span by default, a sorted
# random subset when a `generator` is given (training). Padding frames and timeless
# sources (DEM, land cover) get the middle of the sample's time span as timestamp, so every
# `t` is finite.

# %%
#| export
def _pick(n: int, T: int, generator: torch.Generator | None) -> np.ndarray:
    if n <= T:
        return np.arange(n)
    if generator is None:
        return np.unique(np.round(np.linspace(0, n - 1, T)).astype(int))
    return np.sort(torch.randperm(n, generator=generator)[:T].numpy())


def collate(
    samples: Sequence[Sample], specs: Sequence[SourceSpec] | Mapping[str, SourceSpec],
    frames_per_source: Mapping[str, int] | None = None, stats: NormStats | None = None,
    generator: torch.Generator | None = None,
) -> dict[str, SourceBatch]:
    """Normalise, pad and stack samples into `{source: SourceBatch}` (see the chapter)."""
    specs = list(specs.values()) if isinstance(specs, Mapping) else list(specs)
    frames_per_source = dict(frames_per_source or {})
    if not samples:
        raise DataError("collate needs at least one sample")
    shapes = [s.grid.shape for s in samples]
    if len(set(shapes)) != 1:
        raise DataError(f"samples have different grid sizes {shapes}; crop (Sample.crop) or resample "
                        "(resample_sample) them to one size first")
    H, W = samples[0].grid.shape
    B = len(samples)
    mids = [float(np.mean(s.time_span())) for s in samples]
    out = {}
    for spec in specs:
        timeless = spec.modality in TIMELESS
        T = 1 if timeless else frames_per_source.get(spec.name)
        if T is None:
            T = max((s.sources[spec.name].T for s in samples if spec.name in s.sources), default=1)
        x = np.zeros((B, T, spec.channels, H, W), np.float32)
        t = np.tile(np.asarray(mids, np.float64)[:, None], (1, T))
        mask = np.zeros((B, T), bool)
        weight = np.zeros((B, T, H, W), np.float32)
        meta = np.zeros((B, T, len(spec.metadata)), np.float32) if spec.metadata else None
        cloud = None
        for b, s in enumerate(samples):
            if spec.name not in s.sources:
                continue
            if s.specs[spec.name].bands != spec.bands:
                raise DataError(f"{s.site}: source {spec.name!r} has bands {s.specs[spec.name].bands}, the "
                                f"model expects {spec.bands}; wrong band set for this model")
            fr = normalise_frames(s.sources[spec.name], spec, stats)
            idx = _pick(fr.T, T, generator)
            n = len(idx)
            x[b, :n] = fr.values[idx]
            if fr.cloud_values is not None:
                if cloud is None:
                    cloud = np.zeros_like(x)
                cloud[b, :n] = fr.cloud_values[idx]
            weight[b, :n] = fr.valid[idx]
            mask[b, :n] = True
            if not timeless:
                t[b, :n] = fr.times[idx]
            if meta is not None and fr.meta is not None and fr.meta.shape[1] == meta.shape[2]:
                meta[b, :n] = fr.meta[idx]
        out[spec.name] = SourceBatch(
            x=torch.from_numpy(x), t=torch.from_numpy(t), frame_mask=torch.from_numpy(mask),
            weight=torch.from_numpy(weight), meta=None if meta is None else torch.from_numpy(meta),
            cloud=None if cloud is None else torch.from_numpy(cloud))
    return out


# %% [markdown]
# ## Many sites in one layout
#
# A model is configured for one band set per source, and a training batch needs one grid
# resolution. `eo_real/` holds five places in different shapes; `harmonise` brings a site
# to the GreenEarthNet bands (B02 B03 B04 B8A) on a 10 m UTM grid, so one model can train
# on all of them (`load_sites("multisite", ...)`, site names from chapter 2b's registry):
#
# | site name | what it adds | harmonised how |
# |---|---|---|
# | `portugal`, `hungary`, `sweden` (GreenEarthNet minicubes, 2021) | ~30 dates | ~20 m lat/lon → 10 m UTM |
# | `portugal_geotiff`, ... (the same places, other dates) | new dates, SCL clouds | 20 m → 10 m |
# | `belgium` (WorldCereal, Sint-Truiden, 2020-21) | monthly composites, a whole year | B08 stands in for B8A |
# | `slovenia` (eo-learn, summer 2015) | forest, 3 clear L1C scenes | B08 for B8A; S2 L1C (top of atmosphere) |
#
# **Why 10 m.** AEF assumes a 10 m grid (`AEF_NOTES.md` §1): its input projectors bring
# frames to the L/2 grid and the finest operator (precision) works there, so the summary is
# made at 20 m and a learned kernel brings it back to 10 m (chapters 5 and 11). Fed the
# GreenEarthNet cubes on their own ~20 m grid, the model summarises at ~40 m and must
# invent the 20 m detail of every pixel. Resampled to 10 m, as the paper resamples
# Sentinel-2's own 20 m bands, every native pixel survives the L/2 bottleneck; the cost is
# a smaller ground footprint per tile (L = 16 covers 160 m instead of 320 m).
#
# Two approximations are made on purpose. B08 (842 nm, 10 m) and B8A (865 nm, 20 m) are
# both near-infrared bands that agree to a few per cent over land; and the paper's own
# inputs are L1C (top of atmosphere), so a hazier blue band at one site is a kind of
# variety the model should cope with.
#
# `load_sites(data, sites)` is what every later chapter reads its sites with. `data` means
# what it means everywhere (`resolve_data`: `"auto"` is the real samples when present,
# else the synthetic generator); `"real"` reads the named sites as their readers return
# them, `"multisite"` harmonises them, and `"greenearthnet"`, `"greenearthnet_geotiff"`,
# `"worldcereal"` name one dataset.

# %%
#| export data.harmonise
from __future__ import annotations

from typing import Sequence

import numpy as np

from aef_lit.conventions import DEM, LANDCOVER, SourceSpec
from aef_lit.data.containers import DataError, Sample, SourceFrames
from aef_lit.data.preprocess import resample_sample
from aef_lit.data.sites import (
    GREENEARTHNET_S2,
    MULTISITE_SITES,
    load_eolearn_slovenia,
    load_greenearthnet_geotiffs,
    load_greenearthnet_minicube,
    load_real_sample,
    load_worldcereal_belgium,
    resolve_data,
)
from aef_lit.data.synthetic import synthetic_sample

BAND_ALIASES: dict[str, tuple[str, ...]] = {"B8A": ("B08",)}
"""Stand-ins for a band a sensor product lacks: B08 (842 nm) for B8A (865 nm), both NIR."""

MULTISITE_RES = 10.0
"""The grid of every `multisite` site, in metres: the paper's 10 m (see the text above)."""


def read_site(name: str) -> Sample:
    """One site by short name (`MULTISITE_SITES`) as its reader returns it (Slovenia with its S2 scenes)."""
    if name not in MULTISITE_SITES:
        raise ValueError(f"unknown multisite site {name!r}; choose from {', '.join(MULTISITE_SITES)}")
    if name == "slovenia":  # its default sample is NDVI only; the 13-band scenes are opt-in
        return load_eolearn_slovenia(reference_scenes=True)
    return load_real_sample(MULTISITE_SITES[name])


def harmonise(sample: Sample, spec: SourceSpec = GREENEARTHNET_S2, res: float | None = MULTISITE_RES,
              keep: Sequence[str] = ("dem", "landcover"),
              aliases: dict[str, tuple[str, ...]] = BAND_ALIASES) -> Sample:
    """`sample` in the layout of `spec`: its `spec.name` source cut to `spec.bands` (or their
    `aliases`), the target sources in `keep` (others dropped), and on a `res`-metre UTM grid
    (bilinear; nearest for classes) unless it is on one already (`res=None`: grid kept)."""
    if spec.name not in sample.sources:
        raise DataError(f"{sample.site} has no {spec.name!r} source (it has {sorted(sample.sources)})")
    have = sample.specs[spec.name].bands
    index = []
    for band in spec.bands:
        found = [have.index(b) for b in (band, *aliases.get(band, ())) if b in have]
        if not found:
            raise DataError(f"{sample.site}: {spec.name!r} has no band {band} "
                            f"(nor {', '.join(aliases.get(band, ())) or 'a stand-in'}); it has {', '.join(have)}")
        index.append(found[0])
    fr = sample.sources[spec.name]
    cv = None if fr.cloud_values is None else fr.cloud_values[:, index]
    sources = {spec.name: SourceFrames(fr.values[:, index], fr.times, fr.valid, fr.meta, fr.name, cv)}
    sources |= {n: f for n, f in sample.sources.items() if n in keep and n != spec.name}
    specs = {n: spec if n == spec.name else sample.specs[n] for n in sources}
    out = Sample(sample.site, sample.grid, sources, specs, labels=sample.labels, captions=sample.captions)
    g = sample.grid
    if res is not None and (g.rio_crs.is_geographic or not np.allclose(g.res, res, rtol=0.01)):
        out = resample_sample(out, res=res)
    return out


def load_sites(data: str = "auto", sites: Sequence[str] = ("portugal", "hungary"), seed: int = 0,
               synthetic_size: int = 96) -> list[Sample]:
    """The whole-site `Sample`s a model works on (see the text above for the `data` values)."""
    data = resolve_data(data)
    if data in ("real", "greenearthnet"):
        unknown = [s for s in sites if s not in MULTISITE_SITES]
        if unknown:
            raise ValueError(f"unknown site(s) {unknown}; choose from {', '.join(MULTISITE_SITES)}")
        if data == "greenearthnet":
            return [load_greenearthnet_minicube(s) for s in sites]
        return [load_real_sample(MULTISITE_SITES[s]) for s in sites]
    if data == "greenearthnet_geotiff":
        return [load_greenearthnet_geotiffs(s) for s in sites]
    if data == "worldcereal":
        return [load_worldcereal_belgium()]
    if data == "multisite":
        return [harmonise(read_site(s)) for s in sites]
    if data == "synthetic":
        specs = (GREENEARTHNET_S2, DEM, LANDCOVER)
        return [synthetic_sample(specs, height=synthetic_size, width=synthetic_size, seed=seed + i,
                                 n_frames={"s2": 24}, site=f"synthetic_{name}")
                for i, name in enumerate(sites or ("a", "b"))]
    raise ValueError(f"unknown data {data!r}: auto, real, greenearthnet, greenearthnet_geotiff, worldcereal, "
                     "multisite, synthetic")


# %% [markdown]
# ## Rows: a window, a support period, a few frames
#
# AEF trains on rows of $L \times L$ pixels with the time series of every source at that
# place (`AEF_NOTES.md` §1, §8); our sites are a handful of whole scenes. A row of a site
# is cut by `cut_row`:
#
# - a **random crop** of $L \times L$ pixels (the same window for every source of the site);
# - a **random support window** in time, at least `min_span_days` long, and a random
#   **sub-sequence** of at most `frames` of the frames inside it, so the model sees short
#   and long, dense and sparse series (the paper's rows also differ in length: §1);
# - only frames with some valid (cloud-free) pixels in the crop; clouds stay as per-pixel
#   loss weights (§1).
#
# `row_generator(seed, key)` hashes the pair into a NumPy generator (BLAKE2b, so nearby keys
# give unrelated streams), so row number $k$ is a pure function of `(seed, k)`: it picks
# the site, the window, the support window and the frames. If a window happens to contain
# no usable frame of some source (a crop full of clouds at every date, a land-cover map
# that is all "boundary" there), the same generator simply draws another window: still a
# pure function of the key. `cut_rows(sites, keys, ...)` cuts the rows of some keys; chapter
# 20 turns the same rows into an endless, sharded, augmented training stream, and the
# chapters before it take their demonstration batches from `cut_rows` and `collate`.

# %%
#| export data.rows
from __future__ import annotations

import hashlib
from typing import Iterable, Sequence

import numpy as np

from aef_lit.data.containers import TIMELESS, Sample, SourceFrames


def row_generator(seed: int, key: int) -> np.random.Generator:
    """The generator of training row `key`: a pure function of (seed, key)."""
    h = hashlib.blake2b(f"aef-row/{seed}/{key}".encode(), digest_size=8).digest()
    return np.random.default_rng(int.from_bytes(h, "little"))


def _window(fr: SourceFrames, r: int, c: int, L: int, index: np.ndarray) -> SourceFrames:
    """Frames `index` of `fr`, cropped to the L x L window at (r, c)."""
    meta = None if fr.meta is None else fr.meta[index]
    cv = None if fr.cloud_values is None else fr.cloud_values[index][:, :, r:r + L, c:c + L]
    return SourceFrames(fr.values[index][:, :, r:r + L, c:c + L], fr.times[index],
                        fr.valid[index][:, r:r + L, c:c + L], meta, fr.name, cv)


def cut_row(sample: Sample, rng: np.random.Generator, tile: int, frames: int,
            min_span_days: float = 60.0, min_valid: float = 0.05, tries: int = 20) -> Sample:
    """A random L x L window of `sample`, with a random sub-sequence of each input source.

    Input sources: frames inside a random support window (at least `min_span_days`, at
    most the whole series) with at least `min_valid` clear pixels in the crop; at most
    `frames` of them, chosen at random and kept in time order. Timeless sources keep their
    single frame. Raises if no window of the sample works in `tries` draws.
    """
    H, W = sample.grid.shape
    if H < tile or W < tile:
        raise ValueError(f"{sample.site} is {H} x {W} pixels, smaller than the tile {tile}")
    for _ in range(tries):
        r, c = int(rng.integers(0, H - tile + 1)), int(rng.integers(0, W - tile + 1))
        out: dict[str, SourceFrames] = {}
        for name, fr in sample.sources.items():
            spec = sample.specs[name]
            clear = fr.valid[:, r:r + tile, c:c + tile].mean(axis=(1, 2))
            if spec.modality in TIMELESS:
                if clear[0] > 0:
                    out[name] = _window(fr, r, c, tile, np.array([0]))
                continue
            t = fr.times
            span = float(t[-1] - t[0])
            length = span if span <= min_span_days else float(rng.uniform(min_span_days, span))
            t0 = t[0] + float(rng.uniform(0.0, span - length))
            inside = np.flatnonzero((t >= t0) & (t <= t0 + length) & (clear >= min_valid))
            if inside.size == 0:
                continue
            pick = np.sort(rng.choice(inside, size=min(frames, inside.size), replace=False))
            out[name] = _window(fr, r, c, tile, pick)
        if len(out) == len(sample.sources):
            grid = sample.grid.crop(r, c, tile, tile)
            labels = {**sample.labels, "row": r, "col": c}
            return Sample(sample.site, grid, out, dict(sample.specs), labels=labels, captions=sample.captions)
    raise RuntimeError(f"no usable {tile} x {tile} window in {sample.site} after {tries} draws")


def cut_rows(samples: Sequence[Sample], keys: Iterable[int], tile: int, frames: int, seed: int = 0,
             min_span_days: float = 60.0, min_valid: float = 0.05) -> list[Sample]:
    """The rows of `keys`: row k is `cut_row` of site `rng.integers(len(samples))` with
    `rng = row_generator(seed, k)` (chapter 20's stream, before its augmentations)."""
    out = []
    for key in keys:
        rng = row_generator(seed, int(key))
        sample = samples[int(rng.integers(len(samples)))]
        out.append(cut_row(sample, rng, tile, frames, min_span_days, min_valid))
    return out


# %% [markdown]
# ## Demonstrations
#
# ### Where the default statistics come from
#
# With the real samples present, we recompute the statistics and check that the
# constants above match them (S2, S1, DEM, NDVI); Landsat's come from the synthetic
# generator. Without the real data this chapter runs on the synthetic generator and the
# check is skipped.

# %%
import matplotlib.pyplot as plt
import pandas as pd

from aef_lit.conventions import DEFAULT_SOURCES, find_eo_real, to_days
from aef_lit.data import (
    load_eolearn_slovenia,
    load_greenearthnet_minicube,
    load_samples,
    load_worldcereal_belgium,
    synthetic_sample,
)

real_root = find_eo_real(required=False) if data in ("auto", "real") else None
if real_root is not None:
    fit_on = [load_worldcereal_belgium(), *(load_greenearthnet_minicube(s) for s in ("portugal", "hungary", "sweden")),
              load_eolearn_slovenia(reference_scenes=True)]
    refit = fit_stats(fit_on)
    for src in ("s2", "s1", "dem", "ndvi"):
        for band, (m, sd) in refit.stats[src].items():
            m0, sd0 = DEFAULT_STATS.stats[src][band]
            assert abs(m - m0) <= 0.05 * sd0 + 1e-3 and abs(sd - sd0) <= 0.1 * sd0 + 1e-3, (src, band, m, sd, m0, sd0)
    print("DEFAULT_STATS match a fresh fit on the real samples")
syn_fit = fit_stats([synthetic_sample(height=64, width=64, seed=k) for k in range(3)])
for band, (m, sd) in syn_fit.stats["landsat"].items():
    m0, sd0 = DEFAULT_STATS.stats["landsat"][band]
    assert abs(m - m0) <= 0.25 * sd0 + 0.01, ("landsat", band, m, m0)
pd.DataFrame({f"{k}/{b}": {"mean": v[0], "std": v[1]} for k, bands in DEFAULT_STATS.stats.items()
              for b, v in bands.items()}).T.round(4)

# %% [markdown]
# ### Normalised values are bounded, and clouds do not move the statistics
#
# Two properties of the clipped z-score: every normalised value lies in $[-6, 6]$, and
# the statistics are fitted on *valid* pixels, so painting every cloud pixel white (or
# black) does not change them.

# %%
samples = load_samples(data, seed=seed)
print("samples:", [s.site for s in samples])
for s in samples:
    for name, fr in s.sources.items():
        if s.specs[name].categorical:
            continue
        z = normalise_frames(fr, s.specs[name])
        assert np.abs(z.values).max() <= CLIP_SIGMA and np.isfinite(z.values).all()

syn = synthetic_sample(seed=seed)
s2 = syn.sources["s2"]
painted = SourceFrames(np.where(s2.valid[:, None], s2.values, 0.99), s2.times, s2.valid, name="s2")
a = fit_stats([syn]).stats["s2"]
b = fit_stats([replace(syn, sources={**syn.sources, "s2": painted})]).stats["s2"]
assert a == b, "cloud pixels must not change the statistics"
print(f"clouds cover {1 - s2.valid.mean():.0%} of the synthetic S2 pixels; statistics unchanged")

# %% [markdown]
# ### The S1 window, in numbers
#
# `to_db` and `from_db` round-trip, 1.0 is 0 dB and 0.001 is −30 dB; after normalisation
# a pixel at −35 dB has weight 0.

# %%
assert np.allclose(to_db([1.0, 0.1, 0.001]), [0.0, -10.0, -30.0])
assert np.allclose(from_db(to_db([0.02, 0.5])), [0.02, 0.5])
demo = SourceFrames(np.array([-35.0, -20.0, 5.0, 12.0], np.float32).reshape(1, 1, 1, 4).repeat(2, 1),
                    [1.0], name="s1")
print("valid after the window:", normalise_frames(demo, DEFAULT_SOURCES[1]).valid.ravel())
assert normalise_frames(demo, DEFAULT_SOURCES[1]).valid.ravel().tolist() == [False, True, True, False]

# %% [markdown]
# ### Histograms before and after
#
# Raw reflectance is skewed with a long bright tail; after log(x+1) and the z-score each
# band is centred near 0 with unit spread; S1 in dB is already symmetric and only shifts
# and scales.

# %%
hist_sample = next((s for s in samples if "s1" in s.sources and "s2" in s.sources), syn)
fig, axes = plt.subplots(2, 3, figsize=(12, 5))
for col, (src, band) in enumerate((("s2", "B04"), ("s2", "B08"), ("s1", "VV"))):
    fr, spec = hist_sample.sources[src], hist_sample.specs[src]
    c = spec.bands.index(band)
    raw = fr.values[:, c][fr.valid]
    z = normalise_frames(fr, spec)
    axes[0, col].hist(raw, bins=80, color="tab:gray")
    axes[0, col].set_title(f"{hist_sample.site} {src} {band}: raw ({'dB' if src == 's1' else 'reflectance'})", fontsize=8)
    axes[1, col].hist(z.values[:, c][z.valid], bins=80, color="tab:green")
    axes[1, col].set_title(f"normalised: mean {z.values[:, c][z.valid].mean():+.2f}, "
                           f"std {z.values[:, c][z.valid].std():.2f}", fontsize=8)
plt.tight_layout(); plt.show()

# %% [markdown]
# ### The NDVI seasonal curve, and why clouds are masks
#
# The eo-learn Slovenia patch has 68 NDVI dates over two and a half years. Averaging every
# pixel (left, grey) gives a curve that drops to near 0 on cloudy dates: a cloud's NDVI is
# about 0, not the field's. Averaging only valid pixels (green) shows the seasonal cycle of
# the forest and grassland. The same holds for every optical band: a model trained to
# reconstruct cloud radiance would learn clouds, which is why AEF weights the loss by the
# mask. (Without the real data, the synthetic generator's S2 shows the same effect.)

# %%
if real_root is not None:
    import json as _json

    folder = real_root / "eolearn_slovenia" / "TestEOPatch"
    nd = np.load(folder / "data/NDVI.npy")[..., 0]
    clm = np.load(folder / "mask/CLM.npy")[..., 0].astype(bool)
    days = to_days(_json.loads((folder / "timestamps.json").read_text()))
    title = "eo-learn Slovenia NDVI, 2015-2017"
else:
    s2 = syn.sources["s2"]
    red, nir = s2.values[:, syn.specs["s2"].bands.index("B04")], s2.values[:, syn.specs["s2"].bands.index("B08")]
    nd = np.where(s2.valid, (nir - red) / (nir + red), 0.02)  # cloud radiance was zeroed; a cloud's NDVI is ~0
    clm, days, title = ~s2.valid, s2.times, "synthetic S2 NDVI"
dates = pd.to_datetime(days, unit="D")
all_px = nd.reshape(len(days), -1).mean(1)
clear = np.array([nd[i][~clm[i]].mean() if (~clm[i]).any() else np.nan for i in range(len(days))])
cloud_frac = clm.reshape(len(days), -1).mean(1)
fig, ax = plt.subplots(figsize=(10, 3.2))
ax.plot(dates, all_px, "o-", color="tab:gray", ms=3, label="all pixels")
ax.plot(dates, clear, "o-", color="tab:green", ms=3, label="valid pixels only")
ax.bar(dates, cloud_frac, width=3, color="tab:blue", alpha=0.3, label="cloud fraction")
ax.set(title=title, ylabel="mean NDVI"); ax.legend(fontsize=8)
plt.tight_layout(); plt.show()
ok = np.isfinite(clear)
assert np.corrcoef(all_px[ok] - clear[ok], cloud_frac[ok])[0, 1] < -0.5, "clouds pull the unmasked NDVI down"

# %% [markdown]
# ### Onto one grid, then into a batch
#
# A GreenEarthNet minicube on its lat/lon grid goes to the 10 m UTM grid of its
# footprint: land cover with nearest neighbour (only existing class ids), the DEM and
# reflectance bilinearly. Then `collate` makes a batch of two crops of equal size, and we
# check the contract of chapter 1: float64 times, a finite `x` that is exactly 0 where the
# weight is 0, and padding with `frame_mask = False`.

# %%
if real_root is not None:
    cube = load_greenearthnet_minicube("portugal")
    utm = resample_sample(cube)
    print(f"{cube.grid.rio_crs.to_string()} {cube.grid.shape} -> {utm.grid.crs} {utm.grid.shape} at 10 m")
    before = set(np.unique(cube.sources["landcover"].values))
    assert set(np.unique(utm.sources["landcover"].values)) <= before, "nearest keeps class ids"
    fig, ax = plt.subplots(1, 2, figsize=(7, 3.4))
    ax[0].imshow(cube.sources["landcover"].values[0, 0], cmap="tab10", vmin=0, vmax=9, interpolation="nearest")
    ax[0].set_title("WorldCover on the lat/lon grid", fontsize=8)
    ax[1].imshow(utm.sources["landcover"].values[0, 0], cmap="tab10", vmin=0, vmax=9, interpolation="nearest")
    ax[1].set_title("on the 10 m UTM grid", fontsize=8)
    for a_ in ax:
        a_.axis("off")
    plt.tight_layout(); plt.show()
    rows = [utm.crop(0, 0, 64), utm.crop(64, 64, 64)]
else:
    rows = [synthetic_sample(seed=k) for k in range(2)]
specs = [rows[0].specs[n] for n in rows[0].sources]
batch = collate(rows, specs, {"s2": 16, "s1": 8, "ndvi": 16})
for name, sb in batch.items():
    assert sb.t.dtype == torch.float64 and torch.isfinite(sb.x).all()
    assert (sb.x * (sb.weight[:, :, None] == 0)).abs().max() == 0, "invalid pixels are 0 in x"
    assert (sb.weight * ~sb.frame_mask[..., None, None]).max() == 0, "padding has weight 0"
    print(f"{name:10s} x {tuple(sb.x.shape)}  real frames per row {sb.frame_mask.sum(1).tolist()}  "
          f"weight mean {sb.weight.mean():.2f}")

# %% [markdown]
# ### Many sites in one layout, and rows from keys
#
# With the real samples, three very different sites (GreenEarthNet on a lat/lon grid,
# WorldCereal's nine bands, Slovenia's L1C scenes) come out of `load_sites("multisite")`
# with the same four bands on a 10 m grid; without them, two synthetic sites. And a row is
# a pure function of its key: row 2 is the same whether it is cut alone or after others.

# %%
from aef_lit.data import GREENEARTHNET_S2, cut_rows, load_sites

if real_root is not None:
    sites = load_sites("multisite", ("portugal", "belgium", "slovenia"))
else:
    sites = load_sites("synthetic", ("a", "b"), seed=seed, synthetic_size=48)
for s in sites:
    assert s.specs["s2"] == GREENEARTHNET_S2 and not s.grid.rio_crs.is_geographic
    assert abs(s.grid.res[0] - 10) < 0.1, (s.site, s.grid.res)
alone, among = cut_rows(sites, [2], 16, 4, seed=seed)[0], cut_rows(sites, [0, 1, 2], 16, 4, seed=seed)[2]
assert alone.site == among.site and alone.grid == among.grid
assert all(np.array_equal(alone.sources[n].values, among.sources[n].values) for n in alone.sources)
pd.DataFrame([{"site": s.site, "grid": f"{s.grid.height} x {s.grid.width} at {s.grid.res[0]:.0f} m",
               "s2 frames": s.sources["s2"].T, "sources": ", ".join(s.sources)} for s in sites])

# %% [markdown]
# ## Summary
#
# * Optical: log(x+1), then a per-band z-score with global statistics, clipped to ±6;
#   SAR: dB, masked outside −30…10 dB, z-scored; elevation: z-scored; land cover: ids.
# * Clouds, nodata and the S1 window become `valid = False`, hence weight 0 and x = 0:
#   they change neither the statistics nor the model input.
# * `resample_to_grid` warps bilinearly for values and by nearest neighbour for classes and
#   masks; `collate` pads every source to a fixed `T` with masked frames and float64 times.
# * `harmonise` gives many sites one band set on one 10 m grid; `load_sites` reads the sites
#   every later chapter uses, and `cut_row` / `cut_rows` cut training rows from keys.
