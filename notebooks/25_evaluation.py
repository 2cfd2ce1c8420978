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
# # 25. Evaluation: the shipped model against its baselines, on real labels
#
# Chapters 23 and 24 built the instrument: probes, splits, intervals, baselines. This
# chapter points it at real labels and at the model shipped with this repository (chapter
# 21), and reports what it finds, including where the model loses. It also makes the
# instrument something a user can run on their own embeddings: `aef_lit.evaluation.evaluate`
# scores a model or any callable against the same baselines on the same pixels; chapter 26
# adds embedding GeoTIFFs (such as a tile of Google's published AEF layer), the `aef-eval`
# command line, and a look inside the representations.
#
# The paper's protocol (§S3–S6, `AEF_NOTES.md` §10) {cite}`brown2025alphaearth` in one
# sentence: freeze the features; for 1, 10 and up to 300 samples per class, fit kNN
# (k = 1, 3) and least-squares probes; score balanced accuracy (or $R^2$ and MAE) on
# spatially separated test data; repeat over at least 20 folds; report means with 95 %
# intervals. The code is exported to `aef_lit.evaluation` (modules `tasks`, `pixels`,
# `methods`, `protocol` and `report`).

# %% tags=["parameters"]
# Parameters (papermill injects values here). Defaults are sized for a 2-core CPU.
preset = "tiny"  # unused: the evaluated model is the shipped one (its own preset)
device = "auto"  # where the networks embed: "auto" = XLA, CUDA, MPS, then CPU
seed = 0
data = "auto"  # "auto" = the real samples (needed: without them there is nothing to evaluate)
folds = 20  # random folds per trial (the protocol asks for at least 20)
model_dir = ""  # a model folder to evaluate; "" = the shipped model

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
#| default_exp evaluation.tasks
# %%
#| export
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from aef_lit.conventions import WORLDCOVER_CLASSES, SourceSpec, find_eo_real, to_days
from aef_lit.data import (
    GREENEARTHNET_S2,
    WORLDCEREAL_NODATA,
    DataError,
    Grid,
    Sample,
    SourceFrames,
    load_eolearn_slovenia,
    load_greenearthnet_minicube,
    load_worldcereal_belgium,
)
from aef_lit.evaluation import probes as _pr

Period = tuple[float, float]


# %% [markdown]
# ## Tasks: labels, the frames under them, and a period
#
# A **task** is a set of labelled pixels, the input frames under them, and the period
# `[t_s, t_e)` an embedding summarises. Every method reads exactly those frames and those
# bands: the task is built for the evaluated model's input sources (by default the shipped
# model's Sentinel-2 B02 B03 B04 B8A, with B08 standing in for B8A where a product lacks it,
# as in chapter 20). A pixel enters the evaluation when it has a label *and* at least one
# clear input observation in the period; elsewhere Google's annual layer has no data either.
#
# | task | labels | pixels | split | period |
# |---|---|---|---|---|
# | `worldcover_portugal`, `_hungary`, `_sweden` | ESA WorldCover (8 classes), dense | 128 × 128 at ~20 m | blocks | 2021 |
# | `worldcover_sites` | the same three maps | all three | leave one site out | 2021 |
# | `slovenia_lulc` | eo-learn's Slovenian land use, in the WorldCover legend | 101 × 100 at 10 m | blocks | 2015 (the 13-band scenes are five summer-2015 dates) |
# | `belgium_cropland` | WorldCereal's cropland map: **pseudo-labels** (a model's output) | 100 × 100 at 10 m | blocks | Nov 2020 – Oct 2021 |
# | `belgium_slope` | terrain slope (degrees), a regression | 100 × 100 | blocks | Nov 2020 – Oct 2021 |
# | `south_sudan_crops` | WorldCereal field surveys: sorghum, maize, trees | 425 of the 500 labelled pixel time series (the three classes) | points, thinned 1.28 km | Dec 2016 – Nov 2017 |
# | `flanders_crops` | Flanders LPIS 2021: grassland, temporary crops | 47 of the 100 labelled pixel time series (the two classes) | points, thinned 1.28 km | Aug 2020 – Nov 2021 |
#
# A class needs at least 100 pixels at a raster site (10 labelled points in a point task) to
# be scored; rarer classes are left out rather than scored on a handful of pixels. The slope
# is the one continuous target here that no model of ours was ever trained to decode (the
# DEM was a decoding target, chapter 13; slope was not). The data hold no other continuous
# target at 10 m that a model never saw.

# %%
#| export
MIN_CLASS_PIXELS = 100
"""A raster task scores a class only where it has at least this many labelled pixels."""
MIN_CLASS_POINTS = 10
"""A point task scores a class only with at least this many labelled points."""


@dataclass
class Task:
    """Labelled pixels, the input frames under them, and the period each is summarised over.

    Attributes:
        name: task name (see TASKS).
        kind: "classification" or "regression".
        samples: input `Sample`s (only the input sources, in the evaluated model's bands): one
            per site for raster tasks, one 1 x 1 sample per labelled pixel for point tasks.
        labels: per sample, `H W` class ids (-1 = unlabelled) or values (NaN = unlabelled).
        periods: per sample, `[t_s, t_e)` in days.
        groups: per sample, the place it belongs to (blocks and site splits act per place).
        split: "blocks", "points" or "sites" (see chapter 23).
        classes: class names (classification); units: the target's units (regression).
        label_source: the model target this label set corresponds to ("landcover", "dem"),
            used to flag leaks; "" when no model could have decoded it.
        pseudo: the labels are a model's output, not ground truth.
        description: one line for tables.
    """

    name: str
    kind: str
    samples: list[Sample]
    labels: list[np.ndarray]
    periods: list[Period]
    groups: list[str]
    split: str
    classes: tuple[str, ...] = ()
    units: str = ""
    label_source: str = ""
    pseudo: bool = False
    description: str = ""

    def __post_init__(self):
        n = len(self.samples)
        if not (len(self.labels) == len(self.periods) == len(self.groups) == n) or n == 0:
            raise ValueError(f"task {self.name}: samples, labels, periods and groups must have one entry each")
        if self.kind not in ("classification", "regression"):
            raise ValueError(f"task {self.name}: kind must be classification or regression, got {self.kind!r}")
        if self.split not in _pr.SPLITS:
            raise ValueError(f"task {self.name}: split must be one of {_pr.SPLITS}, got {self.split!r}")
        for s, lab in zip(self.samples, self.labels):
            if lab.shape != s.grid.shape:
                raise ValueError(f"task {self.name}: labels {lab.shape} do not match {s.site}'s grid {s.grid.shape}")


