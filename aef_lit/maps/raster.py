# generated from notebooks/28_embedding_maps.py by tools/nb_export.py: do not edit.
# Edit the notebook, then run `python tools/nb_export.py`.

from __future__ import annotations

import os
import re
import warnings
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from aef_lit.conventions import SourceSpec, from_days, to_days
from aef_lit.data import SCL_VALID, DataError, Grid, SourceFrames
from aef_lit.data import band_key as _band_key

_NAME_DATE = re.compile(r"(?<!\d)((?:19|20)\d{2})-?(0[1-9]|1[0-2])-?(0[1-9]|[12]\d|3[01])(?!\d)")
_TAG_DATE = re.compile(r"((?:19|20)\d{2})[:\-](\d{2})[:\-](\d{2})")
_BAND_IN_NAME = re.compile(r"(?:^|[_\-.])(B(?:0?[1-9]|1[0-2]|8A)|SCL)(?:[_\-.]|$)", re.IGNORECASE)
DATE_TAGS = ("TIFFTAG_DATETIME", "ACQUISITION_DATE", "DATE_ACQUIRED", "SENSING_TIME", "DATETIME")


def band_key(name: str) -> str:
    """Canonical band name: `B02`, `b2`, `S2_B2` -> `B2`; `B8A` stays (chapter 2's rule, spaces stripped)."""
    return _band_key(str(name).strip())


def acquisition_day(path: str | Path, tags: Mapping[str, str] | None = None) -> float | None:
    """Days since 1970 of a file's acquisition: its date tag, else a date in its name, else None."""
    for k in DATE_TAGS:
        m = _TAG_DATE.search(str((tags or {}).get(k, "")))
        if m:
            return float(to_days(["-".join(m.groups())])[0])
    m = _NAME_DATE.search(Path(path).name)
    return float(to_days(["-".join(m.groups())])[0]) if m else None


@dataclass(frozen=True)
class Layer:
    """One band of one file: where it is, which band, on which grid, of which type."""

    path: str
    index: int  # 1-based band index in the file
    band: str  # canonical name (band_key)
    grid: Grid
    integer: bool
    nodata: float | None


@dataclass(frozen=True)
class Acquisition:
    day: float
    layers: dict  # band key -> Layer


def _describe(path: Path, date: str | None) -> tuple[float, list[Layer]]:
    import rasterio

    try:
        src = rasterio.open(path)
    except Exception as err:
        raise DataError(f"cannot open {path}: {err}. Is it a raster (GeoTIFF, JPEG2000)?") from err
    with src:
        if src.crs is None or src.transform.is_identity:
            raise DataError(f"{path.name} has no georeference (CRS and transform); aef-embed needs both")
        day = float(to_days([date])[0]) if date else acquisition_day(path, src.tags())
        if day is None:
            raise DataError(f"no acquisition date for {path.name}: neither a TIFFTAG_DATETIME tag nor a "
                            "YYYY-MM-DD / YYYYMMDD in its name; name the file after its date or pass "
                            "--date YYYY-MM-DD")
        grid = Grid(src.crs.to_string(), tuple(src.transform)[:6], src.height, src.width)
        integer = np.dtype(src.dtypes[0]).kind in "iu"
        names = [band_key(d) if d else None for d in src.descriptions]
        if src.count == 1 and not names[0]:
            m = _BAND_IN_NAME.search(path.stem)
            names = [band_key(m.group(1)) if m else None]
        layers = [Layer(str(path), i + 1, n, grid, integer, src.nodata) for i, n in enumerate(names) if n]
    return day, layers


