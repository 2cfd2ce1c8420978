# generated from notebooks/25_evaluation.py by tools/nb_export.py: do not edit.
# Edit the notebook, then run `python tools/nb_export.py`.

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
