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
# # 2. Data: sources, samples and a synthetic stand-in
#
# AlphaEarth Foundations {cite}`brown2025alphaearth` learns from *frames*: for one site,
# every acquisition of every source (Sentinel-2, Sentinel-1, Landsat, ...) with its own
# timestamp, on one 10 m grid (`AEF_NOTES.md` §1). Before any preprocessing (chapter 3) we
# need one honest container for such a training row, *in physical units*, and readers that
# fill it from real files without silently losing anything: nodata, clouds, time, the grid.
#
# This chapter exports the data part's foundations:
#
# * `aef_lit.data.containers`: `Grid`, `SourceFrames`, `Sample`, validated on construction;
# * `aef_lit.data.readers`: loaders for a stack of per-date GeoTIFFs and an xarray cube;
# * `aef_lit.data.synthetic`: a seeded generator that stands in for real data where they
#   are absent.
#
# The next chapter, *The real sites*, adds the registry and the readers of the real
# samples shipped beside the repository.

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
#| default_exp data.containers
# %% [markdown]
# ## What a training row holds
#
# The paper's input (§1) is, per site, a set of sources; each source has its own band
# list, its own number of frames and its own irregular timestamps; all share one grid.
# Cloud and nodata masks exist, but only to *weight the loss*: they are never model input.
# Some sources are only ever *decoded* (elevation, land cover: target-only, §5).
#
# | class | holds | shape |
# |---|---|---|
# | `Grid` | CRS (WKT or `EPSG:xxxx`), affine transform (rasterio order `a b c d e f`), height, width | |
# | `SourceFrames` | `values` float32 in **physical units**, `times` float64 days since 1970-01-01, `valid` bool (False = nodata or cloud), optional per-frame `meta` | `T C H W`, `T`, `T H W`, `T M` |
# | `Sample` | a site name, its `Grid`, `sources: name -> SourceFrames`, `specs: name -> SourceSpec`, and `labels` / `captions` (material for the text loss) | |
#
# **Units we chose** (the paper leaves the storage format open): optical bands are
# reflectance in 0..1 (DN × 10⁻⁴ for Sentinel-2 L2A); **Sentinel-1 is stored in dB** (every
# real source here delivers something that is not linear power: WorldCereal stores
# `20·log10(DN) − 83`); elevation in metres; land cover as class ids `0..7` in the order of
# `conventions.WORLDCOVER_CLASSES`. Target-only sources (`static`, `categorical`: `TIMELESS`)
# have exactly one frame, `T = 1`.
#
# **What is refused.** NaN or ±inf anywhere, even under a False `valid` bit: a NaN that
# reaches a tensor poisons every gradient it touches, and a reader that produces one has a
# decoding bug the user should see. Readers that *know* their NaNs mean nodata say so with
# `SourceFrames.build(..., nonfinite="mask")` (NaN → `valid = False`, value 0). Frames
# without a single valid pixel carry no information and are refused too;
# `build(..., empty="drop")` drops them and logs how many.

# %%
#| export
from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from typing import Iterable, Mapping, Sequence

import numpy as np
from numpy.typing import ArrayLike

from aef_lit.conventions import SourceSpec, from_days, to_days

log = logging.getLogger("aef_lit.data")

TIMELESS = ("static", "categorical")
"""The modalities with one frame per site (target-only sources: elevation, land cover)."""


class DataError(ValueError):
    """Raised for input data a user must fix (shapes, times, nodata, grids, files)."""


def _dates(days: Iterable[float]) -> list[str]:
    return [str(d)[:16] for d in from_days(np.asarray(list(days), dtype=np.float64))]


# %% [markdown]
# ### The grid
#
# A grid is a CRS plus an affine transform plus a size. Two sources can only be stacked
# when they share all of it; otherwise they must be resampled (chapter 3's
# `resample_to_grid`). Comparing CRSs as strings would call `EPSG:32631` and its WKT
# different, so the comparison goes through `rasterio.crs.CRS`.