def calendar_period(start: str, end: str) -> Period:
    """`[start, end)` from ISO dates, in days since 1970-01-01."""
    t = to_days([start, end])
    return float(t[0]), float(t[1])


def select_inputs(sample: Sample, specs: Sequence[SourceSpec]) -> Sample:
    """`sample` cut to the input sources `specs` (their bands, with chapter 20's stand-ins such as
    B08 for B8A); every other source, targets included, dropped. Sources a site lacks are skipped."""
    from aef_lit.training.sampling import harmonise

    parts = [harmonise(sample, spec, res=None, keep=()) for spec in specs if spec.name in sample.sources]
    if not parts:
        raise DataError(f"{sample.site} has none of the input sources {[s.name for s in specs]} "
                        f"(it has {sorted(sample.sources)})")
    sources = {k: v for p in parts for k, v in p.sources.items()}
    return Sample(sample.site, sample.grid, sources, {k: v for p in parts for k, v in p.specs.items()},
                  labels=sample.labels, captions=sample.captions)


def _min_count(labels: list[np.ndarray], min_count: int) -> list[np.ndarray]:
    """Class ids with fewer than `min_count` labelled pixels (over all samples) set to -1."""
    ids = np.concatenate([lab.ravel() for lab in labels])
    counts = np.bincount(ids[ids >= 0], minlength=1)
    rare = np.flatnonzero((counts > 0) & (counts < min_count))
    return [np.where(np.isin(lab, rare), -1, lab) for lab in labels]


# %% [markdown]
# The readers are chapter 2's; a task builder only picks the labels and the period.

# %%
#| export
DEFAULT_INPUTS = (GREENEARTHNET_S2,)
"""The input sources a task is built for when no model says otherwise (the shipped model's)."""
GREENEARTHNET_PLACES = ("portugal", "hungary", "sweden")


def _worldcover(place: str, specs, root) -> tuple[Sample, np.ndarray]:
    s = load_greenearthnet_minicube(place, root)
    lc = s.sources["landcover"]
    return select_inputs(s, specs), np.where(lc.valid[0], lc.values[0, 0], -1).astype(np.int64)


def worldcover_task(place: str, specs=DEFAULT_INPUTS, root=None) -> Task:
    """WorldCover at one GreenEarthNet site, spatial blocks."""
    s, lab = _worldcover(place, specs, root)
    return Task(f"worldcover_{place}", "classification", [s], _min_count([lab], MIN_CLASS_PIXELS),
                [calendar_period("2021-01-01", "2022-01-01")], [place], "blocks", WORLDCOVER_CLASSES,
                label_source="landcover", description=f"ESA WorldCover 2021 classes, GreenEarthNet {place}")


def worldcover_sites_task(specs=DEFAULT_INPUTS, root=None) -> Task:
    """WorldCover at the three GreenEarthNet sites, leave one site out."""
    parts = [_worldcover(p, specs, root) for p in GREENEARTHNET_PLACES]
    year = calendar_period("2021-01-01", "2022-01-01")
    return Task("worldcover_sites", "classification", [p[0] for p in parts],
                _min_count([p[1] for p in parts], MIN_CLASS_PIXELS), [year] * 3, list(GREENEARTHNET_PLACES),
                "sites", WORLDCOVER_CLASSES, label_source="landcover",
                description="WorldCover, trained at two GreenEarthNet sites, tested at the third")


def slovenia_task(specs=DEFAULT_INPUTS, root=None) -> Task:
    """eo-learn's Slovenian land use (in the WorldCover legend) under the five 2015 13-band scenes."""
    s = load_eolearn_slovenia(root, reference_scenes=True)
    lc = s.sources["landcover"]
    lab = np.where(lc.valid[0], lc.values[0, 0], -1).astype(np.int64)
    return Task("slovenia_lulc", "classification", [select_inputs(s, specs)], _min_count([lab], MIN_CLASS_PIXELS),
                [calendar_period("2015-01-01", "2016-01-01")], ["slovenia"], "blocks", WORLDCOVER_CLASSES,
                label_source="landcover", description="eo-learn Slovenia land use (LULC), 5 summer-2015 scenes")


def _belgium(specs, root):
    s = load_worldcereal_belgium(root)
    return s, select_inputs(s, specs), calendar_period("2020-11-01", "2021-11-01")


def belgium_cropland_task(specs=DEFAULT_INPUTS, root=None) -> Task:
    """WorldCereal's 2021 cropland map of the Belgian cube: dense pseudo-labels."""
    full, s, period = _belgium(specs, root)
    m = np.asarray(full.labels.get("cropland_map"), np.float64)
    if m.shape != s.grid.shape:
        raise DataError(f"the Belgian cropland map is {m.shape}, its cube {s.grid.shape}")
    lab = np.where(np.isin(m, (0, 1)), m, -1).astype(np.int64)
    return Task("belgium_cropland", "classification", [s], _min_count([lab], MIN_CLASS_PIXELS), [period],
                ["belgium"], "blocks", ("other", "cropland"), pseudo=True,
                description="WorldCereal 2021 cropland map (a model's output: pseudo-labels)")


