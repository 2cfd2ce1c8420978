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
# # 30. Prithvi: a masked autoencoder beside AEF
#
# The project started from two papers: AlphaEarth Foundations and Prithvi
# ({cite}`jakubik2023prithvi`, `seeds/003`), the open geospatial foundation model of IBM and
# NASA that most users would pick instead of AEF. The AEF paper reports Prithvi doing poorly
# when only a few labels are available. To compare them on equal terms, this chapter builds
# Prithvi from its description, trains it on the same sites and bands as the shipped AEF
# model, and gives it to the evaluation of chapters 23–26 unchanged.
#
# What Prithvi is, in the paper's words: a Vision Transformer **masked autoencoder** (MAE,
# {cite}`he2022mae`) for multi-temporal, multi-band stacks.
#
# - **3D patch embedding**: the input `C × T × H × W` (6 HLS bands, 3 frames, 224 × 224
#   pixels) is cut into `t × 16 × 16` patches (tubelets of `t = 1` frame), each projected to
#   a token by one linear map (a `Conv3d` whose kernel equals its stride).
# - **3D sine-cosine position embeddings**: fixed, not learnt; the token at (frame, row,
#   column) gets sin/cos codes of each of the three indices, concatenated.
# - **Masking 75 % of the tokens** at random; the encoder sees only the visible quarter.
# - **A light decoder** (narrower, shallower) receives the encoded visible tokens plus a
#   shared learnt *mask token* at every hidden position, and predicts the pixels of every
#   patch. The loss is the mean squared error on the **masked** patches only, against targets
#   normalised per patch (mean 0, variance 1: "normalised-pixel" loss).
#
# Prithvi-EO-2.0 ({cite}`szwarcman2024prithvi2`) adds two optional encodings: the acquisition
# date (year and day of year) and the location (latitude and longitude), each as sin/cos codes
# added to the tokens.
#
# The contrast with AEF is the point of the chapter. Prithvi has a fixed number of frames and a
# position index for time, not a timestamp; it reconstructs what it saw, where AEF predicts
# sources at instants it did not see and summarises any period into one unit vector; its
# features are patch tokens (one per 16 × 16 pixels in the paper), where AEF gives one vector
# per pixel.
#
# The code goes to `aef_lit.prithvi`: the network (`mae`) and the loader of the published
# checkpoints (`checkpoint`); chapter 31 trains it on our samples (`train`, `cli`) and gives its
# features to the evaluation (`method`).

# %% tags=["parameters"]
# Parameters (papermill injects values here). Defaults are sized for a 2-core CPU.
preset = "tiny"  # the Prithvi preset of the short run: "tiny" (CI) or "100m" (the paper's)
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
#| default_exp prithvi.mae

# %% [markdown]
# ## 1. The configuration and its presets
#
# `100m` is the configuration of the Prithvi paper (ViT-Base: width 768, 12 layers, 12 heads;
# decoder width 512, 8 layers, 16 heads; 6 HLS bands, 224 px, 3 frames, patches 1 × 16 × 16).
# `eo2_300m` is Prithvi-EO-2.0-300M (ViT-Large, 4 frames, date and location encodings).
# `tiny` is ours: the four Sentinel-2 bands of the shipped AEF model, 32 × 32 pixels in
# patches of 4 × 4 (so a token covers 40 m, not 160 m: the probes need pixel-scale features),
# width 128, 4 layers: about the parameter count of the shipped AEF model.

# %%
#| export
from __future__ import annotations

from dataclasses import asdict, dataclass, replace

import numpy as np
import torch
from einops import rearrange, repeat
from jaxtyping import Float
from torch import Tensor, nn

from aef_lit.model.attention import PreNormAttention

HLS_BANDS = ("B02", "B03", "B04", "B8A", "B11", "B12")
"""Prithvi's six HLS bands by their Sentinel-2 names: blue, green, red, narrow NIR, SWIR 1, SWIR 2."""