# %%
#| export
@dataclass(frozen=True)
class Grid:
    """A georeferenced pixel grid.

    Attributes:
        crs: WKT or "EPSG:xxxx".
        transform: the 6 affine coefficients in rasterio order (a, b, c, d, e, f):
            x = a*col + b*row + c, y = d*col + e*row + f (pixel corners).
        height, width: pixel rows and columns.
    """

    crs: str
    transform: Sequence[float]
    height: int
    width: int

    def __post_init__(self):
        t = tuple(float(v) for v in tuple(self.transform)[:6])
        if len(tuple(self.transform)) < 6 or not np.all(np.isfinite(t)):
            raise DataError(f"a Grid transform needs 6 finite coefficients, got {self.transform}")
        object.__setattr__(self, "transform", t)
        object.__setattr__(self, "crs", str(self.crs))
        if self.height <= 0 or self.width <= 0:
            raise DataError(f"a Grid needs a positive size, got {self.height} x {self.width}")

    @property
    def shape(self) -> tuple[int, int]:
        return (self.height, self.width)

    @property
    def res(self) -> tuple[float, float]:
        """Pixel size (x, y) in CRS units (positive)."""
        return (abs(self.transform[0]), abs(self.transform[4]))

    @property
    def affine(self):
        from rasterio.transform import Affine

        return Affine(*self.transform)

    @property
    def rio_crs(self):
        from rasterio.crs import CRS

        return CRS.from_user_input(self.crs)

    def mismatch(self, other: "Grid", tol: float = 1e-6) -> str | None:
        """A sentence describing how two grids differ, or None when they are the same."""
        if self.shape != other.shape:
            return f"size {self.shape} != {other.shape}"
        if self.crs != other.crs and self.rio_crs != other.rio_crs:
            return f"CRS {self.rio_crs.to_string()} != {other.rio_crs.to_string()}"
        scale = max(self.res)
        if not np.allclose(self.transform, other.transform, rtol=0, atol=tol * scale):
            return f"transform {self.transform} != {other.transform}"
        return None

    def check_same(self, other: "Grid", what: str = "") -> None:
        """Raise a DataError naming the difference when `other` is not this grid."""
        diff = self.mismatch(other)
        if diff:
            raise DataError(f"CRS/grid mismatch{' ' + what if what else ''}: {diff}. Resample one "
                            "onto the other first (aef_lit.preprocess.resample_to_grid).")

    def crop(self, row: int, col: int, height: int, width: int) -> "Grid":
        """The sub-grid of `height x width` pixels whose top-left pixel is (row, col)."""
        if row < 0 or col < 0 or row + height > self.height or col + width > self.width:
            raise DataError(f"crop ({row}, {col}, {height}, {width}) leaves the {self.shape} grid")
        a, b, c, d, e, f = self.transform
        return Grid(self.crs, (a, b, c + a * col + b * row, d, e, f + d * col + e * row), height, width)

    @classmethod
    def from_coords(cls, x: np.ndarray, y: np.ndarray, crs: str) -> "Grid":
        """The grid of a regular cube whose pixel *centres* are at `x` (columns) and `y` (rows)."""
        x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
        dx, dy = np.diff(x), np.diff(y)
        if len(x) < 2 or len(y) < 2 or np.ptp(dx) > 1e-6 * abs(dx[0]) or np.ptp(dy) > 1e-6 * abs(dy[0]):
            raise DataError("the cube's x/y coordinates are not a regular grid")
        a, e = float(dx.mean()), float(dy.mean())
        return cls(crs, (a, 0.0, x[0] - a / 2, 0.0, e, y[0] - e / 2), len(y), len(x))


# %% [markdown]
# ### The frames of one source

