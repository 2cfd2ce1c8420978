"""The AEF product format (chapter 27): the int8 code, COG writing, overviews, north-up reading."""
from __future__ import annotations

import math
from itertools import pairwise

import numpy as np
import pytest
import rasterio
import torch
from affine import Affine
from rio_cogeo.cogeo import cog_validate

from aef_lit.maps.aef_format import (
    AEF_BANDS,
    AEF_NODATA,
    AEFWriter,
    dequantise,
    quantise,
    read_aef,
    write_aef,
)

E, H, W = 64, 300, 520
CRS = "EPSG:32633"
T = Affine(10.0, 0.0, 500_000.0, 0.0, -10.0, 5_200_000.0)


def _unit(shape, seed=0, axis=0):
    x = np.random.default_rng(seed).standard_normal(shape)
    return (x / np.linalg.norm(x, axis=axis, keepdims=True)).astype(np.float32)


def _field(h=H, w=W, seed=0):
    """Random unit vectors (E, h, w) with a no-data block and scattered no-data pixels."""
    x = _unit((E, h, w), seed)
    x[:, 40:90, 60:140] = np.nan
    rng = np.random.default_rng(seed + 1)
    x[:, rng.integers(0, h, 300), rng.integers(0, w, 300)] = np.nan
    return x


def _np_dequant(q):
    """The §S8.1 formula written out again, independently of the module."""
    qf = q.astype(np.float64)
    x = np.sign(qf) * (qf / 127.5) ** 2
    x[:, (q == -128).any(0)] = np.nan
    return x


def _np_parent(child):
    """Renormalised mean of the valid 2x2 children, by plain slicing (NaN where none valid)."""
    e, h, w = child.shape
    pad = np.full((e, h + h % 2, w + w % 2), np.nan)
    pad[:, :h, :w] = child
    four = np.stack([pad[:, i::2, j::2] for i in (0, 1) for j in (0, 1)])
    four = np.where(np.isnan(four).any(1, keepdims=True), 0.0, four).sum(0)
    with np.errstate(invalid="ignore"):
        return four / np.linalg.norm(four, axis=0)


def _levels(path):
    with rasterio.open(path) as src:
        out = [src.read()]
        n = len(src.overviews(1))
    for k in range(n):
        with rasterio.open(path, overview_level=k) as ov:
            out.append(ov.read())
    return out


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    folder = tmp_path_factory.mktemp("aef")
    path = folder / "emb.tif"
    field = _field()
    with AEFWriter(path, H, W, CRS, T, blocksize=128) as w:  # odd windows, not tile-aligned
        for r in range(0, H, 70):
            for c in range(0, W, 110):
                w.write(field[:, r:r + 70, c:c + 110], r, c)
    return path, field


# --- the code -------------------------------------------------------------------------------

def test_round_trip_cosine_and_length_bound():
    x = _unit((20_000, E), axis=1).astype(np.float64)
    x[:E] = np.eye(E)  # basis vectors hit the clip at 127
    y = dequantise(quantise(x, axis=1), axis=1)
    assert y.dtype == np.float32
    n = np.linalg.norm(y, axis=1)
    cos = (x * y).sum(1) / n
    assert cos.min() > 0.999
    # the error vector is at most sqrt(sum |x_i|) / 127.5 <= 64**0.25 / 127.5 long (plus the clip)
    bound = (math.sqrt(math.sqrt(E)) + 1) / 127.5
    assert np.abs(n - 1).max() < bound
    assert np.median(np.abs(n - 1)) < 0.003


def test_linear_dequantisation_mistake_is_caught_by_lengths():
    q = quantise(_unit((5000, E), axis=1), axis=1)
    right = np.linalg.norm(dequantise(q, axis=1), axis=1)
    wrong = np.linalg.norm(q / 127, axis=1)  # the common user mistake
    assert (np.abs(right - 1) < 0.03).all()
    assert (np.abs(wrong - 1) > 1.0).all()


def test_formula_values_and_rounding():
    x = np.array([0.0, 1.0, -1.0, 0.25, -0.25, 1e-6, 2.0, (100.5 / 127.5) ** 2 + 1e-9])
    q = quantise(x[:, None], axis=1)[:, 0]
    assert q.tolist() == [0, 127, -127, 64, -64, 0, 127, 101]  # 0.5 * 127.5 = 63.75 -> 64
    assert dequantise(np.array([[127], [-64], [0]], np.int8), axis=1)[:, 0].tolist() == pytest.approx(
        [(127 / 127.5) ** 2, -(64 / 127.5) ** 2, 0.0])


