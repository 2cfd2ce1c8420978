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
# # 2b. The real sites: one registry, their readers, their captions
#
# Chapter 2 built the containers (`Grid`, `SourceFrames`, `Sample`) and two generic
# loaders. This chapter reads the real samples shipped beside the repository into them:
# WorldCereal Belgium {cite}`vantricht2023worldcereal`, the GreenEarthNet minicubes and
# GeoTIFFs {cite}`benson2024greenearthnet` and the eo-learn Slovenia patch {cite}`eolearn`.
# Each dataset has its own traps (a nodata code declared where xarray does not look, an
# integer code for backscatter, a lat/lon grid, files on shifted grids, mostly cloudy
# dates); each reader decodes them, so nothing after it has to know.
#
# It exports `aef_lit.data.sites` (the one registry `SITES`, the readers, `load_samples`)
# and `aef_lit.data.captions` (the one way a site gets its caption).

# %% tags=["parameters"]
# Parameters (papermill injects values here). Defaults are sized for a 2-core CPU.
preset = "tiny"  # model preset: "tiny" (CI), "small", "paper"
device = "auto"  # "auto" = XLA if importable, then CUDA, MPS, CPU
seed = 0
data = "auto"  # "auto" = the real samples if present, else the synthetic generator

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

# %%
#| default_exp data.sites
# %% [markdown]
# ## The real sites
#
# Three small sets of real data ship beside the repository in `../shared/eo_real`
# (about 45 MB; see its README). They come from the test data of MIT-licensed
# repositories; the imagery is modified Copernicus Sentinel data and the WorldCover labels
# are CC-BY 4.0. `find_eo_real` looks for them and, when they are missing, its error says
# where each part comes from.
#
# **One registry.** `SITES` is the only place that knows a real site: its sample name, its
# short name (`portugal`, `belgium`, ... as training runs name them), where its files lie,
# the place and year its captions mention, and the sources it has. Everything else reads
# it: the readers below, `list_real_samples`, `load_samples`, chapter 3's `load_sites`,
# chapter 18's captions. Every reader stores the one caption chapter 2's `caption_of`
# makes from the site's labels.
#
# **Source specs per dataset.** Each dataset has its own band set; a model is configured
# with the specs of the samples it trains on (`model_sources`). The source *names* (`s2`,
# `s1`, `dem`, `landcover`) are shared so that normalisation statistics (per band name)
# carry over between datasets.

# %%
#| export data.sites
from __future__ import annotations

import json
import logging
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from aef_lit.conventions import (
    DEM,
    EO_REAL_ORIGINS,
    LANDCOVER,
    SourceSpec,
    find_eo_real,
    to_days,
)
from aef_lit.data.captions import caption_of, landcover_labels, make_caption
from aef_lit.data.containers import DataError, Grid, Sample, SourceFrames
from aef_lit.data.readers import grid_of, load_geotiff_stack, load_xarray_cube, open_checked
from aef_lit.data.synthetic import synthetic_sample

log = logging.getLogger("aef_lit.data")

GREENEARTHNET_S2 = SourceSpec("s2", ("B02", "B03", "B04", "B8A"), "optical")
WORLDCEREAL_S2 = SourceSpec("s2", ("B02", "B03", "B04", "B05", "B06", "B07", "B08", "B11", "B12"), "optical")
WORLDCEREAL_S1 = SourceSpec("s1", ("VV", "VH"), "sar")  # monthly composites: no orbit metadata
SLOVENIA_NDVI = SourceSpec("ndvi", ("NDVI",), "optical")
SLOVENIA_S2 = SourceSpec("s2", ("B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A",
                                "B09", "B10", "B11", "B12"), "optical")
WORLDCOVER_CODES = (10, 20, 30, 40, 50, 60, 80, 90)
"""ESA WorldCover codes in the order of conventions.WORLDCOVER_CLASSES (class id = index)."""


@dataclass(frozen=True)
class Site:
    """A real site: sample name, short name, files, caption facts and sources."""

    name: str  # the sample name, e.g. "greenearthnet_portugal"
    short: str  # the name training runs use, e.g. "portugal"
    origin: str  # key of conventions.EO_REAL_ORIGINS
    path: str  # inside eo_real/
    place: str  # what a caption says
    year: int | str
    dataset: str
    sources: tuple[str, ...]  # what the default reader returns
    default: bool = True  # one of the samples `load_samples("real")` returns


_GEN = {"portugal": "Abrantes, Portugal", "hungary": "the Great Hungarian Plain, Hungary",
        "sweden": "Västergötland, Sweden"}
