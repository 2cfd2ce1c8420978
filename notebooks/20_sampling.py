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
# # 20. Sampling training rows: tiles, frames, periods
#
# AlphaEarth Foundations {cite}`brown2025alphaearth` trains on rows of $L \times L$ pixels
# ($L = 128$, 1.28 km) with the time series of every source at that place: up to 103
# frames (65 Sentinel-2, 17 Sentinel-1, 21 Landsat), padded and masked (`AEF_NOTES.md` §1,
# §8). Our real samples are a handful of whole sites (chapter 2b): GreenEarthNet minicubes
# of 128 × 128 pixels with about 30 Sentinel-2 dates each, the per-date GeoTIFF stacks of
# the same places, a WorldCereal cube over Belgium. Chapter 3's `cut_row` cuts one training
# row from a site: a random $L \times L$ crop, a random support window in time and a random
# sub-sequence of at most `frames` clear frames inside it. A **sampler** turns those few
# sites into an endless stream of such rows, with **static shapes**: every row is padded to
# `frames` frames per input source, with `frame_mask` marking the padding (chapter 1), so
# XLA and `torch.compile` compile once.
#
# The valid periods $[t_s, t_e)$ the losses summarise are drawn inside each training step
# by the objective (chapters 15 and 17); `random_period` below draws one inside a row's
# support for demonstrations and evaluation.
#
# Two properties make the stream fit for serious training. **Determinism**: the row with
# number $k$ is a pure function of `(seed, k)`: a training run resumed after a crash draws
# exactly the rows the uninterrupted run would have drawn (chapter 21 tests this).
# **Sharding**: under `torchrun` each process draws its own disjoint rows, like PyTorch's
# `DistributedSampler`.

# %% tags=["parameters"]
# Parameters (papermill injects values here). Defaults are sized for a 2-core CPU.
preset = "tiny"  # model preset: "tiny" (CI), "small", "paper"
device = "auto"  # "auto" = XLA if importable, then CUDA, MPS, CPU
seed = 0
data = "auto"  # "auto" = the real samples (two GreenEarthNet minicubes) if present, else synthetic
tile = 32  # L, the tile size in pixels (a multiple of 16)
frames = 8  # frames per input source in one row

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
#| default_exp training.sampling
# %% [markdown]
# ## Where the sites come from
#
# A run's sites come from chapter 3's `load_sites(data, sites)`, which reads chapter 2b's
# one registry: `"auto"` (the real samples when `eo_real/` is present, else the synthetic
# generator), `"real"` or `"greenearthnet"` (the named sites, by default two GreenEarthNet
# minicubes: Sentinel-2 B02 B03 B04 B8A, a DEM and a WorldCover land-cover map as
# target-only sources), `"greenearthnet_geotiff"` (the per-date GeoTIFF stacks of the same
# places), `"worldcereal"` (monthly Sentinel-1 and Sentinel-2 over Belgium), `"multisite"`
# (every place of `eo_real/` harmonised to one band set on a 10 m grid) and `"synthetic"`
# (chapter 2's generator, with the GreenEarthNet source layout so that a synthetic run and
# a real run build the same model). The sites of one run must share their *input* sources
# (a model has one input projector per source); target-only sources (DEM, land cover) may
# be missing at some sites, and the batch then carries zero loss weight for them there.

# %%
#| export
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


# %% [markdown]
# ## A dataset addressed by row number, and a sharding sampler
#
# `TileDataset` is a map-style PyTorch dataset whose index is the row key: `ds[k]` cuts
# row $k$ (an unbounded, virtual dataset). Its `collate` normalises a list of rows and
# pads them into the batch layout with chapter 3's `collate`, with chapter 3's global
# normalisation statistics (`DEFAULT_STATS`). What we chose: global statistics rather than
# statistics fitted on the training sites, so that every later chapter (and the shipped
# model) normalises inputs the same way with no extra file. They were fitted on all the
# real samples, the held-out Sweden site included: eight numbers per band, not labels or
# images, so the leak is negligible, and we say so in the model card.
#
# `TileBatchSampler` yields the keys of one micro-batch after another. Micro-batch $m$ of
# process $r$ out of $R$ holds the keys $(mR + r)B + k$, $k < B$: processes never share a
# row, and a run resumed at micro-batch $m$ gets the same keys as before. PyTorch's own
# `DistributedSampler` does this for finite datasets with epochs; our stream of random
# crops has no epochs, so the same sharding is a one-liner over an endless index.

