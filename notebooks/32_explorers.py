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
# # 32. Using an embedding field: search, clusters, change, few clicks
#
# People who use Google's published AEF layer run the same few applications in every
# tutorial (`USERS.md`): **similarity search** (pick a pixel, see every pixel like it),
# **unsupervised clustering** (k-means maps), **supervised mapping from a few labelled
# points**, and **change detection** between two periods from the angle between the two
# embeddings. The paper's unsupervised change score is `d = (1 − e·p) / 2` for the embeddings
# `e` and `p` of one pixel in two periods, with one threshold (§10).
#
# They also ask for what an annual layer cannot give: custom periods (July to July, one
# season, a rolling window). A continuous-time model answers that from one encoder pass: the
# encoder reads the frames once, and only the summariser runs again for each period
# [t_s, t_e) (chapter 11). This chapter builds the applications as plain functions that take
# an embedding field as an array (`E H W`, NaN = no data) or as an AEF file read with
# `read_aef` (chapter 27), then uses them on the shipped model's embeddings of a real site,
# with explorers (ipywidgets) for a live session.
#
# The functions go to `aef_lit.applications.fields` (importable from `aef_lit.applications`).

# %% tags=["parameters"]
# Parameters (papermill injects values here). Defaults are sized for a 2-core CPU.
preset = "tiny"  # unused: the shipped model is used (its own preset)
device = "auto"  # where the model runs: "auto" = XLA, CUDA, MPS, then CPU
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
#| default_exp applications.fields

# %% [markdown]
# ## 1. A field, whatever it came from
#
# `as_field` accepts an `E H W` array (a model's embeddings, NaN where there are none), an
# `xarray.DataArray` from `read_aef` (`band y x`, already de-quantised, NaN = no data) or the
# path of an AEF file, and returns a float32 `E H W` array. Everything below starts from it,
# so every application works the same on this book's embeddings and on Google's layer.
# Bad input is refused before any arithmetic: a field must be 3-D with finite vectors or
# all-NaN vectors.

# %%
#| export
from __future__ import annotations

import os
from typing import Mapping, Sequence

import numpy as np

Pixel = tuple[int, int]


def as_field(field) -> np.ndarray:
    """An `E H W` float32 embedding field from an array, a `read_aef` DataArray or an AEF file path."""
    if isinstance(field, (str, os.PathLike)):
        from aef_lit.maps.aef_format import read_aef

        field = read_aef(field)
    x = np.asarray(getattr(field, "values", field), dtype=np.float32)
    if x.ndim != 3:
        raise ValueError(f"an embedding field is E x H x W (bands first), got shape {x.shape}")
    bad = np.isnan(x)
    partial = bad.any(0) & ~bad.all(0)
    if partial.any() or np.isinf(x).any():
        raise ValueError(f"{int(partial.sum())} pixels have NaN in some bands only, or values are infinite: "
                         "a pixel's vector is either complete or missing")
    return x


def _unit(v: np.ndarray, axis: int = 0) -> np.ndarray:
    n = np.linalg.norm(v, axis=axis, keepdims=True)
    return v / np.where(n > 0, n, 1.0)


def _query_vector(x: np.ndarray, query) -> np.ndarray:
    """The unit mean vector of `query`: a pixel (row, col), a list of pixels, or an `E` vector."""
    q = np.asarray(query)
    if q.ndim == 1 and q.shape[0] == x.shape[0] and q.dtype.kind == "f":
        v = q.astype(np.float32)
    else:
        pts = np.atleast_2d(q).astype(int)
        if pts.ndim != 2 or pts.shape[1] != 2:
            raise ValueError("a query is a pixel (row, col), a list of pixels, or an E-vector")
        H, W = x.shape[1:]
        out = (pts[:, 0] < 0) | (pts[:, 0] >= H) | (pts[:, 1] < 0) | (pts[:, 1] >= W)
        if out.any():
            raise ValueError(f"query pixels {pts[out][:3].tolist()} lie outside the {H} x {W} field")
        vecs = x[:, pts[:, 0], pts[:, 1]].T
        if np.isnan(vecs).any():
            raise ValueError("a query pixel has no embedding (no data)")
        v = _unit(vecs, 1).mean(0)
    if not np.isfinite(v).all() or np.linalg.norm(v) == 0:
        raise ValueError("the query vector is zero or not finite")
    return _unit(v)


