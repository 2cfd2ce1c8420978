# generated from notebooks/03_preprocess.py by tools/nb_export.py: do not edit.
# Edit the notebook, then run `python tools/nb_export.py`.

from __future__ import annotations

import hashlib
from typing import Iterable, Sequence

import numpy as np

from aef_lit.data.containers import TIMELESS, Sample, SourceFrames


def row_generator(seed: int, key: int) -> np.random.Generator:
    """The generator of training row `key`: a pure function of (seed, key)."""
    h = hashlib.blake2b(f"aef-row/{seed}/{key}".encode(), digest_size=8).digest()
    return np.random.default_rng(int.from_bytes(h, "little"))


def _window(fr: SourceFrames, r: int, c: int, L: int, index: np.ndarray) -> SourceFrames:
    """Frames `index` of `fr`, cropped to the L x L window at (r, c)."""
    meta = None if fr.meta is None else fr.meta[index]
    cv = None if fr.cloud_values is None else fr.cloud_values[index][:, :, r:r + L, c:c + L]
    return SourceFrames(fr.values[index][:, :, r:r + L, c:c + L], fr.times[index],
                        fr.valid[index][:, r:r + L, c:c + L], meta, fr.name, cv)


def cut_row(sample: Sample, rng: np.random.Generator, tile: int, frames: int,
            min_span_days: float = 60.0, min_valid: float = 0.05, tries: int = 20) -> Sample:
    """A random L x L window of `sample`, with a random sub-sequence of each input source.

    Input sources: frames inside a random support window (at least `min_span_days`, at
    most the whole series) with at least `min_valid` clear pixels in the crop; at most
    `frames` of them, chosen at random and kept in time order. Timeless sources keep their
    single frame. Raises if no window of the sample works in `tries` draws.
    """
    H, W = sample.grid.shape
    if H < tile or W < tile:
        raise ValueError(f"{sample.site} is {H} x {W} pixels, smaller than the tile {tile}")
    for _ in range(tries):
        r, c = int(rng.integers(0, H - tile + 1)), int(rng.integers(0, W - tile + 1))
        out: dict[str, SourceFrames] = {}
        for name, fr in sample.sources.items():
            spec = sample.specs[name]
            clear = fr.valid[:, r:r + tile, c:c + tile].mean(axis=(1, 2))
            if spec.modality in TIMELESS:
                if clear[0] > 0:
                    out[name] = _window(fr, r, c, tile, np.array([0]))
                continue
            t = fr.times
            span = float(t[-1] - t[0])
            length = span if span <= min_span_days else float(rng.uniform(min_span_days, span))
            t0 = t[0] + float(rng.uniform(0.0, span - length))
            inside = np.flatnonzero((t >= t0) & (t <= t0 + length) & (clear >= min_valid))
            if inside.size == 0:
                continue
            pick = np.sort(rng.choice(inside, size=min(frames, inside.size), replace=False))
            out[name] = _window(fr, r, c, tile, pick)
        if len(out) == len(sample.sources):
            grid = sample.grid.crop(r, c, tile, tile)
            labels = {**sample.labels, "row": r, "col": c}
            return Sample(sample.site, grid, out, dict(sample.specs), labels=labels, captions=sample.captions)
    raise RuntimeError(f"no usable {tile} x {tile} window in {sample.site} after {tries} draws")


def cut_rows(samples: Sequence[Sample], keys: Iterable[int], tile: int, frames: int, seed: int = 0,
             min_span_days: float = 60.0, min_valid: float = 0.05) -> list[Sample]:
    """The rows of `keys`: row k is `cut_row` of site `rng.integers(len(samples))` with
    `rng = row_generator(seed, k)` (chapter 20's stream, before its augmentations)."""
    out = []
    for key in keys:
        rng = row_generator(seed, int(key))
        sample = samples[int(rng.integers(len(samples)))]
        out.append(cut_row(sample, rng, tile, frames, min_span_days, min_valid))
    return out
