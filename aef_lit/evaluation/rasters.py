# generated from notebooks/26_representations.py by tools/nb_export.py: do not edit.
# Edit the notebook, then run `python tools/nb_export.py`.

from __future__ import annotations

from pathlib import Path

import numpy as np

from aef_lit.conventions import SourceSpec
from aef_lit.data import Grid, Sample, SourceFrames
from aef_lit.evaluation.methods import Method
from aef_lit.evaluation.tasks import MIN_CLASS_PIXELS, Task, _min_count
from aef_lit.maps.aef_format import AEF_NODATA, dequantise  # noqa: F401  (AEF_NODATA: re-exported)


def dequantise_aef(q: np.ndarray) -> np.ndarray:
    """The AEF product's int8 codes to float32 values, code by code: sign(q) (q / 127.5)^2, NaN at -128.

    Chapter 27's `dequantise`, applied to each code alone (on a vector it blanks every band where one is -128)."""
    q = np.asarray(q)
    return dequantise(q[..., None], axis=-1)[..., 0]


def read_embedding_raster(path: str | Path) -> tuple[np.ndarray, Grid]:
    """`(F H W float32 with NaN at nodata, Grid)` of an embedding GeoTIFF (float, or AEF int8)."""
    import rasterio

    with rasterio.open(path) as src:
        a = src.read()
        nodata = src.nodata
        grid = Grid(src.crs.to_string() if src.crs else "EPSG:4326", tuple(src.transform)[:6], src.height, src.width)
    if a.dtype == np.int8:
        return dequantise(a, axis=0), grid  # -128 in any band: no embedding at that pixel
    a = a.astype(np.float32)
    if nodata is not None and np.isfinite(nodata):
        a[a == nodata] = np.nan
    return a, grid


def warp_to(values: np.ndarray, src: Grid, dst: Grid) -> np.ndarray:
    """`F H W` values on `src` warped onto `dst` (nearest neighbour; NaN outside)."""
    from rasterio.warp import Resampling, reproject

    out = np.full((values.shape[0], *dst.shape), np.nan, np.float32)
    reproject(values.astype(np.float32), out, src_transform=src.affine, src_crs=src.rio_crs, dst_transform=dst.affine,
              dst_crs=dst.rio_crs, src_nodata=np.nan, dst_nodata=np.nan, resampling=Resampling.nearest)
    return out


class RasterMethod(Method):
    """Embeddings read from a GeoTIFF (float bands, or the AEF int8 format), warped onto each sample."""

    def __init__(self, path: str | Path, name: str | None = None):
        self.path = Path(path)
        if not self.path.exists():
            raise FileNotFoundError(f"no embedding raster at {self.path}")
        self.name = name or self.path.stem
        self.values, self.grid = read_embedding_raster(self.path)

    def key(self) -> str:
        st = self.path.stat()
        return f"raster/{self.path.resolve()}/{st.st_size}/{st.st_mtime_ns}"

    def __call__(self, samples, periods):
        return [warp_to(self.values, self.grid, s.grid) for s in samples]


def labels_task(labels_path: str | Path, kind: str | None = None, name: str | None = None) -> Task:
    """A task from a label GeoTIFF (band 1; nodata = unlabelled; integer = classes) for embedding
    rasters alone: it has no input frames, so only embeddings and `xy` can be scored on it."""
    import rasterio

    with rasterio.open(labels_path) as src:
        lab = src.read(1)
        nodata = src.nodata
        grid = Grid(src.crs.to_string() if src.crs else "EPSG:4326", tuple(src.transform)[:6], src.height, src.width)
    kind = kind or ("classification" if np.issubdtype(lab.dtype, np.integer) else "regression")
    ok = np.ones(lab.shape, bool) if nodata is None else lab != nodata
    if kind == "classification":
        values = np.unique(lab[ok])
        ids = np.where(ok, np.searchsorted(values, lab), -1).astype(np.int64)
        classes = tuple(str(v) for v in values)
        labels = _min_count([ids], MIN_CLASS_PIXELS)
    else:
        labels, classes = [np.where(ok & np.isfinite(lab), lab.astype(np.float64), np.nan)], ()
    frames = SourceFrames(np.ones((1, 1, *lab.shape), np.float32), [0.5], name="observed")
    sample = Sample(Path(labels_path).stem, grid, {"observed": frames},
                    {"observed": SourceSpec("observed", ("one",), "optical")})
    return Task(name or f"labels_{Path(labels_path).stem}", kind, [sample], labels, [(0.0, 1.0)], [sample.site],
                "blocks", classes, description=f"labels from {Path(labels_path).name}")
