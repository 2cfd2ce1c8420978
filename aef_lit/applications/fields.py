# generated from notebooks/32_explorers.py by tools/nb_export.py: do not edit.
# Edit the notebook, then run `python tools/nb_export.py`.

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
