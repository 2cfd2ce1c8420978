# generated from notebooks/31_prithvi_training.py by tools/nb_export.py: do not edit.
# Edit the notebook, then run `python tools/nb_export.py`.

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from aef_lit.data import DataError, Sample
from aef_lit.evaluation.methods import Method
from aef_lit.evaluation.tasks import Period
from aef_lit.prithvi.mae import PrithviMAE
from aef_lit.prithvi.train import cut_stack, pick_frames, prithvi_source


def prithvi_features(model: PrithviMAE, sample: Sample, period: Period, source: str = "s2",
                     batch_size: int = 16) -> np.ndarray:
    """`D H W` features of `sample` over `period`: tokens of the unmasked stack, averaged over
    frames and upsampled bilinearly to pixels (see the text above)."""
    cfg = model.cfg
    fr = prithvi_source(sample, cfg, source)
    if not np.any((fr.times >= period[0]) & (fr.times < period[1])):
        raise DataError(f"{sample.site}: no {source} frame in the period")
    s = cfg.img_size
    H, W = sample.grid.shape
    if (H, W) == (1, 1):  # a labelled pixel: repeated over one tile, read at its centre
        tiled = type(fr)(np.tile(fr.values, (1, 1, s, s)), fr.times, np.tile(fr.valid, (1, s, s)), fr.meta, fr.name)
        clear = tiled.valid.mean((1, 2))
        f = _encode(model, [cut_stack(tiled, pick_frames(tiled.times, clear, cfg.frames, period), 0, 0, s)])[0]
        return f[:, s // 2:s // 2 + 1, s // 2:s // 2 + 1]
    Hp, Wp = -(-H // s) * s, -(-W // s) * s
    padded = type(fr)(np.pad(fr.values, ((0, 0), (0, 0), (0, Hp - H), (0, Wp - W))), fr.times,
                      np.pad(fr.valid, ((0, 0), (0, Hp - H), (0, Wp - W))), fr.meta, fr.name)
    corners = [(r, c) for r in range(0, Hp, s) for c in range(0, Wp, s)]
    out = np.zeros((cfg.dim, Hp, Wp), np.float32)
    for b in range(0, len(corners), batch_size):
        chunk = corners[b:b + batch_size]
        stacks = []
        for r, c in chunk:
            clear = padded.valid[:, r:r + s, c:c + s].mean((1, 2))
            stacks.append(cut_stack(padded, pick_frames(padded.times, clear, cfg.frames, period), r, c, s))
        for (r, c), f in zip(chunk, _encode(model, stacks)):
            out[:, r:r + s, c:c + s] = f
    return out[:, :H, :W]


def _encode(model: PrithviMAE, stacks) -> np.ndarray:
    """Frame-averaged, pixel-upsampled features of a list of stacks: `n D s s`."""
    dev = next(model.parameters()).device
    x, _, d = (torch.from_numpy(np.stack(a)).to(dev) for a in zip(*stacks))
    tok = model.features(x, dates=d).mean(2)  # B D h w: time pooled
    up = F.interpolate(tok, size=(model.cfg.img_size,) * 2, mode="bilinear", align_corners=False)
    return up.float().cpu().numpy()


class PrithviMethod(Method):
    """A Prithvi model's per-pixel features (`prithvi_features`), for `aef_lit.evaluation.evaluate`.

    The features are not unit vectors and their dimensions have scales of their own, so the
    evaluation z-scores them per dimension, as it does the designed baselines."""

    standardise = True

    def __init__(self, model: PrithviMAE, name: str = "prithvi", source: str = "s2", batch_size: int = 16):
        self.model, self.name, self.source, self.batch_size = model, name, source, batch_size

    def key(self) -> str:
        from aef_lit.training import params_digest

        return f"{self.name}/{params_digest(self.model)[:16]}"

    def __call__(self, samples: Sequence[Sample], periods: Sequence[Period]) -> list[np.ndarray]:
        return [prithvi_features(self.model, s, p, self.source, self.batch_size) for s, p in zip(samples, periods)]