# %% [markdown]
# ## 2. Similarity search
#
# The cosine between every pixel's embedding and a query: one pixel, the mean direction of
# several (a "find more like these" set), or any vector. AEF embeddings are unit vectors, so
# the cosine is the dot product; for other features (Prithvi's, chapter 30) the vectors are
# normalised first. `top_k` returns the most similar pixels, the query's own first.

# %%
#| export
def similarity(field, query) -> np.ndarray:
    """`H W` cosine similarity of every pixel to `query` (a pixel, pixels, or a vector); NaN = no data."""
    x = as_field(field)
    q = _query_vector(x, query)
    return np.einsum("ehw,e->hw", _unit(x), q)


def top_k(field, query, k: int = 10, exclude: Sequence[Pixel] = ()) -> tuple[np.ndarray, np.ndarray]:
    """The `k` pixels most similar to `query`: (`k x 2` rows/cols, `k` cosines), best first."""
    if k < 1:
        raise ValueError(f"k must be positive, got {k}")
    s = similarity(field, query)
    flat = np.where(np.isnan(s), -np.inf, s).ravel()
    for r, c in exclude:
        flat[r * s.shape[1] + c] = -np.inf
    k = min(k, int(np.isfinite(flat).sum()))
    idx = np.argpartition(-flat, k - 1)[:k]
    idx = idx[np.argsort(-flat[idx], kind="stable")]
    return np.stack(np.unravel_index(idx, s.shape), 1), flat[idx]


# %% [markdown]
# ## 3. Clusters: k-means on the sphere
#
# Tutorials run k-means on the 64 bands. On unit vectors, *spherical* k-means is the natural
# version (assign by cosine, centre = re-normalised mean); it is what `kmeans_map` does, with
# k-means++ seeding, on a random sample of pixels (the centres), then labels every pixel.
# Cluster 0 is the largest. Pixels without data get −1.

# %%
#| export
def kmeans_map(field, k: int, seed: int = 0, sample: int = 20_000, iters: int = 50, n_init: int = 4
               ) -> tuple[np.ndarray, np.ndarray]:
    """Spherical k-means, best of `n_init` seedings: (`H W` cluster ids, largest first, -1 = no
    data; `k x E` unit centres)."""
    x = as_field(field)
    E, H, W = x.shape
    ok = ~np.isnan(x[0])
    v = _unit(x[:, ok].T, 1)
    if not 1 <= k <= len(v):
        raise ValueError(f"k = {k} must be between 1 and the {len(v)} pixels with data")
    rng = np.random.default_rng(seed)
    fit = v[rng.choice(len(v), size=min(sample, len(v)), replace=False)]
    c = max((_spherical_kmeans(fit, k, rng, iters) for _ in range(max(1, n_init))),
            key=lambda c: np.max(fit @ c.T, 1).sum())
    lab = np.argmax(v @ c.T, 1)
    order = np.argsort(-np.bincount(lab, minlength=k), kind="stable")
    rank = np.empty(k, int)
    rank[order] = np.arange(k)
    out = np.full((H, W), -1, int)
    out[ok] = rank[lab]
    return out, c[order]


def _spherical_kmeans(fit: np.ndarray, k: int, rng: np.random.Generator, iters: int) -> np.ndarray:
    """`k x E` unit centres from k-means++ seeding (distance 1 - cos) and Lloyd steps on the sphere."""
    centres = [fit[rng.integers(len(fit))]]
    for _ in range(1, k):
        d = np.clip(1 - np.max(fit @ np.array(centres).T, 1), 0, None)
        centres.append(fit[rng.choice(len(fit), p=d / d.sum() if d.sum() > 0 else None)])
    c = np.array(centres)
    for _ in range(iters):
        a = np.argmax(fit @ c.T, 1)
        new = np.array([_unit(fit[a == j].sum(0)) if (a == j).any() else c[j] for j in range(k)])
        if np.allclose(new, c, atol=1e-6):
            break
        c = new
    return c