# %%
#| export
@dataclass
class SourceFrames:
    """The frames of one source at one site, in physical units.

    Attributes:
        values: float32 `T C H W` (reflectance 0..1 for optical, dB for SAR, metres for
            elevation, class ids for land cover). Finite everywhere; set to 0 under invalid
            pixels on construction, so nodata codes and cloud radiance go no further.
        times: float64 `T`, days since 1970-01-01, strictly increasing.
        valid: bool `T H W`; False = nodata or cloud (a loss weight later, never input).
        meta: optional float32 `T M` per-frame sensor metadata (e.g. S1 ascending = 1).
        cloud_values: optional float32 `T C H W`: the measured values under pixels flagged as
            cloud (0 elsewhere), kept apart from `values` so that every reader of `values`
            still sees 0 there; only a model with `gap_fill="raw"` is shown them (chapter 3).
        name: the source name, used in error messages.
    """

    values: ArrayLike
    times: ArrayLike
    valid: ArrayLike | None = None
    meta: ArrayLike | None = None
    name: str = "source"
    cloud_values: ArrayLike | None = None

    def __post_init__(self):
        n = self.name
        self.values = np.asarray(self.values, dtype=np.float32)
        if self.values.ndim != 4:
            raise DataError(f"{n}: values must be T C H W, got shape {self.values.shape}")
        T, C, H, W = self.values.shape
        times = np.asarray(self.times)
        if times.dtype.kind in "MUSO":
            times = to_days(times)
        self.times = np.atleast_1d(times.astype(np.float64))
        if self.times.shape != (T,):
            raise DataError(f"{n}: {self.times.size} timestamps for {T} frames; give one "
                            "timestamp per frame")
        if not np.all(np.isfinite(self.times)):
            raise DataError(f"{n}: timestamps contain NaN/inf")
        steps = np.diff(self.times)
        if np.any(steps == 0):
            i = int(np.flatnonzero(steps == 0)[0])
            raise DataError(f"{n}: duplicated timestamp {_dates([self.times[i]])[0]} (frames {i} and "
                            f"{i + 1}); merge or drop duplicate acquisitions")
        if np.any(steps < 0):
            i = int(np.flatnonzero(steps < 0)[0])
            raise DataError(f"{n}: timestamps are not sorted: frame {i + 1} "
                            f"({_dates([self.times[i + 1]])[0]}) comes before frame {i} "
                            f"({_dates([self.times[i]])[0]}); reorder frames and times together "
                            "(order = np.argsort(times))")
        self.valid = (np.ones((T, H, W), bool) if self.valid is None
                      else np.asarray(self.valid).astype(bool))
        if self.valid.shape != (T, H, W):
            raise DataError(f"{n}: valid mask must be (T, H, W) = {(T, H, W)}, got {self.valid.shape}")
        bad = ~np.isfinite(self.values)
        if bad.any():
            frames = np.flatnonzero(bad.any(axis=(1, 2, 3)))
            raise DataError(f"{n}: {int(bad.sum())} NaN/inf values in frames {frames[:8].tolist()}; "
                            "decode nodata first, or mark them invalid with "
                            "SourceFrames.build(..., nonfinite='mask')")
        empty = np.flatnonzero(~self.valid.reshape(T, -1).any(axis=1)) if T else np.array([], int)
        if empty.size:
            raise DataError(f"{n}: frames {empty[:8].tolist()} ({', '.join(_dates(self.times[empty[:3]]))}"
                            f"{', ...' if empty.size > 3 else ''}) have no valid pixel (all nodata or "
                            "cloud); drop them, e.g. SourceFrames.build(..., empty='drop')")
        if self.meta is not None:
            self.meta = np.asarray(self.meta, dtype=np.float32)
            if self.meta.ndim != 2 or self.meta.shape[0] != T:
                raise DataError(f"{n}: meta must be (T, M) with T = {T}, got {self.meta.shape}")
        if self.cloud_values is not None:  # before values are zeroed: they may be the same array
            cv = np.asarray(self.cloud_values, dtype=np.float32)
            if cv.shape != self.values.shape:
                raise DataError(f"{n}: cloud_values must have the shape of values {self.values.shape}, got {cv.shape}")
            self.cloud_values = np.where(self.valid[:, None], 0.0, np.nan_to_num(cv)).astype(np.float32)
        self.values[~np.broadcast_to(self.valid[:, None], self.values.shape)] = 0.0

    @classmethod
    def build(cls, values, times, valid=None, meta=None, name: str = "source",
              nonfinite: str = "raise", empty: str = "raise", cloud_values=None) -> "SourceFrames":
        """Construct with explicit policies: `nonfinite="mask"` turns NaN/inf into invalid
        pixels (filled with 0); `empty="drop"` drops frames with no valid pixel."""
        values = np.array(values, dtype=np.float32)
        T = values.shape[0] if values.ndim == 4 else 0
        valid = np.ones((T, *values.shape[2:]), bool) if valid is None else np.array(valid, bool)
        if nonfinite == "mask" and values.ndim == 4:
            bad = ~np.isfinite(values)
            valid = valid & ~bad.any(axis=1)
            values[bad] = 0.0
        if empty == "drop" and values.ndim == 4 and valid.shape == (T, *values.shape[2:]):
            keep = valid.reshape(T, -1).any(axis=1)
            if not keep.all():
                log.info("%s: dropped %d of %d frames with no valid pixel", name, int((~keep).sum()), T)
                values, valid = values[keep], valid[keep]
                times = np.asarray(times)[keep]
                meta = None if meta is None else np.asarray(meta)[keep]
                cloud_values = None if cloud_values is None else np.asarray(cloud_values)[keep]
        return cls(values, times, valid, meta, name, cloud_values)

    T = property(lambda self: self.values.shape[0], doc="number of frames")
    C = property(lambda self: self.values.shape[1], doc="number of bands")

    @property
    def invalid_fraction(self) -> float:
        """Fraction of pixel-frames that are nodata or cloud."""
        return float(1.0 - self.valid.mean()) if self.valid.size else 1.0

    def select(self, index) -> "SourceFrames":
        """A subset of frames (index array or slice), keeping order."""
        meta = None if self.meta is None else self.meta[index]
        cv = None if self.cloud_values is None else self.cloud_values[index]
        return SourceFrames(self.values[index], self.times[index], self.valid[index], meta, self.name, cv)

    def crop(self, row: int, col: int, height: int, width: int) -> "SourceFrames":
        """A spatial window; frames left with no valid pixel are dropped."""
        win = (slice(None), slice(row, row + height), slice(col, col + width))
        cv = None if self.cloud_values is None else self.cloud_values[:, :, win[1], win[2]]
        return SourceFrames.build(self.values[:, :, win[1], win[2]], self.times, self.valid[win],
                                  self.meta, self.name, empty="drop", cloud_values=cv)


