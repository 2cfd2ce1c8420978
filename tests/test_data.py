"""Tests of aef_lit.data: containers, generic loaders, real-sample readers, synthetic data."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import aef_lit.data as D
from aef_lit.conventions import DEFAULT_SOURCES, DEM, LANDCOVER, WORLDCOVER_CLASSES, get_config, to_days
from aef_lit.data import (
    GREENEARTHNET_S2,
    WORLDCEREAL_S1,
    WORLDCEREAL_S2,
    Grid,
    Sample,
    SourceFrames,
    list_real_samples,
    load_eolearn_slovenia,
    load_geotiff_stack,
    load_greenearthnet_geotiffs,
    load_greenearthnet_minicube,
    load_samples,
    load_worldcereal_belgium,
    load_xarray_cube,
    model_sources,
    synthetic_sample,
    vegetation_fraction,
    worldcereal_s1_to_db,
    worldcover_to_ids,
)

UTM = Grid("EPSG:32631", (10.0, 0.0, 600_000.0, 0.0, -10.0, 5_650_000.0), 8, 8)


def _write_tif(path, arr, grid=UTM, descriptions=None, nodata=None):
    import rasterio

    with rasterio.open(path, "w", driver="GTiff", height=grid.height, width=grid.width, count=arr.shape[0],
                       dtype=arr.dtype, crs=grid.crs, transform=grid.affine, nodata=nodata) as dst:
        dst.write(arr)
        for i, d in enumerate(descriptions or []):
            dst.set_band_description(i + 1, d)


# --- containers -------------------------------------------------------------------------

def test_times_are_float64_days_and_invalid_pixels_are_zero():
    v = np.ones((2, 1, 3, 3), np.float32)
    valid = np.ones((2, 3, 3), bool)
    valid[0, 1, 1] = False
    fr = SourceFrames(v, ["2021-01-01", "2021-01-02T12:00"], valid)
    assert fr.times.dtype == np.float64 and fr.times[1] - fr.times[0] == 1.5
    assert fr.values[0, 0, 1, 1] == 0 and fr.values.sum() == 17


def test_build_masks_nonfinite_and_drops_empty_frames():
    v = np.ones((3, 2, 2, 2), np.float32)
    v[1, 0, 0, 0] = np.inf
    valid = np.ones((3, 2, 2), bool)
    valid[2] = False
    fr = SourceFrames.build(v, [1.0, 2.0, 3.0], valid, nonfinite="mask", empty="drop")
    assert fr.T == 2 and not fr.valid[1, 0, 0] and np.isfinite(fr.values).all()


def test_grid_crs_compares_semantically_and_crop_moves_the_origin():
    from rasterio.crs import CRS

    wkt = Grid(CRS.from_epsg(32631).to_wkt(), UTM.transform, 8, 8)
    assert UTM.mismatch(wkt) is None
    sub = UTM.crop(2, 3, 4, 4)
    assert sub.transform[2] == 600_030.0 and sub.transform[5] == 5_649_980.0
    assert Grid.from_coords([5.0, 15.0, 25.0], [95.0, 85.0], "EPSG:32631").transform == (10, 0, 0, 0, -10, 100)


def test_sample_crop_keeps_grid_and_sources_consistent():
    s = synthetic_sample(height=32, width=32, seed=1)
    c = s.crop(8, 8, 16)
    assert c.grid.shape == (16, 16)
    assert all(fr.values.shape[-2:] == (16, 16) for fr in c.sources.values())
    assert all(fr.valid.reshape(fr.T, -1).any(1).all() for fr in c.sources.values())


def test_model_sources_puts_inputs_first_and_builds_a_config():
    s = synthetic_sample(seed=0)
    specs = model_sources(s)
    assert [x.role for x in specs] == sorted([x.role for x in specs])  # "input" < "target"
    cfg = get_config("tiny", sources=specs)
    assert cfg.input_sources and {x.name for x in cfg.sources} == set(s.sources)


# --- synthetic generator ----------------------------------------------------------------

def test_synthetic_is_seeded_and_irregular():
    a = synthetic_sample(seed=3)
    b = synthetic_sample(generator=np.random.default_rng(3))
    c = synthetic_sample(seed=4)
    assert np.array_equal(a.sources["s2"].values, b.sources["s2"].values)
    assert not np.array_equal(a.sources["s2"].times, c.sources["s2"].times)
    t2, t1 = a.sources["s2"].times, a.sources["s1"].times
    assert len(np.unique(np.round(np.diff(t2)))) > 3, "revisit intervals are irregular"
    assert not np.isin(t1, t2).any(), "sources are not aligned in time"
    assert synthetic_sample(generator=torch.Generator().manual_seed(0)).sources["s2"].T == 12


def test_synthetic_shapes_follow_the_specs():
    s = synthetic_sample(DEFAULT_SOURCES, height=16, width=24, n_frames={"s2": 5, "s1": 3, "landsat": 2})
    assert {n: fr.values.shape for n, fr in s.sources.items()} == {
        "s2": (5, 10, 16, 24), "s1": (3, 2, 16, 24), "landsat": (2, 7, 16, 24),
        "dem": (1, 1, 16, 24), "landcover": (1, 1, 16, 24)}
    assert s.sources["s1"].meta.shape == (3, 1)


def test_synthetic_classes_have_distinct_ndvi_phenology():
    s = synthetic_sample(height=64, width=64, n_frames={"s2": 36}, seed=0)
    s2, bands = s.sources["s2"], s.specs["s2"].bands
    red, nir = s2.values[:, bands.index("B04")], s2.values[:, bands.index("B08")]
    ndvi = (nir - red) / (nir + red + 1e-6)
    cls = s.labels["class_map"]
    doy = s2.times - to_days(["2021-01-01"])[0]
    summer, winter = (doy > 160) & (doy < 215), (doy < 60) | (doy > 320)

    def mean(k, when):
        m = (cls == WORLDCOVER_CLASSES.index(k))[None] & s2.valid & when[:, None, None]
        return ndvi[m].mean()

    assert mean("cropland", summer) - mean("cropland", winter) > 0.4  # a crop season
    assert abs(mean("tree", summer) - mean("tree", winter)) < 0.2      # forest: stable and high
    assert mean("tree", winter) > 0.5
    assert mean("built-up", summer) < 0.3
    assert vegetation_fraction("grassland", 140) > vegetation_fraction("grassland", 300)


def test_synthetic_clouds_are_invalid_and_zeroed():
    s2 = synthetic_sample(seed=0).sources["s2"]
    assert 0.05 < 1 - s2.valid.mean() < 0.7
    per_frame = 1 - s2.valid.reshape(s2.T, -1).mean(1)
    assert per_frame.std() > 0.05, "cloud cover varies from frame to frame"
    assert (s2.values.transpose(1, 0, 2, 3)[:, ~s2.valid] == 0).all(), "values under clouds are 0"


def test_synthetic_s1_is_speckled_db():
    s1 = synthetic_sample(height=64, width=64, seed=0).sources["s1"]
    vv = s1.values[:, 0]
    assert -30 < np.median(vv) < 0
    # speckle: neighbouring pixels of one parcel differ by about the 4-look dB spread
    assert 1.0 < np.std(np.diff(vv, axis=-1)) < 6.0


def test_load_samples_synthetic_and_names():
    assert load_samples("synthetic")[0].labels["dataset"] == "synthetic"
    assert set(list_real_samples(root="/nonexistent").values()) == {False}


# --- generic loaders --------------------------------------------------------------------

def test_geotiff_stack_selects_bands_by_name_and_sorts_by_date(tmp_path):
    names = ["B1", "B2", "B3", "B4", "B8A", "SCL"]
    for day, v in (("2021-06-10", 2000), ("2021-06-05", 1000)):
        arr = np.full((6, 8, 8), v, np.uint16)
        arr[5] = 4
        arr[5, 0, 0] = 9  # a cloud
        _write_tif(tmp_path / f"S2_L2A_{day}.tif", arr, descriptions=names)
    fr, grid = load_geotiff_stack(sorted(tmp_path.glob("*.tif"), reverse=True), GREENEARTHNET_S2, scale=1e-4,
                                  extra_bands=("SCL",), valid_fn=lambda b: b["SCL"] != 9)
    assert grid.mismatch(UTM) is None
    assert np.allclose(fr.values[:, 0, 1, 1], [0.1, 0.2]) and fr.C == 4
    assert np.all(np.diff(fr.times) > 0) and not fr.valid[:, 0, 0].any()


def test_geotiff_stack_reads_onto_a_given_grid(tmp_path):
    shifted = Grid(UTM.crs, (10.0, 0.0, 600_020.0, 0.0, -10.0, 5_650_000.0), 8, 8)
    arr = np.arange(64, dtype=np.float32).reshape(1, 8, 8) + 1
    _write_tif(tmp_path / "a_2021-01-01.tif", arr)
    _write_tif(tmp_path / "b_2021-01-02.tif", arr, grid=shifted)
    fr, grid = load_geotiff_stack([tmp_path / "a_2021-01-01.tif", tmp_path / "b_2021-01-02.tif"], DEM,
                                  grid=UTM)
    assert np.array_equal(fr.values[1, 0, :, 2:], arr[0, :, :-2])  # shifted by 2 whole pixels
    assert not fr.valid[1, :, :2].any() and fr.valid[1, :, 2:].all()


def test_xarray_cube_masks_nodata_and_finds_the_grid():
    import xarray as xr

    raw = np.full((3, 4, 5), 100, np.uint16)
    raw[1, 0, 0] = 65535
    ds = xr.Dataset({"b": (("t", "y", "x"), raw)},
                    coords={"t": np.array(["2021-01-01", "2021-02-01", "2021-03-01"], "datetime64[ns]"),
                            "y": [35.0, 25.0, 15.0, 5.0], "x": [5.0, 15.0, 25.0, 35.0, 45.0]})
    fr, grid = load_xarray_cube(ds, DEM.__class__("dem", ("b",), "static"), ["b"], nodata=65535,
                                crs="EPSG:32631", scale=0.5)
    assert grid.transform == (10.0, 0.0, 0.0, 0.0, -10.0, 40.0) and grid.shape == (4, 5)
    assert not fr.valid[1, 0, 0] and fr.values.max() == 50.0


def test_cloud_values_are_kept_apart_and_follow_every_cut():
    """The radiance under a cloud is kept only under invalid pixels and never in `values`;
    select, crop and dropping empty frames keep it aligned with its frames."""
    v = np.arange(3 * 2 * 4 * 4, dtype=np.float32).reshape(3, 2, 4, 4) + 1.0
    valid = np.ones((3, 4, 4), bool)
    valid[1, :2, :2] = False  # a cloud on frame 1
    valid[2] = False  # frame 2 fully cloudy: dropped
    fr = SourceFrames.build(v, [1.0, 2.0, 3.0], valid, empty="drop", cloud_values=v)
    assert fr.T == 2 and fr.cloud_values.shape == fr.values.shape
    assert (fr.values[1, :, :2, :2] == 0).all(), "values stay 0 under the cloud"
    assert np.array_equal(fr.cloud_values[1, :, :2, :2], v[1, :, :2, :2]), "the measured radiance is kept"
    assert (fr.cloud_values[fr.valid[:, None].repeat(2, 1)] == 0).all(), "and only there"
    c = fr.crop(1, 1, 2, 2)
    assert np.array_equal(c.cloud_values[1, :, 0, 0], v[1, :, 1, 1]) and c.cloud_values[1, :, 1, 1].sum() == 0
    assert np.array_equal(fr.select([1]).cloud_values[0], fr.cloud_values[1])
    with pytest.raises(D.DataError, match="cloud_values"):
        SourceFrames(v, [1.0, 2.0, 3.0], cloud_values=v[:, :1])


def test_xarray_cube_keeps_cloud_radiance_but_not_nodata():
    import xarray as xr

    raw = np.full((2, 2, 3), 100, np.uint16)
    raw[0, 0, 0] = 65535  # nodata
    clear = np.ones((2, 2, 3), bool)
    clear[0, 0, :2] = False  # a cloud over the nodata pixel and its neighbour
    ds = xr.Dataset({"b": (("t", "y", "x"), raw)},
                    coords={"t": np.array(["2021-01-01", "2021-02-01"], "datetime64[ns]"),
                            "y": [15.0, 5.0], "x": [5.0, 15.0, 25.0]})
    spec = DEM.__class__("dem", ("b",), "static")
    fr, _ = load_xarray_cube(ds, spec, ["b"], nodata=65535, crs="EPSG:32631", valid=clear, keep_cloud=True)
    assert not fr.valid[0, 0, 0] and not fr.valid[0, 0, 1]
    assert fr.cloud_values[0, 0, 0, 0] == 0, "nodata is not radiance"
    assert fr.cloud_values[0, 0, 0, 1] == 100 and fr.cloud_values[1].sum() == 0
    assert load_xarray_cube(ds, spec, ["b"], crs="EPSG:32631", valid=clear)[0].cloud_values is None


def test_worldcover_codes_map_to_class_ids():
    ids, ok = worldcover_to_ids(np.array([10, 15, 40, 80, 90, 95, np.nan]))
    assert ids[ok].tolist() == [0, 3, 6, 7] and ok.tolist() == [True, False, True, True, True, False, False]


def test_worldcereal_s1_decoding_known_values():
    assert np.allclose(worldcereal_s1_to_db([10 ** (73 / 20), 10 ** (83 / 20)]), [-10.0, 0.0])


# --- real samples -----------------------------------------------------------------------

@pytest.mark.real
def test_worldcereal_nodata_never_becomes_reflectance(eo_real):
    s = load_worldcereal_belgium(eo_real)
    s2, s1 = s.sources["s2"], s.sources["s1"]
    assert s2.values.max() < 2.0, "65535 * 1e-4 = 6.55 would be nodata leaking"
    assert s2.T == 10 and s1.T == 12  # Dec 2020 and Jan 2021 have no valid S2
    assert s.grid.res == (10.0, 10.0) and s.grid.rio_crs.to_epsg() == 32631
    med = np.median(s1.values[:, 0][s1.valid]), np.median(s1.values[:, 1][s1.valid])
    assert -14 < med[0] < -6 and -20 < med[1] < -12 and med[1] < med[0]  # VH below VV
    assert s.specs == {"s2": WORLDCEREAL_S2, "s1": WORLDCEREAL_S1, "dem": DEM}
    assert "Belgium" in s.captions[0] and 0 < s.labels["cropland_fraction"] < 1


@pytest.mark.real
@pytest.mark.parametrize("site", ["portugal", "hungary", "sweden"])
def test_greenearthnet_minicube(eo_real, site):
    s = load_greenearthnet_minicube(site, eo_real)
    s2 = s.sources["s2"]
    assert s.grid.rio_crs.to_epsg() == 4326 and s.grid.shape == (128, 128)
    assert 0 < s2.values.max() < 2 and np.isfinite(s2.values).all()
    assert 0 < 1 - s2.valid.mean() < 0.6
    lc = s.sources["landcover"]
    assert set(np.unique(lc.values[:, 0][lc.valid])) <= set(range(len(WORLDCOVER_CLASSES)))
    assert s.specs["landcover"] == LANDCOVER and s.labels["classes"]
    cloudy = ~s2.valid[:, None].repeat(s2.C, 1)
    assert (s2.cloud_values[~cloudy] == 0).all() and (s2.cloud_values[cloudy] > 0).mean() > 0.5


@pytest.mark.real
def test_greenearthnet_geotiffs_put_shifted_files_on_one_grid(eo_real):
    s = load_greenearthnet_geotiffs("portugal", eo_real)
    assert s.sources["s2"].T == 7 and s.grid.shape == (135, 152) and s.grid.res == (20.0, 20.0)
    mini = load_greenearthnet_minicube("portugal", eo_real)
    # the same place: the GeoTIFF's red band and the minicube's agree on their overall level
    assert abs(np.median(s.sources["s2"].values[:, 2][s.sources["s2"].valid])
               - np.median(mini.sources["s2"].values[:, 2][mini.sources["s2"].valid])) < 0.05


@pytest.mark.real
def test_slovenia(eo_real):
    s = load_eolearn_slovenia(eo_real, reference_scenes=True)
    nd = s.sources["ndvi"]
    assert nd.T == 48 and -0.2 < nd.values.min() and nd.values.max() < 0.9  # 20 cloudy dates dropped
    assert s.grid.rio_crs.to_epsg() == 32633 and abs(s.grid.res[0] - 10) < 0.01
    assert s.sources["s2"].C == 13 and list_real_samples(eo_real)["eolearn_slovenia"]
    assert "tree" in s.labels["classes"]


def test_auto_falls_back_to_synthetic_and_real_says_where_to_get_data(monkeypatch, tmp_path, caplog):
    import aef_lit.conventions as conv

    monkeypatch.delenv(conv.EO_REAL_ENV, raising=False)
    monkeypatch.setattr(conv, "_eo_real_candidates", lambda: [tmp_path / "absent"])  # a fresh machine
    with caplog.at_level("WARNING", logger="aef_lit.data"):
        samples = load_samples("auto")
    assert [s.labels["dataset"] for s in samples] == ["synthetic"] and "synthetic" in caplog.text
    with pytest.raises(FileNotFoundError, match="worldcereal-classification"):
        load_samples("real")
    with pytest.raises(FileNotFoundError, match="greenearthnet"):
        load_greenearthnet_minicube("sweden")
    with pytest.raises(FileNotFoundError, match="eo-learn"):
        load_eolearn_slovenia(root=tmp_path)


# --- one registry, one caption, one meaning of "auto" -------------------------------------


def test_the_registry_is_the_only_table_of_sites():
    from aef_lit.data import DEFAULT_REAL, MULTISITE_SITES, REAL_SAMPLES, SITE_PLACES, SITES
    from aef_lit.data.sites import _READERS
    from aef_lit.training import sampling

    assert set(_READERS) == set(SITES) == set(REAL_SAMPLES) == set(MULTISITE_SITES.values())
    assert all(SITES[MULTISITE_SITES[s.short]] is s for s in SITES.values())  # short names are unique
    assert set(DEFAULT_REAL) <= set(SITES) and all(SITES[n].default for n in DEFAULT_REAL)
    assert all(SITE_PLACES[s.short] == s.place for s in SITES.values() if s.default)
    # chapter 20 re-exports the registry, it does not keep its own
    assert sampling.MULTISITE_SITES is MULTISITE_SITES and sampling.GREENEARTHNET_SITES is D.GREENEARTHNET_SITES


def test_one_caption_per_row_wherever_it_is_read():
    from aef_lit.data import caption_of, captions_for, load_sites
    from aef_lit.objective import text
    from aef_lit.training.sampling import TileDataset

    syn = synthetic_sample(height=24, width=24, seed=3)
    assert syn.captions == (caption_of(syn.labels),) == (captions_for(syn),)
    assert text.captions_for is captions_for and text.make_caption is D.make_caption  # chapter 18 re-exports
    ds = TileDataset(load_sites("synthetic", ("a", "b"), synthetic_size=32), tile=16, frames=4, seed=1)
    rows = [ds[k] for k in range(4)]
    _, caps = ds.collate_with_captions(rows)
    assert caps == [captions_for(r) for r in rows] == [r.captions[0] for r in rows]
    # a caption is what the labels say: changing the place changes it
    moved = Sample(syn.site, syn.grid, syn.sources, syn.specs, labels={**syn.labels, "place": "Atlantis"})
    assert "Atlantis" in captions_for(moved) and captions_for(moved) != captions_for(syn)


@pytest.mark.real
def test_real_sites_have_the_caption_their_labels_make(eo_real):
    from aef_lit.data import SITES, caption_of, captions_for, load_real_sample

    for name, site in SITES.items():
        s = load_real_sample(name, eo_real)
        assert s.captions == (caption_of(s.labels),) == (captions_for(s),), name
        assert site.place in s.captions[0] and sorted(s.sources) == sorted(site.sources), name


def test_auto_means_one_thing(monkeypatch, tmp_path):
    import aef_lit.conventions as conv
    from aef_lit.data import load_sites, resolve_data

    assert resolve_data("real") == "real" and resolve_data("synthetic") == "synthetic"
    assert resolve_data("auto", root=tmp_path) == "real"
    monkeypatch.delenv(conv.EO_REAL_ENV, raising=False)
    monkeypatch.setattr(conv, "_eo_real_candidates", lambda: [tmp_path / "absent"])
    assert resolve_data("auto") == "synthetic"
    assert [s.labels["dataset"] for s in load_sites("auto", ("portugal",), synthetic_size=16)] == ["synthetic"]
    assert [s.labels["dataset"] for s in load_samples("auto", height=16, width=16)] == ["synthetic"]
    with pytest.raises(ValueError, match="unknown data"):
        load_sites("atlantis")


def test_cut_rows_are_the_training_stream_before_augmentation():
    from aef_lit.data import cut_rows, load_sites
    from aef_lit.training.sampling import TileDataset

    sites = load_sites("synthetic", ("a", "b"), synthetic_size=32)
    ds = TileDataset(sites, tile=16, frames=4, seed=2, min_span_days=90)
    got = cut_rows(sites, [5, 0, 7], 16, 4, seed=2, min_span_days=90)
    for row, key in zip(got, [5, 0, 7]):
        want = ds[key]
        assert row.site == want.site and row.grid == want.grid and row.labels["row"] == want.labels["row"]
        for name, fr in want.sources.items():
            assert np.array_equal(row.sources[name].values, fr.values)
            assert np.array_equal(row.sources[name].times, fr.times)