SITES: dict[str, Site] = {s.name: s for s in (
    Site("worldcereal_belgium", "belgium", "worldcereal", "worldcereal/belgium_s1_s2_monthly_2021.nc",
         "Sint-Truiden, Flanders, Belgium", 2021, "WorldCereal", ("s2", "s1", "dem")),
    *(Site(f"greenearthnet_{k}", k, "greenearthnet", f"greenearthnet/minicubes/{k}_2021.nc", p, 2021,
           "GreenEarthNet", ("s2", "dem", "landcover")) for k, p in _GEN.items()),
    Site("eolearn_slovenia", "slovenia", "eolearn_slovenia", "eolearn_slovenia/TestEOPatch", "Slovenia",
         "2015-2017", "eo-learn", ("ndvi", "dem", "landcover")),
    *(Site(f"greenearthnet_geotiff_{k}", f"{k}_geotiff", "greenearthnet", f"greenearthnet/leaf_sr/{k}", p,
           2021, "GreenEarthNet", ("s2",), default=False) for k, p in _GEN.items()),
)}
"""The one registry of the real sites, by sample name."""

GREENEARTHNET_SITES = tuple(_GEN)
REAL_SAMPLES = {n: (s.origin, s.path) for n, s in SITES.items()}
"""Real sample name -> (origin key of conventions.EO_REAL_ORIGINS, path inside eo_real/)."""
DEFAULT_REAL = tuple(n for n, s in SITES.items() if s.default)
MULTISITE_SITES = {s.short: n for n, s in SITES.items()}
"""Short site names (as training runs name them) -> sample names."""
SITE_PLACES = {s.short: s.place for s in SITES.values() if s.default} | {"flanders": "Flanders, Belgium"}
"""Short site name -> the place its captions name."""


def captions_for(sample, max_classes: int = 3) -> str:
    """The caption of a `Sample`: from its labels when they name a place, else its own first
    caption, else its site name (a place of `SITE_PLACES` when the name ends in one)."""
    labels = getattr(sample, "labels", {}) or {}
    if "place" in labels:
        return caption_of(labels, max_classes)
    own = getattr(sample, "captions", ())
    if own:
        return own[0]
    site = str(getattr(sample, "site", "an unnamed site"))
    return make_caption(SITE_PLACES.get(site.split("_")[-1], site.replace("_", " ")), labels.get("year"))


def site_path(name: str, root=None) -> Path:
    """Where the files of real sample `name` lie; a FileNotFoundError says where to get them."""
    site = SITES[name]
    base = Path(root) if root is not None else find_eo_real(required=True)
    p = base / site.path
    if not p.exists():
        raise FileNotFoundError(f"{p} is missing. The {site.origin!r} part of eo_real/ comes from "
                                f"{EO_REAL_ORIGINS[site.origin]}")
    return p


def list_real_samples(root=None) -> dict[str, bool]:
    """Which real samples are present (name -> True/False); all False when eo_real/ is absent."""
    base = Path(root) if root is not None else find_eo_real(required=False)
    return {n: bool(base is not None and (base / s.path).exists()) for n, s in SITES.items()}


def site_labels(name: str, **more) -> dict:
    """The caption facts of real sample `name` (place, year, dataset), plus `more`."""
    s = SITES[name]
    return {"place": s.place, "year": s.year, "dataset": s.dataset, **more}