# %% [markdown]
# ## 4. Change between two periods
#
# `change_map` is the paper's score `d = (1 − e·p) / 2`: 0 for the same direction, ½ for
# orthogonal, 1 for opposite (for non-unit features, the vectors are normalised first). A
# threshold turns it into a change mask: from labels, the one of the paper (the value that
# maximises balanced accuracy on the labelled pixels), or without labels by Otsu's method
# (the split of the histogram that maximises the between-class variance; where empty bins make a
# plateau of equal splits, its middle).

# %%
#| export
def change_map(before, after) -> np.ndarray:
    """`H W` change score `(1 - cos) / 2` between two fields of one grid; NaN where either has no data."""
    a, b = as_field(before), as_field(after)
    if a.shape != b.shape:
        raise ValueError(f"the two fields differ in shape: {a.shape} and {b.shape}")
    return (1 - np.einsum("ehw,ehw->hw", _unit(a), _unit(b))) / 2


def otsu_threshold(values: np.ndarray, bins: int = 256) -> float:
    """Otsu's threshold of the finite `values`: the split maximising the between-class variance."""
    v = np.asarray(values, np.float64)
    v = v[np.isfinite(v)]
    if v.size < 2 or v.min() == v.max():
        raise ValueError("Otsu needs at least two distinct finite values")
    hist, edges = np.histogram(v, bins=bins)
    mids = (edges[:-1] + edges[1:]) / 2
    w0 = np.cumsum(hist)
    w1 = w0[-1] - w0
    m0 = np.cumsum(hist * mids) / np.maximum(w0, 1)
    m1 = ((hist * mids).sum() - np.cumsum(hist * mids)) / np.maximum(w1, 1)
    between = (w0 * w1 * (m0 - m1) ** 2)[:-1]
    best = np.flatnonzero(between >= between.max() * (1 - 1e-9))  # a plateau: empty bins between the modes
    return float((edges[1:][best[0]] + edges[1:][best[-1]]) / 2)


def threshold_from_labels(score: np.ndarray, changed: np.ndarray) -> tuple[float, float]:
    """(threshold, balanced accuracy): the threshold on `score` that best separates the labelled
    pixels (`changed` 1 / 0, -1 = unlabelled), the paper's single global threshold."""
    s, y = np.asarray(score, np.float64).ravel(), np.asarray(changed).ravel()
    keep = (y >= 0) & np.isfinite(s)
    s, y = s[keep], y[keep].astype(bool)
    if y.all() or not y.any():
        raise ValueError("labels of both kinds (changed and unchanged) are needed")
    order = np.argsort(s, kind="stable")
    s, y = s[order], y[order]
    # predict "changed" for score > threshold; candidate thresholds between distinct scores
    tp = y.sum() - np.cumsum(y)        # changed above each position
    tn = np.cumsum(~y)                 # unchanged at or below
    bacc = (tp / y.sum() + tn / (~y).sum()) / 2
    last = np.r_[s[1:] != s[:-1], True]  # only split between distinct values
    bacc = np.where(last, bacc, -1.0)
    i = int(np.argmax(bacc))
    if bacc[i] <= 0.5:  # no split beats calling everything changed
        return float(s[0]) - 1e-9, 0.5
    return float(s[i]), float(bacc[i])


# %% [markdown]
# ## 5. A map from a few clicks
#
# Label a handful of pixels per class, get a class map: the probe of the evaluation (chapter
# 23), kNN on the cosine or a linear least-squares classifier, fitted on the clicked pixels and
# applied to every pixel.