@dataclass
class RasterStack:
    """The acquisitions of one model source (e.g. `s2`) in a list of files, read window by window.

    Build it with `RasterStack.from_files`. `grid` is the output grid (default: the grid of the
    finest layer); `scale` multiplies integer optical values (1e-4: Sentinel-2 digital numbers
    to reflectance).
    """

    spec: SourceSpec
    acquisitions: list
    grid: Grid
    scale: float = 1e-4
    mask_band: str | None = "SCL"

    @classmethod
    def from_files(cls, paths: Sequence[str | Path], spec: SourceSpec, *, date: str | None = None,
                   grid: Grid | None = None, scale: float | None = None) -> "RasterStack":
        """Group the files' layers into acquisitions of `spec`'s bands.

        Args:
            paths: GeoTIFF / JPEG2000 files: one per acquisition with named bands, or one per band.
            spec: the model source they feed (its band names are looked up with aliases).
            date: the acquisition date of every file (YYYY-MM-DD) when the files carry none.
            grid: the output grid (default: the finest layer's).
            scale: factor for integer optical values (default 1e-4; pass 1 for values already
                in reflectance stored as integers, which is rare).
        """
        paths = [Path(p) for p in paths]
        if not paths:
            raise DataError("no input files given")
        missing = [str(p) for p in paths if not p.exists()]
        if missing:
            raise DataError(f"no such file(s): {', '.join(missing)}")
        want = [band_key(b) for b in spec.bands]
        by_day: dict[float, dict[str, Layer]] = {}
        for p in paths:
            day, layers = _describe(p, date)
            for lay in layers:
                if lay.band in want or lay.band == "SCL":
                    slot = by_day.setdefault(day, {})
                    if lay.band in slot and slot[lay.band].path != lay.path:
                        raise DataError(f"band {lay.band} of the acquisition of {_day_str(day)} is in two files: "
                                        f"{Path(slot[lay.band].path).name} and {p.name}")
                    slot.setdefault(lay.band, lay)
        by_day = {d: v for d, v in by_day.items() if set(v) - {"SCL"}}  # a mask alone is no acquisition
        if not by_day:
            raise DataError(f"none of the files has a band of {spec.name!r} ({', '.join(spec.bands)}); band "
                            "names are read from the band descriptions or from the file names (…_B02…)")
        acq = []
        for day in sorted(by_day):
            lack = [b for b in want if b not in by_day[day]]
            if lack:
                raise DataError(f"the acquisition of {_day_str(day)} lacks band(s) {', '.join(lack)} of "
                                f"{spec.name!r}: files {sorted({Path(v.path).name for v in by_day[day].values()})}")
            acq.append(Acquisition(day, by_day[day]))
        if grid is None:
            cands = [lay.grid for a in acq for b, lay in a.layers.items() if b != "SCL"]
            grid = min(cands, key=lambda g: abs(g.transform[0] * g.transform[4]))
        if scale is None:
            scale = 1e-4 if spec.modality == "optical" else 1.0
        res = abs(grid.transform[0])
        if not 5.0 <= res <= 20.0 and "4326" not in grid.crs:
            warnings.warn(f"the input grid has {res:g} m pixels; the model was trained at 10-20 m and embeds "
                          "each pixel of the grid it is given: resample the inputs if that is not what you want",
                          stacklevel=2)
        return cls(spec, acq, grid, float(scale))

    @property
    def days(self) -> np.ndarray:
        return np.array([a.day for a in self.acquisitions], np.float64)

    def fingerprint(self) -> list:
        """What identifies the inputs (paths, sizes, modification times, bands) for resuming."""
        out = []
        for a in self.acquisitions:
            for b, lay in sorted(a.layers.items()):
                st = os.stat(lay.path)
                out.append([a.day, b, lay.path, lay.index, st.st_size, int(st.st_mtime)])
        return out

    def read(self, row: int, col: int, height: int, width: int,
             period: tuple[float, float] | None = None) -> SourceFrames | None:
        """`SourceFrames` of the window (rows/cols of `grid`; may reach outside it: those pixels are
        invalid) with the acquisitions inside `period`, or None when there is none."""
        keep = [a for a in self.acquisitions if period is None or period[0] <= a.day < period[1]]
        if not keep:
            return None
        want = [band_key(b) for b in self.spec.bands]
        values = np.zeros((len(keep), len(want), height, width), np.float32)
        valid = np.zeros((len(keep), height, width), bool)
        with _OpenFiles() as files:
            for t, a in enumerate(keep):
                ok = np.ones((height, width), bool)
                for c, b in enumerate(want):
                    v, inside = _read_layer(files, a.layers[b], self.grid, row, col, height, width, "bilinear")
                    if a.layers[b].integer and self.spec.modality == "optical":
                        v = v * self.scale
                    values[t, c] = v
                    ok &= inside
                if self.mask_band and self.mask_band in a.layers:
                    scl, inside = _read_layer(files, a.layers[self.mask_band], self.grid, row, col, height, width,
                                              "nearest")
                    ok &= inside & np.isin(scl, SCL_VALID)
                valid[t] = ok & np.isfinite(values[t]).all(0)
        values[~np.repeat(valid[:, None], len(want), 1)] = 0.0
        return SourceFrames(values, np.array([a.day for a in keep]), valid, None, self.spec.name)