# %% [markdown]
# ### A sample
#
# A `Sample` ties sources to their specs and grid and checks what only the pair can check:
# the band count a spec declares, the grid size, one frame for timeless sources. Its
# `labels` hold what a caption can say (the text loss of chapter 18 turns them into
# sentences such as *"cropland in Sint-Truiden, Flanders, Belgium, 2021"*).

# %%
#| export
@dataclass
class Sample:
    """One site: a grid, per-source frames in physical units, and caption material.

    Attributes:
        site: a short site name (`"worldcereal_belgium"`).
        grid: the `Grid` every source lies on.
        sources: source name -> `SourceFrames`.
        specs: source name -> `SourceSpec` (same keys as `sources`).
        labels: free-form facts for captions and probes: `place`, `year`, `classes`
            (land-cover class names present, by area), `class_fractions`, ...
        captions: ready-made sentences describing the site.
    """

    site: str
    grid: Grid
    sources: dict[str, SourceFrames]
    specs: dict[str, SourceSpec]
    labels: dict = field(default_factory=dict)
    captions: tuple[str, ...] = ()

    def __post_init__(self):
        if set(self.sources) != set(self.specs):
            raise DataError(f"{self.site}: sources {sorted(self.sources)} and specs {sorted(self.specs)} differ")
        for name, fr in self.sources.items():
            spec = self.specs[name]
            if fr.C != spec.channels:
                raise DataError(f"{self.site}: source {name!r} has {fr.C} bands but its spec lists "
                                f"{spec.channels} ({', '.join(spec.bands)}); wrong band count")
            if fr.values.shape[2:] != self.grid.shape:
                raise DataError(f"{self.site}: source {name!r} is {fr.values.shape[2:]} pixels, the "
                                f"sample grid {self.grid.shape}; CRS/grid mismatch: resample it first")
            if spec.modality in TIMELESS and fr.T != 1:
                raise DataError(f"{self.site}: timeless source {name!r} must have 1 frame, has {fr.T}")
            if spec.categorical and fr.T and (fr.values[fr.valid[:, None]].max(initial=0) >= spec.n_classes
                                               or fr.values.min() < 0):
                raise DataError(f"{self.site}: {name!r} has class ids outside 0..{spec.n_classes - 1}")

    @classmethod
    def from_parts(cls, site: str, parts: Mapping[str, tuple[SourceFrames, Grid]],
                   specs: Mapping[str, SourceSpec], **kw) -> "Sample":
        """Assemble sources read separately, checking that they share one grid."""
        names = list(parts)
        grid = parts[names[0]][1]
        for n in names[1:]:
            grid.check_same(parts[n][1], f"between sources {names[0]!r} and {n!r}")
        return cls(site, grid, {n: p[0] for n, p in parts.items()}, dict(specs), **kw)

    def time_span(self) -> tuple[float, float]:
        """(first, last) timestamp over the time-series sources, in days."""
        ts = [fr.times for n, fr in self.sources.items()
              if self.specs[n].modality not in TIMELESS and fr.T]
        if not ts:
            return (0.0, 0.0)
        allt = np.concatenate(ts)
        return float(allt.min()), float(allt.max())

    def crop(self, row: int, col: int, height: int, width: int | None = None) -> "Sample":
        """A spatial window of every source (frames left without a valid pixel are dropped)."""
        width = height if width is None else width
        grid = self.grid.crop(row, col, height, width)
        srcs = {n: fr.crop(row, col, height, width) for n, fr in self.sources.items()}
        return replace(self, grid=grid, sources=srcs)

    def summary(self) -> dict:
        """One row of facts per sample, for tables."""
        t0, t1 = self.time_span()
        row = {"site": self.site, "H x W": f"{self.grid.height} x {self.grid.width}",
               "res": round(self.grid.res[0], 6), "start": _dates([t0])[0][:10], "end": _dates([t1])[0][:10]}
        for n, fr in self.sources.items():
            row[n] = f"T={fr.T} C={fr.C} invalid={fr.invalid_fraction:.0%}"
        return row


