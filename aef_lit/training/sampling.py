# generated from notebooks/20_sampling.py by tools/nb_export.py: do not edit.
# Edit the notebook, then run `python tools/nb_export.py`.

from __future__ import annotations

import logging
import math
from typing import Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from aef_lit.conventions import SourceSpec, from_days
from aef_lit.data import (  # noqa: F401  (sites and rows are re-exported for earlier users of this module)
    BAND_ALIASES,
    GREENEARTHNET_SITES,
    MULTISITE_RES,
    MULTISITE_SITES,
    SITE_PLACES,
    TIMELESS,
    Sample,
    SourceFrames,
    captions_for,
    cut_row,
    harmonise,
    load_sites,
    model_sources,
    read_site,
    row_generator,
)

log = logging.getLogger("aef_lit.training.sampling")


def keep_targets(sample: Sample, targets: Sequence[str] | None) -> Sample:
    """`sample` without the target-only sources not named in `targets` (None: all kept)."""
    if targets is None:
        return sample
    unknown = set(targets) - {"dem", "landcover"} - {n for n, sp in sample.specs.items() if sp.role == "target"}
    if unknown:
        raise ValueError(f"unknown target source(s) {sorted(unknown)}; targets are e.g. dem, landcover")
    keep = {n for n, sp in sample.specs.items() if sp.role == "input" or n in targets}
    return Sample(sample.site, sample.grid, {n: f for n, f in sample.sources.items() if n in keep},
                  {n: sp for n, sp in sample.specs.items() if n in keep}, labels=sample.labels,
                  captions=sample.captions)


#| export
class TileDataset(Dataset):
    """Row key -> a cropped training `Sample`; `collate` makes the padded batch.

    Args:
        samples: the whole training sites (they must share their input sources;
            target-only sources may be missing at some).
        tile: L; frames: frames per input source; seed: the stream's seed.
        stats: normalisation statistics (chapter 3); None = `DEFAULT_STATS`, the global
            statistics every chapter normalises with (so the trained model needs no extra file).
        gain: radiometric augmentation: each optical band of a row is multiplied by
            exp(u), u ~ U(-gain, gain), the same factor for all its frames (0 = off).
        occlude: probability that a frame of an input time series gets a synthetic,
            cloud-shaped gap (`augment_occlusion`; 0 = off).
        time_shift: every timestamp of a row (all its sources) moves by the same
            u ~ U(-time_shift, time_shift) days (`augment_time_shift`; 0 = off).
        targets: the target-only sources to keep (None = every one the sites have; () =
            none: the model then only reconstructs its inputs). Dropping a target keeps its
            labels out of the model, so they can be evaluated without a leak (chapter 25).
        captions: what `collate_with_captions` gives the text term: `site` (the site's one
            caption, chapter 2b) or `row` (`row_caption`: what the row itself shows).
    """

    def __init__(self, samples: Sequence[Sample], tile: int = 32, frames: int = 8, seed: int = 0,
                 min_span_days: float = 60.0, min_valid: float = 0.05, stats=None, gain: float = 0.0,
                 occlude: float = 0.0, time_shift: float = 0.0, targets: Sequence[str] | None = None,
                 captions: str = "site"):
        from aef_lit.data.preprocess import DEFAULT_STATS

        if captions not in CAPTION_KINDS:
            raise ValueError(f"captions must be one of {CAPTION_KINDS}, got {captions!r}")
        self.captions = captions

        self.samples = [keep_targets(s, targets) for s in samples]
        if not self.samples:
            raise ValueError("TileDataset needs at least one site")
        names = [sorted(n for n, sp in s.specs.items() if sp.role == "input") for s in self.samples]
        if any(n != names[0] for n in names):
            raise ValueError("training sites must share their input sources, got "
                             + "; ".join(f"{s.site}: {', '.join(n)}" for s, n in zip(self.samples, names)))
        self.specs: tuple[SourceSpec, ...] = model_sources(self.samples)
        self.tile, self.frames, self.seed = tile, frames, seed
        self.min_span_days, self.min_valid, self.gain = min_span_days, min_valid, gain
        if not 0.0 <= occlude <= 1.0:
            raise ValueError(f"occlude is a probability, got {occlude}")
        self.occlude = occlude
        if not (math.isfinite(time_shift) and time_shift >= 0.0):
            raise ValueError(f"time_shift is a non-negative number of days, got {time_shift}")
        self.time_shift = time_shift
        self.stats = DEFAULT_STATS if stats is None else stats

    def __len__(self) -> int:  # a virtual, unbounded dataset; len() for tools that ask
        return 2**62

    def __getitem__(self, key: int) -> Sample:
        rng = row_generator(self.seed, int(key))
        sample = self.samples[int(rng.integers(len(self.samples)))]
        row = cut_row(sample, rng, self.tile, self.frames, self.min_span_days, self.min_valid)
        row = augment_gain(row, rng, self.gain) if self.gain > 0 else row
        row = augment_occlusion(row, rng, self.occlude) if self.occlude > 0 else row
        return augment_time_shift(row, rng, self.time_shift) if self.time_shift > 0 else row

    @property
    def frames_per_source(self) -> dict[str, int]:
        return {s.name: (self.frames if s.role == "input" else 1) for s in self.specs}

    def collate(self, rows: Sequence[Sample]):
        """Rows -> a padded, normalised batch (source name -> SourceBatch)."""
        from aef_lit.data.preprocess import collate

        return collate(list(rows), self.specs, self.frames_per_source, self.stats)

    def collate_with_captions(self, rows: Sequence[Sample]):
        """(batch, captions): the batch and each row's caption for the text term (chapter 18):
        the site's (`captions_for`, chapter 2b) or the row's own (`row_caption`)."""
        caption = row_caption if self.captions == "row" else captions_for
        return self.collate(rows), [caption(r) for r in rows]