def _day_str(day: float) -> str:
    return str(from_days([day])[0])[:10]


def _valid(a: np.ndarray, nd) -> np.ndarray:
    return np.isfinite(a) if nd is None else (a != nd) & np.isfinite(a)


class _OpenFiles:
    """The files of one read, each opened once, and their warped views onto a grid, each made once."""

    def __init__(self):
        self._stack = ExitStack()
        self._open: dict = {}

    def __enter__(self) -> "_OpenFiles":
        return self

    def __exit__(self, *exc) -> None:
        self._open.clear()
        self._stack.close()

    def src(self, path: str):
        if path not in self._open:
            import rasterio

            self._open[path] = self._stack.enter_context(rasterio.open(path))
        return self._open[path]

    def warped(self, path: str, grid: Grid, how: str, nd):
        """The file seen on `grid` through a `WarpedVRT` with `how` resampling (one per file, method, nodata)."""
        key = (path, how, nd)
        if key not in self._open:
            from rasterio.enums import Resampling
            from rasterio.vrt import WarpedVRT

            self._open[key] = self._stack.enter_context(WarpedVRT(
                self.src(path), crs=grid.rio_crs, transform=grid.affine, width=grid.width, height=grid.height,
                resampling=getattr(Resampling, how), src_nodata=nd, nodata=0 if nd is None else nd))
        return self._open[key]


def _read_layer(files: _OpenFiles, lay: Layer, grid: Grid, row: int, col: int, h: int, w: int, resampling: str):
    """One band over a window of `grid` (clipped to the raster; outside = invalid), and where it is valid."""
    from rasterio.windows import Window

    out = np.zeros((h, w), np.float32)
    inside = np.zeros((h, w), bool)
    r0, c0, r1, c1 = max(row, 0), max(col, 0), min(row + h, grid.height), min(col + w, grid.width)
    if r1 <= r0 or c1 <= c0:
        return out, inside
    win = Window(c0, r0, c1 - c0, r1 - r0)
    src = files.src(lay.path)
    nd = src.nodata if src.nodata is not None else (0 if lay.integer else None)
    if lay.grid.mismatch(grid):
        a = files.warped(lay.path, grid, resampling, nd).read(lay.index, window=win).astype(np.float32)
        if resampling != "nearest":  # bilinear leaves the outermost half pixel empty: nearest fills it
            near = files.warped(lay.path, grid, "nearest", nd).read(lay.index, window=win).astype(np.float32)
            gap = _valid(a, nd) != _valid(near, nd)
            a[gap] = near[gap]
    else:
        a = src.read(lay.index, window=win).astype(np.float32)
    ok = _valid(a, nd)
    out[r0 - row:r1 - row, c0 - col:c1 - col] = a
    inside[r0 - row:r1 - row, c0 - col:c1 - col] = ok
    return out, inside