# %%
#| export
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

# %% [markdown]
# ## The sites and one row
#
# The training sites of the book's runs: GreenEarthNet Portugal and Hungary (Sweden is held
# out for evaluation in chapter 21). A row is a small `Sample`: one window, a few dates.

# %%
import matplotlib.pyplot as plt

from aef_lit.conventions import seed_everything

seed_everything(seed)
sites = load_sites(data, ("portugal", "hungary"), seed=seed)
for s in sites:
    print(s.summary())
ds = TileDataset(sites, tile=tile, frames=frames, seed=seed)
row = ds[0]
assert row.grid.shape == (tile, tile)
assert all(fr.T <= frames for fr in row.sources.values())
assert np.all(np.diff(row.sources["s2"].times) > 0), "frames stay in time order"
print({n: (fr.T, fr.values.shape) for n, fr in row.sources.items()})

# %% [markdown]
# **Eight sites in one layout.** With `eo_real/` present, `multisite` reads every place and
# `harmonise` brings it to four bands on a 10 m grid. The median spectrum of each site's
# clear pixels shows why a model trained on Portugal and Hungary alone meets something new
# in Sweden: a dark, forested landscape, about half as bright in the visible bands. Of the
# other places only the Slovenian forest comes close in red and near-infrared (its blue is
# brighter: L1C, top of atmosphere).

# %%
from aef_lit.conventions import find_eo_real

if find_eo_real(required=False) is not None:
    every = load_sites("multisite", MULTISITE_SITES)
    med = {}
    for s in every:
        fr = s.sources["s2"]
        med[s.site] = np.array([np.median(fr.values[:, c][fr.valid]) for c in range(fr.C)])
    fig, ax = plt.subplots(figsize=(7, 3.6))
    nm = [490, 560, 665, 865]
    for name, m in med.items():
        ax.plot(nm, m, "o-", lw=2.5 if "sweden" in name else 1.2, label=name.replace("greenearthnet_", ""))
    ax.set(xlabel="wavelength (nm): B02 B03 B04 B8A", ylabel="median clear reflectance", yscale="log",
           title="every multisite site, harmonised")
    ax.legend(fontsize=7, ncol=2)
    plt.tight_layout()
    plt.show()
    se = med["greenearthnet_sweden"]
    dist = {n: float(np.abs(np.log(m / se)).sum()) for n, m in med.items() if "sweden" not in n}
    print("log-spectrum distance to Sweden:", {n: round(d, 2) for n, d in sorted(dist.items(), key=lambda x: x[1])})
    for other in ("greenearthnet_portugal", "greenearthnet_hungary"):
        assert (se[:3] < 0.75 * med[other][:3]).all(), f"Sweden is darker in the visible than {other}"
else:
    print("eo_real/ not found: the multisite comparison needs the real samples (set $AEF_EO_REAL)")

# %% [markdown]
# **Determinism.** A key always gives the same row, whatever was drawn before, and
# different keys give different rows.

# %%
a, b = ds[12345], ds[12345]
assert a.labels == b.labels and np.array_equal(a.sources["s2"].values, b.sources["s2"].values)
assert np.array_equal(a.sources["s2"].times, b.sources["s2"].times)
assert len({(ds[k].site, ds[k].labels["row"], ds[k].labels["col"]) for k in range(20)}) > 15

# %% [markdown]
# **Where the windows fall.** The windows of the first 64 rows over the first site's
# true-colour image, and the dates each of a few rows took from the site's series (grey:
# all dates of the site; a row keeps a random sub-sequence inside its support window).

# %%
site0 = sites[0]
s2 = site0.sources["s2"]
rgb_i = [site0.specs["s2"].bands.index(b) for b in ("B04", "B03", "B02")]
clearest = int(s2.valid.mean(axis=(1, 2)).argmax())
rgb = np.clip(s2.values[clearest, rgb_i].transpose(1, 2, 0) / 0.25, 0, 1)
fig, axes = plt.subplots(1, 2, figsize=(11, 4), gridspec_kw={"width_ratios": [1, 1.6]})
axes[0].imshow(rgb)
rows = [ds[k] for k in range(64)]
for rw in rows:
    if rw.site == site0.site:
        axes[0].add_patch(plt.Rectangle((rw.labels["col"] - 0.5, rw.labels["row"] - 0.5), tile, tile,
                                        fill=False, lw=0.8, color="yellow", alpha=0.7))