CAPTION_KINDS = ("site", "row")
_MONTHS = ("January", "February", "March", "April", "May", "June", "July", "August", "September",
           "October", "November", "December")


def row_caption(row: Sample) -> str:
    """A caption made only of what a row shows: its place, the months and year its input
    frames span, and how clear they are, e.g. 'Abrantes, Portugal, from March to June 2021,
    mostly clear'. No label (land cover, elevation) enters it, so no evaluated class can leak
    through the text term (chapter 25)."""
    place = (row.labels or {}).get("place") or SITE_PLACES.get(row.site.split("_")[-1], row.site.replace("_", " "))
    inputs = [fr for n, fr in row.sources.items() if row.specs[n].role == "input" and fr.T]
    if not inputs:
        return f"{place}, no image"
    days = np.concatenate([fr.times for fr in inputs])
    (y0, m0), (y1, m1) = [(int(str(d)[:4]), int(str(d)[5:7])) for d in from_days([days.min(), days.max()])]
    if (y0, m0) == (y1, m1):
        when = f"in {_MONTHS[m0 - 1]} {y0}"
    elif y0 == y1:
        when = f"from {_MONTHS[m0 - 1]} to {_MONTHS[m1 - 1]} {y0}"
    else:
        when = f"from {_MONTHS[m0 - 1]} {y0} to {_MONTHS[m1 - 1]} {y1}"
    clear = float(np.mean(np.concatenate([fr.valid.ravel() for fr in inputs])))
    sky = "clear" if clear >= 0.9 else "partly cloudy" if clear >= 0.5 else "mostly cloudy"
    return f"{place}, {when}, {sky}"


class TileBatchSampler(Sampler):
    """Endless micro-batches of row keys, sharded by rank, starting at micro-batch `start`."""

    def __init__(self, batch_size: int, start: int = 0, rank: int = 0, world_size: int = 1):
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is outside world size {world_size}")
        self.batch_size, self.start, self.rank, self.world_size = batch_size, start, rank, world_size

    def keys(self, micro: int) -> list[int]:
        first = (micro * self.world_size + self.rank) * self.batch_size
        return list(range(first, first + self.batch_size))

    def __iter__(self) -> Iterator[list[int]]:
        m = self.start
        while True:
            yield self.keys(m)
            m += 1


def tile_stream(ds: TileDataset, batch_size: int, start: int = 0, rank: int = 0, world_size: int = 1,
                workers: int = 0, captions: bool = False) -> Iterator:
    """An endless iterator of collated micro-batches from micro-batch `start` on.

    With `captions=True` it yields `(batch, captions)` pairs.
    """
    loader = DataLoader(ds, batch_sampler=TileBatchSampler(batch_size, start, rank, world_size),
                        collate_fn=ds.collate_with_captions if captions else ds.collate, num_workers=workers,
                        persistent_workers=workers > 0,
                        prefetch_factor=2 if workers > 0 else None)
    return iter(loader)


