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
# # 9. The learned Laplacian-pyramid exchange
#
# The three STP operators live on three grids (L/16, L/8, L/2) at three widths. "Every
# block ends with *learned Laplacian-pyramid rescaling*: each operator's state is resampled
# to the grid of every operator of the next block", an HRNet-like exchange; "after the
# last block, a learned spatial resampling brings everything to the precision grid (L/2)"
# (`AEF_NOTES.md` §2, {cite}`brown2025alphaearth`). The kernels are **open**; the notes
# suggest that "a real Laplacian pyramid (blur/downsample, upsample + learned band-pass
# residual) is the faithful reading", and that is what this chapter builds.
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
#| default_exp model.pyramid
# %% [markdown]
# ## Two resamplers, one octave at a time
#
# A Laplacian pyramid moves between scales one octave at a time: REDUCE = blur with a
# binomial kernel then keep every second sample; EXPAND = upsample by two and interpolate;
# the band-pass layer is what EXPAND misses. Our learned versions:
#
# - **`Downsample(d_in, d_out, factor)`**: LayerNorm over channels, then
#   $\log_2(\text{factor})$ times a *depthwise* 3×3 stride-2 convolution **initialised to
#   the binomial blur** $\frac{1}{16}[1, 2, 1]^\top[1, 2, 1]$ (so at step 0 it is exactly
#   REDUCE, and training may sharpen or orient it per channel), then a 1×1 projection to
#   `d_out`, done on the coarse grid where it is cheapest.
# - **`Upsample(d_in, d_out, factor)`**: LayerNorm, a 1×1 projection to `d_out` first
#   (on the coarse grid again), then per octave: bilinear EXPAND, plus a learned depthwise
#   3×3 *band-pass residual* that adds back the detail interpolation cannot make.
# - All resampling is per frame (`(b t)` folded into the batch): frames never mix here, so
#   a padded frame stays confined to itself. Norms are over channels, never over frames.
#
# Factors are powers of two: 2 (L/8 ↔ L/16), 4 (L/2 ↔ L/8), 8 (L/2 ↔ L/16).

# %%
#| export
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from einops import rearrange
from jaxtyping import Float
from torch import Tensor, nn

from aef_lit.conventions import ModelConfig

BINOMIAL_3x3 = torch.tensor([[1.0, 2.0, 1.0], [2.0, 4.0, 2.0], [1.0, 2.0, 1.0]]) / 16.0
"""The 3x3 binomial blur of a Laplacian pyramid's REDUCE step."""


def _octaves(factor: int) -> int:
    n = int(round(math.log2(factor)))
    if factor < 1 or 2**n != factor:
        raise ValueError(f"resampling factor must be a power of two, got {factor}")
    return n


def _channel_norm(norm: nn.LayerNorm, x: Float[Tensor, "N d h w"]) -> Float[Tensor, "N d h w"]:
    return rearrange(norm(rearrange(x, "n d h w -> n h w d")), "n h w d -> n d h w")


class Downsample(nn.Module):
    """Learned REDUCE: `B T d_in h w` -> `B T d_out h/f w/f` (blur-initialised stride-2 depthwise convs)."""

    def __init__(self, d_in: int, d_out: int, factor: int):
        super().__init__()
        self.norm = nn.LayerNorm(d_in)
        self.blurs = nn.ModuleList()
        for _ in range(_octaves(factor)):
            conv = nn.Conv2d(d_in, d_in, 3, stride=2, padding=1, groups=d_in, bias=False, padding_mode="replicate")
            with torch.no_grad():
                conv.weight.copy_(BINOMIAL_3x3.expand(d_in, 1, 3, 3))
            self.blurs.append(conv)
        self.proj = nn.Conv2d(d_in, d_out, 1)

    def forward(self, x: Float[Tensor, "B T d_in h w"]) -> Float[Tensor, "B T d_out h2 w2"]:
        b = x.shape[0]
        y = _channel_norm(self.norm, rearrange(x, "b t d h w -> (b t) d h w"))
        for blur in self.blurs:
            y = blur(y)
        return rearrange(self.proj(y), "(b t) d h w -> b t d h w", b=b)


