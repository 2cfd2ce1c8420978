# generated from notebooks/02_data.py by tools/nb_export.py: do not edit.
# Edit the notebook, then run `python tools/nb_export.py`.

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import torch

from aef_lit.conventions import DEFAULT_SOURCES, WORLDCOVER_CLASSES, YEAR_DAYS, SourceSpec, from_days, to_days
from aef_lit.data.captions import caption_of, landcover_labels
from aef_lit.data.containers import Grid, Sample, SourceFrames

_WAVELENGTH_NM = {
    "B01": 443, "B1": 443, "B02": 490, "B2": 482, "B03": 560, "B3": 561, "B04": 665, "B4": 655,
    "B05": 705, "B06": 740, "B07": 783, "B08": 842, "B8A": 865, "B09": 945, "B10": 1375,
    "B11": 1610, "B12": 2190, "NIR": 842, "RED": 665,
}
_LANDSAT_NM = {"B1": 443, "B2": 482, "B3": 561, "B4": 655, "B5": 865, "B6": 1609, "B7": 2201}
_SPECTRA_NM = (400, 490, 560, 665, 700, 760, 865, 1610, 2190, 2500)
_SPECTRA = {  # reflectance at _SPECTRA_NM
    "veg": (0.02, 0.03, 0.08, 0.03, 0.06, 0.40, 0.45, 0.22, 0.10, 0.08),
    "soil": (0.06, 0.08, 0.12, 0.17, 0.19, 0.22, 0.25, 0.33, 0.28, 0.25),
    "urban": (0.12, 0.14, 0.16, 0.18, 0.19, 0.21, 0.22, 0.25, 0.22, 0.20),
    "water": (0.07, 0.06, 0.05, 0.03, 0.02, 0.01, 0.01, 0.005, 0.003, 0.002),
}
# per WORLDCOVER class: (background, base vegetation fraction, amplitude, peak day of year, width in days)
_PHENOLOGY = {
    "tree": ("soil", 0.70, 0.20, 190, 120), "shrub": ("soil", 0.30, 0.20, 160, 90),
    "grassland": ("soil", 0.35, 0.45, 140, 60), "cropland": ("soil", 0.05, 0.85, 185, 35),
    "built-up": ("urban", 0.08, 0.05, 180, 90), "bare": ("soil", 0.02, 0.03, 180, 90),
    "water": ("water", 0.0, 0.0, 180, 90), "wetland": ("water", 0.35, 0.35, 200, 70),
}
_VV_DB = {"tree": -8.0, "shrub": -10.0, "grassland": -12.0, "cropland": -16.0, "built-up": -4.0,
          "bare": -17.0, "water": -22.0, "wetland": -13.0}
_CLASS_WEIGHTS = (0.2, 0.05, 0.15, 0.35, 0.1, 0.03, 0.07, 0.05)


def vegetation_fraction(cls: str, doy: np.ndarray) -> np.ndarray:
    """The synthetic phenology: vegetation fraction of a land-cover class at day-of-year."""
    _, base, amp, peak, width = _PHENOLOGY[cls]
    d = (np.asarray(doy, np.float64) - peak + 182.5) % 365.0 - 182.5
    return np.clip(base + amp * np.exp(-0.5 * (d / width) ** 2), 0, 1)


def _smooth(rng, shape, sigma):
    from scipy.ndimage import gaussian_filter

    f = gaussian_filter(rng.standard_normal(shape), sigma, mode="wrap")
    return (f - f.mean()) / (f.std() + 1e-9)


def _acquisitions(rng, n, start_day, days, hour):
    n = min(n, int(days))
    d = np.sort(rng.choice(int(days), size=n, replace=False)).astype(np.float64)
    return start_day + d + hour / 24.0


def _rng(generator, seed) -> np.random.Generator:
    if isinstance(generator, np.random.Generator):
        return generator
    if isinstance(generator, torch.Generator):
        return np.random.default_rng(int(torch.randint(0, 2**62, (1,), generator=generator)))
    return np.random.default_rng(seed)


