# generated from notebooks/02_data.py by tools/nb_export.py: do not edit.
# Edit the notebook, then run `python tools/nb_export.py`.

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
