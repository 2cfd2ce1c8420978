# generated from notebooks/25_evaluation.py by tools/nb_export.py: do not edit.
# Edit the notebook, then run `python tools/nb_export.py`.

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from aef_lit.evaluation import baselines as _bl
from aef_lit.evaluation import probes as _pr
from aef_lit.conventions import WORLDCOVER_CLASSES, SourceSpec, find_eo_real, to_days
from aef_lit.data import (
    GREENEARTHNET_S2, WORLDCEREAL_NODATA, DataError, Grid, Sample, SourceFrames,
    load_eolearn_slovenia, load_greenearthnet_minicube, load_worldcereal_belgium,
)

log = logging.getLogger("aef_lit.evaluation.core")
Period = tuple[float, float]


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
    """A chapter-23 baseline by name."""

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


def embed_sample(model, sample: Sample, period: Period, tile: int | None = None, batch_size: int = 16,
                 min_valid: float = 0.05) -> np.ndarray:
    """The model's `E H W` embedding of one site over `period`, from the frames in the period.

    The site is padded to a multiple of `tile` (default: the model's training tile; 0 = one
    pass over the whole padded site) with unobserved pixels and embedded tile by tile; each
    tile reads the frames that are clear on at least `min_valid` of it (chapter 20's rule for
    training rows). A 1 x 1 sample (a labelled pixel) is repeated over one tile.
    """
    import torch
    import torch.nn.functional as F
    from einops import rearrange

    from aef_lit.conventions import SourceBatch
    from aef_lit.model import embed
    from aef_lit.data.preprocess import collate

    cfg = model.cfg
    L = cfg.tile if tile is None else tile
    s = _in_period(sample, period)
    batch = collate([s], _model_specs(model, s))
    H, W = sample.grid.shape
    side = L or 16
    if (H, W) == (1, 1):
        return embed_pixels(model, [sample], [period], side)[0]
    Hp, Wp = -(-H // side) * side, -(-W // side) * side
    batch = {k: v.replace(x=F.pad(v.x, (0, Wp - W, 0, Hp - H)), weight=F.pad(v.weight, (0, Wp - W, 0, Hp - H)))
             for k, v in batch.items()}
    if L:  # tiles as a batch; a tile reads only the frames clear on >= min_valid of it, as in training
        n = (Hp // L) * (Wp // L)
        tiles = {}
        for k, v in batch.items():
            w = rearrange(v.weight, "b t (i h) (j w) -> (b i j) t h w", h=L, w=L)
            timeless = sample.specs[k].modality in _bl.TIMELESS
            clear = v.frame_mask.repeat(n, 1) & ((w.mean((-2, -1)) >= min_valid) | timeless)
            tiles[k] = SourceBatch(x=rearrange(v.x, "b t c (i h) (j w) -> (b i j) t c h w", h=L, w=L),
                                   t=v.t.repeat(n, 1), frame_mask=clear, weight=w,
                                   meta=None if v.meta is None else v.meta.repeat(n, 1, 1))
        per = torch.tensor([period], dtype=torch.float64).repeat(n, 1)
        out = []
        for s0 in range(0, n, batch_size):
            chunk = {k: SourceBatch(x=v.x[s0:s0 + batch_size], t=v.t[s0:s0 + batch_size],
                                    frame_mask=v.frame_mask[s0:s0 + batch_size], weight=v.weight[s0:s0 + batch_size],
                                    meta=None if v.meta is None else v.meta[s0:s0 + batch_size])
                     for k, v in tiles.items()}
            out.append(embed(model, chunk, per[s0:s0 + batch_size]).cpu())
        mu = rearrange(torch.cat(out), "(i j) e h w -> e (i h) (j w)", i=Hp // L, j=Wp // L)
    else:
        mu = embed(model, batch, torch.tensor([period], dtype=torch.float64))[0].cpu()
    return mu[:, :H, :W].float().numpy()


def _in_period(sample: Sample, period: Period) -> Sample:
    """The sample with only its frames in [t_s, t_e) (sources left without a frame dropped)."""
    inside = {n: fr.select(np.flatnonzero((fr.times >= period[0]) & (fr.times < period[1])))
              for n, fr in sample.sources.items()}
    inside = {n: fr for n, fr in inside.items() if fr.T > 0}
    if not inside:
        raise DataError(f"{sample.site}: no input frame in the period")
    return Sample(sample.site, sample.grid, inside, {n: sample.specs[n] for n in inside})


def _model_specs(model, sample: Sample) -> list[SourceSpec]:
    specs = [sp for sp in model.cfg.input_sources if sp.name in sample.sources]
    if not specs:
        raise DataError(f"{sample.site} has none of the model's input sources "
                        f"{[sp.name for sp in model.cfg.input_sources]}")
    return specs


def embed_pixels(model, samples: Sequence[Sample], periods: Sequence[Period], tile: int | None = None,
                 batch_size: int = 64) -> list[np.ndarray]:
    """`E 1 1` embeddings of labelled pixels (1 x 1 samples), each repeated over one tile, in batches."""
    import torch

    from aef_lit.model import embed
    from aef_lit.data.preprocess import collate

    L = tile or model.cfg.tile
    out = []
    for s0 in range(0, len(samples), batch_size):
        chunk = [_in_period(s, p) for s, p in zip(samples[s0:s0 + batch_size], periods[s0:s0 + batch_size])]
        if any(s.grid.shape != (1, 1) for s in chunk):
            raise ValueError("embed_pixels takes 1 x 1 samples (labelled pixels)")
        specs = {sp.name: sp for s in chunk for sp in _model_specs(model, s)}
        batch = collate(chunk, list(specs.values()))
        batch = {k: v.replace(x=v.x.expand(-1, -1, -1, L, L), weight=v.weight.expand(-1, -1, L, L))
                 for k, v in batch.items()}
        per = torch.tensor(list(periods[s0:s0 + batch_size]), dtype=torch.float64)
        mu = embed(model, batch, per)[:, :, L // 2:L // 2 + 1, L // 2:L // 2 + 1]
        out += list(mu.float().cpu().numpy())
    return out


class ModelMethod(Method):
    """An AEF model's embeddings (`embed_sample` per sample)."""

    def __init__(self, model, name: str = "model", tile: int | None = None, batch_size: int = 16):
        self.model, self.name, self.tile, self.batch_size = model, name, tile, batch_size

    def key(self) -> str:
        from aef_lit.training import params_digest

        return f"{self.name}/{params_digest(self.model)[:16]}/tile{self.tile}"

    def __call__(self, samples, periods):
        if samples and all(s.grid.shape == (1, 1) for s in samples):
            return embed_pixels(self.model, samples, periods, self.tile)
        return [embed_sample(self.model, s, p, self.tile, self.batch_size) for s, p in zip(samples, periods)]


def untrained_model(cfg, seed: int, device: str = "cpu"):
    """A network of architecture `cfg` with the initial weights of `seed` (never trained), in eval mode."""
    import torch

    from aef_lit.model import build_model

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = build_model(cfg)
    return model.to(device).eval()


AEF_NODATA = -128


def dequantise_aef(q: np.ndarray) -> np.ndarray:
    """The AEF product's int8 codes to float32 values: sign(q) (q / 127.5)^2, NaN at -128."""
    q = np.asarray(q)
    v = np.sign(q) * (q.astype(np.float32) / 127.5) ** 2
    return np.where(q == AEF_NODATA, np.nan, v).astype(np.float32)


def read_embedding_raster(path: str | Path) -> tuple[np.ndarray, Grid]:
    """`(F H W float32 with NaN at nodata, Grid)` of an embedding GeoTIFF (float, or AEF int8)."""
    import rasterio

    with rasterio.open(path) as src:
        a = src.read()
        nodata = src.nodata
        grid = Grid(src.crs.to_string() if src.crs else "EPSG:4326", tuple(src.transform)[:6], src.height, src.width)
    if a.dtype == np.int8:
        return dequantise_aef(a), grid
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


SITE_TARGETS = {
    "greenearthnet": ("dem", "landcover"), "greenearthnet_geotiff": (), "belgium": ("dem",), "slovenia": ("dem", "landcover"),
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
                    out.append(f"| {task}{mark} | {info['split']} | {method} | " + " | ".join(["n/a"] * len(shots)) + " |")
        out += [""] + [n + "  " for n in notes] + ([""] if notes else [])
    return "\n".join(out)


def compare(result: EvalResult, method: str, probe: str = "knn3", shots: str = "10",
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
        out.append({"task": task, "metric": metric, "shots": shot, method: float(sub[sub["method"] == method][metric].iloc[0]),
                    "best other": best["method"], "its score": float(best[metric]), "difference": d, "ci": h,
                    "verdict": verdict, "leak": info["leak"], "pseudo": info["pseudo"]})
    return pd.DataFrame(out)


def _features(method: Method, task: Task, cache_dir: Path | None) -> list[np.ndarray]:
    if cache_dir is None:
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


def default_methods(model=None, name: str = "model", untrained_seeds: Sequence[int] = (0, 1),
                    baselines: Sequence[str] = _bl.BASELINES, arch=None, device: str = "cpu",
                    tile: int | None = None) -> dict[str, Method]:
    """The model (if given), untrained networks of its architecture (or `arch`), and the baselines."""
    methods: dict[str, Method] = {}
    if model is not None:
        methods[name] = ModelMethod(model, name, tile)
    cfg = arch if arch is not None else (model.cfg if model is not None else None)
    if cfg is not None:
        for s in untrained_seeds:
            methods[f"untrained_{s}"] = ModelMethod(untrained_model(cfg, s, device), f"untrained_{s}", tile)
    for b in baselines:
        methods[b] = BaselineMethod(b)
    return methods


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
                feats[mname] = _features(method, task, Path(cache_dir) if cache_dir else None)
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


def representation_stats(x: np.ndarray, pairs: int = 20_000, seed: int = 0) -> dict[str, float]:
    """Label-free diagnostics of `N x F` vectors: effective rank, top-5 variance share, mean |cos|."""
    x = np.asarray(x, np.float64)
    c = x - x.mean(0)
    sv2 = np.linalg.svd(c, compute_uv=False) ** 2
    p = sv2 / max(sv2.sum(), 1e-300)
    nz = p[p > 0]
    rng = np.random.default_rng(seed)
    i, j = rng.integers(0, len(x), (2, pairs))
    keep = i != j
    n = np.linalg.norm(x, axis=1)
    cos = (x[i[keep]] * x[j[keep]]).sum(1) / np.maximum(n[i[keep]] * n[j[keep]], 1e-12)
    return {"effective_rank": float(np.exp(-(nz * np.log(nz)).sum())), "top5_variance": float(p[:5].sum()),
            "mean_abs_cos": float(np.abs(cos).mean()), "dims": int(x.shape[1])}


def neighbour_overlap(a: np.ndarray, b: np.ndarray, k: int = 10, sample: int = 2000, seed: int = 0) -> float:
    """Mean share of each point's k nearest neighbours (among `sample` random rows) that the two
    representations `a` and `b` (same rows) agree on: 1 = same neighbourhoods, ~k/sample = unrelated."""
    if len(a) != len(b):
        raise ValueError(f"the representations have {len(a)} and {len(b)} rows")
    idx = np.random.default_rng(seed).choice(len(a), size=min(sample, len(a)), replace=False)
    na = _pr.nearest_neighbours(a[idx], a[idx], k + 1)[:, 1:]  # drop the point itself
    nb = _pr.nearest_neighbours(b[idx], b[idx], k + 1)[:, 1:]
    return float(np.mean([len(set(u) & set(v)) / k for u, v in zip(na, nb)]))


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


def build_eval_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="aef-eval", formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        description="Score embeddings with the sparse-label protocol of AlphaEarth Foundations (chapter 25): "
                    "kNN and linear probes at 1, 10 and max samples per class over random spatial folds, "
                    "against designed baselines and untrained networks, on the real tasks of eo_real/.")
    p.add_argument("--model", default=None, help="a model folder (model.safetensors + config.json); "
                   "default: the shipped model, unless --embeddings is given")
    p.add_argument("--embeddings", default=None, help="an embedding GeoTIFF to score (float bands, or the AEF "
                   "int8 format: -128 nodata); warped onto each task's grid")
    p.add_argument("--labels", default=None, help="a label GeoTIFF (band 1, nodata = unlabelled) to score "
                   "--embeddings on, instead of the built-in tasks")
    p.add_argument("--kind", choices=("classification", "regression"), default=None,
                   help="the kind of --labels (default: integer labels are classes)")
    p.add_argument("--tasks", nargs="+", default=["all"], help=f"'all' or task names: {', '.join(TASKS)}")
    p.add_argument("--baselines", nargs="*", default=list(_bl.BASELINES),
                   help="designed baselines to score beside the embeddings (none: give the flag alone)")
    p.add_argument("--untrained-seeds", nargs="*", type=int, default=[0, 1],
                   help="seeds of untrained networks of the model's architecture (none: give the flag alone)")
    p.add_argument("--folds", type=int, default=20, help="random folds per trial (the protocol: at least 20)")
    p.add_argument("--shots", nargs="+", default=None, help="training samples per class, e.g. 1 10 max "
                   "(default: 1 10 max; regressions 10 100 max)")
    p.add_argument("--probes", nargs="+", default=None, help="probes: knn1 knn3 linear (default: all three)")
    p.add_argument("--split", choices=_pr.SPLITS, default=None,
                   help="override every task's split (e.g. pixels, to see how much it flatters)")
    p.add_argument("--table-probe", default="knn3", help="the probe whose results the printed table shows")
    p.add_argument("--tile", type=int, default=None, help="tile size the model embeds in (default: its training "
                   "tile; 0 = the whole site in one pass)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, mps or xla")
    p.add_argument("--seed", type=int, default=0, help="seed of the folds (the same for every method)")
    p.add_argument("--out", default="aef-eval.json", help="where the JSON of every fold and the summary goes")
    p.add_argument("--cache", default=None, help="a folder to cache features in (embeddings are reused on reruns)")
    p.add_argument("--eo-real", default=None, help="the eo_real/ folder (default: $AEF_EO_REAL or ../shared/eo_real)")
    p.add_argument("--update-card", action="store_true",
                   help="write the probe table into the model folder's config.json and MODEL_CARD.md")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def _parse_shots(values):
    if values is None:
        return None
    out = []
    for v in values:
        if v == "max":
            out.append("max")
        elif v.isdigit() and int(v) > 0:
            out.append(int(v))
        else:
            raise SystemExit(f"aef-eval: --shots takes positive integers or 'max', got {v!r}")
    return out


def update_card(folder: str | Path, result: EvalResult, probe: str = "knn3") -> None:
    """Put the probe table of `result` into a model folder's config.json (`probes`) and its card."""
    from aef_lit.training import TrainConfig, model_card, model_config_from_json

    folder = Path(folder)
    meta = json.loads((folder / "config.json").read_text())
    meta["probes"] = {"table": result.markdown(probe), "probe": probe, "settings": result.settings,
                      "tasks": {t: {k: v for k, v in f.items() if not k.endswith("_seconds")}
                                for t, f in result.tasks.items()},
                      "reproduce": f"aef-eval --model {folder} --tasks all --update-card"}
    (folder / "config.json").write_text(json.dumps(meta, indent=1, sort_keys=True))
    if meta.get("train_config"):
        card = model_card(model_config_from_json(meta["model_config"]), TrainConfig.from_dict(meta["train_config"]), meta)
        (folder / "MODEL_CARD.md").write_text(card)


def main(argv: Sequence[str] | None = None) -> int:
    """The `aef-eval` command line."""
    args = build_eval_parser().parse_args(argv)
    shots = _parse_shots(args.shots)
    for p in args.probes or ():
        if not (p == "linear" or (p.startswith("knn") and p[3:].isdigit() and int(p[3:]) > 0)):
            raise SystemExit(f"aef-eval: unknown probe {p!r} (knn1, knn3, linear)")
    unknown = [b for b in args.baselines if b not in _bl.BASELINES]
    if unknown:
        raise SystemExit(f"aef-eval: unknown baseline(s) {unknown}; choose from {', '.join(_bl.BASELINES)}")
    if args.folds < 2:
        raise SystemExit("aef-eval: --folds must be at least 2 (an interval needs two folds)")
    if args.labels and not args.embeddings:
        raise SystemExit("aef-eval: --labels scores an --embeddings raster; give both")
    for f in (args.embeddings, args.labels):
        if f and not Path(f).exists():
            raise SystemExit(f"aef-eval: no such file: {f}")
    tasks = list(TASKS) if args.tasks == ["all"] else args.tasks
    bad = [t for t in tasks if t not in TASKS]
    if bad and not args.labels:
        raise SystemExit(f"aef-eval: unknown task(s) {bad}; choose from {', '.join(TASKS)} or all")
    if args.update_card and (args.labels or not (args.model or not args.embeddings)):
        raise SystemExit("aef-eval: --update-card needs a model folder (--model, or the shipped one)")
    from aef_lit.conventions import select_device
    from aef_lit.training import PRETRAINED, load_pretrained

    dev = select_device(args.device)
    model = meta = None
    methods: dict[str, Method] = {}
    folder = Path(args.model) if args.model else (None if args.embeddings else PRETRAINED)
    if folder is not None:
        if not (folder / "config.json").exists():
            raise SystemExit(f"aef-eval: {folder} is not a model folder (no config.json)")
        model, cfg = load_pretrained(folder, device=dev)
        meta = json.loads((folder / "config.json").read_text())
    if args.embeddings:
        methods[Path(args.embeddings).stem] = RasterMethod(args.embeddings)
    arch = model.cfg if model is not None else None
    if arch is None and PRETRAINED.exists() and not args.labels:
        arch = load_pretrained(PRETRAINED)[1]  # untrained networks of the shipped architecture
    baselines = ["xy"] if args.labels and args.baselines else args.baselines
    methods.update(default_methods(model, folder.name if folder else "model",
                                   args.untrained_seeds if not args.labels else (), baselines, arch, str(dev), args.tile))
    specs = model.cfg.input_sources if model is not None else DEFAULT_INPUTS
    task_list = [labels_task(args.labels, args.kind)] if args.labels else tasks
    root = args.eo_real
    if root is None and not args.labels and find_eo_real(required=False) is None:
        raise SystemExit("aef-eval: the real samples (eo_real/) were not found; set $AEF_EO_REAL or --eo-real")
    result = evaluate(methods, task_list, folds=args.folds, seed=args.seed, split=args.split, shots=shots,
                      probes=args.probes, specs=specs, root=root, model_meta=meta, cache_dir=args.cache,
                      progress=not args.no_progress)
    out = result.to_json(args.out)
    print(result.markdown(args.table_probe))
    print(f"wrote {out}")
    if args.update_card:
        update_card(folder, result, args.table_probe)
        print(f"updated {folder / 'MODEL_CARD.md'}")
    return 0
