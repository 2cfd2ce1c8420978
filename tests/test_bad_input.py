"""Bad input gets a clear error a user can act on (issue: chapters 2-3, bad input)."""
from __future__ import annotations

import numpy as np
import pytest

from aef_lit.conventions import DEM, S2
from aef_lit.data import (
    GREENEARTHNET_S2,
    DataError,
    Grid,
    Sample,
    SourceFrames,
    load_geotiff_stack,
    load_xarray_cube,
    synthetic_sample,
)
from aef_lit.data.preprocess import collate

UTM = Grid("EPSG:32631", (10.0, 0.0, 600_000.0, 0.0, -10.0, 5_650_000.0), 8, 8)


def _frames(T=3, C=1, H=8, W=8, times=None, **kw):
    times = np.arange(T, dtype=np.float64) + 18_000 if times is None else times
    return SourceFrames(np.ones((T, C, H, W), np.float32), times, **kw)


def _write_tif(path, count=4, grid=UTM, value=1000):
    import rasterio

    with rasterio.open(path, "w", driver="GTiff", height=grid.height, width=grid.width, count=count,
                       dtype="uint16", crs=grid.crs, transform=grid.affine) as dst:
        dst.write(np.full((count, grid.height, grid.width), value, np.uint16))
    return path


def test_wrong_band_count_for_a_source():
    with pytest.raises(DataError, match=r"'s2' has 3 bands but its spec lists 10 .*wrong band count"):
        Sample("x", UTM, {"s2": _frames(C=3, name="s2")}, {"s2": S2})


def test_wrong_band_count_in_a_geotiff(tmp_path):
    p = _write_tif(tmp_path / "a_2021-01-01.tif", count=3)
    with pytest.raises(DataError, match=r"wrong band count: a_2021-01-01.tif has 3 bands .* asks for 4"):
        load_geotiff_stack([p], GREENEARTHNET_S2)


def test_wrong_band_count_in_a_cube():
    import xarray as xr

    ds = xr.Dataset({"B02": (("y", "x"), np.zeros((2, 2)))}, coords={"y": [1.0, 0.0], "x": [0.0, 1.0]})
    with pytest.raises(DataError, match="wrong band count: 1 variables for the spec's 4 bands"):
        load_xarray_cube(ds, GREENEARTHNET_S2, ["B02"])


def test_all_nodata_frames():
    valid = np.ones((3, 8, 8), bool)
    valid[1] = False
    with pytest.raises(DataError, match=r"frames \[1\] .* have no valid pixel .*empty='drop'"):
        _frames(valid=valid, name="s2")


def test_all_nodata_geotiff_frame(tmp_path):
    p = _write_tif(tmp_path / "a_2021-01-01.tif", count=1, value=0)
    with pytest.raises(DataError, match="no valid pixel"):
        load_geotiff_stack([p], DEM, nodata=0)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_nan_and_inf_values(bad):
    v = np.ones((2, 1, 8, 8), np.float32)
    v[1, 0, 3, 3] = bad
    with pytest.raises(DataError, match=r"1 NaN/inf values in frames \[1\].*nonfinite='mask'"):
        SourceFrames(v, [1.0, 2.0], name="s2")


def test_nan_is_refused_even_under_an_invalid_pixel():
    v = np.ones((1, 1, 8, 8), np.float32)
    v[0, 0, 0, 0] = np.nan
    valid = np.ones((1, 8, 8), bool)
    valid[0, 0, 0] = False
    with pytest.raises(DataError, match="NaN/inf"):
        SourceFrames(v, [1.0], valid)


def test_timestamps_unsorted():
    with pytest.raises(DataError, match=r"not sorted: frame 2 .* np.argsort"):
        _frames(times=np.array([1.0, 3.0, 2.0]))


def test_timestamps_duplicated():
    with pytest.raises(DataError, match=r"duplicated timestamp 1970-01-03.*frames 1 and 2"):
        _frames(times=np.array([1.0, 2.0, 2.0]))


def test_timestamps_not_matching_the_frame_count(tmp_path):
    with pytest.raises(DataError, match="2 timestamps for 3 frames"):
        _frames(times=np.array([1.0, 2.0]))
    p = _write_tif(tmp_path / "x.tif", count=1)
    with pytest.raises(DataError, match="2 timestamps for 1 files"):
        load_geotiff_stack([p], DEM, times=["2021-01-01", "2021-01-02"])


def test_crs_mismatch_between_sources():
    other = Grid("EPSG:32632", UTM.transform, 8, 8)
    with pytest.raises(DataError, match=r"CRS/grid mismatch between sources 's2' and 'dem': CRS EPSG:32631"):
        Sample.from_parts("x", {"s2": (_frames(C=10), UTM), "dem": (_frames(T=1), other)}, {"s2": S2, "dem": DEM})


def test_grid_mismatch_between_geotiffs(tmp_path):
    shifted = Grid(UTM.crs, (10.0, 0.0, 600_100.0, 0.0, -10.0, 5_650_000.0), 8, 8)
    a = _write_tif(tmp_path / "a_2021-01-01.tif", count=1)
    b = _write_tif(tmp_path / "b_2021-01-02.tif", count=1, grid=shifted)
    with pytest.raises(DataError, match=r"CRS/grid mismatch between a_2021-01-01.tif and b_2021-01-02.tif.*resample"):
        load_geotiff_stack([a, b], DEM)


def test_grid_size_mismatch_in_sample_and_collate():
    with pytest.raises(DataError, match="CRS/grid mismatch: resample it first"):
        Sample("x", UTM, {"dem": _frames(T=1, H=4)}, {"dem": DEM})
    a, b = synthetic_sample(height=16, width=16), synthetic_sample(height=32, width=32)
    with pytest.raises(DataError, match="different grid sizes .* crop .* or resample"):
        collate([a, b], list(a.specs.values()), {"s2": 4})


def test_corrupt_truncated_geotiff(tmp_path):
    good = _write_tif(tmp_path / "S2_2021-01-01.tif", count=4, grid=Grid(UTM.crs, UTM.transform, 256, 256))
    data = good.read_bytes()
    bad = tmp_path / "S2_2021-01-02.tif"
    bad.write_bytes(data[: len(data) // 3])
    with pytest.raises(DataError, match=r"S2_2021-01-02.tif.*corrupt.*truncated"):
        load_geotiff_stack([good, bad], GREENEARTHNET_S2)
    junk = tmp_path / "S2_2021-01-03.tif"
    junk.write_bytes(b"II*\x00 not a tiff at all")
    with pytest.raises(DataError, match=r"cannot open GeoTIFF .*S2_2021-01-03.tif"):
        load_geotiff_stack([junk], GREENEARTHNET_S2)


def test_wrong_band_set_for_a_model():
    s = synthetic_sample(specs=(GREENEARTHNET_S2, DEM))
    with pytest.raises(DataError, match="model expects .*wrong band set"):
        collate([s], [S2, DEM], {"s2": 4})