def test_quantise_of_dequantise_is_the_identity_on_codes():
    """Every int8 code survives a de-quantise / quantise round trip (int8 map parts rely on it), nodata too."""
    codes = np.arange(-127, 128, dtype=np.int8)
    assert np.array_equal(quantise(dequantise(codes[None, :])), codes[None, :])  # one band per vector
    rng = np.random.default_rng(0)
    q = rng.integers(-127, 128, (E, 50), dtype=np.int8)
    q[:, 7] = AEF_NODATA  # a nodata vector
    assert np.array_equal(quantise(dequantise(q)), q)


def test_nodata_is_all_bands_at_once():
    x = _unit((E, 4, 5))
    x[17, 1, 2] = np.nan
    x[3, 3, 4] = np.inf
    q = quantise(x)
    assert (q[:, 1, 2] == AEF_NODATA).all() and (q[:, 3, 4] == AEF_NODATA).all()
    assert (q[:, 0, 0] != AEF_NODATA).all() and (q != AEF_NODATA).sum() == E * 18
    q = quantise(_unit((E, 4, 5)))
    q[5, 2, 2] = AEF_NODATA  # one band
    d = dequantise(q)
    assert np.isnan(d[:, 2, 2]).all() and np.isfinite(np.delete(d.reshape(E, -1), 12, axis=1)).all()


def test_torch_input_matches_numpy():
    x = _unit((E, 3, 4))
    assert np.array_equal(quantise(torch.from_numpy(x)), quantise(x))
    q = quantise(x)
    assert np.array_equal(dequantise(torch.from_numpy(q)), dequantise(q))


def test_dequantise_rejects_float_and_uint8():
    with pytest.raises(ValueError, match="already de-quantised"):
        dequantise(np.zeros((E, 2), np.float32))
    with pytest.raises(ValueError, match="uint8"):
        dequantise(quantise(_unit((E, 8))).view(np.uint8))


# --- the COG ---------------------------------------------------------------------------------

def test_cog_is_valid_and_has_the_published_layout(written):
    path, _ = written
    assert cog_validate(str(path), quiet=True) == (True, [], [])
    with rasterio.open(path) as src:
        assert src.driver == "GTiff" and src.count == 64 and src.descriptions == AEF_BANDS
        assert set(src.dtypes) == {"int8"} and src.nodata == AEF_NODATA
        assert src.profile["tiled"] and src.block_shapes[0] == (128, 128)
        assert src.compression is not None and src.compression.name.lower() == "deflate"
        assert src.transform == T and src.transform.e < 0 and src.crs.to_epsg() == 32633
        assert src.overviews(1) == [2, 4]  # 300 -> 150 -> 75 < 128
    assert sorted(p.name for p in path.parent.iterdir()) == ["emb.tif"]  # no temporaries left


def test_level0_equals_quantised_input(written):
    path, field = written
    with rasterio.open(path) as src:
        codes = src.read()
    assert np.array_equal(codes, quantise(field))


def test_overviews_are_renormalised_means_of_dequantised_children(written):
    path, _ = written
    levels = _levels(path)
    assert len(levels) == 3
    for child, parent in pairwise(levels):
        expect = quantise(_np_parent(_np_dequant(child)))
        # same no data, same codes (float32 vs float64 rounding may move a rare code by one)
        assert np.array_equal(parent == AEF_NODATA, expect == AEF_NODATA)
        diff = np.abs(parent.astype(int) - expect.astype(int))
        assert diff.max() <= 1 and (diff == 0).mean() > 0.999
        n = np.linalg.norm(_np_dequant(parent), axis=0)
        assert np.nanmax(np.abs(n - 1)) < 0.03  # unit length within quantisation error
    # inside the no-data block (rows 40:90, cols 60:140) the first overview is no data
    assert (levels[1][:, 20:45, 30:70] == AEF_NODATA).all()
    assert (levels[1][:, 19, 30:70] != AEF_NODATA).all()  # one valid child row is enough