def model_sources(samples: Sample | Sequence[Sample]) -> tuple[SourceSpec, ...]:
    """The SourceSpecs to put in `ModelConfig(sources=...)`: inputs first, then targets.

    Raises when two samples use one source name with different specs."""
    samples = [samples] if isinstance(samples, Sample) else list(samples)
    found: dict[str, SourceSpec] = {}
    for s in samples:
        for name, spec in s.specs.items():
            if found.setdefault(name, spec) != spec:
                raise DataError(f"source {name!r} has two different specs: {found[name]} and {spec}")
    specs = list(found.values())
    return tuple([s for s in specs if s.role == "input"] + [s for s in specs if s.role != "input"])


# %% [markdown]
# ### One caption per site
#
# A site's caption is made once, from its labels, by `caption_of`:
# the land-cover classes covering at least 5 % of it (at most three, largest first, in
# WorldCover's own words), the place and the year: *"tree cover and grassland in
# Västergötland, Sweden, 2021"*. Every reader stores it in `Sample.captions`; the text loss
# (chapters 18 and 19) and the training stream (chapter 20) both read it with the next
# chapter's `captions_for(sample)`, so a row has exactly one caption wherever it is used.

# %%
#| export data.captions
from __future__ import annotations

from typing import Iterable, Sequence

import numpy as np

from aef_lit.conventions import WORLDCOVER_CLASSES

CONVENTION_CLASS_NAMES: dict[str, str] = {
    "tree": "tree cover", "shrub": "shrubland", "grassland": "grassland", "cropland": "cropland",
    "built-up": "built-up area", "bare": "bare or sparse vegetation", "water": "open water",
    "wetland": "herbaceous wetland",
}
"""Caption phrases of `conventions.WORLDCOVER_CLASSES` (the `landcover` source's class ids)."""


def _join(words: Sequence[str]) -> str:
    words = list(words)
    return "".join(words) if len(words) <= 1 else ", ".join(words[:-1]) + " and " + words[-1]


def make_caption(place: str, year: int | str | None = None, classes: Iterable[str] = ()) -> str:
    """'<classes> in <place>, <year>' (e.g. 'winter wheat parcel in Flanders, Belgium, 2021')."""
    names = [str(c).replace("_", " ").strip() for c in classes if str(c).strip()]
    caption = f"{_join(names) if names else 'land'} in {place}"
    return f"{caption}, {year}" if year is not None else caption


def caption_of(labels: dict, max_classes: int = 3) -> str:
    """The caption of a site from its labels: classes by area, place and year."""
    classes = [CONVENTION_CLASS_NAMES.get(c, c) for c in list(labels.get("classes", []))[:max_classes]]
    return make_caption(labels.get("place", "an unnamed place"), labels.get("year"), classes)


def landcover_labels(ids: np.ndarray, ok: np.ndarray) -> dict:
    """`classes` (covering >= 5 %, by area) and `class_fractions` of a land-cover id map."""
    counts = np.bincount(ids[ok].astype(int), minlength=len(WORLDCOVER_CLASSES))
    frac = counts / max(counts.sum(), 1)
    order = np.argsort(-frac)
    return {"classes": [WORLDCOVER_CLASSES[i] for i in order if frac[i] >= 0.05],
            "class_fractions": {WORLDCOVER_CLASSES[i]: round(float(frac[i]), 3) for i in order if frac[i] > 0}}


# %% [markdown]
# A quick demonstration of what the containers refuse, and what they accept.

# %%
_v = np.random.default_rng(0).random((3, 2, 4, 4)).astype(np.float32)
for bad_times, why in ((["2021-01-01", "2021-01-01", "2021-02-01"], "duplicated"),
                       (["2021-03-01", "2021-01-01", "2021-02-01"], "not sorted"),
                       (["2021-01-01", "2021-02-01"], "timestamps for 3 frames")):
    try:
        SourceFrames(_v, bad_times, name="s1")
    except DataError as err:
        assert why in str(err), err
        print("refused:", err)
_nan = _v.copy(); _nan[1, 0, 2, 2] = np.nan
ok = SourceFrames.build(_nan, ["2021-01-01", "2021-01-05", "2021-02-01"], nonfinite="mask", name="s2")
assert not ok.valid[1, 2, 2] and ok.values[1, 0, 2, 2] == 0 and ok.times.dtype == np.float64

# %% [markdown]
# ## Generic loaders
#
# Two layouts cover most Earth-observation data one meets: a folder of per-date GeoTIFFs
# (one file per acquisition, bands as layers, the date in the file name), and a
# netCDF/Zarr cube read with xarray (one variable per band, dimensions `t y x`).
#
# **GeoTIFF stacks.** Bands are matched by *name* (the band descriptions, through
# `band_key`: `B02` and `B2` are the same band) when the file has them, so a 31-layer Earth
# Engine export gives exactly the four bands a spec asks for. A file whose grid differs
# from the first file's is an error unless a target `grid` is given, in which case every
# file is read through a `WarpedVRT` onto it (nearest neighbour: no value is invented). A
# truncated or corrupt file gives an error naming the file, not a GDAL traceback.

