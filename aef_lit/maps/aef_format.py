# generated from notebooks/27_aef_format.py by tools/nb_export.py: do not edit.
# Edit the notebook, then run `python tools/nb_export.py`.

from __future__ import annotations

import logging
import math
import operator
import os
import shutil
import tempfile
import weakref
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape

import numpy as np
from einops import rearrange
from jaxtyping import Float, Int8
from numpy.typing import ArrayLike

log = logging.getLogger("aef_lit.maps.aef_format")

AEF_DIM = 64
AEF_BANDS: tuple[str, ...] = tuple(f"A{i:02d}" for i in range(AEF_DIM))
AEF_NODATA = -128
AEF_SCALE = 127.5  # §S8.1: q = round(sign(x) sqrt|x| 127.5), clipped to +-127
# The public functions take `array | ArrayLike`: torch tensors are welcome, and a wrong dtype or
# rank reaches the function's own checks, whose messages name the mistake.


def _as_numpy(x: Any) -> np.ndarray:
    """A numpy view of an array or a torch tensor (detached, on the CPU)."""
    if hasattr(x, "detach") and hasattr(x, "cpu"):  # a torch tensor; no torch import needed
        x = x.detach().cpu()
        if str(x.dtype) == "torch.bfloat16":  # numpy has no bfloat16
            x = x.float()
        x = x.numpy()
    return np.asarray(x)


def quantise(x: Float[np.ndarray, "*shape"] | ArrayLike, axis: int = 0) -> Int8[np.ndarray, "*shape"]:
    """AEF int8 code of unit vectors along `axis` (§S8.1); non-finite vectors -> -128 in all bands.

    q = clip(round(sign(x) * sqrt(|x|) * 127.5), -127, 127), rounding half away from zero.
    Accepts numpy arrays or torch tensors; returns a numpy int8 array of the same shape.
    """
    x = _as_numpy(x)
    if x.ndim == 0:
        raise ValueError("quantise expects an array of vectors, got a scalar")
    if not (np.issubdtype(x.dtype, np.floating) or np.issubdtype(x.dtype, np.integer)):
        raise ValueError(f"quantise expects real numbers, got dtype {x.dtype}")
    x = x.astype(np.result_type(x.dtype, np.float32), copy=False)
    finite = np.isfinite(x)
    valid = finite.all(axis=axis, keepdims=True)  # one flag per vector
    x = np.where(finite, x, 0)
    magnitude = np.minimum(np.floor(np.sqrt(np.abs(x)) * AEF_SCALE + 0.5), 127)
    q = (np.sign(x) * magnitude).astype(np.int8)
    return np.where(valid, q, np.int8(AEF_NODATA))


def dequantise(q: Int8[np.ndarray, "*shape"] | ArrayLike, axis: int = 0) -> Float[np.ndarray, "*shape"]:
    """Float32 vectors of AEF int8 codes: sign(q) * (q / 127.5)**2; -128 anywhere -> NaN vector.

    Accepts numpy arrays or torch tensors of integer codes in [-128, 127].
    """
    q = _as_numpy(q)
    if q.ndim == 0:
        raise ValueError("dequantise expects an array of codes, got a scalar")
    if not np.issubdtype(q.dtype, np.integer):
        raise ValueError(
            f"dequantise expects integer (int8) codes, got dtype {q.dtype}: "
            "is the array already de-quantised?")
    if q.size and (q.min() < -128 or q.max() > 127):
        raise ValueError(
            f"AEF codes lie in [-128, 127], got values in [{q.min()}, {q.max()}]: "
            "was an int8 file read as uint8?")
    qf = q.astype(np.float32)
    x = np.sign(qf) * (qf / np.float32(AEF_SCALE)) ** 2
    nodata = (q == AEF_NODATA).any(axis=axis, keepdims=True)
    return np.where(nodata, np.float32(np.nan), x).astype(np.float32, copy=False)


