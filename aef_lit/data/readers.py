# generated from notebooks/02_data.py by tools/nb_export.py: do not edit.
# Edit the notebook, then run `python tools/nb_export.py`.

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