def belgium_slope_task(specs=DEFAULT_INPUTS, root=None) -> Task:
    """Terrain slope (degrees) of the Belgian cube: a regression no model here was trained on."""
    import xarray as xr

    full, s, period = _belgium(specs, root)
    path = (Path(root) if root is not None else find_eo_real()) / "worldcereal" / "belgium_s1_s2_monthly_2021.nc"
    with xr.open_dataset(path, mask_and_scale=False) as ds:
        raw = np.asarray(ds["slope"].isel(t=0).values)
    slope = raw.astype(np.int16).view(np.uint16) if raw.dtype == np.int16 else raw
    lab = np.where(slope == WORLDCEREAL_NODATA, np.nan, slope.astype(np.float64))
    return Task("belgium_slope", "regression", [s], [lab], [period], ["belgium"], "blocks", units="degrees",
                description="terrain slope of the WorldCereal Belgian cube (degrees)")


# %% [markdown]
# **Labelled pixel time series.** WorldCereal's South Sudan and Flanders samples are single
# pixels with a year of monthly values and no neighbours. The model cannot embed a pixel
# without spatial context: its encoder works on tiles that are multiples of 16 pixels. We
# embed a labelled pixel by **repeating it over a whole tile** (16 × 16 copies, every frame
# identical across the tile; chapter 26's `embed_pixels`) and reading the embedding at any
# position. That costs 256 times the compute of one pixel, and it shows the Space operator a
# field with no texture at all, something it never saw in training, so it measures a lower
# bound on what the model could do with the real neighbourhood (the baselines lose nothing:
# they are per pixel anyway, and their 5 × 5 variants are not applicable).

# %%
#| export
WORLDCEREAL_SCALE = 1e-4
SOUTH_SUDAN_CLASSES = ("sorghum", "maize", "trees_mixed")
"""The South Sudan classes with at least 20 points left after thinning to 1.28 km (seed 0)."""
FLANDERS_CLASSES = ("grasslands", "temporary_crops")
"""Flanders' LANDCOVER10 classes (WorldCereal's legend) with at least 10 labelled points."""


def _pixel_sample(site: str, lon: float, lat: float, times, values: np.ndarray, valid: np.ndarray,
                  spec: SourceSpec) -> Sample | None:
    """A 1 x 1 sample at (lon, lat) with `T C` values; None when no frame is valid."""
    keep = valid.astype(bool)
    if not keep.any():
        return None
    step = 1e-4  # ~10 m in degrees; only the centre matters
    grid = Grid("EPSG:4326", (step, 0.0, lon - step / 2, 0.0, -step, lat + step / 2), 1, 1)
    fr = SourceFrames(values[keep][:, :, None, None], np.asarray(times)[keep], name=spec.name)
    return Sample(site, grid, {spec.name: fr}, {spec.name: spec})


def _band_columns(spec: SourceSpec, have: Sequence[str], fmt: Callable[[str], str]) -> list[str]:
    from aef_lit.training.sampling import BAND_ALIASES

    out = []
    for b in spec.bands:
        found = [fmt(c) for c in (b, *BAND_ALIASES.get(b, ())) if fmt(c) in have]
        if not found:
            raise DataError(f"the labelled pixels have no band {b} (nor a stand-in) for source {spec.name!r}")
        out.append(found[0])
    return out


def _optical_spec(specs) -> SourceSpec:
    opt = [s for s in specs if s.modality == "optical"]
    if not opt:
        raise DataError("the labelled-pixel tasks need an optical input source (they carry Sentinel-2)")
    return opt[0]


def south_sudan_task(specs=DEFAULT_INPUTS, root=None) -> Task:
    """WorldCereal's South Sudan / Uganda field-survey pixels, 12 monthly composites from Dec 2016."""
    import pandas as pd

    base = Path(root) if root is not None else find_eo_real()
    df = pd.read_parquet(base / "worldcereal" / "south_sudan_labelled_pixels_2017.parquet")
    spec = _optical_spec(specs)
    df = df[df["sampling_label"].isin(SOUTH_SUDAN_CLASSES)]
    res = {b: next(c.split("-")[-1] for c in df.columns if c.startswith(f"OPTICAL-{b}-ts0-")) for b in
           {c.split("-")[1] for c in df.columns if c.startswith("OPTICAL-")}}
    usable = [c for c in df.columns if c.startswith("OPTICAL-") and (df[c] != WORLDCEREAL_NODATA).any()]
    cols = _band_columns(spec, usable, lambda b: f"OPTICAL-{b}-ts0-{res.get(b, '10m')}")
    samples, labels, periods = [], [], []
    for _, row in df.iterrows():
        start = np.datetime64(str(row["start_date"])[:10], "M")
        months = [start + i for i in range(12)]
        dn = np.stack([[row[c.replace("-ts0-", f"-ts{i}-")] for c in cols] for i in range(12)]).astype(np.float64)
        ok = ((dn != WORLDCEREAL_NODATA) & (dn > 0)).all(1)
        s = _pixel_sample("south_sudan", row["lon"], row["lat"], to_days(months), dn * WORLDCEREAL_SCALE, ok, spec)
        if s is not None:
            samples.append(s)
            labels.append(np.array([[SOUTH_SUDAN_CLASSES.index(row["sampling_label"])]]))
            periods.append((float(to_days(months[0])), float(to_days(start + 12))))
    labels = _min_count(labels, MIN_CLASS_POINTS)
    return Task("south_sudan_crops", "classification", samples, labels, periods, ["south_sudan"] * len(samples),
                "points", SOUTH_SUDAN_CLASSES, description="WorldCereal South Sudan/Uganda survey pixels (2017)")