class Upsample(nn.Module):
    """Learned EXPAND: `B T d_in h w` -> `B T d_out h*f w*f` (bilinear + learned band-pass residual)."""

    def __init__(self, d_in: int, d_out: int, factor: int):
        super().__init__()
        self.norm = nn.LayerNorm(d_in)
        self.proj = nn.Conv2d(d_in, d_out, 1)
        self.bandpass = nn.ModuleList(
            nn.Conv2d(d_out, d_out, 3, padding=1, groups=d_out, padding_mode="replicate")
            for _ in range(_octaves(factor))
        )

    def forward(self, x: Float[Tensor, "B T d_in h w"]) -> Float[Tensor, "B T d_out h2 w2"]:
        b = x.shape[0]
        y = self.proj(_channel_norm(self.norm, rearrange(x, "b t d h w -> (b t) d h w")))
        for bp in self.bandpass:
            y = F.interpolate(y, scale_factor=2.0, mode="bilinear", align_corners=False)
            y = y + bp(y)
        return rearrange(y, "(b t) d h w -> b t d h w", b=b)


# %% [markdown]
# ## The exchange at the end of each block
#
# With $s$, $t$, $p$ the states of Space (L/16), Time (L/8) and Precision (L/2), the next
# block's inputs are
#
# $$ s' = s + \downarrow_2 t + \downarrow_8 p,\qquad
#    t' = t + \uparrow_2 s + \downarrow_4 p,\qquad
#    p' = p + \uparrow_8 s + \uparrow_4 t, $$
#
# each arrow a learned resampler with its own weights (six per block). The identity paths
# keep each operator's own residual stream; the cross paths make every operator of the
# next block see every operator of this one (HRNet's fuse layer, with pyramid kernels).
# After the last block, `FinalResample` brings all three to L/2 at `d_precision` and
# normalises: the per-frame feature maps the summariser (chapter 11) pools.

# %%
#| export
class PyramidExchange(nn.Module):
    """Each operator's state resampled to every grid and added: (s, t, p) -> (s', t', p')."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        ds, dt, dp = cfg.d_space, cfg.d_time, cfg.d_precision
        self.t2s, self.p2s = Downsample(dt, ds, 2), Downsample(dp, ds, 8)
        self.s2t, self.p2t = Upsample(ds, dt, 2), Downsample(dp, dt, 4)
        self.s2p, self.t2p = Upsample(ds, dp, 8), Upsample(dt, dp, 4)

    def forward(self, s: Float[Tensor, "B T Ds hs ws"], t: Float[Tensor, "B T Dt ht wt"],
                p: Float[Tensor, "B T Dp hp wp"]) -> tuple[Tensor, Tensor, Tensor]:
        return (s + self.t2s(t) + self.p2s(p),
                t + self.s2t(s) + self.p2t(p),
                p + self.s2p(s) + self.t2p(t))


class FinalResample(nn.Module):
    """After the last block: all three states onto L/2 at width d_precision, LayerNorm'd."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        dp = cfg.d_precision
        self.s2p, self.t2p = Upsample(cfg.d_space, dp, 8), Upsample(cfg.d_time, dp, 4)
        self.norm = nn.LayerNorm(dp)

    def forward(self, s: Float[Tensor, "B T Ds hs ws"], t: Float[Tensor, "B T Dt ht wt"],
                p: Float[Tensor, "B T Dp hp wp"]) -> Float[Tensor, "B T Dp hp wp"]:
        y = p + self.s2p(s) + self.t2p(t)
        return rearrange(self.norm(rearrange(y, "b t d h w -> b t h w d")), "b t h w d -> b t d h w")


# %% [markdown]
# ## Properties
#
# 1. **At initialisation `Downsample` is REDUCE**: with the projection set to the identity
#    (and the norm bypassed), a constant image stays constant, and the result equals a
#    binomial blur followed by subsampling.
# 2. **Shapes for non-square grids**: a 32 × 48 tile gives 16 × 24, 4 × 6 and 2 × 3.
# 3. **Every operator reaches every operator**: perturb one state, and all three outputs of
#    the exchange change; **frames never mix**: another frame's outputs do not.

# %%
import matplotlib.pyplot as plt
import numpy as np

from aef_lit.conventions import find_eo_real, get_config, seed_everything, select_device

cfg = get_config(preset)
device = select_device(device)
g = seed_everything(seed)

down = Downsample(3, 3, 4)
down.norm = nn.Identity()
with torch.no_grad():
    down.proj.weight.copy_(torch.eye(3)[..., None, None])
    down.proj.bias.zero_()
img = torch.randn(1, 1, 3, 32, 48, generator=g)
ref = F.avg_pool2d(img[0], 1)
for _ in range(2):
    ref = F.conv2d(F.pad(ref, (1, 1, 1, 1), mode="replicate"), BINOMIAL_3x3.expand(3, 1, 3, 3), stride=2, groups=3)