# %%
#| export data.readers
from __future__ import annotations

import re
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from aef_lit.conventions import SourceSpec, to_days
from aef_lit.data.containers import DataError, Grid, SourceFrames

_DATE_RE = re.compile(r"(\d{4})-?(\d{2})-?(\d{2})")


def band_key(name: str) -> str:
    """A band name in one spelling: upper case, no product prefix, `B02` -> `B2`."""
    return re.sub(r"^B0(\d)", r"B\1", str(name).upper().replace("S2_", "").replace("S2-L2A-", ""))


_band_key = band_key  # the name other modules used before


def open_checked(path: Path):
    """`rasterio.open(path)`, with a DataError naming the file when it is corrupt."""
    import rasterio

    try:
        src = rasterio.open(path)
    except Exception as err:  # rasterio raises RasterioIOError and friends
        size = path.stat().st_size if path.exists() else 0
        raise DataError(f"cannot open GeoTIFF {path} ({size} bytes): {err}. The file is corrupt, "
                        "truncated or not a raster; download or export it again") from err
    return src


def _read_checked(src, path: Path, indexes: list[int]) -> np.ndarray:
    try:
        return src.read(indexes)
    except Exception as err:
        raise DataError(f"cannot read GeoTIFF {path}: {err}. The file is corrupt or truncated; "
                        "download or export it again") from err


def grid_of(src) -> Grid:
    """The `Grid` of an open rasterio dataset."""
    crs = src.crs.to_string() if src.crs is not None else ""
    return Grid(crs, tuple(src.transform)[:6], src.height, src.width)


def load_geotiff_stack(
    paths: Sequence[str | Path], spec: SourceSpec, times=None, *, scale: float = 1.0,
    nodata: float | int | None = None, extra_bands: Sequence[str] = (),
    valid_fn: Callable[[dict[str, np.ndarray]], np.ndarray] | None = None,
    grid: Grid | None = None, empty: str = "raise",
) -> tuple[SourceFrames, Grid]:
    """Read one GeoTIFF per date into `SourceFrames` and its `Grid`.

    Args:
        paths: one file per frame (any order when the dates come from the names).
        spec: the source; its band names select layers by description when present,
            otherwise the file must have exactly `spec.channels` layers.
        times: one timestamp per file; by default parsed from the file names (YYYY-MM-DD).
        scale: multiplies the spec's bands (1e-4 for Sentinel-2 DN).
        nodata: value marking missing pixels (default: the file's own nodata, if any).
        extra_bands, valid_fn: further layers (e.g. "SCL") and a map from {band name:
            T H W array} to a bool `T H W` validity mask.
        grid: read every file onto this grid (nearest); else all files must share one grid.
        empty: "raise" or "drop" frames without a valid pixel.
    """
    paths = [Path(p) for p in paths]
    if not paths:
        raise DataError(f"{spec.name}: no GeoTIFF paths given")
    if times is None:
        found = [_DATE_RE.search(p.name) for p in paths]
        if not all(found):
            raise DataError(f"{spec.name}: no date in file name {paths[found.index(None)].name}; pass times=")
        times = to_days(["-".join(m.groups()) for m in found])
    times = to_days(times) if np.asarray(times).dtype.kind in "MUSO" else np.asarray(times, np.float64)
    if len(times) != len(paths):
        raise DataError(f"{spec.name}: {len(times)} timestamps for {len(paths)} files")
    order = np.argsort(times, kind="stable")
    paths, times = [paths[i] for i in order], times[order]
    values, valids, ref = [], [], grid
    for path in paths:
        with open_checked(path) as src:
            g = grid_of(src)
            if ref is None:
                ref = g
            want = list(spec.bands) + list(extra_bands)
            descr = [band_key(d) if d else None for d in src.descriptions]
            if all(descr) and all(band_key(b) in descr for b in want):
                idx = [descr.index(band_key(b)) + 1 for b in want]
            elif src.count == len(want):
                idx = list(range(1, src.count + 1))
            else:
                raise DataError(f"{spec.name}: wrong band count: {path.name} has {src.count} bands "
                                f"({', '.join(d or '?' for d in src.descriptions[:6])}...) but the spec "
                                f"asks for {len(want)} ({', '.join(want)}) and the names do not match")
            nd = src.nodata if nodata is None else nodata
            if g.mismatch(ref):
                if grid is None:
                    ref.check_same(g, f"between {paths[0].name} and {path.name}")
                from rasterio.enums import Resampling
                from rasterio.vrt import WarpedVRT

                with WarpedVRT(src, crs=ref.rio_crs, transform=ref.affine, width=ref.width,
                               height=ref.height, resampling=Resampling.nearest,
                               nodata=0 if nd is None else nd) as vrt:
                    arr = _read_checked(vrt, path, idx)
                    nd = 0 if nd is None else nd
            else:
                arr = _read_checked(src, path, idx)
        arr = arr.astype(np.float32)
        band = arr[: spec.channels]
        ok = np.ones(arr.shape[1:], bool) if nd is None else ~(band == nd).all(axis=0)
        values.append(band * scale)
        valids.append(ok)
        if valid_fn is not None:
            valids[-1] = ok & valid_fn({b: a[None] for b, a in zip(want, arr)})[0]
    frames = SourceFrames.build(np.stack(values), times, np.stack(valids), name=spec.name,
                                nonfinite="mask" if nodata is not None else "raise", empty=empty)
    return frames, ref