def flanders_task(specs=DEFAULT_INPUTS, root=None) -> Task:
    """WorldCereal's Flanders LPIS pixels (16 monthly composites from Aug 2020), LANDCOVER10 legend."""
    import pandas as pd

    base = Path(root) if root is not None else find_eo_real()
    df = pd.read_parquet(base / "worldcereal" / "flanders_labelled_pixels_2021.parquet")
    legend = json.loads((base / "worldcereal" / "class_mappings.json").read_text())["LANDCOVER10"]
    spec = _optical_spec(specs)
    usable = [c for c in df.columns if c.startswith("S2-L2A-") and (df[c] != WORLDCEREAL_NODATA).any()]
    cols = _band_columns(spec, usable, lambda b: f"S2-L2A-{b}")  # B8A is all nodata here: B08 stands in
    samples, labels, periods = [], [], []
    for _, g in df.sort_values("timestamp").groupby("sample_id", sort=True):
        name = legend.get(str(int(g["ewoc_code"].iloc[0])), "ignore")
        if name not in FLANDERS_CLASSES:
            continue
        dn = g[cols].to_numpy(np.float64)
        ok = ((dn != WORLDCEREAL_NODATA) & (dn > 0)).all(1)
        times = to_days(g["timestamp"].to_numpy())
        s = _pixel_sample("flanders", g["lon"].iloc[0], g["lat"].iloc[0], times, dn * WORLDCEREAL_SCALE, ok, spec)
        if s is not None:
            samples.append(s)
            labels.append(np.array([[FLANDERS_CLASSES.index(name)]]))
            periods.append(calendar_period("2020-08-01", "2021-12-01"))
    return Task("flanders_crops", "classification", samples, _min_count(labels, MIN_CLASS_POINTS), periods,
                ["flanders"] * len(samples), "points", FLANDERS_CLASSES,
                description="WorldCereal Flanders LPIS pixels (2021), grassland vs temporary crops")


TASKS: dict[str, Callable[..., Task]] = {
    **{f"worldcover_{p}": (lambda p: lambda specs=DEFAULT_INPUTS, root=None: worldcover_task(p, specs, root))(p)
       for p in GREENEARTHNET_PLACES},
    "worldcover_sites": worldcover_sites_task,
    "slovenia_lulc": slovenia_task,
    "belgium_cropland": belgium_cropland_task,
    "belgium_slope": belgium_slope_task,
    "south_sudan_crops": south_sudan_task,
    "flanders_crops": flanders_task,
}
"""Task name -> builder `(specs, root) -> Task`."""


def build_task(name: str, specs: Sequence[SourceSpec] = DEFAULT_INPUTS, root=None) -> Task:
    """One task by name, for the input sources `specs`."""
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r}; choose from {', '.join(TASKS)} (or 'all')")
    return TASKS[name](tuple(specs), root)


# %% [markdown]
# ## The pixels a task scores
#
# The probes of chapter 23 work on a table: one row per scored pixel, its label, its place
# and its position in metres (each place projected about its own centre, so that a buffer
# means the same distance at every latitude).

# %%
#| export evaluation.pixels
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from aef_lit.data import DataError, Sample
from aef_lit.evaluation import baselines as _bl
from aef_lit.evaluation import probes as _pr
from aef_lit.evaluation.tasks import Period, Task


@dataclass
class PixelTable:
    """The scored pixels of a task: labels, positions and where each comes from."""

    y: np.ndarray  # N
    xy: np.ndarray  # N 2, metres, local to the pixel's group
    group: np.ndarray  # N, index into `group_names`
    group_names: tuple[str, ...]
    sample: np.ndarray  # N, index into task.samples
    row: np.ndarray  # N
    col: np.ndarray  # N

    def __len__(self) -> int:
        return len(self.y)


def observed(sample: Sample, period: Period) -> np.ndarray:
    """`H W`: True where some input source has a clear observation in the period."""
    ok = np.zeros(sample.grid.shape, bool)
    for fr in _bl.input_series(sample).values():
        keep = (fr.times >= period[0]) & (fr.times < period[1])
        ok |= fr.valid[keep].any(0)
    return ok


def pixel_table(task: Task) -> PixelTable:
    """Every labelled pixel with a clear input observation in its period."""
    names = tuple(dict.fromkeys(task.groups))
    cols = {k: [] for k in ("y", "lon", "lat", "group", "sample", "row", "col")}
    for i, (s, lab, per, g) in enumerate(zip(task.samples, task.labels, task.periods, task.groups)):
        has = np.isfinite(lab) if task.kind == "regression" else lab >= 0
        r, c = np.nonzero(has & observed(s, per))
        lonlat = _bl.pixel_lonlat(s)
        cols["y"].append(lab[r, c])
        cols["lon"].append(lonlat[0, r, c])
        cols["lat"].append(lonlat[1, r, c])
        cols["group"].append(np.full(len(r), names.index(g)))
        cols["sample"].append(np.full(len(r), i))
        cols["row"].append(r)
        cols["col"].append(c)
    a = {k: np.concatenate(v) for k, v in cols.items()}
    if len(a["y"]) == 0:
        raise DataError(f"task {task.name}: no labelled pixel has a clear observation in its period")
    xy = np.zeros((len(a["y"]), 2))
    for gi in range(len(names)):
        m = a["group"] == gi
        lat0, lon0 = np.deg2rad(a["lat"][m].mean()), a["lon"][m].mean()
        xy[m, 0] = np.deg2rad(a["lon"][m] - lon0) * 6_371_008.8 * np.cos(lat0)
        xy[m, 1] = np.deg2rad(a["lat"][m] - np.rad2deg(lat0)) * 6_371_008.8
    y = a["y"].astype(np.int64 if task.kind == "classification" else np.float64)
    return PixelTable(y, xy, a["group"], names, a["sample"], a["row"], a["col"])