@dataclass(frozen=True)
class PrithviConfig:
    """A Prithvi masked autoencoder. `coords` may hold "time" and "location" (Prithvi-EO-2.0)."""

    bands: tuple[str, ...] = HLS_BANDS
    img_size: int = 224
    patch: int = 16
    tubelet: int = 1
    frames: int = 3
    dim: int = 768
    depth: int = 12
    heads: int = 12
    decoder_dim: int = 512
    decoder_depth: int = 8
    decoder_heads: int = 16
    mlp_ratio: float = 4.0
    mask_ratio: float = 0.75
    norm_pix_loss: bool = True
    coords: tuple[str, ...] = ()

    def __post_init__(self):
        if self.img_size % self.patch or self.frames % self.tubelet:
            raise ValueError(f"img_size {self.img_size} and frames {self.frames} must be multiples of the patch "
                             f"{self.patch} and tubelet {self.tubelet}")
        for d, name in ((self.dim, "dim"), (self.decoder_dim, "decoder_dim")):
            if d % 16:
                raise ValueError(f"{name} = {d}: the 3D sin-cos embedding needs a multiple of 16")
        if self.dim % self.heads or self.decoder_dim % self.decoder_heads:
            raise ValueError("dim and decoder_dim must be multiples of their head counts")
        if not 0.0 <= self.mask_ratio < 1.0:
            raise ValueError(f"mask_ratio {self.mask_ratio} must be in [0, 1)")
        bad = set(self.coords) - {"time", "location"}
        if bad:
            raise ValueError(f"unknown coords {sorted(bad)}: 'time' and/or 'location'")
        if "time" in self.coords and self.tubelet != 1:
            raise ValueError("the date encoding needs tubelets of one frame")

    @property
    def in_chans(self) -> int:
        return len(self.bands)

    @property
    def grid(self) -> tuple[int, int, int]:
        """Tokens along (time, rows, columns)."""
        return self.frames // self.tubelet, self.img_size // self.patch, self.img_size // self.patch

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "PrithviConfig":
        return cls(**{k: tuple(v) if k in ("bands", "coords") else v for k, v in d.items()})


PRITHVI_PRESETS = {
    "100m": PrithviConfig(),
    "eo2_300m": PrithviConfig(frames=4, dim=1024, depth=24, heads=16, coords=("time", "location")),
    "tiny": PrithviConfig(bands=("B02", "B03", "B04", "B8A"), img_size=32, patch=4, dim=128, depth=4, heads=4,
                          decoder_dim=64, decoder_depth=2, decoder_heads=4),
}


def prithvi_config(preset: str = "tiny", **overrides) -> PrithviConfig:
    """A preset (see `PRITHVI_PRESETS`) with fields replaced by `overrides`."""
    if preset not in PRITHVI_PRESETS:
        raise ValueError(f"unknown Prithvi preset {preset!r}; choose from {', '.join(PRITHVI_PRESETS)}")
    return replace(PRITHVI_PRESETS[preset], **overrides)


# %% [markdown]
# ## 2. Sine-cosine codes in three dimensions
#
# A 1D code of width `d` for position `p` is `[sin(p ω_i), cos(p ω_i)]` with frequencies
# `ω_i = 10000^(-2i/d)`, as in the Transformer. Prithvi splits the token width into
# 6/16 for the column, 6/16 for the row and 4/16 for the frame and concatenates the three
# codes in that order. Tokens are ordered frame-major, then row, then column: the order in
# which the patch embedding's output is flattened. A leading zero row is the code of the
# class token (kept for compatibility with the published weights; we never read it).