def downsample_2x2(x: Float[np.ndarray, "E h w"]) -> Float[np.ndarray, "E h2 w2"]:
    """One overview step: the unit-length mean direction of each 2x2 block of vectors.

    NaN vectors (no data) are left out of the mean; a block with none valid (or whose
    vectors cancel) is NaN. Odd sizes: h2 = ceil(h / 2), w2 = ceil(w / 2).
    """
    e, h, w = x.shape
    h2, w2 = -(-h // 2), -(-w // 2)
    if (2 * h2, 2 * w2) != (h, w):  # odd edge: pad with no-data children
        padded = np.full((e, 2 * h2, 2 * w2), np.nan, dtype=np.float32)
        padded[:, :h, :w] = x
        x = padded
    kids = rearrange(x, "e (h a) (w b) -> e h w (a b)", a=2, b=2)
    valid = np.isfinite(kids).all(axis=0)  # h2 w2 4
    total = np.where(valid, kids, 0).sum(axis=-1, dtype=np.float64)  # e h2 w2
    norm = np.sqrt((total**2).sum(axis=0))
    ok = valid.any(axis=-1) & (norm > 1e-12)
    return np.where(ok, total / np.where(ok, norm, 1), np.nan).astype(np.float32)


def overview_shapes(height: int, width: int, blocksize: int) -> list[tuple[int, int]]:
    """Sizes of the overview levels (factors 2, 4, ...) until the smaller side is < blocksize."""
    shapes: list[tuple[int, int]] = []
    h, w = height, width
    while min(h, w) >= blocksize:
        h, w = -(-h // 2), -(-w // 2)
        shapes.append((h, w))
    return shapes


_COMPRESS = ("deflate", "lzw", "zstd")


def _positive_int(value: Any, name: str) -> int:
    try:
        n = operator.index(value)
    except TypeError:
        raise ValueError(f"{name} must be an integer, got {value!r}") from None
    if n <= 0:
        raise ValueError(f"{name} must be positive, got {n}")
    return n


def _check_crs(crs: Any):
    from rasterio.crs import CRS
    from rasterio.errors import CRSError

    if crs is None or crs == "":
        raise ValueError("crs is required (e.g. 'EPSG:32633'): AEF files are georeferenced")
    try:
        return CRS.from_user_input(crs)
    except (CRSError, TypeError, ValueError) as err:
        raise ValueError(f"bad crs {crs!r}: {err}") from None


def _check_transform(transform: Any, height: int):
    from affine import Affine

    if isinstance(transform, Affine):
        t = transform
    else:
        try:
            vals = [float(v) for v in transform]
        except (TypeError, ValueError):
            raise ValueError(f"transform must be an affine.Affine or 6 numbers, got {transform!r}") from None
        if len(vals) not in (6, 9):
            raise ValueError(f"transform must be an affine.Affine or 6 numbers (a, b, c, d, e, f), got {len(vals)}")
        t = Affine(*vals[:6])
    if not all(math.isfinite(v) for v in t[:6]):
        raise ValueError(f"transform has non-finite entries: {t!r}")
    if t.b != 0 or t.d != 0:
        raise ValueError(f"rotated or sheared transform (b={t.b}, d={t.d}): AEF files are north-up, b = d = 0")
    if t.a <= 0:
        raise ValueError(f"pixel width transform.a must be > 0, got {t.a}")
    if t.e >= 0:
        raise ValueError(
            f"transform.e = {t.e} must be < 0 (north-up, rows from north to south): flip the "
            f"rows of the array and use Affine({t.a}, 0, {t.c}, 0, {-t.e}, {t.f + t.e * height})")
    return t


class AEFWriter:
    """Write a (quantised) AEF embedding raster window by window as a Cloud-Optimised GeoTIFF.

    Memory is bounded by a window, never the raster. Use as a context manager::

        with AEFWriter("emb.tif", H, W, "EPSG:32633", transform) as w:
            w.write(block, row, col)  # float (E, h, w) unit vectors, NaN = no data

    On leaving the block without an error the overviews are built and the COG is renamed
    atomically onto `path`; on an error nothing is written there and the temporaries go.
    """

    def __init__(
        self, path: str | os.PathLike, height: int, width: int, crs: Any, transform: Any, *,
        bands: int = AEF_DIM, float32: bool = False, blocksize: int = 256,
        compress: str = "deflate", overviews: bool = True,
    ):
        import rasterio

        self.path = Path(path)
        self.height = _positive_int(height, "height")
        self.width = _positive_int(width, "width")
        self.bands = _positive_int(bands, "bands")
        self.blocksize = _positive_int(blocksize, "blocksize")
        if self.blocksize % 16:
            raise ValueError(f"blocksize must be a multiple of 16 (GeoTIFF tiles), got {self.blocksize}")
        if not isinstance(compress, str) or compress.lower() not in _COMPRESS:
            raise ValueError(f"compress must be one of {_COMPRESS}, got {compress!r}")
        self.compress = compress.lower()
        self.crs = _check_crs(crs)
        self.transform = _check_transform(transform, self.height)
        if self.path.is_dir():
            raise ValueError(f"{self.path} is a folder; give the path of the .tif to write")
        if not self.path.parent.is_dir():
            raise FileNotFoundError(f"folder {self.path.parent} does not exist")
        self.float32 = bool(float32)
        self.dtype = "float32" if self.float32 else "int8"
        self.nodata = float("nan") if self.float32 else AEF_NODATA
        self.names = tuple(f"A{i:02d}" for i in range(self.bands))
        self.levels = overview_shapes(self.height, self.width, self.blocksize) if overviews else []
        self._warned = False
        # temporaries: a hidden folder beside `path` (same file system: the rename is atomic)
        self._tmp = Path(tempfile.mkdtemp(prefix=f".{self.path.name}.", suffix=".aef-tmp",
                                          dir=self.path.parent))
        self._cleanup = weakref.finalize(self, shutil.rmtree, str(self._tmp), True)
        try:
            self._level0 = rasterio.open(self._tmp / "l0.tif", "w", **self._profile(self.height, self.width))
        except BaseException:
            self._cleanup()
            raise
        self._level0.descriptions = self.names
        self.closed = False

    def _profile(self, height: int, width: int) -> dict:
        """Creation options of the temporary levels: tiled like the output, fast compression."""
        return {"driver": "GTiff", "height": height, "width": width, "count": self.bands,
                "dtype": self.dtype, "nodata": self.nodata, "crs": self.crs, "transform": self.transform,
                "tiled": True, "blockxsize": self.blocksize, "blockysize": self.blocksize,
                "compress": "deflate", "zlevel": 1, "interleave": "pixel", "bigtiff": "IF_SAFER"}

    def write(self, values: Float[np.ndarray, "E h w"] | ArrayLike, row: int, col: int) -> None:
        """Write a float block of unit vectors (NaN = no data) with its top-left pixel at (row, col)."""
        from rasterio.windows import Window

        if self.closed:
            raise RuntimeError("AEFWriter is closed")
        v = _as_numpy(values)
        if v.ndim != 3:
            raise ValueError(f"values must be a block (E, h, w), got shape {v.shape}")
        if v.shape[0] != self.bands:
            raise ValueError(f"values have {v.shape[0]} bands, the raster has {self.bands} (E first: (E, h, w))")
        if not np.issubdtype(v.dtype, np.floating):
            raise ValueError(f"values must be float unit vectors, got dtype {v.dtype}: "
                             "de-quantise int8 codes first (dequantise)")
        _, h, w = v.shape
        row, col = operator.index(row), operator.index(col)
        if row < 0 or col < 0 or row + h > self.height or col + w > self.width:
            raise ValueError(f"block rows [{row}, {row + h}) x cols [{col}, {col + w}) lies outside "
                             f"the raster ({self.height} x {self.width})")
        if h == 0 or w == 0:
            return
        if not self._warned:
            n = np.linalg.norm(v, axis=0)
            n = n[np.isfinite(n)]
            if n.size and np.abs(n - 1).max() > 0.05:
                self._warned = True
                log.warning("vector lengths in [%.3g, %.3g]: AEF stores unit vectors", n.min(), n.max())
        if self.float32:
            data = v.astype(np.float32)
            data[:, ~np.isfinite(data).all(axis=0)] = np.nan  # no data in all bands at once
        else:
            data = quantise(v, axis=0)
        self._level0.write(data, window=Window(col, row, w, h))

    def _read_level(self, src, window) -> np.ndarray:
        a = src.read(window=window)
        return a.astype(np.float32) if self.float32 else dequantise(a, axis=0)

    def _build_level(self, below: Path, out: Path, height: int, width: int) -> None:
        """One overview level, tile by tile from the level below."""
        import rasterio
        from affine import Affine
        from rasterio.windows import Window

        b = self.blocksize
        profile = self._profile(height, width)
        t = self.transform  # the same extent, pixels scaled (not used by the COG; for completeness)
        profile["transform"] = Affine(t.a * self.width / width, 0.0, t.c, 0.0, t.e * self.height / height, t.f)
        with rasterio.open(below) as src, rasterio.open(out, "w", **profile) as dst:
            for r in range(0, height, b):
                for c in range(0, width, b):
                    h, w = min(b, height - r), min(b, width - c)
                    kids = Window(2 * c, 2 * r, min(2 * w, src.width - 2 * c), min(2 * h, src.height - 2 * r))
                    parent = downsample_2x2(self._read_level(src, kids))
                    data = parent if self.float32 else quantise(parent, axis=0)
                    dst.write(data, window=Window(c, r, w, h))

    def _vrt(self, files: list[str]) -> str:
        """A VRT of level 0 whose bands declare our overview files as their overviews."""
        dtype = "Float32" if self.float32 else "Int8"
        nodata = "nan" if self.float32 else str(AEF_NODATA)
        geo = ", ".join(repr(float(v)) for v in self.transform.to_gdal())
        bands = []
        for i, name in enumerate(self.names, 1):
            overviews = "".join(
                f'<Overview><SourceFilename relativeToVRT="1">{f}</SourceFilename>'
                f"<SourceBand>{i}</SourceBand></Overview>" for f in files[1:])
            bands.append(
                f'<VRTRasterBand dataType="{dtype}" band="{i}"><NoDataValue>{nodata}</NoDataValue>'
                f"<Description>{escape(name)}</Description><SimpleSource>"
                f'<SourceFilename relativeToVRT="1">{files[0]}</SourceFilename>'
                f"<SourceBand>{i}</SourceBand></SimpleSource>{overviews}</VRTRasterBand>")
        return (f'<VRTDataset rasterXSize="{self.width}" rasterYSize="{self.height}">'
                f"<SRS>{escape(self.crs.to_wkt())}</SRS><GeoTransform>{geo}</GeoTransform>"
                + "\n".join(bands) + "</VRTDataset>\n")

    def close(self) -> Path:
        """Build the overviews, write the COG and rename it onto `path`. Returns `path`."""
        import rasterio.shutil

        if self.closed:
            return self.path
        self.closed = True
        try:
            self._level0.close()
            files = ["l0.tif"]
            for k, (h, w) in enumerate(self.levels, 1):
                files.append(f"o{k}.tif")
                self._build_level(self._tmp / files[-2], self._tmp / files[-1], h, w)
            vrt = self._tmp / "aef.vrt"
            vrt.write_text(self._vrt(files))
            out = self._tmp / "out.tif"
            rasterio.shutil.copy(
                str(vrt), str(out), driver="COG", COMPRESS=self.compress.upper(),
                BLOCKSIZE=self.blocksize, BIGTIFF="IF_SAFER",
                OVERVIEWS="FORCE_USE_EXISTING" if self.levels else "NONE")
            os.replace(out, self.path)
        finally:
            self._cleanup()
        return self.path

    def abort(self) -> None:
        """Drop everything written so far; `path` is left untouched."""
        if not self.closed:
            self.closed = True
            try:
                self._level0.close()
            finally:
                self._cleanup()

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


def write_aef(path: str | os.PathLike, values: Float[np.ndarray, "E H W"] | ArrayLike, crs: Any, transform: Any,
              **kw: Any) -> Path:
    """Write an in-memory float (E, H, W) array of unit vectors as an AEF COG (see AEFWriter)."""
    v = _as_numpy(values)
    if v.ndim != 3:
        raise ValueError(f"values must be an (E, H, W) array, got shape {v.shape}")
    _, height, width = v.shape
    with AEFWriter(path, height, width, crs, transform, **kw) as writer:
        for r in range(0, height, writer.blocksize):  # strips of one tile row
            writer.write(v[:, r:r + writer.blocksize], r, 0)
    return Path(path)


def _north_up(t, height: int):
    """The transform of the same raster with rows ordered north to south."""
    from affine import Affine

    return Affine(t.a, 0.0, t.c, 0.0, -t.e, t.f + t.e * height) if t.e > 0 else t


def read_aef(path: str | os.PathLike, *, window: Any = None,
             bounds: Sequence[float] | None = None, overview_level: int | None = None):
    """Read an AEF GeoTIFF as a north-up xarray.DataArray (band, y, x), float32, NaN = no data.

    int8 files are de-quantised (-128 in any band -> NaN vector); float files are returned
    as stored (their nodata -> NaN). Bottom-up files (transform.e > 0) are flipped.
    `window`: a rasterio Window or (row_off, col_off, height, width) of the north-up raster;
    `bounds`: (left, bottom, right, top) in the file's CRS; `overview_level`: 0 = the first
    overview. CRS and transform are attached with rioxarray (`da.rio.crs`, `da.rio.transform()`).
    """
    import rasterio
    import rioxarray  # noqa: F401  (registers the .rio accessor)
    import xarray as xr
    from affine import Affine
    from rasterio.windows import Window
    from rasterio.windows import from_bounds as _from_bounds

    if window is not None and bounds is not None:
        raise ValueError("give window= or bounds=, not both")
    opts = {} if overview_level is None else {"overview_level": operator.index(overview_level)}
    with rasterio.open(path, **opts) as src:
        t, height, width = src.transform, src.height, src.width
        if t.b != 0 or t.d != 0:
            raise ValueError(f"{path}: rotated or sheared transform {t!r} is not an AEF layout")
        north = _north_up(t, height)
        if bounds is not None:
            if len(bounds) != 4:
                raise ValueError(f"bounds must be (left, bottom, right, top), got {bounds!r}")
            f = _from_bounds(*bounds, transform=north)
            r0 = max(0, math.floor(f.row_off + 1e-9))
            c0 = max(0, math.floor(f.col_off + 1e-9))
            r1 = min(height, math.ceil(f.row_off + f.height - 1e-9))
            c1 = min(width, math.ceil(f.col_off + f.width - 1e-9))
            if r1 <= r0 or c1 <= c0:
                b = src.bounds
                raise ValueError(f"bounds {tuple(bounds)} do not overlap the raster "
                                 f"({b.left}, {b.bottom}, {b.right}, {b.top}) in {src.crs}")
        elif window is not None:
            if not isinstance(window, Window):
                r0, c0, h, w = (operator.index(v) for v in window)
                window = Window(c0, r0, w, h)
            r0, c0 = int(window.row_off), int(window.col_off)
            r1, c1 = r0 + int(window.height), c0 + int(window.width)
            if r0 < 0 or c0 < 0 or r1 > height or c1 > width or r1 <= r0 or c1 <= c0:
                raise ValueError(f"window rows [{r0}, {r1}) x cols [{c0}, {c1}) is empty or outside "
                                 f"the raster ({height} x {width})")
        else:
            r0, c0, r1, c1 = 0, 0, height, width
        h, w = r1 - r0, c1 - c0
        file_row = height - r1 if t.e > 0 else r0  # bottom-up: the window's rows, counted from the top of the file
        a = src.read(window=Window(c0, file_row, w, h))
        if t.e > 0:
            a = a[:, ::-1, :]
        if a.dtype == np.int8:
            values = dequantise(a, axis=0)
        elif np.issubdtype(a.dtype, np.floating):
            values = a.astype(np.float32)
            if src.nodata is not None and not math.isnan(src.nodata):
                values[values == src.nodata] = np.nan
            values[:, ~np.isfinite(values).all(axis=0)] = np.nan  # no data in all bands at once
        else:
            raise ValueError(f"{path}: dtype {a.dtype}; an AEF file is int8 (quantised) or float")
        names = tuple(d or f"A{i:02d}" for i, d in enumerate(src.descriptions))
        crs = src.crs
    wt = Affine(north.a, 0.0, north.c + north.a * c0, 0.0, north.e, north.f + north.e * r0)
    da = xr.DataArray(
        np.ascontiguousarray(values), dims=("band", "y", "x"),
        coords={"band": list(names), "y": wt.f + wt.e * (np.arange(h) + 0.5),
                "x": wt.c + wt.a * (np.arange(w) + 0.5)},
        name="embedding", attrs={"source": str(path)})
    if crs is not None:
        da = da.rio.write_crs(crs)
    da = da.rio.write_transform(wt)
    return da.rio.write_nodata(np.nan, encoded=False)