def split_function(task: Task, table: PixelTable, split: str | None = None, block: float = _pr.BLOCK_M,
                   buffer: float = _pr.BUFFER_M, thin: float = _pr.THIN_M) -> _pr.SplitFn:
    """The fold splitter of a task: its own split, or `split` to override (e.g. "pixels")."""
    split = split or task.split
    if split == "blocks":
        return lambda r, i: _pr.block_split(table.xy, r, table.group, block, buffer)
    if split == "points":
        return lambda r, i: _pr.point_split(table.xy, r, thin)
    if split == "sites":
        if len(table.group_names) < 2:
            raise ValueError(f"task {task.name} has one site: leave-one-site-out needs two")
        return lambda r, i: _pr.site_split(table.group, i % len(table.group_names))
    if split == "pixels":
        return lambda r, i: _pr.pixel_split(len(table), r)
    raise ValueError(f"unknown split {split!r}; choose from {_pr.SPLITS}")


# %%
#| export evaluation.pixels
def feature_matrix(feats: Sequence[np.ndarray], table: PixelTable, standardise: bool) -> np.ndarray:
    """`N F` features of the table's pixels (z-scored per feature when `standardise`; NaN -> mean)."""
    x = np.stack([feats[s][:, r, c] for s, r, c in zip(table.sample, table.row, table.col)]).astype(np.float64)
    ok = np.isfinite(x)
    mean = np.nanmean(np.where(ok, x, np.nan), 0) if ok.any() else np.zeros(x.shape[1])
    mean = np.nan_to_num(mean)
    x = np.where(ok, x, mean)
    if standardise:
        sd = x.std(0)
        x = (x - mean) / np.where(sd > 0, sd, 1.0)
    return x


# %% [markdown]
# ## Methods: anything that turns frames into features
#
# A **method** maps a task's samples and periods to one `F H W` feature array per sample. The
# evaluated model is one; so is each baseline of chapter 24; so is an *untrained* network of
# the model's own architecture (same code, random weights, two seeds), and so is an embedding
# raster read from disk. Designed features are z-scored per feature over the task's pixels
# before probing (their bands and units differ; the z-scoring uses no labels); embeddings are
# probed as they are, unit vectors, as the paper does. NaN (a harmonic fit a pixel cannot
# support) becomes the feature's mean.
#
# Chapter 26 writes the network methods; this chapter needs only the base
# class and the methods that wrap a baseline or any function.

# %%
#| export evaluation.methods
from __future__ import annotations

from typing import Callable, Sequence

import numpy as np

from aef_lit.data import Sample
from aef_lit.evaluation import baselines as _bl
from aef_lit.evaluation.tasks import Period


class Method:
    """Base class: `__call__(samples, periods) -> list of F H W float32 arrays`."""

    name: str = "method"
    standardise: bool = False
    embedding: bool = True  # an embedding defines its own nodata: pixels it leaves NaN are dropped for all

    def key(self) -> str:
        """What identifies this method's output, for the embedding cache."""
        return self.name

    def __call__(self, samples: Sequence[Sample], periods: Sequence[Period]) -> list[np.ndarray]:
        raise NotImplementedError


class BaselineMethod(Method):
    """A chapter-24 baseline by name."""

    standardise = True
    embedding = False

    def __init__(self, name: str):
        if name.partition("_")[0] not in ("composite", "harmonic", "xy", "mosaiks"):
            raise ValueError(f"unknown baseline {name!r}; choose from {', '.join(_bl.BASELINES)}")
        self.name = name

    def __call__(self, samples, periods):
        if self.name.endswith("_5x5") and all(s.grid.shape == (1, 1) for s in samples):
            raise _bl.NotApplicable("a 5x5 neighbourhood of a lone labelled pixel does not exist")
        return [_bl.baseline_features(self.name, s, p) for s, p in zip(samples, periods)]


class CallableMethod(Method):
    """Any `fn(sample, period) -> F H W` array (your own embedding function)."""

    def __init__(self, fn: Callable[[Sample, Period], np.ndarray], name: str, standardise: bool = False):
        self.fn, self.name, self.standardise = fn, name, standardise

    def __call__(self, samples, periods):
        return [np.asarray(self.fn(s, p), np.float32) for s, p in zip(samples, periods)]


# %% [markdown]
# ## Leaks: when a label was a training target
#
# The shipped model learnt to *decode* WorldCover and the DEM at its training sites
# (Portugal and Hungary, chapter 21). Probing its embeddings for WorldCover there measures how
# well it memorised a target, not how well it maps from few labels: its own land-cover
# decoder predicts WorldCover there with no probe at all (chapter 26 measures it). Such a task
# is still reported (it says something about the decoder), but it is marked and never a
# headline number. The rule reads the model's `config.json`: a task leaks when its label set is one of
# the model's target sources and one of its places was a training site that carried that target.

# %%
#| export evaluation.protocol
from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from aef_lit.conventions import SourceSpec
from aef_lit.evaluation import baselines as _bl
from aef_lit.evaluation import probes as _pr
from aef_lit.evaluation.methods import Method
from aef_lit.evaluation.pixels import PixelTable, feature_matrix, pixel_table, split_function
from aef_lit.evaluation.report import results_markdown
from aef_lit.evaluation.tasks import DEFAULT_INPUTS, TASKS, Task, build_task

log = logging.getLogger("aef_lit.evaluation.protocol")

SITE_TARGETS = {
    "greenearthnet": ("dem", "landcover"), "greenearthnet_geotiff": (), "belgium": ("dem",),
    "slovenia": ("dem", "landcover"),
}
"""Target sources each kind of training site carries (chapters 2 and 20)."""


def training_targets(meta: Mapping[str, Any] | None) -> dict[str, set[str]]:
    """place -> the model targets it was trained to decode there, from a model's config.json."""
    if not meta or not meta.get("train_config"):
        return {}
    tc = meta["train_config"]
    targets = {s["name"] for s in (meta.get("model_config") or {}).get("sources", []) if s.get("role") == "target"}
    data, sites = tc.get("data", ""), list(tc.get("sites") or ())
    out: dict[str, set[str]] = {}
    for site in sites:
        if data in ("greenearthnet", "auto"):
            place, kind = site, "greenearthnet"
        elif data == "greenearthnet_geotiff":
            place, kind = site, "greenearthnet_geotiff"
        elif data == "multisite":
            place = site.removesuffix("_geotiff")
            kind = ("greenearthnet_geotiff" if site.endswith("_geotiff") else
                    site if site in ("belgium", "slovenia") else "greenearthnet")
        else:
            continue
        out.setdefault(place, set()).update(set(SITE_TARGETS[kind]) & targets)
    if data == "worldcereal":
        out.setdefault("belgium", set()).update(set(SITE_TARGETS["belgium"]) & targets)
    return out


