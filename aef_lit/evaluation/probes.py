# generated from notebooks/23_probes.py by tools/nb_export.py: do not edit.
# Edit the notebook, then run `python tools/nb_export.py`.

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Mapping, Sequence

import numpy as np

SHOTS: tuple[int | str, ...] = (1, 10, "max")
"""The paper's trials: 1, 10 and "max" training samples per class."""
MAX_PER_CLASS = 300
"""The paper's cap on training samples per class (the "max" trial)."""
CLASSIFICATION_PROBES = ("knn1", "knn3", "linear")
REGRESSION_PROBES = ("knn3", "linear")
REGRESSION_SHOTS: tuple[int | str, ...] = (10, 100, "max")
"""Training-set sizes of a regression trial (samples in all: a regression has no classes)."""
REGRESSION_MAX = 1000
"""The cap of a regression "max" trial (samples in all)."""
MAX_TEST_PER_CLASS = 1000
"""Test pixels kept per class and fold (a random subset; see "Running trials")."""


def balanced_accuracy(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Mean recall over the classes present in `y_true` (NaN when it is empty)."""
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    recalls = [np.mean(y_pred[y_true == c] == c) for c in np.unique(y_true)]
    return float(np.mean(recalls)) if recalls else float("nan")


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> np.ndarray:
    """Counts `[true, predicted]` (`n_classes x n_classes`, int64)."""
    m = np.zeros((n_classes, n_classes), np.int64)
    np.add.at(m, (np.asarray(y_true, np.int64), np.asarray(y_pred, np.int64)), 1)
    return m


def r2_score(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Coefficient of determination, 1 - SS_res / SS_tot around the mean of `y_true`."""
    y_true, y_pred = np.asarray(y_true, np.float64), np.asarray(y_pred, np.float64)
    ss_tot = float(((y_true - y_true.mean()) ** 2).sum())
    ss_res = float(((y_true - y_pred) ** 2).sum())
    return 1.0 - ss_res / ss_tot if ss_tot > 0 else float("nan")


def mean_absolute_error(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Mean |y_true - y_pred| in the target's units."""
    return float(np.mean(np.abs(np.asarray(y_true, np.float64) - np.asarray(y_pred, np.float64))))


def nearest_neighbours(train_x: np.ndarray, test_x: np.ndarray, k: int, chunk: int = 512) -> np.ndarray:
    """Indices into `train_x` of the k nearest training rows (L2) of each test row, nearest first.

    For a test row a, the ranking of |a - b|^2 = |a|^2 - 2 a.b + |b|^2 over training rows b
    does not need |a|^2: one `addmm` per chunk of test rows, then `topk` (torch, float32), in
    chunks small enough to stay in cache; about 8x faster than NumPy's argpartition here."""
    import torch

    if k < 1 or k > len(train_x):
        raise ValueError(f"k must be in 1..{len(train_x)} (the training set), got {k}")
    tr = torch.as_tensor(np.asarray(train_x, np.float32))
    tr_sq = (tr * tr).sum(1)[None]
    te = torch.as_tensor(np.asarray(test_x, np.float32))
    out = [torch.topk(torch.addmm(tr_sq, te[s:s + chunk], tr.T, alpha=-2.0), k, dim=1, largest=False,
                      sorted=True).indices for s in range(0, len(te), chunk)]
    return torch.cat(out).numpy() if out else np.zeros((0, k), np.int64)


def vote(neighbour_labels: np.ndarray, k: int) -> np.ndarray:
    """Majority class among the first k columns (nearest first); ties go to the nearest tied class."""
    lab = np.asarray(neighbour_labels)[:, :k]
    if k == 1:
        return lab[:, 0]
    if k == 3:  # the common case, without the N x k x K table: a pair among the three wins, else the nearest
        a, b, c = lab.T
        return np.where((b == c) & (a != b), b, a)
    classes, codes = np.unique(lab, return_inverse=True)
    codes = codes.reshape(lab.shape)
    hits = codes[:, :, None] == np.arange(len(classes))[None, None, :]  # N k K
    votes = hits.sum(1)
    first = np.where(hits.any(1), hits.argmax(1), k)  # rank of each class's nearest neighbour
    return classes[np.argmax(votes * (k + 1) - first, axis=1)]


def knn_classify(train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, k: int = 1) -> np.ndarray:
    """Majority vote of the k nearest training samples (L2); ties go to the nearest tied class."""
    k = min(k, len(train_x))
    return vote(np.asarray(train_y)[nearest_neighbours(train_x, test_x, k)], k)


def knn_regress(train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, k: int = 3) -> np.ndarray:
    """Mean target of the k nearest training samples (L2)."""
    k = min(k, len(train_x))
    return np.asarray(train_y, np.float64)[nearest_neighbours(train_x, test_x, k)].mean(1)


def _with_bias(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, np.float64)
    return np.concatenate([x, np.ones((len(x), 1))], axis=1)


def least_squares(x: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """Minimum-norm least-squares weights `(F + 1) x M` of `[x, 1] W ~ targets` (ridge, lambda -> 0)."""
    w, *_ = np.linalg.lstsq(_with_bias(x), np.asarray(targets, np.float64), rcond=None)
    return w


def linear_classify(train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray) -> np.ndarray:
    """One-vs-rest least squares on +-1 targets; the class of the largest score."""
    classes, codes = np.unique(np.asarray(train_y), return_inverse=True)
    if len(classes) == 1:
        return np.full(len(test_x), classes[0])
    targets = np.where(codes[:, None] == np.arange(len(classes))[None, :], 1.0, -1.0)
    return classes[np.argmax(_with_bias(test_x) @ least_squares(train_x, targets), axis=1)]


def linear_regress(train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray) -> np.ndarray:
    """Least squares (minimum norm) with a bias."""
    return _with_bias(test_x) @ least_squares(train_x, np.asarray(train_y, np.float64)[:, None])[:, 0]


def probe_predict(probe: str, train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray,
                  kind: str = "classification") -> np.ndarray:
    """Predictions of one named probe (`knn1`, `knn3`, `linear`) for a classification or regression."""
    if kind not in ("classification", "regression"):
        raise ValueError(f"kind must be 'classification' or 'regression', got {kind!r}")
    if probe.startswith("knn") and probe[3:].isdigit():
        k = int(probe[3:])
        return (knn_classify if kind == "classification" else knn_regress)(train_x, train_y, test_x, k)
    if probe == "linear":
        return (linear_classify if kind == "classification" else linear_regress)(train_x, train_y, test_x)
    raise ValueError(f"unknown probe {probe!r}: knn<k> (e.g. knn1, knn3) or linear")


def shot_count(shots: int | str, available: int, cap: int = MAX_PER_CLASS) -> int:
    """How many samples a trial of `shots` takes from `available` ("max" = all, at most `cap`)."""
    if shots == "max":
        return min(available, cap)
    if not isinstance(shots, (int, np.integer)) or isinstance(shots, bool) or shots < 1:
        raise ValueError(f"shots must be a positive integer or 'max', got {shots!r}")
    return min(int(shots), available, cap)


def balanced_sample(y: np.ndarray, pool: np.ndarray, shots: int | str, rng: np.random.Generator,
                    max_per_class: int = MAX_PER_CLASS) -> np.ndarray:
    """Indices (into `y`) of a class-balanced training set drawn from the indices `pool`."""
    y, pool = np.asarray(y), np.asarray(pool, np.int64)
    picks = []
    for c in np.unique(y[pool]):
        members = pool[y[pool] == c]
        n = shot_count(shots, len(members), max_per_class)
        picks.append(rng.choice(members, size=n, replace=False))
    return np.sort(np.concatenate(picks)) if picks else np.array([], np.int64)


def random_sample(pool: np.ndarray, shots: int | str, rng: np.random.Generator,
                  cap: int = REGRESSION_MAX) -> np.ndarray:
    """`shots` indices drawn from `pool` (for regressions: no classes to balance)."""
    pool = np.asarray(pool, np.int64)
    return np.sort(rng.choice(pool, size=shot_count(shots, len(pool), cap), replace=False))


def mean_ci(values: Sequence[float], level: float = 0.95) -> tuple[float, float]:
    """(mean, half-width) of Student's t interval over `values` (NaNs dropped; NaN width for n < 2)."""
    from scipy import stats

    v = np.asarray(values, np.float64)
    v = v[np.isfinite(v)]
    if v.size == 0:
        return float("nan"), float("nan")
    if v.size < 2:
        return float(v.mean()), float("nan")
    half = stats.t.ppf(0.5 + level / 2, v.size - 1) * v.std(ddof=1) / np.sqrt(v.size)
    return float(v.mean()), float(half)


SPLITS = ("blocks", "points", "sites", "pixels")
"""Train/test splits: spatial blocks with a buffer, thinned points, leave-one-site-out, random pixels."""
BLOCK_M = 320.0
BUFFER_M = 160.0
THIN_M = 1280.0
"""Defaults: 320 m blocks, a 160 m buffer (one 16-pixel tile at 10 m); points thinned 1.28 km apart (§S3)."""


@dataclass(frozen=True)
class Split:
    """One fold's partition: `pool` (indices a training set may be drawn from) and `test`."""

    pool: np.ndarray
    test: np.ndarray
    kind: str = ""


def _buffer_keep(xy_train: np.ndarray, xy_test: np.ndarray, buffer: float) -> np.ndarray:
    """True for test points farther than `buffer` (Chebyshev) from every training point."""
    from scipy.spatial import cKDTree

    if len(xy_train) == 0 or buffer <= 0:
        return np.ones(len(xy_test), bool)
    d, _ = cKDTree(xy_train).query(xy_test, k=1, p=np.inf)
    return d > buffer


def block_split(xy: np.ndarray, rng: np.random.Generator, groups: np.ndarray | None = None,
                block: float = BLOCK_M, buffer: float = BUFFER_M, train_frac: float = 0.5) -> Split:
    """Random blocks of `block` metres to train (`train_frac` of them) and test, per group
    (site); pool points within `buffer` metres of a test point of their group are dropped, so
    test blocks stay whole and no test point is within `buffer` of a training point."""
    xy = np.asarray(xy, np.float64)
    groups = np.zeros(len(xy), np.int64) if groups is None else np.asarray(groups)
    if block <= 0:
        raise ValueError(f"block must be positive (metres), got {block}")
    pool, test = [], []
    for g in np.unique(groups):
        idx = np.flatnonzero(groups == g)
        cell = np.floor((xy[idx] - xy[idx].min(0)) / block).astype(np.int64)
        _, bid = np.unique(cell, axis=0, return_inverse=True)
        bid = bid.reshape(-1)
        n_blocks = int(bid.max()) + 1
        if n_blocks < 2:
            raise ValueError(f"group {g} fits in one {block:g} m block: use smaller blocks or another split")
        n_train = int(np.clip(round(train_frac * n_blocks), 1, n_blocks - 1))
        for _ in range(20):  # a draw whose buffer swallows the whole pool is drawn again
            is_train = np.isin(bid, rng.permutation(n_blocks)[:n_train])
            keep = _buffer_keep(xy[idx[~is_train]], xy[idx[is_train]], buffer)  # the pool gives way
            if keep.any():
                break
        else:
            raise ValueError(f"group {g}: a {buffer:g} m buffer leaves no training pixel in 20 draws of "
                             f"{block:g} m blocks; the site is too small for them (use smaller ones)")
        pool.append(idx[is_train][keep])
        test.append(idx[~is_train])
    return Split(np.concatenate(pool), np.concatenate(test), "blocks")


def thin_points(xy: np.ndarray, rng: np.random.Generator, min_dist: float = THIN_M) -> np.ndarray:
    """Indices of points kept in a random greedy pass: none within `min_dist` metres of another."""
    from scipy.spatial import cKDTree

    xy = np.asarray(xy, np.float64)
    tree = cKDTree(xy)
    removed = np.zeros(len(xy), bool)
    kept = []
    for i in rng.permutation(len(xy)):
        if removed[i]:
            continue
        kept.append(i)
        removed[tree.query_ball_point(xy[i], r=min_dist - 1e-9)] = True
    return np.sort(np.asarray(kept, np.int64))


def point_split(xy: np.ndarray, rng: np.random.Generator, min_dist: float = THIN_M,
                train_frac: float = 0.5) -> Split:
    """The paper's split for scattered label points: thin to `min_dist`, then split at random."""
    kept = rng.permutation(thin_points(xy, rng, min_dist))
    n_train = int(round(train_frac * len(kept)))
    return Split(np.sort(kept[:n_train]), np.sort(kept[n_train:]), "points")


def site_split(groups: np.ndarray, test_group) -> Split:
    """Leave one site out: train anywhere but `test_group`, test there."""
    groups = np.asarray(groups)
    return Split(np.flatnonzero(groups != test_group), np.flatnonzero(groups == test_group), "sites")


def pixel_split(n: int, rng: np.random.Generator, train_frac: float = 0.5) -> Split:
    """A random pixel split (flattering: neighbours of test pixels train)."""
    order = rng.permutation(n)
    k = int(round(train_frac * n))
    return Split(np.sort(order[:k]), np.sort(order[k:]), "pixels")


SplitFn = Callable[[np.random.Generator, int], Split]
"""A split for fold `i` from that fold's generator: `split_fn(rng, i) -> Split`."""


def fold_generator(seed: int, fold: int, *more: int) -> np.random.Generator:
    """The generator of one fold (and sub-draw): a pure function of the integers given."""
    return np.random.default_rng([int(seed), int(fold), *map(int, more)])


def run_trials(features: Mapping[str, np.ndarray], y: np.ndarray, split_fn: SplitFn,
               kind: str = "classification", shots: Sequence[int | str] | None = None,
               probes: Sequence[str] | None = None, folds: int = 20, seed: int = 0,
               max_per_class: int = MAX_PER_CLASS, max_test_per_class: int | None = MAX_TEST_PER_CLASS,
               progress=None) -> list[dict]:
    """Score every probe on every feature set (`name -> N x F`, same N rows as `y`) over `folds`
    folds and the `shots` trials. Methods share every fold's split, test set and training sets.
    A fold's test set keeps at most `max_test_per_class` pixels of each class (regression: in
    all), drawn at random (None: every test pixel).

    Returns rows with `method`, `probe`, `shots`, `fold`, `n_train`, `n_test`, and the metrics
    (`balanced_accuracy`; or `r2` and `mae`). `progress` is an optional callable run per fold.
    """
    y = np.asarray(y)
    classify = kind == "classification"
    shots = tuple(shots or (SHOTS if classify else REGRESSION_SHOTS))
    probes = tuple(probes or (CLASSIFICATION_PROBES if classify else REGRESSION_PROBES))
    for name, x in features.items():
        if len(x) != len(y):
            raise ValueError(f"features {name!r} have {len(x)} rows for {len(y)} labels")
        if not np.all(np.isfinite(x)):
            raise ValueError(f"features {name!r} contain NaN/inf: fill them before probing")
    rows = []
    for fold in range(folds):
        split = split_fn(fold_generator(seed, fold), fold)
        test = split.test
        if len(test) == 0 or len(split.pool) == 0:
            raise ValueError(f"fold {fold}: the split left an empty {'test set' if len(test) == 0 else 'pool'}")
        if max_test_per_class:
            rt = fold_generator(seed, fold, 0)
            test = (balanced_sample(y, test, "max", rt, max_test_per_class) if classify
                    else random_sample(test, "max", rt, max_test_per_class))
        for j, s in enumerate(shots):
            r = fold_generator(seed, fold, j + 1)
            train = (balanced_sample(y, split.pool, s, r, max_per_class) if classify
                     else random_sample(split.pool, s, r))
            for name, x in features.items():
                ks = [int(p[3:]) for p in probes if p.startswith("knn") and p[3:].isdigit()]
                nn = nearest_neighbours(x[train], x[test], min(max(ks), len(train))) if ks else None
                for probe in probes:
                    if probe in (f"knn{k}" for k in ks):  # every kNN probe from one neighbour search
                        k = min(int(probe[3:]), len(train))
                        pred = (vote(y[train][nn], k) if classify
                                else np.asarray(y[train], np.float64)[nn[:, :k]].mean(1))
                    else:
                        pred = probe_predict(probe, x[train], y[train], x[test], kind)
                    row = {"method": name, "probe": probe, "shots": str(s), "fold": fold,
                           "n_train": int(len(train)), "n_test": int(len(test)), "split": split.kind}
                    if classify:
                        row["balanced_accuracy"] = balanced_accuracy(y[test], pred)
                    else:
                        row["r2"] = r2_score(y[test], pred)
                        row["mae"] = mean_absolute_error(y[test], pred)
                    rows.append(row)
        if progress is not None:
            progress()
    return rows


METRICS = ("balanced_accuracy", "r2", "mae")


def summarise(rows: Sequence[dict], by: Sequence[str] = ("method", "probe", "shots"), level: float = 0.95):
    """Mean and t-interval half-width of every metric over folds, one row per `by` group."""
    import pandas as pd

    df = pd.DataFrame(list(rows))
    by = [b for b in by if b in df.columns]
    out = []
    for key, g in df.groupby(by, sort=False):
        key = key if isinstance(key, tuple) else (key,)
        rec = dict(zip(by, key))
        rec["folds"] = int(g["fold"].nunique())
        rec["n_test"] = int(round(g["n_test"].mean()))
        for m in METRICS:
            if m in g and g[m].notna().any():
                rec[m], rec[m + "_ci"] = mean_ci(g[m].to_numpy(), level)
        out.append(rec)
    return pd.DataFrame(out)


def paired_difference(rows: Sequence[dict], a: str, b: str, metric: str = "balanced_accuracy",
                      level: float = 0.95, **where) -> tuple[float, float]:
    """(mean, half-width) of the per-fold difference `a - b` of two methods (same folds).

    `where` selects the rows (e.g. `probe="knn3", shots="10"`)."""
    import pandas as pd

    df = pd.DataFrame(list(rows))
    for k, v in where.items():
        df = df[df[k] == v]
    keys = [c for c in ("task", "split", "probe", "shots", "fold") if c in df.columns]
    pa = df[df["method"] == a].set_index(keys)[metric]
    pb = df[df["method"] == b].set_index(keys)[metric]
    both = pa.index.intersection(pb.index)
    if len(both) == 0:
        raise ValueError(f"no folds shared by {a!r} and {b!r} with {where}")
    return mean_ci((pa.loc[both] - pb.loc[both]).to_numpy(), level)
