# generated from notebooks/25_evaluation.py by tools/nb_export.py: do not edit.
# Edit the notebook, then run `python tools/nb_export.py`.

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