def leak_reason(task: Task, meta: Mapping[str, Any] | None) -> str:
    """Why `task` leaks for the model of `meta` ("" when it does not)."""
    if not task.label_source:
        return ""
    seen = training_targets(meta)
    hit = sorted(p for p in set(task.groups) if task.label_source in seen.get(p, ()))
    return f"{task.label_source} was a training target at {', '.join(hit)}" if hit else ""


# %% [markdown]
# ## The evaluation
#
# `evaluate` runs the protocol for every task and every method: build the task, compute
# (or read from a cache) each method's features, keep the pixels every embedding covers,
# then `run_trials` with the task's split. The result holds every fold's score, the summary
# with intervals, and per task the pixels, classes, leaks and the methods that were not
# applicable.

# %%
#| export evaluation.protocol
@dataclass
class EvalResult:
    """Rows (one per task, method, probe, shots and fold), their summary, and facts per task."""

    rows: list[dict]
    tasks: dict[str, dict]
    settings: dict = field(default_factory=dict)

    @property
    def summary(self):
        """Mean and 95 % t-interval half-width per task, split, method, probe and shots."""
        return _pr.summarise(self.rows, by=("task", "split", "method", "probe", "shots"))

    def to_json(self, path: str | Path) -> Path:
        """Write settings, task facts, the summary and every fold's row as JSON."""
        p = Path(path)
        p.parent.mkdir(parents=True, exist_ok=True)
        summ = json.loads(self.summary.to_json(orient="records"))
        tmp = p.with_suffix(p.suffix + ".tmp")
        tmp.write_text(json.dumps({"settings": self.settings, "tasks": self.tasks, "summary": summ,
                                   "rows": self.rows}, indent=1, default=float))
        tmp.replace(p)  # never a half-written file under the final name
        return p

    @classmethod
    def from_json(cls, path: str | Path) -> "EvalResult":
        """Read back what `to_json` wrote."""
        d = json.loads(Path(path).read_text())
        return cls(d["rows"], d["tasks"], d.get("settings", {}))

    def markdown(self, probe: str = "knn3", methods: Sequence[str] | None = None) -> str:
        """Markdown tables (classification, then regression) of one probe: rows task x method,
        columns shots, cells `mean ± CI`; the best mean per task and shots in bold; leaked
        tasks marked †, pseudo-labels ‡ (with a note under the table)."""
        return results_markdown(self.summary, self.tasks, probe, methods)


def method_features(method: Method, task: Task, cache_dir: str | Path | None = None) -> list[np.ndarray]:
    """`method`'s `F H W` features of every sample of `task`, read from (or written to) `cache_dir`."""
    if not cache_dir:
        return method(task.samples, task.periods)
    h = hashlib.sha1(json.dumps([method.key(), task.name, len(task.samples), task.periods,
                                 [s.grid.transform for s in task.samples[:3]]], default=str).encode()).hexdigest()[:20]
    f = Path(cache_dir) / f"{task.name}-{method.name}-{h}.npz"
    if f.exists():
        with np.load(f) as z:
            return [z[f"a{i}"] for i in range(len(z.files))]
    feats = method(task.samples, task.periods)
    f.parent.mkdir(parents=True, exist_ok=True)
    tmp = f.with_name(f.name + ".tmp.npz")
    np.savez(tmp, **{f"a{i}": a for i, a in enumerate(feats)})
    tmp.replace(f)
    return feats


def evaluate(methods: Mapping[str, Method], tasks: Sequence[str | Task] | str = "all", folds: int = 20,
             seed: int = 0, split: str | None = None, shots: Sequence[int | str] | None = None,
             probes: Sequence[str] | None = None, specs: Sequence[SourceSpec] = DEFAULT_INPUTS, root=None,
             model_meta: Mapping[str, Any] | None = None, cache_dir: str | Path | None = None,
             progress: bool = True) -> EvalResult:
    """The sparse-label protocol for every task and method (see the chapter).

    Args:
        methods: name -> Method (see `default_methods`).
        tasks: "all", task names (see TASKS) or built `Task`s.
        split: override every task's split (e.g. "pixels" to measure how much it flatters).
        specs: the input sources tasks are built for (the evaluated model's `input_sources`).
        model_meta: the evaluated model's config.json, to flag leaked tasks.
        cache_dir: a folder for method features (embeddings), keyed by method and task.
    """
    from tqdm.auto import tqdm

    names = list(TASKS) if tasks == "all" else [tasks] if isinstance(tasks, (str, Task)) else list(tasks)
    for t in names:
        if isinstance(t, str) and t not in TASKS:
            raise ValueError(f"unknown task {t!r}; choose from {', '.join(TASKS)} (or 'all')")
    if not methods:
        raise ValueError("no methods to evaluate")
    rows: list[dict] = []
    facts: dict[str, dict] = {}
    bar = tqdm(total=len(names) * (len(methods) + folds), desc="evaluation", disable=not progress)
    for t in names:
        task = t if isinstance(t, Task) else build_task(t, specs, root)
        table = pixel_table(task)
        feats, n_a, seconds = {}, {}, {}
        for mname, method in methods.items():
            bar.set_postfix_str(f"{task.name}: {mname}")
            t0 = time.perf_counter()
            try:
                feats[mname] = method_features(method, task, cache_dir)
            except _bl.NotApplicable as e:
                n_a[mname] = str(e)
            seconds[mname] = round(time.perf_counter() - t0, 3)
            bar.update(1)
        keep = np.ones(len(table), bool)  # pixels every embedding covers
        for mname, f in feats.items():
            if methods[mname].embedding:
                x = np.stack([f[s][:, r, c] for s, r, c in zip(table.sample, table.row, table.col)])
                keep &= np.isfinite(x).all(1)
        if not keep.all():
            log.warning("%s: %d of %d pixels have no embedding from some method; left out for all",
                        task.name, int((~keep).sum()), len(table))
            table = PixelTable(*(getattr(table, k)[keep] if k != "group_names" else table.group_names
                                 for k in ("y", "xy", "group", "group_names", "sample", "row", "col")))
        X = {m: feature_matrix(f, table, methods[m].standardise) for m, f in feats.items()}
        fold_bar = lambda: bar.update(1)  # noqa: E731
        t_probe = time.perf_counter()
        task_rows = _pr.run_trials(X, table.y, split_function(task, table, split), task.kind, shots, probes, folds,
                                   seed, progress=fold_bar) if X else []
        for r in task_rows:
            r["task"] = task.name
        rows += task_rows
        present = np.unique(table.y) if task.kind == "classification" else []
        facts[task.name] = {
            "kind": task.kind, "split": split or task.split, "pixels": int(len(table)),
            "sites": list(table.group_names), "classes": [task.classes[int(c)] for c in present],
            "units": task.units, "pseudo": task.pseudo, "leak": leak_reason(task, model_meta),
            "description": task.description, "not_applicable": n_a, "feature_seconds": seconds,
            "features": {m: int(x.shape[1]) for m, x in X.items()},
            "probe_seconds": round(time.perf_counter() - t_probe, 1),
        }
    bar.close()
    settings = {"folds": folds, "seed": seed, "split": split or "per task", "probes": list(probes or ()),
                "shots": [str(s) for s in (shots or ())], "methods": list(methods),
                "specs": [s.name + ":" + "/".join(s.bands) for s in specs],
                "interval": "95 % Student t over folds"}
    return EvalResult(rows, facts, settings)