# %%
#| export
def few_click_map(field, clicks: Mapping[str, Sequence[Pixel]], probe: str = "knn1") -> tuple[np.ndarray, list[str]]:
    """(`H W` class ids, -1 = no data; class names) from a few labelled pixels per class."""
    from aef_lit.evaluation import probes as _pr

    x = as_field(field)
    names = [n for n, pts in clicks.items() if len(pts)]
    if len(names) < 2:
        raise ValueError("click pixels of at least two classes")
    xs, ys = [], []
    for i, n in enumerate(names):
        v = _unit(x[:, [p[0] for p in clicks[n]], [p[1] for p in clicks[n]]], 0).T
        if np.isnan(v).any():
            raise ValueError(f"a clicked pixel of {n!r} has no embedding")
        xs.append(v)
        ys += [i] * len(v)
    ok = ~np.isnan(x[0])
    test = _unit(x[:, ok], 0).T
    pred = _pr.probe_predict(probe, np.concatenate(xs), np.array(ys), test, "classification")
    out = np.full(ok.shape, -1, int)
    out[ok] = pred
    return out, names


# %% [markdown]
# ## 6. Any period from one encoder pass
#
# `PeriodSummariser` encodes a site once, every frame of its series, in the model's training
# tiles, and keeps the encoder's output. Asking for a period runs only the summariser (chapter
# 11: attention pooling over the frames inside [t_s, t_e), then the unit normalisation), so a
# slider over periods can re-draw the map live. Of the summariser, only the query depends on the
# period: the keys and values of every frame at every pixel (`TimePooling.keys_values`) are
# computed once with the encoding, and a period costs one query per pixel, the attention, and the
# upsampling (`TimePooling.attend`, `Summariser.finish`). A period that holds no frame gives NaN.

