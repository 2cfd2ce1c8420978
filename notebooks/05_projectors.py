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
# # 5. Source projectors: every sensor onto one width and the L/2 grid
#
# The encoder reads frames of several sources with different band counts: 10 for
# Sentinel-2, 2 for Sentinel-1, 7 for Landsat. "Per-source input projectors map each
# source's channels to a shared width and bring frames to the L/2 grid"; their internals
# are **open** (`AEF_NOTES.md` §2, {cite}`brown2025alphaearth`). After projection every
# frame of every source is one `D × L/2 × L/2` map, and the frames of all sources form a
# single time axis for the STP encoder (chapter 10).
#
# %% tags=["parameters"]
# Parameters (papermill injects values here). Defaults are sized for a 2-core CPU.
preset = "tiny"  # model preset: "tiny" (CI), "small", "paper"
device = "auto"  # "auto" = XLA if importable, then CUDA, MPS, CPU
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
#| default_exp model.projectors
# %% [markdown]
# ## What we chose, and why
#
# - **A 2×2 patch embedding per source.** Space-to-depth of each 2×2 block of pixels
#   (`b t c (h 2) (w 2) -> (b t) h w (c 2 2)`) followed by one linear map to
#   `d_precision`: a ViT patch embedding with 2-pixel patches, i.e. a stride-2 2×2
#   convolution. It is the smallest operator that reaches L/2 without throwing a pixel
#   away, and it never mixes frames or sources.
# - **A learned source embedding** (one `D`-vector per source) is added to every pixel of
#   that source's frames, so that after concatenation along `T` the encoder still knows
#   which sensor a frame came from (their timecodes alone do not say it).
# - **Padding is neutralised at the door.** A frame with `frame_mask` False is replaced by
#   zeros *before* the projection (with `torch.where`, so even NaNs in padding vanish), and
#   non-finite pixels of real frames become 0 too; the masks travel with the frames so the
#   Time operator (chapter 7) can ignore them. Shapes never depend on how many frames are
#   real.
# - **Never the loss weights.** A `SourceBatch.weight` (clouds, nodata) weights the loss
#   only (§1); the projector does not read it, and the tests check that changing it
#   changes nothing.
# - **Gaps, optionally filled** (`ModelConfig.gap_fill`): where a frame has no
#   observation (the loader wrote 0 in every band), `"mean"` puts the mean of that pixel's
#   observed frames; `"raw"` puts what the sensor measured under a cloud, where the batch
#   carries it (`SourceBatch.cloud`); `"zero"` leaves the zero. See *Gaps* at the end of
#   the chapter.
# - Target-only sources (`role="target"`, e.g. DEM, land cover) have no projector.

# %%
#| export
from __future__ import annotations

import torch
from einops import rearrange
from jaxtyping import Bool, Float, Float64
from torch import Tensor, nn

from aef_lit.conventions import Batch, ModelConfig, SourceSpec


def fill_gaps(x: Float[Tensor, "B T C H W"], mask: Bool[Tensor, "B T"]) -> Float[Tensor, "B T C H W"]:
    """Put, where a real frame has no observation, the mean of that pixel's observed frames.

    A pixel has no observation when the loader wrote 0 in every band (chapter 2 zeroes
    clouds and nodata; a real reflectance z-score is never exactly 0 in all bands). Only
    frames with `mask` True count, so a held-out or dropped frame never leaks into the
    fill. Pixels with no observation in any frame, and padded frames, stay 0.
    """
    seen = (mask[:, :, None, None] & (x != 0).any(2))[:, :, None].to(x.dtype)  # B T 1 H W
    mean = (x * seen).sum(1, keepdim=True) / seen.sum(1, keepdim=True).clamp_min(1.0)
    gap = mask[:, :, None, None, None] & (seen == 0)
    return torch.where(gap, mean.expand_as(x), x)