# %% [markdown]
# **Tables and verdicts.** `results_markdown` writes one probe's summary as markdown tables;
# `compare` asks of one method, per task, whether it beats the best of the others, with the
# interval of the paired per-fold difference.

# %%
#| export evaluation.report
from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

from aef_lit.evaluation import probes as _pr


def _cell(m: float, h: float, bold: bool) -> str:
    if not np.isfinite(m):
        return "n/a"
    s = f"{m:.3f} ± {h:.3f}" if np.isfinite(h) else f"{m:.3f}"
    return f"**{s}**" if bold else s


def results_markdown(summary, tasks: Mapping[str, dict], probe: str = "knn3",
                     methods: Sequence[str] | None = None) -> str:
    """See `EvalResult.markdown`."""
    out = []
    for kind, metric in (("classification", "balanced_accuracy"), ("regression", "r2")):
        sub = summary[(summary["probe"] == probe) & summary["task"].map(lambda t: tasks[t]["kind"] == kind)]
        if methods is not None:
            sub = sub[sub["method"].isin(methods)]
        if sub.empty:
            continue
        shots = list(dict.fromkeys(sub["shots"]))
        what = "balanced accuracy" if kind == "classification" else "R²"
        out.append(f"{what}, {probe} probe, mean ± 95 % CI over folds "
                   f"({'samples per class' if kind == 'classification' else 'training samples'} in the header)\n")
        out.append("| task | split | method | " + " | ".join(shots) + " |")
        out.append("|---|---|---|" + "---|" * len(shots))
        notes = []
        for task, g in sub.groupby("task", sort=False):
            info = tasks[task]
            mark = ("†" if info.get("leak") else "") + ("‡" if info.get("pseudo") else "")
            if info.get("leak"):
                notes.append(f"† {task}: leak, {info['leak']} (not a measure of mapping from few labels)")
            if info.get("pseudo"):
                notes.append(f"‡ {task}: pseudo-labels (a model's output, not ground truth)")
            best = {s: g[g["shots"] == s][metric].max() for s in shots}
            for method, gm in g.groupby("method", sort=False):
                cells = []
                for s in shots:
                    r = gm[gm["shots"] == s]
                    m = float(r[metric].iloc[0]) if len(r) else float("nan")
                    h = float(r[metric + "_ci"].iloc[0]) if len(r) else float("nan")
                    cells.append(_cell(m, h, np.isfinite(m) and m == best[s]))
                out.append(f"| {task}{mark} | {gm['split'].iloc[0]} | {method} | " + " | ".join(cells) + " |")
            for method in info.get("not_applicable", {}):
                if methods is None or method in methods:
                    na = " | ".join(["n/a"] * len(shots))
                    out.append(f"| {task}{mark} | {info['split']} | {method} | {na} |")
        out += [""] + [n + "  " for n in notes] + ([""] if notes else [])
    return "\n".join(out)


def compare(result, method: str, probe: str = "knn3", shots: str = "10",
            against: Sequence[str] | None = None, level: float = 0.95):
    """Per task: `method` against the best of `against` (default: every other method) at one probe
    and shot count, with the paired per-fold difference and its interval, and a verdict
    (`better` / `worse` when the interval excludes 0, else `tie`)."""
    import pandas as pd

    summ = result.summary
    out = []
    for task, info in result.tasks.items():
        metric = "balanced_accuracy" if info["kind"] == "classification" else "r2"
        shot = shots if info["kind"] == "classification" or shots != "10" else "100"
        sub = summ[(summ["task"] == task) & (summ["probe"] == probe) & (summ["shots"] == shot)]
        if method not in set(sub["method"]):
            continue
        others = sub[sub["method"] != method]
        if against is not None:
            others = others[others["method"].isin(against)]
        if others.empty:
            continue
        best = others.sort_values(metric).iloc[-1]
        d, h = _pr.paired_difference([r for r in result.rows if r["task"] == task], method, best["method"], metric,
                                     level, probe=probe, shots=shot)
        verdict = "better" if d - h > 0 else "worse" if d + h < 0 else "tie"
        mine = float(sub[sub["method"] == method][metric].iloc[0])
        out.append({"task": task, "metric": metric, "shots": shot, method: mine,
                    "best other": best["method"], "its score": float(best[metric]), "difference": d, "ci": h,
                    "verdict": verdict, "leak": info["leak"], "pseudo": info["pseudo"]})
    return pd.DataFrame(out)