# %% [markdown]
# **Cubes.** `load_xarray_cube` takes a dataset (or a path) and the variable names of the
# spec's bands, finds the time dimension (`t` or `time`; none for a timeless layer), the
# grid from the coordinate vectors, and the CRS from the CF `grid_mapping` variable.
# Integer nodata must be named explicitly: the WorldCereal cube declares its 65535 only as
# a *global* `_FillValue`, which xarray ignores (see its reader below).

# %%
#| export data.readers
def _cube_crs(ds, var) -> str:
    gm = ds[var].attrs.get("grid_mapping") or ds[var].encoding.get("grid_mapping")
    if gm and gm in ds.variables:
        attrs = ds[gm].attrs
        for key in ("crs_wkt", "spatial_ref"):
            if attrs.get(key):
                return str(attrs[key])
    if "lat" in ds.dims and "lon" in ds.dims:
        return "EPSG:4326"
    raise DataError(f"cannot find the CRS of {var!r}; pass crs=")


def load_xarray_cube(
    ds_or_path, spec: SourceSpec, var_names: Sequence[str] | None = None, *,
    scale: float = 1.0, offset: float = 0.0, nodata: float | int | None = None,
    transform: Callable[[np.ndarray], np.ndarray] | None = None,
    valid: np.ndarray | None = None, crs: str | None = None, time: float | int | None = None,
    empty: str = "raise", nonfinite: str = "raise", keep_cloud: bool = False,
) -> tuple[SourceFrames, Grid]:
    """Read the variables of one source from an xarray/netCDF cube.

    Values become `raw * scale + offset` (then `transform`, if given); pixels equal to
    `nodata` (any band) and, when given, where `valid` (`T H W`) is False are invalid.
    With `keep_cloud`, the finite values under pixels that only `valid` rules out (clouds,
    not nodata) are kept as the frames' `cloud_values`.
    A cube without a time dimension gives one frame at `time` (days; default 0).
    """
    import xarray as xr

    ds = xr.open_dataset(ds_or_path, mask_and_scale=False) if isinstance(ds_or_path, (str, Path)) else ds_or_path
    var_names = list(var_names or spec.bands)
    if len(var_names) != spec.channels:
        raise DataError(f"{spec.name}: wrong band count: {len(var_names)} variables for the spec's "
                        f"{spec.channels} bands ({', '.join(spec.bands)})")
    missing = [v for v in var_names if v not in ds.variables]
    if missing:
        raise DataError(f"{spec.name}: variables {missing} not in the cube (has {sorted(ds.data_vars)})")
    da0 = ds[var_names[0]]
    tdim = next((d for d in da0.dims if d in ("t", "time")), None)
    ydim, xdim = da0.dims[-2], da0.dims[-1]
    grid = Grid.from_coords(ds[xdim].values, ds[ydim].values, crs or _cube_crs(ds, var_names[0]))
    raw = np.stack([np.asarray(ds[v].transpose(*((tdim,) if tdim else ()), ydim, xdim).values)
                    for v in var_names], axis=1 if tdim else 0)
    if tdim is None:
        raw, times = raw[None], np.array([0.0 if time is None else time])
    else:
        times = to_days(ds[tdim].values)
    ok = np.ones((raw.shape[0], *raw.shape[2:]), bool)
    if nodata is not None:
        ok &= ~(raw == nodata).any(axis=1)
    observed = ok.copy()  # not nodata
    if valid is not None:
        ok &= np.asarray(valid, bool)
    vals = raw.astype(np.float64) * scale + offset
    if transform is not None:
        with np.errstate(divide="ignore", invalid="ignore"):
            vals = transform(vals)
    cloud = None
    if keep_cloud:
        under = (observed & ~ok)[:, None] & np.isfinite(vals).all(axis=1, keepdims=True)
        cloud = np.where(under, np.nan_to_num(vals), 0.0)
    if nonfinite == "raise":
        vals = np.where(ok[:, None], vals, 0.0)  # values under nodata are not ours to judge
    frames = SourceFrames.build(vals, times, ok, name=spec.name, nonfinite=nonfinite, empty=empty,
                                cloud_values=cloud)
    return frames, grid