class SourceProjector(nn.Module):
    """One source's frames `B T C H W` -> `B T D H/2 W/2` (2x2 patch embedding + source embedding).

    `gap_fill="mean"` fills pixels without an observation first (`fill_gaps`); `gap_fill="raw"`
    puts there what the sensor measured under a cloud (`cloud`, where the batch carries it).
    """

    def __init__(self, spec: SourceSpec, d: int, gap_fill: str = "zero"):
        super().__init__()
        self.spec = spec
        self.gap_fill = gap_fill
        self.proj = nn.Linear(4 * spec.channels, d)
        self.source_embedding = nn.Parameter(torch.randn(d) * 0.02)

    def forward(self, x: Float[Tensor, "B T C H W"], mask: Bool[Tensor, "B T"],
                cloud: Float[Tensor, "B T C H W"] | None = None) -> Float[Tensor, "B T D h w"]:
        if self.gap_fill == "raw" and cloud is not None:
            x = x + cloud  # 0 where x is valid, so only gaps under a cloud change
        keep = mask[:, :, None, None, None] & torch.isfinite(x)
        x = torch.where(keep, x, torch.zeros((), dtype=x.dtype, device=x.device))
        if self.gap_fill == "mean":
            x = fill_gaps(x, mask)
        patches = rearrange(x, "b t c (h p) (w q) -> b t h w (c p q)", p=2, q=2)
        y = self.proj(patches) + self.source_embedding
        return rearrange(y, "b t h w d -> b t d h w")


class InputProjection(nn.Module):
    """All input sources of a Batch onto one width and the L/2 grid, concatenated along T.

    Returns (x `B T D h w` with T = sum of the sources' frame counts, in `cfg.input_sources`
    order; t float64 days `B T`; mask `B T`). Masked frames stay (static shapes), zeroed.
    """

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.names = [s.name for s in cfg.input_sources]
        self.projectors = nn.ModuleDict(
            {s.name: SourceProjector(s, cfg.d_precision, cfg.gap_fill) for s in cfg.input_sources})

    def forward(self, batch: Batch) -> tuple[Float[Tensor, "B T D h w"], Float64[Tensor, "B T"], Bool[Tensor, "B T"]]:
        xs, ts, ms = [], [], []
        for name in self.names:  # a fixed Python loop over sources: static under torch.compile
            sb = batch[name]
            xs.append(self.projectors[name](sb.x, sb.frame_mask, sb.cloud))
            ts.append(sb.t)
            ms.append(sb.frame_mask)
        return torch.cat(xs, dim=1), torch.cat(ts, dim=1), torch.cat(ms, dim=1)


# %% [markdown]
# ## Shapes, and the properties that matter
#
# A random batch of the `tiny` preset (chapter 1's fixture) goes in; one tensor of frames
# comes out, with the frames of S2, S1 and Landsat one after the other along `T`.

# %%
from aef_lit.conventions import get_config, random_batch, seed_everything, select_device