# %%
#| export
def sincos_1d(d: int, pos: np.ndarray) -> np.ndarray:
    """`len(pos) x d` codes: sin then cos of `pos * 10000^(-2i/d)`."""
    if d % 2:
        raise ValueError(f"width {d} must be even")
    omega = 1.0 / 10000 ** (np.arange(d // 2, dtype=np.float64) / (d / 2))
    out = np.outer(np.asarray(pos, np.float64).reshape(-1), omega)
    return np.concatenate([np.sin(out), np.cos(out)], axis=1)


def sincos_3d(d: int, grid: tuple[int, int, int], cls_token: bool = True) -> np.ndarray:
    """`(1 +) T*H*W x d` position codes of a token grid (frame-major order): column, row and
    frame codes of widths 6d/16, 6d/16 and 4d/16, concatenated; a zero row first for the class token."""
    T, H, W = grid
    t, h, w = np.meshgrid(np.arange(T), np.arange(H), np.arange(W), indexing="ij")
    emb = np.concatenate([sincos_1d(d // 16 * 6, w), sincos_1d(d // 16 * 6, h), sincos_1d(d // 16 * 4, t)], axis=1)
    return np.concatenate([np.zeros((1, d)), emb]) if cls_token else emb


def coord_code(d: int, values: Float[Tensor, "... k"]) -> Float[Tensor, "... d"]:
    """Prithvi-EO-2.0's date / location code: the first coordinate in the first half of the
    width, the second in the rest (year and day of year; latitude and longitude)."""
    half = d // 2
    parts = []
    for v, w in ((values[..., 0], half), (values[..., 1], d - half)):
        omega = 1.0 / 10000 ** (torch.arange(w // 2, dtype=torch.float32, device=v.device) / (w / 2))
        a = v.float()[..., None] * omega
        parts.append(torch.cat([a.sin(), a.cos()], -1))
    return torch.cat(parts, -1)


# %% [markdown]
# ## 3. The encoder and the decoder
#
# The transformer layer is chapter 7's `PreNormAttention` (layer norm, multi-head
# self-attention, residual; layer norm, MLP, residual): the layer of ViT and of Prithvi. The
# class token of ViT is kept (the published weights have one); the features we use are the
# patch tokens.
#
# Masking follows MAE: draw a uniform number per token, keep the `int(N (1 − r))` smallest,
# run the encoder on those only. The decoder maps them to its width, puts the mask token at
# every dropped position, restores the original order, adds its own position codes, and
# predicts `t · p · p · C` values per token: the pixels of its patch.

# %%
#| export
class PrithviEncoder(nn.Module):
    """Patch embedding, fixed 3D position codes, optional date/location codes, ViT layers."""

    def __init__(self, cfg: PrithviConfig):
        super().__init__()
        self.cfg = cfg
        k = (cfg.tubelet, cfg.patch, cfg.patch)
        self.patch_embed = nn.Conv3d(cfg.in_chans, cfg.dim, kernel_size=k, stride=k)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, cfg.dim))
        self.register_buffer("pos_embed", torch.from_numpy(sincos_3d(cfg.dim, cfg.grid)).float()[None])
        self.coord_scale = nn.ParameterDict({c: nn.Parameter(torch.ones(1)) for c in cfg.coords})
        self.blocks = nn.ModuleList([PreNormAttention(cfg.dim, cfg.heads, cfg.mlp_ratio) for _ in range(cfg.depth)])
        self.norm = nn.LayerNorm(cfg.dim)

    def tokens(self, x: Float[Tensor, "B C T H W"], dates: Float[Tensor, "B T 2"] | None = None,
               lonlat: Float[Tensor, "B 2"] | None = None) -> Float[Tensor, "B N D"]:
        """Patch tokens with their position (and date / location) codes, before any layer."""
        cfg = self.cfg
        if x.shape[1:] != (cfg.in_chans, cfg.frames, cfg.img_size, cfg.img_size):
            raise ValueError(f"Prithvi takes B x {cfg.in_chans} x {cfg.frames} x {cfg.img_size} x {cfg.img_size} "
                             f"stacks, got {tuple(x.shape)}")
        tok = rearrange(self.patch_embed(x), "b d t h w -> b (t h w) d") + self.pos_embed[:, 1:]
        if "time" in cfg.coords and dates is not None:
            hw = cfg.grid[1] * cfg.grid[2]
            tok = tok + self.coord_scale["time"] * repeat(coord_code(cfg.dim, dates), "b t d -> b (t n) d", n=hw)
        if "location" in cfg.coords and lonlat is not None:
            latlon = lonlat.flip(-1)  # Prithvi-EO-2.0 codes latitude first
            tok = tok + self.coord_scale["location"] * coord_code(cfg.dim, latlon)[:, None]
        return tok

    def forward(self, tok: Float[Tensor, "B n D"]) -> Float[Tensor, "B n+1 D"]:
        cls = (self.cls_token + self.pos_embed[:, :1]).expand(len(tok), -1, -1)
        x = torch.cat([cls, tok], 1)
        for blk in self.blocks:
            x = blk(x)
        return self.norm(x)


class PrithviDecoder(nn.Module):
    """The light MAE decoder: mask tokens at hidden positions, ViT layers, a linear map to pixels."""

    def __init__(self, cfg: PrithviConfig):
        super().__init__()
        self.embed = nn.Linear(cfg.dim, cfg.decoder_dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, cfg.decoder_dim))
        self.register_buffer("pos_embed", torch.from_numpy(sincos_3d(cfg.decoder_dim, cfg.grid)).float()[None])
        self.blocks = nn.ModuleList([PreNormAttention(cfg.decoder_dim, cfg.decoder_heads, cfg.mlp_ratio)
                                     for _ in range(cfg.decoder_depth)])
        self.norm = nn.LayerNorm(cfg.decoder_dim)
        self.pred = nn.Linear(cfg.decoder_dim, cfg.tubelet * cfg.patch ** 2 * cfg.in_chans)

    def forward(self, z: Float[Tensor, "B m D"], restore: Tensor) -> Float[Tensor, "B N P"]:
        x = self.embed(z)
        N = restore.shape[1]
        hidden = self.mask_token.expand(len(x), N - (x.shape[1] - 1), -1)
        seq = torch.cat([x[:, 1:], hidden], 1)
        seq = torch.gather(seq, 1, repeat(restore, "b n -> b n d", d=seq.shape[-1]))  # back to token order
        seq = torch.cat([x[:, :1], seq], 1) + self.pos_embed
        for blk in self.blocks:
            seq = blk(seq)
        return self.pred(self.norm(seq))[:, 1:]


# %% [markdown]
# ## 4. The masked autoencoder and its loss
#
# `patchify` lays out a patch's values as (tubelet, row, column, band), the layout of the
# published weights' last layer. The loss is the MSE over masked patches of targets normalised
# per patch. One addition of ours: our inputs have clouds (zeroed, as for AEF), so an optional
# per-pixel weight (1 = clear) makes the patch statistics and the error use clear pixels only;
# without a weight the loss is exactly MAE's.

# %%
#| export
def patchify(x: Float[Tensor, "B C T H W"], cfg: PrithviConfig) -> Float[Tensor, "B N P"]:
    return rearrange(x, "b c (t s) (h p) (w q) -> b (t h w) (s p q c)", s=cfg.tubelet, p=cfg.patch, q=cfg.patch)


def unpatchify(x: Float[Tensor, "B N P"], cfg: PrithviConfig) -> Float[Tensor, "B C T H W"]:
    T, H, W = cfg.grid
    return rearrange(x, "b (t h w) (s p q c) -> b c (t s) (h p) (w q)", t=T, h=H, w=W,
                     s=cfg.tubelet, p=cfg.patch, q=cfg.patch)


def random_masking(n_tokens: int, batch: int, ratio: float, generator: torch.Generator | None = None,
                   device=None) -> tuple[Tensor, Tensor, Tensor]:
    """(keep ids `B k`, mask `B N` with 1 = hidden, restore ids `B N`), `k = int(N (1 - ratio))`."""
    noise = torch.rand(batch, n_tokens, generator=generator, device=device)
    shuffle = noise.argsort(1)
    restore = shuffle.argsort(1)
    k = int(n_tokens * (1 - ratio))
    mask = torch.ones(batch, n_tokens, device=device)
    mask[:, :k] = 0
    return shuffle[:, :k], torch.gather(mask, 1, restore), restore


class PrithviMAE(nn.Module):
    """The Prithvi masked autoencoder: `forward` returns (loss, predicted patches, mask)."""

    def __init__(self, cfg: PrithviConfig):
        super().__init__()
        self.cfg = cfg
        self.encoder = PrithviEncoder(cfg)
        self.decoder = PrithviDecoder(cfg)
        self.apply(_init)
        w = self.encoder.patch_embed.weight.data
        nn.init.xavier_uniform_(w.view(w.shape[0], -1))  # the patch projection is a linear map
        nn.init.normal_(self.encoder.cls_token, std=0.02)
        nn.init.normal_(self.decoder.mask_token, std=0.02)

    def loss(self, x: Float[Tensor, "B C T H W"], pred: Float[Tensor, "B N P"], mask: Float[Tensor, "B N"],
             weight: Float[Tensor, "B T H W"] | None = None) -> Tensor:
        """MSE on the masked patches against per-patch-normalised targets (clear pixels only if `weight`)."""
        cfg = self.cfg
        target = patchify(x, cfg)
        w = (torch.ones_like(target) if weight is None
             else patchify(repeat(weight.to(x.dtype), "b t h w -> b c t h w", c=cfg.in_chans), cfg))
        n = w.sum(-1, keepdim=True).clamp_min(1.0)
        if cfg.norm_pix_loss:
            mean = (w * target).sum(-1, keepdim=True) / n
            var = (w * (target - mean) ** 2).sum(-1, keepdim=True) / (n - 1).clamp_min(1.0)  # unbiased, as MAE
            target = (target - mean) / (var + 1e-6).sqrt()
        per_patch = (w * (pred - target) ** 2).sum(-1) / n[..., 0]
        counted = mask * (w.sum(-1) > 0)
        return (per_patch * counted).sum() / counted.sum().clamp_min(1.0)

    def forward(self, x: Float[Tensor, "B C T H W"], weight: Float[Tensor, "B T H W"] | None = None,
                dates: Float[Tensor, "B T 2"] | None = None, lonlat: Float[Tensor, "B 2"] | None = None,
                mask_ratio: float | None = None, generator: torch.Generator | None = None):
        tok = self.encoder.tokens(x, dates, lonlat)
        ratio = self.cfg.mask_ratio if mask_ratio is None else mask_ratio
        keep, mask, restore = random_masking(tok.shape[1], len(tok), ratio, generator, tok.device)
        visible = torch.gather(tok, 1, repeat(keep, "b k -> b k d", d=tok.shape[-1]))
        pred = self.decoder(self.encoder(visible), restore)
        return self.loss(x, pred, mask, weight), pred, mask

    @torch.no_grad()
    def features(self, x: Float[Tensor, "B C T H W"], dates: Float[Tensor, "B T 2"] | None = None,
                 lonlat: Float[Tensor, "B 2"] | None = None) -> Float[Tensor, "B D t h w"]:
        """The encoder's patch tokens for the whole (unmasked) stack, as a `D x T' x h x w` grid."""
        z = self.encoder(self.encoder.tokens(x, dates, lonlat))[:, 1:]
        T, H, W = self.cfg.grid
        return rearrange(z, "b (t h w) d -> b d t h w", t=T, h=H, w=W)


def _init(m: nn.Module) -> None:
    if isinstance(m, nn.Linear):
        nn.init.xavier_uniform_(m.weight)
        nn.init.zeros_(m.bias)
    elif isinstance(m, nn.LayerNorm):
        nn.init.ones_(m.weight)
        nn.init.zeros_(m.bias)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


# %% [markdown]
# The sizes of the presets, built without allocating their weights (`meta` device), and the
# number of tokens each sees:

# %%
import math

import pandas as pd

from aef_lit.conventions import select_device

dev = select_device(device)
rows = {}
for name, c in PRITHVI_PRESETS.items():
    with torch.device("meta"):
        m = PrithviMAE(c)
    rows[name] = {"bands": c.in_chans, "pixels": f"{c.img_size}²", "frames": c.frames, "patch": c.patch,
                  "tokens": math.prod(c.grid), "encoder": f"{count_parameters(m.encoder) / 1e6:.2f}M",
                  "decoder": f"{count_parameters(m.decoder) / 1e6:.2f}M", "coords": ", ".join(c.coords) or "-"}
with torch.device("meta"):
    base = PrithviMAE(PRITHVI_PRESETS["100m"])
n100 = count_parameters(base.encoder)
assert 85e6 < n100 < 88e6, n100  # ViT-Base: the "100M" of the paper counts encoder + decoder
pd.DataFrame(rows).T

# %% [markdown]
# ## 5. Properties
#
# 1. **The position codes identify tokens**: no two tokens of the 100M grid share a code, and
#    the frame part of the code is the same for every token of one frame.
# 2. **Masking keeps exactly a quarter** and the mask marks the others; restoring undoes the shuffle.
# 3. **The loss ignores the visible patches**: changing the prediction of a visible patch does
#    not change it, changing a masked one does. And with all-clear weights it equals the
#    unweighted loss.
# 4. **A hidden patch cannot leak into the encoder**: the encoded visible tokens do not depend
#    on the pixels of masked patches.

# %%
c100 = PRITHVI_PRESETS["100m"]
pe = sincos_3d(c100.dim, c100.grid, cls_token=False)
assert len(np.unique(pe.round(6), axis=0)) == len(pe) == 3 * 14 * 14
frame_part = pe[:, c100.dim // 16 * 12:].reshape(3, 14 * 14, -1)
assert np.allclose(frame_part, frame_part[:, :1]) and not np.allclose(frame_part[0], frame_part[1])

cfg = prithvi_config(preset)
torch.manual_seed(seed)
mae = PrithviMAE(cfg).to(dev)
N = math.prod(cfg.grid)
g = torch.Generator().manual_seed(seed)
keep, mask, restore = random_masking(N, 2, cfg.mask_ratio, g)
assert keep.shape == (2, N // 4) and (mask.sum(1) == N - N // 4).all()
assert (mask.gather(1, keep) == 0).all()

x = torch.randn(2, cfg.in_chans, cfg.frames, cfg.img_size, cfg.img_size, device=dev)
loss, pred, mask = mae(x, generator=torch.Generator().manual_seed(1))
pred2 = pred.detach().clone()
vis = mask[0] == 0
pred2[0, vis] += 5.0
assert torch.allclose(mae.loss(x, pred2, mask), loss)
pred2[0, ~vis] += 5.0
assert mae.loss(x, pred2, mask) > loss + 1
ones = torch.ones(2, cfg.frames, cfg.img_size, cfg.img_size, device=dev)
assert torch.allclose(mae.loss(x, pred, mask, ones), loss, atol=1e-6)

tok = mae.encoder.tokens(x)
keep, mask, _ = random_masking(N, 2, cfg.mask_ratio, torch.Generator().manual_seed(2))
hidden_pixels = unpatchify(repeat(mask, "b n -> b n p", p=cfg.patch ** 2 * cfg.in_chans), cfg).bool()
x_changed = torch.where(hidden_pixels, torch.randn_like(x), x)
enc = [mae.encoder(torch.gather(mae.encoder.tokens(v), 1, repeat(keep, "b k -> b k d", d=cfg.dim)))
       for v in (x, x_changed)]
assert torch.allclose(enc[0], enc[1], atol=1e-5)
print(f"{preset}: {count_parameters(mae):,} parameters, {N} tokens, {N // 4} visible; loss at init {loss.item():.3f}")

# %% [markdown]
# The codes seen as a picture: for the 100M grid (3 frames × 14 × 14 tokens), the cosine
# between the code of one token and every other. Tokens of the same row and column in other
# frames are close, neighbours are closer than far tokens, and each frame is a copy of the
# same spatial pattern shifted by the frame code.

# %%
import matplotlib.pyplot as plt

unit = pe / np.linalg.norm(pe, axis=1, keepdims=True)
ref = (1 * 14 + 7) * 14 + 7  # frame 1, row 7, column 7
cos = (unit @ unit[ref]).reshape(3, 14, 14)
fig, axes = plt.subplots(1, 3, figsize=(8, 2.8))
for t, ax in enumerate(axes):
    im = ax.imshow(cos[t], vmin=cos.min(), vmax=1, cmap="viridis")
    ax.set_title(f"frame {t}" + (" (the + token)" if t == 1 else ""), fontsize=9)
    ax.set_xticks([]), ax.set_yticks([])
axes[1].plot(7, 7, "r+", ms=10, mew=2)
plt.colorbar(im, ax=axes, fraction=0.02, label="cosine of position codes")
plt.show()
assert cos[1, 7, 7] == cos.max() and cos[0, 7, 7] > cos[1, 7, 12]

# %% [markdown]
# ## 6. The published checkpoints
#
# IBM and NASA publish the weights (`Prithvi_100M.pt`, the Prithvi-EO-2.0 files) as PyTorch
# state dicts. Their key names and shapes come from the public model code (the MAE of the
# hls-foundation-os repository for 1.0; `prithvi_mae.py` of Prithvi-EO-2.0 and TerraTorch for
# 2.0): the 1.0 file has flat names (`blocks.0.attn.qkv.weight`, `decoder_blocks.…`), the 2.0
# files the same layers under `encoder.` and `decoder.` with `decoder_embed`, `decoder_pred`,
# and the date/location scales (`temporal_embed_enc.scale`, …). Each transformer layer is
# timm's `Block`, whose names map onto ours one to one. `official_key_map` writes the mapping;
# `load_official` renames, checks every shape against this configuration, and loads: a user who
# has a file can embed with it. Nothing is downloaded.

# %%
#| export prithvi.checkpoint
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import torch

from aef_lit.prithvi.mae import PrithviConfig, PrithviMAE

_BLOCK = {"norm1": "norm1", "attn.qkv": "qkv", "attn.proj": "out", "norm2": "norm2",
          "mlp.fc1": "mlp.net.0", "mlp.fc2": "mlp.net.2"}
_V1_TOP = {"patch_embed.proj": "encoder.patch_embed", "cls_token": "encoder.cls_token",
           "pos_embed": "encoder.pos_embed", "norm": "encoder.norm", "decoder_embed": "decoder.embed",
           "mask_token": "decoder.mask_token", "decoder_pos_embed": "decoder.pos_embed",
           "decoder_norm": "decoder.norm", "decoder_pred": "decoder.pred"}
_V2_TOP = {"encoder." + k if not k.startswith(("decoder", "mask")) else "decoder." + k: v
           for k, v in _V1_TOP.items()}
_V2_TOP.update({"encoder.temporal_embed_enc.scale": "encoder.coord_scale.time",
                "encoder.location_embed_enc.scale": "encoder.coord_scale.location"})
_IGNORED = ("decoder.temporal_embed_dec.scale", "decoder.location_embed_dec.scale")


def _rename(key: str) -> str | None:
    """Our name of an official key (None: a key we do not hold)."""
    if key.startswith(("module.", "model.")):
        key = key.split(".", 1)[1]
    if key in _IGNORED:
        return None
    m = re.fullmatch(r"(encoder\.)?(decoder\.)?(blocks|decoder_blocks)\.(\d+)\.(.+)\.(weight|bias)", key)
    if m:
        part = "decoder" if m.group(3) == "decoder_blocks" else "encoder"
        inner = _BLOCK.get(m.group(5))
        return None if inner is None else f"{part}.blocks.{m.group(4)}.{inner}.{m.group(6)}"
    stem, dot, leaf = key.rpartition(".")
    for table in (_V2_TOP, _V1_TOP):
        if key in table:
            return table[key]
        if leaf in ("weight", "bias") and stem in table:
            return f"{table[stem]}.{leaf}"
    return None


def official_key_map(keys) -> dict[str, str]:
    """{official key: our key} for the keys of a published Prithvi state dict."""
    return {k: n for k in keys if (n := _rename(k)) is not None}


def official_layout(cfg: PrithviConfig, v2: bool = False) -> list[tuple[str, tuple[int, ...]]]:
    """(key, shape) of every tensor in a published Prithvi state dict of configuration `cfg`: the
    flat 1.0 layout (`Prithvi_100M.pt`) or, with `v2`, Prithvi-EO-2.0's `encoder.`/`decoder.` layout."""
    D, Dd, P = cfg.dim, cfg.decoder_dim, cfg.tubelet * cfg.patch ** 2 * cfg.in_chans
    n = int(np.prod(cfg.grid)) + 1
    e, d = ("encoder.", "decoder.") if v2 else ("", "")

    def block(prefix, w):
        return [(f"{prefix}.norm1.weight", (w,)), (f"{prefix}.norm1.bias", (w,)),
                (f"{prefix}.attn.qkv.weight", (3 * w, w)), (f"{prefix}.attn.qkv.bias", (3 * w,)),
                (f"{prefix}.attn.proj.weight", (w, w)), (f"{prefix}.attn.proj.bias", (w,)),
                (f"{prefix}.norm2.weight", (w,)), (f"{prefix}.norm2.bias", (w,)),
                (f"{prefix}.mlp.fc1.weight", (4 * w, w)), (f"{prefix}.mlp.fc1.bias", (4 * w,)),
                (f"{prefix}.mlp.fc2.weight", (w, 4 * w)), (f"{prefix}.mlp.fc2.bias", (w,))]

    keys = [(f"{e}cls_token", (1, 1, D)), (f"{e}pos_embed", (1, n, D)),
            (f"{e}patch_embed.proj.weight", (D, cfg.in_chans, cfg.tubelet, cfg.patch, cfg.patch)),
            (f"{e}patch_embed.proj.bias", (D,)), (f"{e}norm.weight", (D,)), (f"{e}norm.bias", (D,)),
            (f"{d}decoder_embed.weight", (Dd, D)), (f"{d}decoder_embed.bias", (Dd,)), (f"{d}mask_token", (1, 1, Dd)),
            (f"{d}decoder_pos_embed", (1, n, Dd)), (f"{d}decoder_norm.weight", (Dd,)),
            (f"{d}decoder_norm.bias", (Dd,)), (f"{d}decoder_pred.weight", (P, Dd)), (f"{d}decoder_pred.bias", (P,))]
    for i in range(cfg.depth):
        keys += block(f"{e}blocks.{i}", D)
    for i in range(cfg.decoder_depth):
        keys += block(f"{d}decoder_blocks.{i}", Dd)
    if v2:  # the date / location encoders exist only when configured; their scales are saved
        codes = [name for c, name in (("time", "temporal"), ("location", "location")) if c in cfg.coords]
        keys += [(f"encoder.{c}_embed_enc.scale", (1,)) for c in codes]
        keys += [(f"decoder.{c}_embed_dec.scale", (1,)) for c in codes]
    return keys


def load_official(state: dict | str | Path, cfg: PrithviConfig, strict: bool = True) -> PrithviMAE:
    """A `PrithviMAE` of `cfg` holding the weights of a published checkpoint (a state dict or its
    file: Prithvi_100M.pt, Prithvi_EO_V2_*.pt). Raises, naming keys, when names or shapes disagree."""
    if not isinstance(state, dict):
        state = torch.load(Path(state), map_location="cpu", weights_only=True)
        state = state.get("model", state.get("state_dict", state)) if isinstance(state, dict) else state
    model = PrithviMAE(cfg)
    ours = model.state_dict()
    renamed = {}
    for k, v in state.items():
        n = _rename(k)
        if n is None:
            if strict and k not in _IGNORED:
                raise KeyError(f"the checkpoint key {k!r} has no place in this implementation")
            continue
        if n not in ours:
            raise KeyError(f"{k!r} maps to {n!r}, which a model of this configuration lacks "
                           f"(depth {cfg.depth}/{cfg.decoder_depth}, coords {cfg.coords})")
        v = torch.as_tensor(v)
        if n.startswith("encoder.coord_scale"):
            v = v.reshape(1)
        if v.shape != ours[n].shape:
            raise ValueError(f"{k!r} has shape {tuple(v.shape)}, this configuration needs {tuple(ours[n].shape)} "
                             f"(bands {cfg.in_chans}, frames {cfg.frames}, {cfg.img_size} px, dim {cfg.dim})")
        renamed[n] = v
    missing = sorted(set(ours) - set(renamed))
    if strict and missing:
        raise KeyError(f"the checkpoint lacks {len(missing)} weights of this configuration, e.g. {missing[:4]}")
    model.load_state_dict(renamed, strict=False)
    return model


# %% [markdown]
# The loader is checked on a state dict written the way the published code writes it: the key
# names and shapes of the official 1.0 file (768-wide, 12 + 8 layers, 6 bands, 3 frames,
# 224 px) and of a 2.0 file with date and location scales. The values are random; the check is
# that every tensor lands where it belongs (the first layer's `qkv` is ours `qkv`, the
# decoder's last layer predicts `1 · 16 · 16 · 6` values) and that a wrong shape is refused.

# %%
from aef_lit.prithvi.checkpoint import load_official, official_key_map, official_layout

small = prithvi_config("100m", depth=2, decoder_depth=1)  # the 1.0 layout, two layers to keep it quick
gen = torch.Generator().manual_seed(seed)
fake = {k: torch.randn(s, generator=gen) for k, s in official_layout(small, v2=False)}
loaded = load_official(fake, small)
assert torch.equal(loaded.encoder.blocks[0].qkv.weight, fake["blocks.0.attn.qkv.weight"])
assert torch.equal(loaded.decoder.blocks[0].mlp.net[2].bias, fake["decoder_blocks.0.mlp.fc2.bias"])
assert torch.equal(loaded.decoder.pred.weight, fake["decoder_pred.weight"])
print(f"1.0 layout: {len(official_key_map(fake))} of {len(fake)} keys mapped")
v2cfg = prithvi_config("100m", depth=1, decoder_depth=1, frames=4, coords=("time", "location"))
fake2 = {k: torch.randn(s, generator=gen) for k, s in official_layout(v2cfg, v2=True)}
assert torch.equal(load_official(fake2, v2cfg).encoder.coord_scale["time"], fake2["encoder.temporal_embed_enc.scale"])
try:
    load_official(fake, prithvi_config("100m", depth=2, decoder_depth=1, bands=HLS_BANDS[:4]))
    raise AssertionError("a 6-band checkpoint loaded into a 4-band model")
except ValueError as err:
    print("refused:", str(err)[:110], "...")