# %% [markdown]
# ## A synthetic stand-in
#
# On a fresh machine without `eo_real/`, every notebook must still run. The synthetic
# generator makes a seeded `Sample` with the structure that matters for AEF:
#
# * **land cover with distinct phenology**: field-like parcels (a Voronoi partition) of the
#   eight WorldCover classes, each with a vegetation-fraction curve over the year (cropland:
#   a sharp summer peak and a harvest; grassland: a spring peak; forest: high and flat;
#   built-up, bare, water: flat and low) mixing a red-edge vegetation spectrum linearly
#   with the class's background (soil, urban, water);
# * **clouds**: bright, smooth blobs over a Beta-distributed fraction of each optical frame,
#   marked `valid = False` (so, like every invalid pixel, zeroed by `SourceFrames`);
# * **S1 speckle**: per-class backscatter in dB rising with crop biomass, times Gamma
#   speckle (4 looks), and an ascending/descending flag as `meta`;
# * **irregular dates**: each source's own random acquisition days at its overpass hour;
# * `dem` (a smooth terrain) and `landcover` (the parcel classes) as targets.
#
# It is a *stand-in* for the real data's structure, not a simulator: the radiometry is
# plausible, not calibrated, with no atmosphere, topography effects or cloud shadows.

# %%
#| export data.synthetic
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


# %% [markdown]
# ## The synthetic classes have distinct phenology
#
# The property the generator exists for: the mean NDVI of clear pixels of each class
# follows its own curve over the year. We check that cropland peaks in summer far above its
# winter value, while forest stays high and water stays below zero.

# %%
import matplotlib.pyplot as plt

from aef_lit.conventions import WORLDCOVER_CLASSES, to_days

syn = synthetic_sample(height=64, width=64, n_frames={"s2": 40, "s1": 20, "landsat": 10}, seed=seed)
s2 = syn.sources["s2"]
red, nir = s2.values[:, syn.specs["s2"].bands.index("B04")], s2.values[:, syn.specs["s2"].bands.index("B08")]
ndvi = (nir - red) / (nir + red + 1e-6)
cls_map = syn.labels["class_map"]
doy = s2.times - to_days(["2021-01-01"])[0]
fig, ax = plt.subplots(1, 2, figsize=(11, 3.4))
curves = {}
for k, name in enumerate(WORLDCOVER_CLASSES):
    m = (cls_map == k)[None] & s2.valid
    if m.sum(axis=(1, 2)).min() == 0:
        continue
    curves[name] = np.array([ndvi[i][m[i]].mean() for i in range(s2.T)])
    ax[0].plot(doy, curves[name], "o-", ms=3, label=name)
ax[0].set(xlabel="day of 2021", ylabel="mean NDVI of clear pixels", title="synthetic phenology per class")
ax[0].legend(fontsize=7, ncol=2)
ax[1].imshow(cls_map, cmap="tab10", vmin=0, vmax=9, interpolation="nearest")
ax[1].set_title("synthetic land-cover parcels"); ax[1].axis("off")
plt.tight_layout(); plt.show()
summer, winter = (doy > 150) & (doy < 220), (doy < 60) | (doy > 320)
if "cropland" in curves:
    assert curves["cropland"][summer].mean() - curves["cropland"][winter].mean() > 0.4
if "tree" in curves:
    assert curves["tree"].min() > 0.5
if "water" in curves:
    assert curves["water"].max() < 0.1
print(f"synthetic: {syn.summary()}")

# %% [markdown]
# ## Summary
#
# * A `Sample` is a grid plus, per source, frames in physical units with float64
#   timestamps and a validity mask; construction refuses NaN/inf, unsorted, duplicated or
#   miscounted timestamps, empty frames, wrong band counts and grid mismatches, each with
#   a message that says what to do.
# * Two generic loaders read per-date GeoTIFF stacks and xarray cubes into it.
# * The synthetic generator's land-cover classes have distinct phenology, clouds, speckle
#   and irregular dates; it stands in wherever the real samples are absent.
#
# *The real sites* (next) reads the real samples into the same containers.