def test_overviews_differ_from_naive_int8_averaging(tmp_path):
    """Four orthogonal children: the mean of codes has length 0.13, ours 1 (and GDAL's average agrees with naive)."""
    x = np.zeros((E, 64, 64), np.float32)
    for i, (r, c) in enumerate([(0, 0), (0, 1), (1, 0), (1, 1)]):
        x[i, r::2, c::2] = 1.0
    path = write_aef(tmp_path / "orth.tif", x, CRS, T, blocksize=32)
    ours = _np_dequant(_levels(path)[1])
    naive = _np_dequant(np.round(quantise(x).reshape(E, 32, 2, 32, 2).mean((2, 4))).astype(np.int8))
    assert np.abs(np.linalg.norm(ours, axis=0) - 1).max() < 0.01
    assert np.abs(np.linalg.norm(naive, axis=0) - 0.126).max() < 0.01
    assert ours[0, 0, 0] == pytest.approx(0.5, abs=0.01) and naive[0, 0, 0] < 0.1
    # what GDAL's own resampling would have stored
    gdal = tmp_path / "gdal.tif"
    with rasterio.open(path) as src:
        prof, codes = src.profile, src.read()
    prof.update(driver="GTiff")
    with rasterio.open(gdal, "w", **prof) as dst:
        dst.write(codes)
        dst.build_overviews([2], rasterio.enums.Resampling.average)
    with rasterio.open(gdal, overview_level=0) as ov:
        g = _np_dequant(ov.read())
    assert np.abs(np.linalg.norm(g, axis=0) - 1).min() > 0.5


def test_odd_sizes_overviews(tmp_path):
    field = _field(150, 211, seed=3)
    path = write_aef(tmp_path / "odd.tif", field, CRS, T, blocksize=32)
    levels = _levels(path)
    assert [lv.shape[1:] for lv in levels] == [(150, 211), (75, 106), (38, 53), (19, 27)]
    for child, parent in pairwise(levels):
        diff = np.abs(parent.astype(int) - quantise(_np_parent(_np_dequant(child))).astype(int))
        assert diff.max() <= 1 and (diff == 0).mean() > 0.999
    assert cog_validate(str(path), quiet=True)[0]


def test_float32_mode(tmp_path):
    field = _field(100, 140)
    path = write_aef(tmp_path / "f.tif", field, CRS, T, float32=True, blocksize=32)
    with rasterio.open(path) as src:
        assert set(src.dtypes) == {"float32"} and math.isnan(src.nodata) and src.count == 64
    da = read_aef(path)
    assert np.array_equal(da.values, field, equal_nan=True)
    parent = read_aef(path, overview_level=0).values
    assert np.allclose(parent, _np_parent(field), atol=1e-5, equal_nan=True)


def test_exception_inside_with_leaves_nothing(tmp_path):
    path = tmp_path / "emb.tif"
    with pytest.raises(RuntimeError, match="boom"), AEFWriter(path, H, W, CRS, T) as w:
        w.write(_unit((E, 10, 10)), 0, 0)
        assert list(tmp_path.iterdir())  # temporaries exist while writing
        raise RuntimeError("boom")
    assert not path.exists() and list(tmp_path.iterdir()) == []


def test_existing_file_is_replaced_only_on_success(tmp_path):
    path = tmp_path / "emb.tif"
    path.write_bytes(b"old")
    with pytest.raises(KeyError), AEFWriter(path, 32, 32, CRS, T, blocksize=32):
        raise KeyError
    assert path.read_bytes() == b"old"
    write_aef(path, _unit((E, 32, 32)), CRS, T, blocksize=32)
    assert read_aef(path).shape == (E, 32, 32) and list(tmp_path.iterdir()) == [path]


# --- reading ---------------------------------------------------------------------------------

def test_read_aef_coordinates_crs_and_values(written):
    import rioxarray  # noqa: F401

    path, field = written
    da = read_aef(path)
    assert da.dims == ("band", "y", "x") and da.dtype == np.float32 and da.shape == (E, H, W)
    assert list(da.band.values) == list(AEF_BANDS)
    assert da.rio.crs.to_epsg() == 32633 and da.rio.transform() == T
    assert da.x.values[0] == 500_005.0 and da.y.values[0] == 5_199_995.0 and da.y.values[-1] < da.y.values[0]
    assert np.array_equal(np.isnan(da.values), np.isnan(field))
    ok = np.isfinite(field[0])
    cos = (da.values * field).sum(0)[ok] / np.linalg.norm(da.values, axis=0)[ok]
    assert cos.min() > 0.999


