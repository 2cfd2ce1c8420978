# generated from notebooks/26_representations.py by tools/nb_export.py: do not edit.
# Edit the notebook, then run `python tools/nb_export.py`.

from __future__ import annotations

import numpy as np

from aef_lit.evaluation import probes as _pr


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