def synthetic_sample(
    specs: Sequence[SourceSpec] = DEFAULT_SOURCES, height: int = 32, width: int = 32,
    n_frames: Mapping[str, int] | None = None, start: str = "2021-01-01", days: float | int = 365,
    generator: np.random.Generator | torch.Generator | None = None, seed: int = 0,
    site: str | None = None,
) -> Sample:
    """A seeded synthetic `Sample` standing in for real data (see the chapter text).

    Args:
        specs: the sources to make (optical, sar, static and categorical are understood).
        height, width: grid size (10 m pixels, EPSG:32631).
        n_frames: frames per input source (default s2 12, s1 8, landsat 6, others 8).
        start, days: the time span the acquisitions are drawn from.
        generator / seed: randomness (a numpy or torch generator wins over `seed`).
    """
    rng = _rng(generator, seed)
    counts = {"s2": 12, "s1": 8, "landsat": 6, **(n_frames or {})}
    t0 = float(to_days([start])[0])
    H, W = height, width
    # parcels: nearest of random seeds, each seed a class
    n_seeds = max(4, H * W // 48)
    seeds = rng.uniform(0, [H, W], size=(n_seeds, 2))
    seed_cls = rng.choice(len(WORLDCOVER_CLASSES), size=n_seeds, p=_CLASS_WEIGHTS)
    yy, xx = np.meshgrid(np.arange(H) + 0.5, np.arange(W) + 0.5, indexing="ij")
    dist = (yy[..., None] - seeds[:, 0]) ** 2 + (xx[..., None] - seeds[:, 1]) ** 2
    cls_map = seed_cls[np.argmin(dist, axis=-1)]
    brightness = 1.0 + 0.08 * _smooth(rng, (H, W), 3)
    grid = Grid("EPSG:32631", (10.0, 0.0, 600_000.0, 0.0, -10.0, 5_650_000.0), H, W)
    sources, mids = {}, t0 + days / 2
    for spec in specs:
        if spec.modality in ("optical", "sar"):
            hour = 10.5 if spec.modality == "optical" else rng.choice([6.0, 17.5])
            times = _acquisitions(rng, counts.get(spec.name, 8), t0, days, hour)
            doy = (times - to_days([f"{str(from_days(t)[()])[:4]}-01-01" for t in times])) % YEAR_DAYS
            frac = np.stack([vegetation_fraction(c, doy) for c in WORLDCOVER_CLASSES], 1)[:, cls_map]  # T H W
        if spec.modality == "optical":
            table = _LANDSAT_NM if spec.name == "landsat" else _WAVELENGTH_NM
            T, vals = len(times), np.zeros((len(times), spec.channels, H, W), np.float32)
            valid = np.ones((T, H, W), bool)
            for i in range(T):
                p = min(rng.beta(0.6, 1.6), 0.85)
                field_ = _smooth(rng, (H, W), max(2.0, H / 10))
                cloud = field_ > np.quantile(field_, 1 - p) if p > 0.02 else np.zeros((H, W), bool)
                valid[i] = ~cloud
                for c, band in enumerate(spec.bands):
                    if band == "B10" and spec.name == "landsat":  # thermal, Kelvin (TOA brightness)
                        season = np.cos(2 * np.pi * (doy[i] - 200) / YEAR_DAYS)
                        v = 283 + 12 * season - 6 * frac[i] + rng.normal(0, 0.5, (H, W))
                        vals[i, c] = np.where(cloud, 255 + 5 * field_, v)
                        continue
                    nm = table.get(band, _WAVELENGTH_NM.get(band, 665))
                    spec_at = {k: np.interp(nm, _SPECTRA_NM, v) for k, v in _SPECTRA.items()}
                    bg = np.array([spec_at[_PHENOLOGY[c_][0]] for c_ in WORLDCOVER_CLASSES])[cls_map]
                    refl = (frac[i] * spec_at["veg"] + (1 - frac[i]) * bg) * brightness
                    refl = refl + rng.normal(0, 0.004, (H, W))
                    vals[i, c] = np.where(cloud, 0.45 + 0.1 * np.tanh(field_), np.clip(refl, 1e-4, 1))
            sources[spec.name] = SourceFrames(vals, times, valid, name=spec.name)
        elif spec.modality == "sar":
            vv = np.array([_VV_DB[c] for c in WORLDCOVER_CLASSES])[cls_map] + 6.0 * frac  # T H W
            asc = rng.integers(0, 2, len(times)).astype(np.float32)
            vals = []
            for band in spec.bands:
                db = vv - (6.0 + 2.0 * (1 - frac)) if "VH" in band.upper() else vv
                db = db + 0.7 * asc[:, None, None]
                speckle = rng.gamma(4.0, 1 / 4.0, size=db.shape)
                vals.append(10 * np.log10(10 ** (db / 10) * speckle))
            meta = asc[:, None].repeat(len(spec.metadata), 1) if spec.metadata else None
            sources[spec.name] = SourceFrames(np.stack(vals, 1), times, None, meta, spec.name)
        elif spec.modality == "static":
            dem = 150 + 60 * _smooth(rng, (H, W), max(3.0, H / 4)) + 15 * _smooth(rng, (H, W), 2)
            sources[spec.name] = SourceFrames(np.repeat(dem[None, None], spec.channels, 1), [mids], name=spec.name)
        else:
            ids = (cls_map % spec.n_classes).astype(np.float32)
            sources[spec.name] = SourceFrames(ids[None, None], [mids], name=spec.name)
    ids = cls_map.astype(np.float32)
    labels = {"place": "a synthetic site", "year": int(start[:4]), "dataset": "synthetic",
              "class_map": cls_map, **landcover_labels(ids, np.ones_like(ids, bool))}
    return Sample(site or f"synthetic_{seed}", grid, sources, {s.name: s for s in specs},
                  labels=labels, captions=(caption_of(labels),))