axes[0].set_title(f"{site0.site}: windows of {tile} x {tile} px")
axes[0].axis("off")
days0 = s2.times - s2.times[0]
shown = [rw for rw in rows if rw.site == site0.site][:8]
for i, rw in enumerate(shown):
    axes[1].scatter(days0, np.full_like(days0, i), s=8, color="lightgrey")
    axes[1].scatter(rw.sources["s2"].times - s2.times[0], np.full(rw.sources["s2"].T, i), s=22)
axes[1].set(xlabel="days since the site's first date", ylabel="row", title="frames kept by each row")
plt.tight_layout()
plt.show()

# %% [markdown]
# ## The batch: padded, normalised, static
#
# Collating 4 rows gives the internal layout of chapter 1: every input source padded to
# `frames` frames, `frame_mask` False on the padding, zero loss weight there.

# %%
batch = ds.collate([ds[k] for k in range(4)])
for name, sb in batch.items():
    print(f"{name:10s} x {tuple(sb.x.shape)}  frames/row {sb.frame_mask.sum(1).tolist()}")
sb = batch["s2"]
assert sb.x.shape == (4, frames, 4, tile, tile), "static shape: padded to `frames`"
assert torch.all(sb.weight[~sb.frame_mask] == 0), "padding never weighs in a loss"
assert sb.t.dtype == torch.float64

# %% [markdown]
# **Sharding and resuming.** Two processes draw disjoint keys, and a stream restarted at
# micro-batch 3 yields what the uninterrupted stream yielded at micro-batch 3.

# %%
r0 = [k for m in range(5) for k in TileBatchSampler(4, rank=0, world_size=2).keys(m)]
r1 = [k for m in range(5) for k in TileBatchSampler(4, rank=1, world_size=2).keys(m)]
assert not set(r0) & set(r1), "ranks never share a row"
full = iter(TileBatchSampler(4))
ahead = [next(full) for _ in range(5)]
assert next(iter(TileBatchSampler(4, start=3))) == ahead[3], "resume = same keys"
s_full, s_resumed = tile_stream(ds, 2), tile_stream(ds, 2, start=3)
for _ in range(3):
    next(s_full)
x_full, x_res = next(s_full)["s2"].x, next(s_resumed)["s2"].x
assert torch.equal(x_full, x_res)

# %% [markdown]
# ## Synthetic clouds
#
# A row of Portugal or Hungary is about 95 % clear pixel-frames; a row of Sweden about
# 70 % (10 m grid, measured over 200 rows). The model never sees the cloud mask, only the
# zeros it leaves (chapter 2), so a model trained on clear sites meets far more gaps at a
# cloudy one than it learned to read around. `occlude=p` gives each input frame, with
# probability $p$, a cloud-shaped gap (a smooth random field below a random level) that is
# masked exactly like a real cloud: zeroed in the input, weightless in every loss. Below:
# the validity masks of one row's frames without and with `occlude=1`.

# %%
occ_ds = TileDataset(sites, tile=tile, frames=frames, seed=seed, occlude=1.0)
plain_row, occ_row = ds[7], occ_ds[7]
n_show = min(4, plain_row.sources["s2"].T)
fig, axes = plt.subplots(2, n_show, figsize=(2.4 * n_show, 5), squeeze=False)
for i in range(n_show):
    t_i = plain_row.sources["s2"].times[i]
    axes[0, i].imshow(plain_row.sources["s2"].valid[i], vmin=0, vmax=1, cmap="gray")
    axes[0, i].set_title(f"frame {i}: as read", fontsize=9)
    j = np.flatnonzero(occ_row.sources["s2"].times == t_i)
    occ_mask = occ_row.sources["s2"].valid[j[0]] if j.size else np.zeros_like(plain_row.sources["s2"].valid[i])
    axes[1, i].imshow(occ_mask, vmin=0, vmax=1, cmap="gray")
    axes[1, i].set_title("with occlude=1" + ("" if j.size else " (dropped)"), fontsize=9)
for ax in axes.ravel():
    ax.axis("off")
fig.suptitle("valid pixels (white) of one row's Sentinel-2 frames")
plt.tight_layout()
plt.show()
kept = np.mean([occ_ds[k].sources["s2"].valid.mean() for k in range(40)])
clear = np.mean([ds[k].sources["s2"].valid.mean() for k in range(40)])
print(f"valid share of a row's pixel-frames: {clear:.2f} as read, {kept:.2f} with occlude=1")
assert kept < clear - 0.2, "every frame gets a gap of 10-90 %"