# %%
#| export
class PeriodSummariser:
    """A site encoded once (all frames, in `tile`-pixel tiles); `__call__(period)` -> `E H W` embeddings."""

    def __init__(self, model, sample, tile: int | None = None, batch_size: int = 16):
        import torch
        import torch.nn.functional as F
        from einops import rearrange

        from aef_lit.conventions import SourceBatch
        from aef_lit.data.preprocess import collate

        self.model, self.H, self.W = model, *sample.grid.shape
        L = self.L = tile or model.cfg.tile
        specs = [sp for sp in model.cfg.input_sources if sp.name in sample.sources]
        if not specs:
            raise ValueError(f"{sample.site} has none of the model's input sources")
        batch = collate([sample], specs)
        self.Hp, self.Wp = -(-self.H // L) * L, -(-self.W // L) * L
        n = (self.Hp // L) * (self.Wp // L)
        tiles = {}
        for k, v in batch.items():
            pad = (0, self.Wp - self.W, 0, self.Hp - self.H)
            cut = "b t c (i h) (j w) -> (b i j) t c h w"
            tiles[k] = SourceBatch(x=rearrange(F.pad(v.x, pad), cut, h=L, w=L),
                                   t=v.t.repeat(n, 1), frame_mask=v.frame_mask.repeat(n, 1),
                                   weight=rearrange(F.pad(v.weight, pad), "b t (i h) (j w) -> (b i j) t h w", h=L, w=L),
                                   meta=None if v.meta is None else v.meta.repeat(n, 1, 1),
                                   cloud=None if v.cloud is None else rearrange(F.pad(v.cloud, pad), cut, h=L, w=L))
        dev = next(model.parameters()).device
        model.eval()
        self.encoded = []
        with torch.no_grad():
            for s0 in range(0, n, batch_size):
                part = slice(s0, s0 + batch_size)
                chunk = {k: SourceBatch(x=v.x[part], t=v.t[part], frame_mask=v.frame_mask[part], weight=v.weight[part],
                                        meta=None if v.meta is None else v.meta[part],
                                        cloud=None if v.cloud is None else v.cloud[part]).to(dev)
                         for k, v in tiles.items()}
                enc = model.encode(chunk)  # the summariser's period-free half is kept too: keys and values
                self.encoded.append((model.summariser.pool.keys_values(enc.features, enc.t, enc.mask),
                                     enc.features.shape[-2], len(enc.t)))
        self.times = np.unique(np.concatenate([sample.sources[sp.name].times for sp in specs]))

    def __call__(self, period: tuple[float, float]) -> np.ndarray:
        import torch
        from einops import rearrange

        t_s, t_e = float(period[0]), float(period[1])
        if not t_e > t_s:
            raise ValueError(f"a period needs t_e > t_s, got [{t_s}, {t_e})")
        dev = next(self.model.parameters()).device
        out = []
        with torch.no_grad():
            summ = self.model.summariser
            for kv, h, b in self.encoded:
                per = torch.tensor([[[t_s, t_e]]], dtype=torch.float64, device=dev).expand(b, 1, 2)
                out.append(summ.finish(summ.pool.attend(kv, per, h))[:, 0].float().cpu())
        L = self.L
        mu = rearrange(torch.cat(out), "(i j) e h w -> e (i h) (j w)", i=self.Hp // L, j=self.Wp // L)
        mu = mu[:, :self.H, :self.W].numpy()
        if not ((self.times >= t_s) & (self.times < t_e)).any():
            mu = np.full_like(mu, np.nan)
        return mu


# %% [markdown]
# ## 7. On a real site
#
# The Hungarian GreenEarthNet site (128 × 128 pixels, Sentinel-2 from March to August 2021),
# embedded by the shipped model. The encoder runs once; each period below is a call of the
# summariser alone. Its latency is what a slider feels:

# %%
import time

import matplotlib.pyplot as plt
import pandas as pd

from aef_lit.applications import (
    PeriodSummariser,
    change_map,
    few_click_map,
    kmeans_map,
    otsu_threshold,
    similarity,
    top_k,
)
from aef_lit.conventions import WORLDCOVER_CLASSES, find_eo_real, from_days, select_device
from aef_lit.data import load_sites
from aef_lit.maps import pca_rgb, true_colour
from aef_lit.training import load_pretrained

dev = select_device(device)
model, cfg = load_pretrained(device=dev)
real = data != "synthetic" and find_eo_real(required=data == "real") is not None
site = load_sites("greenearthnet" if real else "synthetic", ["hungary"] if real else ["a"])[0]
t0 = time.perf_counter()
field_of = PeriodSummariser(model, site)
encode_s = time.perf_counter() - t0
times = field_of.times
whole = (float(times[0]), float(times[-1]) + 1)
lat = []
for i in range(5):
    t0 = time.perf_counter()
    field = field_of((whole[0] + 3 * i, whole[1]))
    lat.append(time.perf_counter() - t0)
latency = float(np.median(lat))
print(f"{site.site}: {site.grid.shape} px, {len(times)} dates "
      f"{from_days(times[0]).astype('datetime64[D]')} .. {from_days(times[-1]).astype('datetime64[D]')}")
print(f"encoder once: {encode_s:.2f} s; a new period (summariser only): median {latency:.2f} s of {len(lat)}")
assert np.allclose(np.nansum(field ** 2, 0), 1, atol=1e-4)

# %% [markdown]
# The four applications on the whole period's field: the similarity to one pixel (a field in
# the lower left, marked), a six-cluster k-means map, and a map from three clicks per
# WorldCover class (the clicks drawn from the WorldCover map, a stand-in for a user's).

# %%
query = (100, 20)
sim = similarity(field, query)
best, _ = top_k(field, query, k=200)
clusters, _ = kmeans_map(field, 6, seed=seed)
lc = site.sources["landcover"].values[0, 0].astype(int) if "landcover" in site.sources else clusters
rng = np.random.default_rng(seed)
present = [c for c in np.unique(lc) if (lc == c).sum() >= 50]
clicks = {WORLDCOVER_CLASSES[c] if real else f"class {c}": [tuple(p) for p in rng.permutation(np.argwhere(lc == c))[:3]]
          for c in present}
mapped, names = few_click_map(field, clicks, "knn1")
agree = float(np.mean([(mapped == i)[lc == c].mean() for i, c in enumerate(present)]))
print(f"few-click map: {len(names)} classes, 3 clicks each; balanced agreement with WorldCover {agree:.2f}")
assert sim[query] >= np.nanmax(sim) - 1e-6 and tuple(best[0]) == query and len(np.unique(clusters)) == 6

s2 = site.sources["s2"]
clear_t = int(np.argmax(s2.valid.mean((1, 2))))
fig, axes = plt.subplots(1, 4, figsize=(13, 3.4))
axes[0].imshow(true_colour(s2, site.specs["s2"], clear_t))
axes[0].set_title(f"true colour, {from_days(s2.times[clear_t]).astype('datetime64[D]')}", fontsize=9)
im = axes[1].imshow(sim, cmap="magma", vmin=np.nanpercentile(sim, 2), vmax=1)
axes[1].scatter(best[:, 1], best[:, 0], s=2, c="cyan")
axes[1].plot(query[1], query[0], "w+", ms=12, mew=2)
axes[1].set_title("cosine to the + pixel (cyan: its 200 nearest)", fontsize=9)
plt.colorbar(im, ax=axes[1], fraction=0.046)
axes[2].imshow(clusters, cmap="tab10", interpolation="nearest")
axes[2].set_title("spherical k-means, k = 6", fontsize=9)
axes[3].imshow(mapped, cmap="tab10", interpolation="nearest", vmin=0, vmax=9)
for i, n in enumerate(names):
    pts = np.array(clicks[n])
    axes[3].scatter(pts[:, 1], pts[:, 0], s=18, color=plt.cm.tab10(i), edgecolor="k", label=n)
axes[3].legend(fontsize=6, loc="lower right")
axes[3].set_title("3 clicks per class, kNN", fontsize=9)
for ax in axes:
    ax.set_xticks([]), ax.set_yticks([])
plt.tight_layout()
plt.show()

# %% [markdown]
# ## 8. Rolling windows and change
#
# Monthly embeddings of the site, each the summary of one calendar month of the same
# encoding, shown as the first three principal components (fitted on all months together, so
# one colour means one direction in every panel), then the change score between consecutive
# months: the mean over the site, and the map of the largest change with its Otsu threshold.

# %%
start = np.datetime64(str(from_days(times[0]).astype("datetime64[M]")))
months = [start + np.timedelta64(i, "M") for i in range(7)]
windows = [(float((a - np.datetime64("1970-01-01")).astype("timedelta64[D]").astype(float)),
            float((b - np.datetime64("1970-01-01")).astype("timedelta64[D]").astype(float)))
           for a, b in zip(months[:-1], months[1:])]
monthly = [(str(m), field_of(w)) for m, w in zip(months, windows)]
monthly = [(m, f) for m, f in monthly if np.isfinite(f).any()]
joint = pca_rgb(np.concatenate([f for _, f in monthly], axis=2))
W_ = site.grid.width
steps_ = [(monthly[i][0], monthly[i + 1][0], change_map(monthly[i][1], monthly[i + 1][1]))
          for i in range(len(monthly) - 1)]
means = [float(np.nanmean(d)) for *_, d in steps_]
big = int(np.argmax(means))
thr = otsu_threshold(steps_[big][2])

fig, axes = plt.subplots(1, len(monthly) + 1, figsize=(2.2 * (len(monthly) + 1), 2.6))
for i, (m, _) in enumerate(monthly):
    axes[i].imshow(joint[:, i * W_:(i + 1) * W_])
    axes[i].set_title(m, fontsize=9)
    axes[i].set_xticks([]), axes[i].set_yticks([])
axes[-1].imshow(steps_[big][2] > thr, cmap="gray")
axes[-1].set_title(f"changed {steps_[big][0]}→{steps_[big][1]}\n(Otsu d > {thr:.3f})", fontsize=8)
axes[-1].set_xticks([]), axes[-1].set_yticks([])
plt.tight_layout()
plt.show()
display_table = pd.DataFrame({"from": [a for a, _, _ in steps_], "to": [b for _, b, _ in steps_],
                              "mean change d": np.round(means, 4)})
display_table


# %% [markdown]
# ## 9. Explorers
#
# In a live notebook (Jupyter, or Colab after the install cell), the cell below draws four
# explorers with `ipywidgets`: a **period slider** that re-summarises the map for any
# [t_s, t_e) (only the summariser runs: the latency measured above), a **similarity
# explorer** (move the pixel; the cosine map follows), a **k-means map** with a k slider, and
# a **change map** between two periods with a threshold slider that starts at Otsu's value.
# In Colab, run the install cell first; the explorers use only ipywidgets' standard controls,
# which Colab renders (if they stay blank, run `from google.colab import output;
# output.enable_custom_widget_manager()` and re-run the cell).
#
# In the rendered book the explorers show their first state: the executed notebook keeps the
# widgets' state, and the page loads the widget manager from the book's own static files
# (`tools/vendor_widgets.py` vendors it from npm; no CDN), so it renders offline. Moving a
# slider there changes nothing (no Python runs behind a static page); the figures above are
# the same views.

# %%
import ipywidgets as widgets
from IPython.display import display

day0 = int(whole[0])
span = int(whole[1] - whole[0])


def _show(img, title, **kw):
    fig, ax = plt.subplots(figsize=(3.6, 3.6))
    ax.imshow(img, **kw)
    ax.set_title(title, fontsize=9)
    ax.set_xticks([]), ax.set_yticks([])
    plt.show()


def _date(d):
    return str(from_days(float(d)).astype("datetime64[D]"))


def period_view(days=(0, span)):
    f = field_of((day0 + days[0], day0 + max(days[1], days[0] + 1)))
    if not np.isfinite(f).any():
        return print("no frame in this period")
    _show(pca_rgb(f), f"[{_date(day0 + days[0])}, {_date(day0 + days[1])}): PCA of the embeddings")


def similarity_view(row=query[0], col=query[1]):
    s_ = similarity(field, (row, col))
    _show(s_, f"cosine to pixel ({row}, {col})", cmap="magma", vmin=np.nanpercentile(s_, 2), vmax=1)


def kmeans_view(k=6):
    _show(kmeans_map(field, k, seed=seed)[0], f"spherical k-means, k = {k}", cmap="tab20", interpolation="nearest")


first, last = windows[0], windows[-1]
d_full = change_map(field_of(first), field_of((last[0], whole[1])))
otsu = otsu_threshold(d_full)


def change_view(threshold=round(otsu, 3)):
    _show(d_full > threshold, f"changed (d > {threshold:.3f}): first month vs last", cmap="gray")


H_, W_ = site.grid.shape
explorers = widgets.Tab(children=[
    widgets.interactive(period_view, days=widgets.IntRangeSlider(value=(0, span), min=0, max=span, step=1,
                                                                 description="days", continuous_update=False)),
    widgets.interactive(similarity_view, row=widgets.IntSlider(query[0], 0, H_ - 1), col=widgets.IntSlider(query[1], 0, W_ - 1)),
    widgets.interactive(kmeans_view, k=widgets.IntSlider(6, 2, 12)),
    widgets.interactive(change_view, threshold=widgets.FloatSlider(round(otsu, 3), min=0.0, max=float(np.nanmax(d_full)),
                                                                   step=0.001, readout_format=".3f")),
])
for i, t in enumerate(("period", "similarity", "k-means", "change")):
    explorers.set_title(i, t)
display(explorers)

# %% [markdown]
# ## What this chapter exported
# `aef_lit.applications.fields` (also importable from `aef_lit.applications`): `as_field` (arrays, `read_aef`
# DataArrays, AEF file paths), `similarity`, `top_k`, `kmeans_map` (spherical, k-means++),
# `change_map` (the paper's `(1 − e·p) / 2`), `otsu_threshold`, `threshold_from_labels` (the
# paper's single threshold), `few_click_map` (chapter 23's probes) and `PeriodSummariser` (one
# encoder pass, any period).
