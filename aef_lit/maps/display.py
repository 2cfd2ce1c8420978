# generated from notebooks/29_aef_embed.py by tools/nb_export.py: do not edit.
# Edit the notebook, then run `python tools/nb_export.py`.

from __future__ import annotations

import numpy as np

from aef_lit.conventions import SourceSpec
from aef_lit.data import SourceFrames
from aef_lit.maps.raster import band_key


def pca_rgb(e: np.ndarray, k: int = 3) -> np.ndarray:
    """`H W 3` image of the first `k` principal components of an `E H W` map (NaN = nodata -> white)."""
    E, H, W = e.shape
    x = e.reshape(E, -1).T
    ok = np.isfinite(x).all(1)
    c = x[ok] - x[ok].mean(0)
    _, _, vt = np.linalg.svd(c[:: max(1, len(c) // 20000)], full_matrices=False)
    p = c @ vt[:k].T
    lo, hi = np.percentile(p, 2, 0), np.percentile(p, 98, 0)
    img = np.ones((H * W, k))
    img[ok] = np.clip((p - lo) / np.maximum(hi - lo, 1e-12), 0, 1)
    return img.reshape(H, W, k)


def true_colour(frames: SourceFrames, spec: SourceSpec, t: int = 0, gain: float = 3.5) -> np.ndarray:
    """`H W 3` true-colour image (B4, B3, B2) of one frame of an optical source."""
    keys = [band_key(b) for b in spec.bands]
    rgb = np.stack([frames.values[t, keys.index(b)] for b in ("B4", "B3", "B2")], -1)
    return np.clip(rgb * gain, 0, 1)