torch.testing.assert_close(down(img)[0], ref)
const = torch.full((1, 1, 3, 32, 48), 2.5)
torch.testing.assert_close(down(const), torch.full((1, 1, 3, 8, 12), 2.5))

H, W = cfg.tile, cfg.tile + 16
ex = PyramidExchange(cfg)
B, T = 1, 2
s = torch.randn(B, T, cfg.d_space, H // 16, W // 16, generator=g)
t = torch.randn(B, T, cfg.d_time, H // 8, W // 8, generator=g)
p = torch.randn(B, T, cfg.d_precision, H // 2, W // 2, generator=g)
outs = ex(s, t, p)
assert [o.shape for o in outs] == [s.shape, t.shape, p.shape]
for k, state in enumerate((s, t, p)):
    bumped = [s, t, p]
    bumped[k] = state.clone()
    bumped[k][:, 0] += torch.randn(state[:, 0].shape, generator=g)
    new = ex(*bumped)
    for j in range(3):
        if j != k:
            assert (new[j][:, 0] - outs[j][:, 0]).abs().max() > 0, f"state {k} must reach operator {j}"
        assert torch.equal(new[j][:, 1], outs[j][:, 1]), "frames never mix"
fin = FinalResample(cfg)(*outs)
assert fin.shape == p.shape

# %% [markdown]
# ## A picture: the pyramid of a real tile
#
# The learned resamplers at initialisation, applied to the RGB of a real tile: REDUCE to
# L/8 and L/16, EXPAND back to L/2, and the band-pass residual (what the coarse grid
# loses, and what the precision operator keeps). In training the kernels move away from
# the binomial start, and the 1×1 projections mix channels across widths.

# %%
def real_rgb(name: str = "portugal_2021.nc") -> np.ndarray | None:
    """A cloud-free-ish RGB (H, W, 3) in [0, 1] from a GreenEarthNet minicube, or None."""
    root = find_eo_real(required=False)
    if root is None or data == "synthetic":
        return None
    import xarray as xr

    with xr.open_dataset(root / "greenearthnet" / "minicubes" / name) as ds:
        rgb = np.stack([ds[v].values for v in ("s2_B04", "s2_B03", "s2_B02")], axis=-1)
    k = int(np.nanargmin(np.nanmean(rgb, axis=(1, 2, 3))))
    img = np.nan_to_num(rgb[k])
    return np.clip(img / np.percentile(img, 99), 0, 1)


rgb = real_rgb()
src = "real S2 RGB, Portugal 2021" if rgb is not None else "random (real samples absent)"
if rgb is None:
    rgb = np.random.default_rng(seed).random((128, 128, 3))
x0 = rearrange(torch.tensor(rgb, dtype=torch.float32), "h w c -> 1 1 c h w")
x0 = F.avg_pool2d(x0[0], 2)[None]  # the L/2 grid


def identity_resampler(mod):
    mod.norm = nn.Identity()
    with torch.no_grad():
        mod.proj.weight.copy_(torch.eye(3)[..., None, None])
        mod.proj.bias.zero_()
    return mod


d4, d8 = identity_resampler(Downsample(3, 3, 4)), identity_resampler(Downsample(3, 3, 8))
u4 = identity_resampler(Upsample(3, 3, 4))
with torch.no_grad():
    for bp in u4.bandpass:
        bp.weight.zero_()
        bp.bias.zero_()
    l8, l16 = d4(x0), d8(x0)
    back = u4(l8)
band = (x0 - back)[0, 0]
panels = [(x0[0, 0], "L/2"), (l8[0, 0], "L/8 (REDUCE ×2)"), (l16[0, 0], "L/16 (REDUCE ×3)"),
          (back[0, 0], "L/8 EXPANDed to L/2"), (band, "band-pass: L/2 − EXPAND(L/8)")]
fig, axes = plt.subplots(1, 5, figsize=(16, 3.6))
for ax, (im, title) in zip(axes, panels):
    arr = rearrange(im, "c h w -> h w c").numpy()
    if "band" in title:
        arr = np.clip(0.5 + 2 * arr, 0, 1)
    ax.imshow(np.clip(arr, 0, 1))
    ax.set_title(title, fontsize=9)
    ax.axis("off")
fig.suptitle(f"the pyramid at initialisation ({src})")
plt.tight_layout()
plt.show()