# %% [markdown]
# ## Properties on real tasks
#
# The machinery is checked on real tasks before chapter 26 reads any number from it. No
# network is needed for these checks; the shipped model's `config.json` says which inputs the
# tasks are built for and which labels it was trained to decode.
#
# 1. **A leaked task is flagged**: for the shipped model, WorldCover at Portugal and
#    Hungary leaks; at Sweden it does not; slope never does.
# 2. **The scale has both ends**: on the Swedish WorldCover map, a feature that *is* the label
#    (one-hot) scores a balanced accuracy of 1 with every probe and shot count, and Gaussian
#    noise scores chance, within its interval. The designed baselines fall in between. (A
#    random pixel split, so that every class is in every training pool: a blocked fold may miss
#    a rare class, and then not even the label itself can name it.)

# %%
import pandas as pd
from IPython.display import Markdown, display

from aef_lit.training import PRETRAINED, model_config_from_json

real = find_eo_real(required=data == "real") is not None and data != "synthetic"
if not real:
    raise SystemExit("this chapter evaluates on the real samples: put eo_real/ at ../shared/eo_real "
                     "or set $AEF_EO_REAL (see chapter 2)")
folder = Path(model_dir) if model_dir else PRETRAINED
meta = json.loads((folder / "config.json").read_text())
specs = model_config_from_json(meta["model_config"]).input_sources
print("tasks for", folder.name, "| inputs:", [f"{s.name}: {' '.join(s.bands)}" for s in specs])

tasks = {name: build_task(name, specs) for name in TASKS}
pd.DataFrame({name: {"kind": t.kind, "split": t.split, "samples": len(t.samples), "pixels": len(pixel_table(t)),
                     "leak": leak_reason(t, meta) or "-", "pseudo": t.pseudo}
              for name, t in tasks.items()}).T

# %%
for name in ("worldcover_portugal", "worldcover_hungary", "worldcover_sweden", "belgium_slope"):
    print(f"{name:22s} leak: {leak_reason(tasks[name], meta) or '-'}")
assert leak_reason(tasks["worldcover_hungary"], meta) and leak_reason(tasks["worldcover_portugal"], meta)
assert not leak_reason(tasks["worldcover_sweden"], meta) and not leak_reason(tasks["belgium_slope"], meta)

sweden = tasks["worldcover_sweden"]
lab = sweden.labels[0]
onehot = np.eye(len(WORLDCOVER_CLASSES), dtype=np.float32)[np.maximum(lab, 0)].transpose(2, 0, 1)
noise = np.random.default_rng(seed).normal(size=(16, *lab.shape)).astype(np.float32)
ends = {"label itself": CallableMethod(lambda s, p: onehot, "label itself"),
        "noise": CallableMethod(lambda s, p: noise, "noise"),
        "composite": BaselineMethod("composite"), "xy": BaselineMethod("xy")}
check = evaluate(ends, [sweden], folds=max(2, folds // 4), seed=seed, split="pixels", progress=False)
cs = check.summary
assert (cs[cs["method"] == "label itself"]["balanced_accuracy"] == 1.0).all()
chance = 1 / len(check.tasks[sweden.name]["classes"])
for _, r in cs[cs["method"] == "noise"].iterrows():
    assert abs(r["balanced_accuracy"] - chance) < r["balanced_accuracy_ci"] + 0.03, r.to_dict()
display(Markdown(check.markdown("knn3")))

# %%
import matplotlib.pyplot as plt

k3 = cs[cs["probe"] == "knn3"]
order = sorted(k3["shots"].unique(), key=lambda v: (not str(v).isdigit(), int(v) if str(v).isdigit() else 0))
fig, ax = plt.subplots(figsize=(5.5, 3.2))
for i, (name, g) in enumerate(k3.groupby("method", sort=False)):
    g = g.set_index("shots").loc[[o for o in order if o in set(g["shots"])]]
    x = np.arange(len(g)) + (i - 1.5) * 0.06
    ax.errorbar(x, g["balanced_accuracy"], yerr=g["balanced_accuracy_ci"], marker="o", capsize=3, label=name)
ax.axhline(chance, color="grey", ls=":", lw=1, label="chance")
ax.set_xticks(range(len(order)), [str(o) for o in order])
ax.set_xlabel("labelled samples per class")
ax.set_ylabel("balanced accuracy (kNN-3)")
ax.set_title("Sweden, WorldCover: the two ends of the scale and two baselines", fontsize=9)
ax.legend(fontsize=7, ncol=3, loc="center right")
plt.tight_layout()
plt.show()

# %% [markdown]
# The table is what `EvalResult.markdown` writes for any evaluation: one row per task and
# method, one column per shot count, the best mean in bold. Chapter 26 fills it with the
# shipped model, its untrained twins and all six baselines on every task.

# %% [markdown]
# ## What this chapter exported
# `aef_lit.evaluation.tasks`: `Task`, the builders, `TASKS` and `build_task`;
# `aef_lit.evaluation.pixels`: `PixelTable`, `pixel_table`, `split_function`, `feature_matrix`;
# `aef_lit.evaluation.methods`: `Method`, `BaselineMethod`, `CallableMethod`;
# `aef_lit.evaluation.protocol`: `training_targets`, `leak_reason`, `method_features`, `evaluate`
# and `EvalResult` (`summary`, `markdown`, `to_json`); `aef_lit.evaluation.report`:
# `results_markdown` and `compare`. All are importable from `aef_lit.evaluation`.
