# generated from notebooks/03_preprocess.py by tools/nb_export.py: do not edit.
# Edit the notebook, then run `python tools/nb_export.py`.

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