cfg = get_config(preset)
device = select_device(device)
g = seed_everything(seed)
proj = InputProjection(cfg)
batch = random_batch(cfg, B=2, T={"s2": 5, "s1": 3, "landsat": 4}, H=cfg.tile, W=cfg.tile + 16, generator=g)
x, t, mask = proj(batch)
print("x", tuple(x.shape), "t", t.dtype, tuple(t.shape), "mask", mask.sum(1).tolist(), "real frames per row")
assert x.shape == (2, 12, cfg.d_precision, cfg.tile // 2, (cfg.tile + 16) // 2)
assert t.dtype == torch.float64 and torch.equal(t[:, :5], batch["s2"].t)

# %% [markdown]
# Three properties, each checked by changing an input and comparing outputs:
# the loss weights are not input; a padded frame's values do not matter (here we even put
# NaNs in it); and a projector is local: changing one pixel changes only its own L/2 cell.

# %%
b2 = {k: v.replace(weight=torch.rand_like(v.weight)) for k, v in batch.items()}
assert torch.equal(proj(b2)[0], x), "weights must never be model input"

s2 = batch["s2"]
pad = ~s2.frame_mask
b3 = dict(batch, s2=s2.replace(x=torch.where(pad[..., None, None, None], torch.nan, s2.x)))
assert torch.equal(proj(b3)[0], x), "padded frames must not matter"

b4 = dict(batch, s2=s2.replace(x=s2.x.clone()))
b4["s2"].x[0, 0, :, 7, 9] += 1.0
diff = (proj(b4)[0] - x).abs().sum(2)[0, 0]
assert set(map(tuple, diff.nonzero().tolist())) == {(3, 4)}, "pixel (7, 9) lives in L/2 cell (3, 4)"

# %% [markdown]
# ## The three grids on a real tile
#
# For the `paper` preset ($L = 128$) the precision operator works on the L/2 grid
# (64 × 64 cells of 20 m), the time operator on L/8 (16 × 16 cells of 80 m) and the space
# operator on L/16 (8 × 8 cells of 160 m). Drawn on a real Sentinel-2 tile from
# GreenEarthNet (Portugal, 2021, 128 × 128 pixels of 10 m) when the real samples are
# present, on noise otherwise.

# %%
import matplotlib.pyplot as plt
import numpy as np

from aef_lit.conventions import find_eo_real


def real_rgb(name: str = "portugal_2021.nc") -> np.ndarray | None:
    """A cloud-free-ish RGB (H, W, 3) in [0, 1] from a GreenEarthNet minicube, or None."""
    root = find_eo_real(required=False)
    if root is None or data == "synthetic":
        return None
    import xarray as xr

    with xr.open_dataset(root / "greenearthnet" / "minicubes" / name) as ds:
        rgb = np.stack([ds[v].values for v in ("s2_B04", "s2_B03", "s2_B02")], axis=-1)
    k = int(np.nanargmin(np.nanmean(rgb, axis=(1, 2, 3))))  # darkest frame: fewest clouds
    img = np.nan_to_num(rgb[k])
    return np.clip(img / np.percentile(img, 99), 0, 1)


rgb = real_rgb()
title = "GreenEarthNet, Portugal 2021 (real S2 RGB)" if rgb is not None else "random (real samples absent)"
if rgb is None:
    rgb = np.random.default_rng(seed).random((128, 128, 3))
L = rgb.shape[0]
fig, axes = plt.subplots(1, 3, figsize=(13, 4.6))
for ax, (f, who, col) in zip(axes, ((2, "precision", "yellow"), (8, "time", "cyan"), (16, "space", "magenta"))):
    ax.imshow(rgb, extent=(0, L, L, 0))
    for k in range(0, L + 1, f):
        ax.axhline(k, color=col, lw=0.4 if f == 2 else 1.0)
        ax.axvline(k, color=col, lw=0.4 if f == 2 else 1.0)
    ax.set_title(f"L/{f}: {L // f}×{L // f} cells of {10 * f} m — {who}")
    ax.set_xlim(0, L)
    ax.set_ylim(L, 0)
fig.suptitle(title)
plt.tight_layout()
plt.show()

# %% [markdown]
# ## Gaps: what the projector sees where nothing was observed
#
# The paper feeds the encoder what the sensor recorded, clouds included, and uses cloud
# masks only to weight the loss (§1): with millions of rows, the model learns to read
# through a bright cloud. Our loaders do something else (chapter 2): under a cloud, a
# shadow or nodata they write **0**, which after normalisation (chapter 3) is the value of
# an *average* pixel of the whole corpus. So a gap is not invisible to the model (a
# real z-score is never exactly 0 in all four bands), but it is ambiguous: at a dark
# boreal forest a zero looks like a patch of much brighter land, and a model trained on
# nearly clear places has rarely met one. Chapter 21 measured what that costs: on the
# cloudiest site (Sweden, about 70 % of pixel-frames clear) a model loses most to the
# per-pixel temporal mean exactly at the pixels whose inputs are mostly cloudy.
#
# `gap_fill="mean"` removes the ambiguity in the simplest way we could think of: before
# the patch embedding, every unobserved pixel of a real frame gets the mean of the same
# pixel's *observed* frames in the row (still zero if it has none). Three things keep this
# honest. The fill is computed from the input the model is given, inside the forward pass,
# so a held-out frame (chapter 15) or a frame the student drops (chapter 17) has its
# `frame_mask` off and never enters it; the loss weights are still never read (a gap is
# recognised by its zeros alone); and shapes stay static. The paper is silent here because
# its inputs have no gaps of this kind, so this is our choice (**open**), and `"zero"`
# stays available (and is what the first shipped model was trained with).
#
# `gap_fill="raw"` is the paper's own choice: where a reader kept the radiance under a
# cloud (`SourceFrames.cloud_values`, chapter 2; the GreenEarthNet minicubes do, since
# their cloud mask marks pixels the sensor did see), collate puts it in the batch's
# `cloud` tensor and this projector adds it to the zeros before the patch embedding. The
# loss weights are unchanged, so the model is still never asked to reconstruct a cloud;
# nodata stays zero. Whether a model this small, on so few places, learns to read
# through clouds as the paper's does is an empirical question, measured with the
# evaluation: trained the same way apart from this switch, the raw-input models scored
# 0.05–0.07 higher balanced accuracy on the unseen Swedish WorldCover task in three pairs of
# runs (0.41 → 0.46 and 0.40 → 0.44 at two training lengths, 0.34 → 0.41 with land cover and
# elevation as targets; 10 labels per class), and moved the other tasks about as much as a
# different random seed does (lab notes, "training levers II").

# %%
from aef_lit.model.projectors import fill_gaps

x_g = batch["s2"].x.clone()
m_g = batch["s2"].frame_mask
x_g[0, 0, :, 4:12, 4:12] = 0.0  # a square "cloud" on the first frame of row 0
filled = fill_gaps(x_g, m_g)
real = m_g[0].nonzero().flatten()[1:]  # the row's other real frames
want = x_g[0, real][:, :, 4:12, 4:12].mean(0)
assert torch.allclose(filled[0, 0, :, 4:12, 4:12], want, atol=1e-6), "a gap gets its pixels' mean over the other frames"
assert torch.equal(filled[0, 1:], x_g[0, 1:]), "observed pixels are never changed"
held_out = m_g.clone()
held_out[0, 1] = False  # hold frame 1 out: it must stop contributing
x_h = x_g.clone()
x_h[0, 1] = 9.0
assert torch.equal(fill_gaps(x_h, held_out)[0, 0], fill_gaps(x_g, held_out)[0, 0]), "a held-out frame never leaks"


def cloudy_frames():
    """(values C H W, valid H W) of the Swedish minicube's cloudiest partly clear frame, or None."""
    if find_eo_real(required=False) is None or data == "synthetic":
        return None
    from aef_lit.data import load_greenearthnet_minicube
    from aef_lit.data.preprocess import DEFAULT_STATS, normalise_frames

    site = load_greenearthnet_minicube("sweden")
    fr = normalise_frames(site.sources["s2"], site.specs["s2"], DEFAULT_STATS)
    clear = fr.valid.mean((1, 2))
    k = int(np.argmin(np.where(clear > 0.3, clear, 2.0)))
    return torch.from_numpy(fr.values), torch.from_numpy(fr.valid), k, torch.from_numpy(fr.cloud_values)


sw = cloudy_frames()
if sw is not None:
    xs, vs, k, cs = sw
    xs_f = fill_gaps(xs[None], torch.ones(1, xs.shape[0], dtype=torch.bool))[0]
    as_rgb = lambda v: np.clip((v[[2, 1, 0]].permute(1, 2, 0).numpy() + 1.5) / 3.0, 0, 1)  # z-scores to [0, 1]
    fig, axes = plt.subplots(1, 4, figsize=(15, 4.2))
    axes[0].imshow(vs[k], cmap="gray")
    axes[0].set_title(f"valid pixels of frame {k} ({100 * vs[k].float().mean():.0f} % clear)")
    axes[1].imshow(as_rgb(xs[k]))
    axes[1].set_title('gap_fill="zero": what the model sees')
    axes[2].imshow(as_rgb(xs_f[k]))
    axes[2].set_title('gap_fill="mean": gaps filled from other frames')
    axes[3].imshow(as_rgb(xs[k] + cs[k]))
    axes[3].set_title('gap_fill="raw": what the sensor measured')
    for ax in axes:
        ax.axis("off")
    fig.suptitle("GreenEarthNet Sweden 2021, normalised RGB (real S2)")
    plt.tight_layout()
    plt.show()
    gap = ~vs[k]
    assert (xs[k][:, gap] == 0).all() and (xs_f[k][:, gap] != 0).any(), "the gaps were zeros, and are filled"
    assert (cs[k][:, ~gap] == 0).all() and (cs[k][:, gap] != 0).any(), "the radiance is kept only under the mask"