def training_dataset(data: str = "auto", sites: Sequence[str] = ("portugal", "hungary"), tile: int = 32,
                     frames: int = 8, seed: int = 0, min_span_days: float = 60.0, stats=None,
                     gain: float = 0.0, occlude: float = 0.0, time_shift: float = 0.0,
                     targets: Sequence[str] | None = None, captions: str = "site") -> TileDataset:
    """`load_sites` + `TileDataset` in one call (what chapter 21's trainer uses)."""
    return TileDataset(load_sites(data, sites, seed=seed), tile=tile, frames=frames, seed=seed,
                       min_span_days=min_span_days, stats=stats, gain=gain, occlude=occlude,
                       time_shift=time_shift, targets=targets, captions=captions)


def augment_gain(row: Sample, rng: np.random.Generator, gain: float) -> Sample:
    """Multiply each optical band of a row by exp(U(-gain, gain)) (one factor per band and row).

    Two sites differ in brightness as much as in anything else; with only two training
    sites a model can memorise each site's typical spectra instead of reading the pixel's
    own frames. Random gains make the input's own level the only reliable clue.
    """
    out = {}
    for name, fr in row.sources.items():
        if row.specs[name].modality == "optical":
            g = np.exp(rng.uniform(-gain, gain, size=(1, fr.C, 1, 1))).astype(np.float32)
            cv = None if fr.cloud_values is None else fr.cloud_values * g
            fr = SourceFrames(fr.values * g, fr.times, fr.valid, fr.meta, fr.name, cv)
        out[name] = fr
    return Sample(row.site, row.grid, out, dict(row.specs), labels=row.labels, captions=row.captions)


def augment_occlusion(row: Sample, rng: np.random.Generator, p: float) -> Sample:
    """Give each frame of an input time series, with probability `p`, a cloud-shaped gap.

    The gap is where a smooth random field (a 4 x 4 grid of uniforms, bilinearly upsampled)
    falls below a random level in U(0.1, 0.9): blobs covering 10-90 % of the tile. Gap
    pixels become invalid, which zeroes them (chapter 2) and removes them from every loss,
    exactly like a real cloud under the mask. A frame left without a valid pixel is
    dropped; a series is never emptied (the row is then returned unchanged for it).
    """
    out = {}
    for name, fr in row.sources.items():
        spec = row.specs[name]
        if spec.role != "input" or spec.modality in TIMELESS or fr.T == 0:
            out[name] = fr
            continue
        H, W = fr.values.shape[2:]
        valid = fr.valid.copy()
        hit = np.flatnonzero(rng.random(fr.T) < p)
        if hit.size:
            coarse = torch.from_numpy(rng.random((hit.size, 1, 4, 4)).astype(np.float32))
            field = torch.nn.functional.interpolate(coarse, size=(H, W), mode="bilinear", align_corners=True)
            level = rng.uniform(0.1, 0.9, size=(hit.size, 1, 1))
            valid[hit] &= field[:, 0].numpy() > level
        new = SourceFrames.build(fr.values, fr.times, valid, fr.meta, fr.name, empty="drop",
                                 cloud_values=fr.cloud_values)  # a synthetic gap hides no radiance
        out[name] = new if new.T > 0 else fr
    return Sample(row.site, row.grid, out, dict(row.specs), labels=row.labels, captions=row.captions)


def augment_time_shift(row: Sample, rng: np.random.Generator, days: float) -> Sample:
    """Move every timestamp of a row, in every source, by one u ~ U(-days, days).

    Relative times (which frame came first, how far apart, where a frame lies in a period)
    are unchanged; only the calendar date the timecodes see moves. With a few sites, each
    imaged in one year, the date alone tells a model which site and season it is looking
    at; shifting it makes the frames themselves the only reliable clue.
    """
    u = float(rng.uniform(-days, days))
    out = {name: SourceFrames(fr.values, fr.times + u, fr.valid, fr.meta, fr.name, fr.cloud_values)
           for name, fr in row.sources.items()}
    return Sample(row.site, row.grid, out, dict(row.specs), labels=row.labels, captions=row.captions)


def random_period(t: np.ndarray | torch.Tensor, rng: np.random.Generator, min_days: float = 4.0
                  ) -> tuple[float, float]:
    """A random valid period [t_s, t_e) inside the span of times `t`, longer than `min_days`."""
    t = np.asarray(t, dtype=np.float64)
    lo, hi = float(t.min()), float(t.max()) + 1.0
    length = float(rng.uniform(min(min_days + 1e-3, hi - lo), hi - lo))
    start = float(rng.uniform(lo, hi - length))
    return start, start + length