def test_bottom_up_file_reads_north_up(tmp_path, written):
    path, _ = written
    with rasterio.open(path) as src:
        codes, prof = src.read(), src.profile
    flipped = tmp_path / "bottom_up.tif"
    prof.update(driver="GTiff", transform=Affine(T.a, 0.0, T.c, 0.0, -T.e, T.f + T.e * H))
    with rasterio.open(flipped, "w", **prof) as dst:
        dst.write(codes[:, ::-1, :])
    with rasterio.open(flipped) as src:
        assert src.transform.e > 0
    a, b = read_aef(path), read_aef(flipped)
    assert np.array_equal(a.values, b.values, equal_nan=True)
    assert b.rio.transform() == T and np.array_equal(a.y.values, b.y.values)
    win = read_aef(flipped, window=(10, 20, 50, 70))
    assert np.array_equal(win.values, a.values[:, 10:60, 20:90], equal_nan=True)
    box = read_aef(flipped, bounds=(500_200.0, 5_199_400.0, 500_900.0, 5_199_900.0))
    assert np.array_equal(box.values, a.values[:, 10:60, 20:90], equal_nan=True)
    assert box.rio.transform() == Affine(T.a, 0.0, T.c + 20 * T.a, 0.0, T.e, T.f + 10 * T.e)


# --- bad input -------------------------------------------------------------------------------

@pytest.mark.parametrize("kwargs,match", [
    ({"height": 0}, "height must be positive"),
    ({"width": -5}, "width must be positive"),
    ({"crs": "not a crs"}, "bad crs"),
    ({"crs": None}, "crs is required"),
    ({"transform": Affine(10.0, 0.0, 0.0, 0.0, 10.0, 0.0)}, "north-up"),
    ({"transform": Affine(10.0, 1.0, 0.0, 0.0, -10.0, 0.0)}, "rotated"),
    ({"transform": (1, 2, 3)}, "6 numbers"),
    ({"blocksize": 100}, "multiple of 16"),
    ({"compress": "jpeg"}, "compress must be one of"),
])
def test_bad_writer_arguments(tmp_path, kwargs, match):
    args = {"height": H, "width": W, "crs": CRS, "transform": T} | kwargs
    extra = {k: args.pop(k) for k in ("blocksize", "compress") if k in args}
    with pytest.raises(ValueError, match=match):
        AEFWriter(tmp_path / "x.tif", args["height"], args["width"], args["crs"], args["transform"], **extra)
    assert list(tmp_path.iterdir()) == []  # rejected before any file was created


@pytest.mark.parametrize("block,row,col,match", [
    (np.zeros((3, 8, 8), np.float32), 0, 0, "3 bands"),
    (np.zeros((E, 8, 8), np.float32), H - 4, 0, "outside the raster"),
    (np.zeros((E, 8, 8), np.float32), 0, -1, "outside the raster"),
    (np.zeros((E, 8), np.float32), 0, 0, r"\(E, h, w\)"),
    (np.zeros((E, 8, 8), np.int8), 0, 0, "float unit vectors"),
])
def test_bad_blocks(tmp_path, block, row, col, match):
    with AEFWriter(tmp_path / "x.tif", H, W, CRS, T) as w:
        with pytest.raises(ValueError, match=match):
            w.write(block, row, col)
        w.abort()
    assert list(tmp_path.iterdir()) == []


def test_write_aef_wrong_band_count_and_read_misses(tmp_path, written):
    with pytest.raises(ValueError, match="3 bands"):
        write_aef(tmp_path / "x.tif", _unit((3, 16, 16)), CRS, T)
    assert list(tmp_path.iterdir()) == []
    path, _ = written
    with pytest.raises(ValueError, match="do not overlap"):
        read_aef(path, bounds=(0.0, 0.0, 100.0, 100.0))
    with pytest.raises(ValueError, match="outside"):
        read_aef(path, window=(0, 0, H + 1, 10))
    with pytest.raises(ValueError, match="not both"):
        read_aef(path, window=(0, 0, 1, 1), bounds=(0, 0, 1, 1))