# %% [markdown]
# ## Moving the calendar
#
# Every frame carries its absolute date into the model: the time operator conditions each
# frame on its timecode, and the summariser's query is built from the period's (chapters 4,
# 7, 11), with sinusoids up to four years long. On a global corpus that is what lets a
# model learn seasons. On our handful of places, each imaged in a single year, the date
# is also a shortcut: it nearly tells which place and which stage of its season a row
# comes from, and a model can lean on it instead of on the frames: a model trained
# without the shift reconstructs a held-out row worse when only its dates move, although
# nothing in its frames changed (the lab notes give the numbers).
#
# `time_shift=D` moves every timestamp of a row, in every source, by one offset drawn from
# U(-D, D) days. What a row *means* (which frame came first, how far apart they are, where
# a held-out frame falls in its period) is unchanged; only the calendar moves. With
# D = 365 neither the year nor the phase of the season can be read off a timestamp, so the
# frames themselves are the only clue left.

# %%
shift_ds = TileDataset(sites, tile=tile, frames=frames, seed=seed, time_shift=365.0)
offsets = []
for k in range(30):
    a_row, b_row = ds[k], shift_ds[k]
    u = b_row.sources["s2"].times - a_row.sources["s2"].times
    assert np.allclose(u, u[0]), "one offset for the whole row"
    assert np.array_equal(a_row.sources["s2"].values, b_row.sources["s2"].values), "the frames are untouched"
    offsets.append(float(u[0]))
fig, ax = plt.subplots(figsize=(8, 2.6))
for k in range(6):
    a_t = ds[k].sources["s2"].times
    ax.plot(a_t - 18_628, np.full(a_t.size, k), "o", color="0.6", ms=4, label="as read" if k == 0 else None)
    ax.plot(a_t + offsets[k] - 18_628, np.full(a_t.size, k + 0.25), "o", color="C0", ms=4,
            label="time_shift=365" if k == 0 else None)
ax.set(xlabel="days since 2021-01-01", ylabel="row", title="the same six rows, calendar moved")
ax.legend(fontsize=8, loc="upper right")
plt.tight_layout()
plt.show()
print(f"offsets of 30 rows: {np.min(offsets):+.0f} .. {np.max(offsets):+.0f} days")
assert max(np.abs(offsets)) <= 365 and np.std(offsets) > 100

# %% [markdown]
# ## Captions that differ
#
# The text term (chapter 18) contrasts each row's embedding with its caption, and counts
# rows with the *same* caption as positives. With the site's one caption (chapter 2b) every
# row of a site is a positive of every other: on a batch from one site the term is exactly
# 0, and with two sites it only learns which site a row is from. Worse, the site caption
# names its land-cover classes, which are the labels chapter 25 evaluates.
#
# `captions="row"` gives each row a caption of what the row itself shows: the place, the
# months and year its frames span, and how clear they are (`row_caption`). Nothing in it
# comes from a label. Rows of one site now differ by season and sky, so the term has
# something to teach within a site; whether that helps at new places is a question for the
# evaluation (the lab notes).

# %%
from aef_lit.conventions import WORLDCOVER_CLASSES

row_ds = TileDataset(sites, tile=tile, frames=frames, seed=seed, captions="row")
_, site_caps = ds.collate_with_captions([ds[k] for k in range(8)])
_, row_caps = row_ds.collate_with_captions([row_ds[k] for k in range(8)])
for a_cap, b_cap in zip(site_caps, row_caps):
    print(f"{a_cap:<60} | {b_cap}")
assert len(set(row_caps)) > len(set(site_caps)), "rows of a site get different captions"
assert not any(c in cap.lower() for cap in row_caps for c in WORLDCOVER_CLASSES), "no class name in a row caption"

# %% [markdown]
# ## Throughput of the sampler
#
# Cutting and collating rows must not be the bottleneck of training. On a CPU, one
# process cuts a few hundred rows per second; DataLoader workers (`workers=`) add more in
# parallel on machines that have cores to spare.

# %%
import time

t0 = time.perf_counter()
stream = tile_stream(ds, 8)
for _ in range(10):
    next(stream)
dt = time.perf_counter() - t0
print(f"{80 / dt:.0f} rows/s ({tile} x {tile} px, up to {frames} frames), 1 process")