def worldcover_to_ids(codes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """ESA WorldCover codes -> (class ids 0..7, valid). Boundary codes (15, 25, ...) and
    classes outside our legend (70 snow, 95 mangroves, 100 moss) are invalid."""
    codes = np.nan_to_num(np.asarray(codes, np.float64), nan=-1).astype(np.int64)
    lut = np.full(256, -1, np.int64)
    lut[list(WORLDCOVER_CODES)] = np.arange(len(WORLDCOVER_CODES))
    ids = lut[np.clip(codes, 0, 255)]
    ok = ids >= 0
    return np.where(ok, ids, 0).astype(np.float32), ok


# %% [markdown]
# ### GreenEarthNet minicubes {cite}`benson2024greenearthnet`
#
# 128 × 128 px on a **lat/lon grid** (EPSG:4326, about 20 m), 27–30 Sentinel-2 L2A dates
# in 2021. Reflectance is already 0..1; a few pixels are NaN (nodata: masked). Clouds
# come from `s2_dlmask`, GreenEarthNet's deep-learning cloud mask: we keep only
# `0 = free sky` (cloud, shadow, snow and "masked" are all invalid), as the benchmark does.
# The Copernicus DEM becomes the `dem` target and the dense ESA WorldCover map the
# `landcover` target. Chapter 3 resamples a sample onto a 10 m UTM grid when a model needs one.

# %%
#| export data.sites
def _greenearthnet_site(site: str, kind: str = "") -> str:
    name = f"greenearthnet_{kind}{site}"
    if name not in SITES:
        raise DataError(f"unknown GreenEarthNet site {site!r}; choose one of {list(GREENEARTHNET_SITES)}")
    return name


def load_greenearthnet_minicube(site: str, root=None) -> Sample:
    """A GreenEarthNet minicube (site in portugal, hungary, sweden): S2 B02 B03 B04 B8A,
    clouds from s2_dlmask (the values under them kept as `cloud_values`), `dem` (Copernicus
    DEM) and `landcover` (WorldCover) targets."""
    import xarray as xr

    name = _greenearthnet_site(site)
    with xr.open_dataset(site_path(name, root)) as ds:
        ds = ds.load()
        clear = ds["s2_dlmask"].values == 0
        s2, grid = load_xarray_cube(ds, GREENEARTHNET_S2, [f"s2_{b}" for b in GREENEARTHNET_S2.bands],
                                    valid=clear, nonfinite="mask", empty="drop", keep_cloud=True)
        mid = float(np.mean(s2.times[[0, -1]]))
        dem, _ = load_xarray_cube(ds, DEM, ["cop_dem"], time=mid, nonfinite="mask")
        ids, ok = worldcover_to_ids(ds["esawc_lc"].values)
    lc = SourceFrames(ids[None, None], [mid], ok[None], name="landcover")
    labels = site_labels(name, **landcover_labels(ids, ok))
    return Sample(name, grid, {"s2": s2, "dem": dem, "landcover": lc},
                  {"s2": GREENEARTHNET_S2, "dem": DEM, "landcover": LANDCOVER},
                  labels=labels, captions=(caption_of(labels),))


# %% [markdown]
# ### GreenEarthNet per-date GeoTIFFs
#
# The same three places exported from Earth Engine as one 31-band GeoTIFF per date (UTM,
# 20 m, DN × 10⁴, no declared nodata: DN 0 in every band means no data). Clouds come from
# the Sen2Cor scene classification `SCL`: we keep vegetation, bare soil, water,
# unclassified and snow (`SCL_VALID`). A trap: two of Portugal's seven files lie on a
# *shifted, smaller* grid; the reader puts every file onto the grid most files share
# (nearest neighbour, a pure shift of whole pixels here).

# %%
#| export data.sites
SCL_VALID = (4, 5, 6, 7, 11)


def load_greenearthnet_geotiffs(site: str, root=None) -> Sample:
    """The per-date GeoTIFF stack of a GreenEarthNet site (S2 B02 B03 B04 B8A, SCL clouds)."""
    name = _greenearthnet_site(site, "geotiff_")
    paths = sorted(site_path(name, root).glob("*.tif"))
    grids = []
    for p in paths:
        with open_checked(p) as src:
            grids.append(grid_of(src))
    grid = Counter(grids).most_common(1)[0][0]
    s2, grid = load_geotiff_stack(paths, GREENEARTHNET_S2, scale=1e-4, nodata=0, extra_bands=("SCL",),
                                  valid_fn=lambda b: np.isin(b["SCL"], SCL_VALID), grid=grid, empty="drop")
    labels = site_labels(name)
    return Sample(name, grid, {"s2": s2}, {"s2": GREENEARTHNET_S2}, labels=labels, captions=(caption_of(labels),))


# %% [markdown]
# ### WorldCereal Belgium {cite}`vantricht2023worldcereal`
#
# Twelve monthly composites (Nov 2020 – Oct 2021) of Sentinel-2 L2A (9 bands) and
# Sentinel-1 (VV, VH) on a 100 × 100 px, 10 m UTM grid near Sint-Truiden. Three traps:
#
# 1. the variables are `uint16` stored as `int16` with `_Unsigned`; we read the raw integers
#    (`mask_and_scale=False`) and reinterpret them as `uint16`;
# 2. nodata is 65535, declared only as a *global* `_FillValue`, so xarray does not mask it:
#    we do (Dec 2020 and Jan 2021 have no valid S2 pixel at all; those frames are dropped);
# 3. S1 is not linear power but an integer code: $\mathrm{dB} = 20\log_{10}(\mathrm{DN}) - 83$.
#
# Elevation is repeated over `t`; we keep one frame. The WorldCereal cropland map of the
# same grid (a model's output, not ground truth) goes into `labels["cropland_map"]`.

# %%
#| export data.sites
WORLDCEREAL_NODATA = 65535


def worldcereal_s1_to_db(dn: np.ndarray) -> np.ndarray:
    """WorldCereal's S1 integer code to backscatter in dB: 20 * log10(DN) - 83."""
    with np.errstate(divide="ignore"):
        return 20.0 * np.log10(np.asarray(dn, np.float64)) - 83.0


def _uint16(ds, names):
    out = ds.copy()
    for v in names:
        a = out[v].values
        out[v] = out[v].copy(data=a.astype(np.int16).view(np.uint16) if a.dtype == np.int16 else a)
    return out


def load_worldcereal_belgium(root=None) -> Sample:
    """WorldCereal's Belgian S1+S2 monthly cube: `s2` (9 bands, reflectance), `s1` (VV, VH
    in dB) and the `dem` target; nodata 65535 masked."""
    import xarray as xr

    path = site_path("worldcereal_belgium", root)
    s2_vars = [f"S2-L2A-{b}" for b in WORLDCEREAL_S2.bands]
    s1_vars = ["S1-SIGMA0-VV", "S1-SIGMA0-VH"]
    with xr.open_dataset(path, mask_and_scale=False) as ds:
        ds = _uint16(ds.load(), s2_vars + s1_vars + ["elevation"])
        kw = dict(nodata=WORLDCEREAL_NODATA, empty="drop")
        s2, grid = load_xarray_cube(ds, WORLDCEREAL_S2, s2_vars, scale=1e-4, **kw)
        s1_ok = ~((ds[s1_vars[0]].values == 0) | (ds[s1_vars[1]].values == 0))
        s1, g1 = load_xarray_cube(ds, WORLDCEREAL_S1, s1_vars, transform=worldcereal_s1_to_db,
                                  valid=s1_ok, **kw)
        grid.check_same(g1, "between s2 and s1")
        mid = float(np.mean(s2.times[[0, -1]]))
        elev = ds["elevation"].isel(t=0).drop_vars("t", errors="ignore").to_dataset()
        elev["crs"] = ds["crs"]
        dem, _ = load_xarray_cube(elev, DEM, ["elevation"], nodata=WORLDCEREAL_NODATA, time=mid)
    labels = site_labels("worldcereal_belgium", classes=["cropland"])  # a Flemish arable landscape
    crop_path = path.parent / "belgium_cropland_map_2021.nc"
    if crop_path.exists():
        with xr.open_dataset(crop_path) as cm:
            m = np.asarray(cm[next(iter(cm.data_vars))].sel(bands="classification").values, np.float64)
        labels["cropland_map"] = m
        labels["cropland_fraction"] = round(float(np.nanmean(m == 1)), 3)
        labels["classes"] = ["cropland"] if labels["cropland_fraction"] > 0.5 else ["cropland", "other land"]
    return Sample("worldcereal_belgium", grid, {"s2": s2, "s1": s1, "dem": dem},
                  {"s2": WORLDCEREAL_S2, "s1": WORLDCEREAL_S1, "dem": DEM},
                  labels=labels, captions=(caption_of(labels),))


# %% [markdown]
# ### eo-learn Slovenia {cite}`eolearn`
#
# A 101 × 100 px Sentinel-2 L1C patch (10 m, EPSG:32633) with **NDVI only** for 68
# irregular dates over 2.5 years (two acquisitions on 2015-12-08, minutes apart: distinct
# timestamps, kept), a cloud mask (`CLM`, 40 % of pixel-dates; 20 dates are fully cloudy
# and dropped), a DEM and a land-use map we map onto the WorldCover legend. All 13 bands
# exist only for five reference scenes of summer 2015 (optional `s2` source).

# %%
#| export data.sites
_LULC_TO_WORLDCOVER = {1: 3, 2: 0, 3: 2, 4: 1, 5: 6, 6: 7, 8: 4, 9: 5}  # 0 nodata, 7 tundra, 10 snow: invalid
_SLOVENIA_REFERENCE_DATES = ("2015-08-20", "2015-07-31", "2015-09-09", "2015-08-30", "2015-07-11")


def load_eolearn_slovenia(root=None, reference_scenes: bool = False) -> Sample:
    """The eo-learn Slovenia patch: `ndvi` (clouds masked), `dem`, `landcover`; with
    `reference_scenes=True` also `s2`, the 13-band scenes of five summer-2015 dates."""
    folder = site_path("eolearn_slovenia", root)
    d = lambda rel: np.load(folder / rel)  # noqa: E731
    times = to_days(json.loads((folder / "timestamps.json").read_text()))
    valid = (d("mask/IS_VALID.npy")[..., 0].astype(bool)) & (d("mask/CLM.npy")[..., 0] == 0)
    ndvi = SourceFrames.build(d("data/NDVI.npy")[:, None, :, :, 0], times, valid, name="ndvi", empty="drop")
    bbox = json.loads((folder / "bbox.geojson").read_text())
    xs, ys = zip(*bbox["coordinates"][0])
    H, W = ndvi.values.shape[2:]
    grid = Grid("EPSG:32633", ((max(xs) - min(xs)) / W, 0.0, min(xs), 0.0, -(max(ys) - min(ys)) / H, max(ys)), H, W)
    mid = float(np.mean(ndvi.times[[0, -1]]))
    dem = SourceFrames(d("data_timeless/DEM.npy")[None, None, :, :, 0], [mid], name="dem")
    lulc = d("mask_timeless/LULC.npy")[..., 0].astype(int)
    ids = np.zeros(lulc.shape, np.float32)
    for k, v in _LULC_TO_WORLDCOVER.items():
        ids[lulc == k] = v
    ok = np.isin(lulc, list(_LULC_TO_WORLDCOVER))
    lc = SourceFrames(ids[None, None], [mid], ok[None], name="landcover")
    sources = {"ndvi": ndvi, "dem": dem, "landcover": lc}
    specs = {"ndvi": SLOVENIA_NDVI, "dem": DEM, "landcover": LANDCOVER}
    if reference_scenes:
        ref_path = folder.parent / "REFERENCE_SCENES.npy"
        scenes = np.moveaxis(np.load(ref_path), -1, 1)  # T H W C -> T C H W
        rt = to_days(list(_SLOVENIA_REFERENCE_DATES))
        match = [int(np.argmin(np.abs(np.floor(times) - t))) for t in rt]
        order = np.argsort(rt)
        clm_ok = valid[match]
        sources["s2"] = SourceFrames.build(scenes[order], times[match][order], clm_ok[order], name="s2",
                                           empty="drop")
        specs["s2"] = SLOVENIA_S2
    labels = site_labels("eolearn_slovenia", **landcover_labels(ids, ok))
    return Sample("eolearn_slovenia", grid, sources, specs, labels=labels, captions=(caption_of(labels),))


# %% [markdown]
# ## Choosing the data of a notebook
#
# Every notebook has a `data` parameter, and `"auto"` means one thing everywhere
# (`resolve_data`): **the real samples when `eo_real/` is found, else the synthetic
# generator**, with a warning saying which. `"real"` insists on the real samples (and fails
# with where to get them); `"synthetic"` never looks. Which real samples a function
# returns is its own argument: `load_samples` returns the `DEFAULT_REAL` ones present (or
# the sample names given), chapter 3's `load_sites` the training sites it is given.

# %%
#| export data.sites
_READERS = {
    **{f"greenearthnet_{k}": (lambda r, k=k: load_greenearthnet_minicube(k, r)) for k in GREENEARTHNET_SITES},
    **{f"greenearthnet_geotiff_{k}": (lambda r, k=k: load_greenearthnet_geotiffs(k, r)) for k in GREENEARTHNET_SITES},
    "worldcereal_belgium": load_worldcereal_belgium,
    "eolearn_slovenia": load_eolearn_slovenia,
}
assert set(_READERS) == set(SITES), "every registered site has a reader"


def load_real_sample(name: str, root=None) -> Sample:
    """One real sample by name (see SITES)."""
    if name not in _READERS:
        raise KeyError(f"unknown real sample {name!r}; known: {sorted(_READERS)}")
    return _READERS[name](root)


def resolve_data(data: str, root=None) -> str:
    """What `data` means: "auto" -> "real" when eo_real/ is found (or `root` is given), else
    "synthetic" (with a warning); any other value is returned unchanged."""
    if data != "auto":
        return data
    if root is not None or find_eo_real(required=False) is not None:
        return "real"
    log.warning("real samples absent: using the synthetic generator instead (set $AEF_EO_REAL or "
                "put eo_real/ at ../shared/eo_real)")
    return "synthetic"


def load_samples(data: str | Sequence[str] = "auto", root=None, seed: int = 0, **synthetic_kw) -> list[Sample]:
    """The samples a notebook works on: "auto" (`resolve_data`), "real" (the `DEFAULT_REAL`
    samples present), "synthetic", or sample name(s)."""
    kind = resolve_data(data, root) if isinstance(data, str) else None
    if kind == "synthetic":
        return [synthetic_sample(seed=seed, **synthetic_kw)]
    if kind == "real":
        base = find_eo_real(required=True) if root is None else Path(root)
        present = list_real_samples(base)
        return [load_real_sample(n, base) for n in DEFAULT_REAL if present[n]]
    return [load_real_sample(n, root) for n in ([data] if isinstance(data, str) else list(data))]


# %% [markdown]
# ## Demonstrations
#
# ### The real samples
#
# What `data="auto"` finds on this machine, and what each real sample holds. The `invalid`
# column is the fraction of pixel-frames that are nodata or cloud *after* fully invalid
# frames were dropped: real data are mostly holes, which is why AEF weights its loss
# instead of trusting every pixel. Each sample's one caption is printed beside it.

# %%
import matplotlib.pyplot as plt
import pandas as pd

from aef_lit.conventions import from_days

print("real samples present:", [k for k, v in list_real_samples().items() if v] or "none")
samples = load_samples(data, seed=seed)
for s in samples:
    assert all(np.isfinite(fr.values).all() and (np.diff(fr.times) > 0).all() for fr in s.sources.values())
    assert s.captions == (captions_for(s),), "a sample has one caption, the one its labels make"
    if s.site == "worldcereal_belgium":
        s2w = s.sources["s2"]
        assert s2w.values.max() < 6.5535, "nodata 65535 must never become reflectance"
        assert s2w.T == 10, "Dec 2020 and Jan 2021 have no valid S2 and are dropped"
        vv = s.sources["s1"].values[:, 0][s.sources["s1"].valid]
        assert -30 < np.median(vv) < 0, f"VV should be a few dB below zero, got {np.median(vv):.1f}"
pd.DataFrame([{**s.summary(), "caption": s.captions[0]} for s in samples]).set_index("site")

# %% [markdown]
# ### Quicklooks
#
# A true-colour composite of the clearest frame of each sample (B04, B03, B02 with a
# 2–98 % stretch; Slovenia has NDVI only), and the valid mask of its cloudiest frame.

# %%
def quicklook(sample: Sample, ax_rgb, ax_mask):
    name = "s2" if "s2" in sample.sources else next(iter(sample.sources))
    fr, spec = sample.sources[name], sample.specs[name]
    clear = fr.valid.reshape(fr.T, -1).mean(1)
    i, worst = int(np.argmax(clear)), int(np.argmin(clear))
    if {"B02", "B03", "B04"} <= set(spec.bands):
        rgb = np.stack([fr.values[i, spec.bands.index(b)] for b in ("B04", "B03", "B02")], -1)
        lo, hi = np.percentile(rgb[fr.valid[i]], [2, 98])
        ax_rgb.imshow(np.clip((rgb - lo) / (hi - lo + 1e-9), 0, 1))
    else:
        ax_rgb.imshow(fr.values[i, 0], cmap="YlGn", vmin=-0.1, vmax=0.9)
    ax_rgb.set_title(f"{sample.site}\n{str(from_days(fr.times[i]))[:10]}", fontsize=8)
    ax_mask.imshow(fr.valid[worst], cmap="gray", vmin=0, vmax=1)
    ax_mask.set_title(f"valid (white), {str(from_days(fr.times[worst]))[:10]}: {clear[worst]:.0%}", fontsize=8)
    for a in (ax_rgb, ax_mask):
        a.axis("off")


fig, axes = plt.subplots(2, len(samples), figsize=(2.4 * len(samples), 5), squeeze=False)
for k, s in enumerate(samples):
    quicklook(s, axes[0, k], axes[1, k])
plt.tight_layout(); plt.show()

# %% [markdown]
# ## Summary
#
# * One registry, `SITES`, knows every real site: its files, its place and year, its
#   sources. Its readers decode the traps of each dataset (WorldCereal's global nodata and
#   S1 code, GreenEarthNet's lat/lon grid and shifted GeoTIFFs, Slovenia's cloudy dates).
# * Each site gets one caption, `caption_of(labels)`, which every later chapter reads.
# * `data="auto"` means the real samples when present, else the synthetic generator.
#
# Chapter 3 turns a `Sample` into the model's batch layout.
