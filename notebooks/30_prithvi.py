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
# The code goes to `aef_lit.prithvi`: the network (`mae`), the loader of the published
# checkpoints (`checkpoint`), stacks cut from our samples and a training loop (`train`), and the
# evaluation method (`method`).

# %% tags=["parameters"]
# Parameters (papermill injects values here). Defaults are sized for a 2-core CPU.
preset = "tiny"  # the Prithvi preset of the short run: "tiny" (CI) or "100m" (the paper's)
device = "auto"  # "auto" = XLA if importable, then CUDA, MPS, CPU
seed = 0
data = "auto"  # "auto" = the real samples if present, else the synthetic generator
steps = 60  # steps of the short training run in this chapter

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

# %% [markdown]
# ## 7. Stacks from our samples
#
# Prithvi reads a fixed number of frames. From a site's Sentinel-2 series (normalised as for
# AEF: log1p and z-score, chapter 3; clouds zeroed and kept as weights) a training stack is a
# random `img_size²` window and `frames` frames, drawn in time order from a random support
# window of at least 60 days among the frames that are clear on at least half of the window
# (chapter 20's rows, with Prithvi's fixed frame count). For embedding a period, the choice is
# deterministic: the period is cut into `frames` equal parts and the clearest frame of each
# part is taken (a part without a frame borrows the clearest frame left), the rule of a
# user who builds one cloud-free image per season.

# %%
#| export prithvi.train
from __future__ import annotations

import csv
import json
import time
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from aef_lit.conventions import from_days
from aef_lit.data import DataError, Sample, SourceFrames, normalise_frames
from aef_lit.prithvi.mae import PrithviConfig, PrithviMAE, count_parameters


def prithvi_source(sample: Sample, cfg: PrithviConfig, source: str = "s2") -> SourceFrames:
    """The normalised frames of `sample`'s `source`, restricted to (and ordered as) `cfg.bands`."""
    if source not in sample.sources:
        raise DataError(f"{sample.site} has no source {source!r} (it has {', '.join(sample.sources)})")
    spec = sample.specs[source]
    missing = [b for b in cfg.bands if b not in spec.bands]
    if missing:
        raise DataError(f"{sample.site}: source {source!r} lacks the bands {missing} of this Prithvi "
                        f"(it has {', '.join(spec.bands)})")
    fr = normalise_frames(sample.sources[source], spec)
    idx = [spec.bands.index(b) for b in cfg.bands]
    return SourceFrames(fr.values[:, idx], fr.times, fr.valid, fr.meta, fr.name)


def pick_frames(times: np.ndarray, clear: np.ndarray, n: int, period: tuple[float, float]) -> np.ndarray:
    """`n` frame indices in time order: the clearest frame in each of `n` equal parts of `period`
    (a part without frames borrows the clearest unused frame; too few frames repeat)."""
    inside = np.flatnonzero((times >= period[0]) & (times < period[1]))
    if inside.size == 0:
        raise DataError("no frame in the period")
    edges = np.linspace(period[0], period[1], n + 1)
    chosen: list[int] = []
    for a, b in zip(edges[:-1], edges[1:]):
        part = [i for i in inside if a <= times[i] < b and i not in chosen]
        if part:
            chosen.append(max(part, key=lambda i: clear[i]))
    rest = sorted((i for i in inside if i not in chosen), key=lambda i: -clear[i])
    chosen += rest[:n - len(chosen)]
    while len(chosen) < n:
        chosen.append(chosen[len(chosen) % max(1, len(chosen))])
    return np.sort(np.array(chosen[:n]))


def _dates(times: np.ndarray) -> np.ndarray:
    """(year, day of year) of each time, for Prithvi-EO-2.0's date code."""
    d = from_days(times).astype("datetime64[D]")
    year = d.astype("datetime64[Y]")
    return np.stack([year.astype(int) + 1970, (d - year).astype(int) + 1], -1).astype(np.float32)


def cut_stack(fr: SourceFrames, index: np.ndarray, r: int, c: int, size: int):
    """(x `C T H W`, clear weight `T H W`, dates `T 2`) of frames `index` in the window at (r, c)."""
    x = fr.values[index][:, :, r:r + size, c:c + size].transpose(1, 0, 2, 3)
    w = fr.valid[index][:, r:r + size, c:c + size].astype(np.float32)
    return np.ascontiguousarray(x), w, _dates(fr.times[index])


def random_stack(fr: SourceFrames, cfg: PrithviConfig, rng: np.random.Generator, min_clear: float = 0.5,
                 min_span_days: float = 60.0, tries: int = 20):
    """A random training stack of one site's frames (see the text above)."""
    H, W = fr.values.shape[-2:]
    s = cfg.img_size
    if H < s or W < s:
        raise DataError(f"{fr.name}: {H} x {W} pixels, smaller than Prithvi's {s} x {s} input")
    for _ in range(tries):
        r, c = int(rng.integers(0, H - s + 1)), int(rng.integers(0, W - s + 1))
        clear = fr.valid[:, r:r + s, c:c + s].mean((1, 2))
        t = fr.times
        span = float(t[-1] - t[0])
        length = span if span <= min_span_days else float(rng.uniform(min_span_days, span))
        t0 = t[0] + float(rng.uniform(0.0, span - length))
        ok = np.flatnonzero((t >= t0) & (t <= t0 + length) & (clear >= min_clear))
        if ok.size:
            pick = np.sort(rng.choice(ok, size=cfg.frames, replace=ok.size < cfg.frames))
            return cut_stack(fr, pick, r, c, s)
    raise DataError(f"{fr.name}: no window with {cfg.frames} frames clear on {min_clear:.0%} in {tries} draws")


# %% [markdown]
# ## 8. Training
#
# `train_prithvi` is the smallest loop that a user can trust: AdamW (β = 0.9, 0.95, weight
# decay 0.05, MAE's settings) with a linear warm-up and cosine decay, a step or wall-clock
# budget, the loss of every step in `metrics.csv`, and a checkpoint every `save_every` steps
# that a rerun resumes from (nothing is lost on interruption). `ship_prithvi` writes the
# weights as safetensors with a `config.json` and a card, `load_prithvi` reads them back.

# %%
#| export prithvi.train
CHECKPOINT, METRICS = "ckpt.pt", "metrics.csv"
PRITHVI_SHIPPED = Path(__file__).resolve().parents[2] / "data" / "models" / "prithvi-tiny-greenearthnet" \
    if "__file__" in globals() else Path("../data/models/prithvi-tiny-greenearthnet")
"""The Prithvi model shipped with the repository (trained beside the shipped AEF model)."""


def _lr(step: int, steps: int, peak: float, warmup: int) -> float:
    if step < warmup:
        return peak * (step + 1) / warmup
    return peak * 0.5 * (1 + np.cos(np.pi * min(1.0, (step - warmup) / max(1, steps - warmup))))


def train_prithvi(samples: Sequence[Sample], cfg: PrithviConfig, steps: int, batch_size: int = 8,
                  lr: float = 1e-3, warmup: int = 100, minutes: float | None = None, seed: int = 0,
                  out_dir: str | Path | None = None, save_every: int = 500, source: str = "s2",
                  device: str | torch.device = "cpu", progress: bool = True) -> tuple[PrithviMAE, list[dict]]:
    """Train a Prithvi MAE on random stacks of `samples` for `steps` steps (or `minutes` of wall
    time, whichever ends first), resuming from `out_dir/ckpt.pt` if it exists."""
    from tqdm.auto import tqdm

    if steps < 1 or batch_size < 1:
        raise ValueError(f"steps ({steps}) and batch_size ({batch_size}) must be positive")
    frames = [prithvi_source(s, cfg, source) for s in samples]
    torch.manual_seed(seed)
    model = PrithviMAE(cfg).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.9, 0.95), weight_decay=0.05)
    out = Path(out_dir) if out_dir is not None else None
    step, log, spent = 0, [], 0.0
    if out is not None and (out / CHECKPOINT).exists():
        state = torch.load(out / CHECKPOINT, map_location=device, weights_only=False)
        if state["cfg"] != cfg.to_dict():
            raise ValueError(f"{out / CHECKPOINT} was trained with another configuration; use a new out_dir")
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["opt"])
        step, log, spent = state["step"], state["log"], state["seconds"]

    def save():
        if out is not None:
            out.mkdir(parents=True, exist_ok=True)
            tmp = out / (CHECKPOINT + ".tmp")
            torch.save({"cfg": cfg.to_dict(), "model": model.state_dict(), "opt": opt.state_dict(), "step": step,
                        "log": log, "seconds": spent}, tmp)
            tmp.replace(out / CHECKPOINT)
            with open(out / METRICS, "w", newline="") as f:
                w = csv.DictWriter(f, fieldnames=["step", "loss", "lr", "wall_s"])
                w.writeheader()
                w.writerows(log)

    t0 = time.perf_counter() - spent
    bar = tqdm(total=steps, initial=step, desc="prithvi", disable=not progress)
    model.train()
    while step < steps and (minutes is None or time.perf_counter() - t0 < minutes * 60):
        rng = np.random.default_rng([seed, step])
        batch = [random_stack(frames[int(rng.integers(len(frames)))], cfg, rng) for _ in range(batch_size)]
        x, w, d = (torch.from_numpy(np.stack(a)).to(device) for a in zip(*batch))
        for g in opt.param_groups:
            g["lr"] = _lr(step, steps, lr, warmup)
        gen = torch.Generator().manual_seed(int(rng.integers(2 ** 62)))  # masks: a function of (seed, step)
        loss, _, _ = model(x, w, dates=d, generator=gen)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        step += 1
        spent = time.perf_counter() - t0
        log.append({"step": step, "loss": round(loss.item(), 5), "lr": opt.param_groups[0]["lr"],
                    "wall_s": round(spent, 2)})
        bar.update(1)
        bar.set_postfix(loss=f"{loss.item():.3f}")
        if step % save_every == 0:
            save()
    bar.close()
    save()
    return model.eval(), log


def ship_prithvi(model: PrithviMAE, log: Sequence[dict], out_dir: str | Path, facts: dict | None = None) -> Path:
    """Write `model.safetensors`, `config.json`, `metrics.csv` and `MODEL_CARD.md` to `out_dir`."""
    from safetensors.torch import save_file

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    save_file({k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}, str(out / "model.safetensors"))
    tail = [float(r["loss"]) for r in log[-max(1, len(log) // 20):]]
    meta = {"prithvi_config": model.cfg.to_dict(), "params": count_parameters(model), "steps": len(log),
            "train_seconds": float(log[-1]["wall_s"]) if log else 0.0,
            "final_loss": round(float(np.mean(tail)), 5) if tail else None, **(facts or {})}
    (out / "config.json").write_text(json.dumps(meta, indent=1, sort_keys=True))
    with open(out / METRICS, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["step", "loss", "lr", "wall_s"])
        w.writeheader()
        w.writerows(log)
    (out / "MODEL_CARD.md").write_text(prithvi_card(meta))
    return out


def load_prithvi(folder: str | Path, device: str | torch.device = "cpu") -> PrithviMAE:
    """A shipped Prithvi model folder (see `ship_prithvi`), in eval mode."""
    from safetensors.torch import load_file

    folder = Path(folder)
    if not (folder / "model.safetensors").exists():
        raise FileNotFoundError(f"no Prithvi model at {folder} (expected model.safetensors and config.json)")
    meta = json.loads((folder / "config.json").read_text())
    model = PrithviMAE(PrithviConfig.from_dict(meta["prithvi_config"]))
    model.load_state_dict(load_file(str(folder / "model.safetensors")))
    return model.to(device).eval()


def prithvi_card(meta: dict) -> str:
    """The model card of a shipped Prithvi model."""
    c = PrithviConfig.from_dict(meta["prithvi_config"])
    lines = [f"# {meta.get('name', 'prithvi-tiny')}: a Prithvi-style masked autoencoder (aef-lit, chapter 30)", "",
             "A small Prithvi MAE (Jakubik et al. 2023) as re-implemented in aef-lit, trained on a CPU beside the "
             "shipped AEF model to compare the two with the same evaluation. A teaching artefact; not the "
             "published Prithvi weights (load those with `aef_lit.prithvi.load_official`).", "",
             "## Model",
             f"- {c.in_chans} bands ({' '.join(c.bands)}), {c.frames} frames, {c.img_size} x {c.img_size} px in "
             f"{c.tubelet} x {c.patch} x {c.patch} patches ({np.prod(c.grid)} tokens), mask ratio {c.mask_ratio}.",
             f"- encoder width {c.dim}, {c.depth} layers, {c.heads} heads; decoder width {c.decoder_dim}, "
             f"{c.decoder_depth} layers; {meta['params']:,} parameters; float32 safetensors.",
             "- inputs normalised with `aef_lit.data.DEFAULT_STATS` (log1p + z-score); cloudy pixels zeroed and "
             "left out of the loss.",
             "- load: `from aef_lit.prithvi import load_prithvi; model = load_prithvi(folder)`.", "",
             "## Training",
             f"- {meta['steps']} steps in {meta['train_seconds'] / 60:.1f} min; final loss (mean of the last 5 %) "
             f"{meta['final_loss']}.", f"- {meta.get('notes', '')}", ""]
    if meta.get("probes"):
        lines += ["## Sparse-label probes (chapter 26)", "", meta["probes"], ""]
    return "\n".join(lines)


# %% [markdown]
# ## 9. Features for the probes
#
# The evaluation wants one vector per pixel. From a Prithvi encoder the natural choice, and the
# one of Prithvi's own segmentation heads, is the last layer's patch tokens: we run the encoder
# on the whole unmasked stack, **average the tokens of the frames** (time pooling: one vector
# per patch for the period) and **upsample bilinearly** from the token grid to pixels. A site is
# padded to a multiple of `img_size` and embedded tile by tile, each tile with its own choice of
# frames (section 7); a lone labelled pixel is repeated over one tile, as for AEF. The features
# are `dim` float32 values per pixel: 512 bytes for `tiny` against AEF's 64 int8 values.
# Unlike AEF's unit vectors they carry per-dimension scales, so the evaluation z-scores them
# (`standardise`), as it does the designed baselines.

# %%
#| export prithvi.method
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

# %% [markdown]
# ## 10. A short run, and the shipped model's curve
#
# The command line wraps `train_prithvi` and `ship_prithvi`:
# `python -m aef_lit.prithvi --sites portugal hungary --minutes 85 --out-dir runs/prithvi --ship
# data/models/prithvi-tiny-greenearthnet` trains on the same sites, bands and 2021 series as the
# shipped AEF model, for the same wall time on the same 2-core CPU (one torch thread). Here a
# short run of `steps` steps shows the loop working; the shipped model's curve (its
# `metrics.csv`) shows where the long run went.

# %%
#| export prithvi.cli
from __future__ import annotations

import argparse
from typing import Sequence

from aef_lit.prithvi.mae import PRITHVI_PRESETS, prithvi_config
from aef_lit.prithvi.train import ship_prithvi, train_prithvi


def build_prithvi_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m aef_lit.prithvi", formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        description="Train a Prithvi-style masked autoencoder (chapter 30) on the real sites of eo_real/ and "
                    "optionally ship it as a model folder for the evaluation (chapter 26).")
    p.add_argument("--preset", default="tiny", choices=list(PRITHVI_PRESETS), help="the Prithvi configuration")
    p.add_argument("--data", default="greenearthnet", help="the samples, as for aef-train: greenearthnet, real, "
                   "multisite, synthetic")
    p.add_argument("--sites", nargs="+", default=["portugal", "hungary"], help="training sites (hold the others out)")
    p.add_argument("--steps", type=int, default=28000, help="optimiser steps (the cosine schedule's length)")
    p.add_argument("--minutes", type=float, default=None, help="stop after this much wall time, even before --steps")
    p.add_argument("--batch-size", type=int, default=16, help="stacks per step")
    p.add_argument("--lr", type=float, default=1e-3, help="peak learning rate (AdamW)")
    p.add_argument("--warmup", type=int, default=500, help="linear warm-up steps")
    p.add_argument("--seed", type=int, default=5, help="seed of the weights, the stacks and the masks")
    p.add_argument("--out-dir", default="runs/prithvi", help="checkpoint and metrics.csv; a rerun resumes from it")
    p.add_argument("--save-every", type=int, default=500, help="steps between checkpoints")
    p.add_argument("--ship", default=None, help="after training, write the model folder here (weights, config, card)")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    p.add_argument("--device", default="cpu", help="cpu, cuda, mps or auto")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_prithvi_parser().parse_args(argv)
    if args.steps < 1 or args.batch_size < 1 or (args.minutes is not None and args.minutes <= 0):
        raise SystemExit("prithvi: --steps, --batch-size and --minutes must be positive")
    import platform

    import torch

    from aef_lit.conventions import select_device
    from aef_lit.data import load_sites

    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        samples = load_sites(args.data, args.sites)
    except (ValueError, FileNotFoundError) as err:
        raise SystemExit(f"prithvi: {err}") from None
    cfg = prithvi_config(args.preset)
    model, log = train_prithvi(samples, cfg, args.steps, args.batch_size, args.lr, args.warmup, args.minutes,
                               args.seed, args.out_dir, args.save_every, device=select_device(args.device),
                               progress=not args.no_progress)
    print(f"{len(log)} steps, final loss {log[-1]['loss'] if log else float('nan')}")
    if args.ship:
        notes = (f"trained on {args.data} {', '.join(args.sites)}: batch {args.batch_size}, peak lr {args.lr}, "
                 f"{args.warmup} warm-up steps, cosine decay over {args.steps}, seed {args.seed}; "
                 f"{platform.machine()} CPU, {torch.get_num_threads()} torch threads, torch {torch.__version__}")
        out = ship_prithvi(model, log, args.ship, {"name": f"prithvi-{args.preset}-{args.data}", "data": args.data,
                                                   "sites": list(args.sites), "notes": notes})
        print(f"shipped {out}")
    return 0


# %%
import json

import matplotlib.pyplot as plt

from aef_lit.conventions import find_eo_real, from_days
from aef_lit.data import load_sites
from aef_lit.prithvi import PRITHVI_SHIPPED, load_prithvi, train_prithvi

real = data != "synthetic" and find_eo_real(required=data == "real") is not None
samples = load_sites("greenearthnet" if real else "synthetic", ["portugal", "hungary"] if real else ["a", "b"])
short, short_log = train_prithvi(samples, cfg, steps=steps, batch_size=8, warmup=max(1, steps // 10), seed=seed,
                                 device=dev, progress=False)
assert np.mean([r["loss"] for r in short_log[-10:]]) < np.mean([r["loss"] for r in short_log[:10]])
shipped = load_prithvi(PRITHVI_SHIPPED, dev) if (PRITHVI_SHIPPED / "model.safetensors").exists() else None
ship_meta = json.loads((PRITHVI_SHIPPED / "config.json").read_text()) if shipped is not None else {}

fig, axes = plt.subplots(1, 2 if shipped is not None else 1, figsize=(9, 3), squeeze=False)
ax = axes[0, 0]
ax.plot([r["step"] for r in short_log], [r["loss"] for r in short_log], lw=1)
ax.set(xlabel="step", ylabel="masked-patch loss", title=f"this chapter's run ({steps} steps, {preset})")
if shipped is not None:
    ship_log = pd.read_csv(PRITHVI_SHIPPED / "metrics.csv")
    ax = axes[0, 1]
    ax.plot(ship_log["step"], ship_log["loss"], lw=0.3, alpha=0.4, color="grey")
    ax.plot(ship_log["step"], ship_log["loss"].rolling(200, min_periods=1).mean(), lw=1.5)
    ax.set(xlabel="step", title=f"the shipped model ({len(ship_log)} steps, {ship_meta['train_seconds'] / 60:.0f} min)")
plt.tight_layout()
plt.show()

# %% [markdown]
# ## 11. What it sees and what it reconstructs
#
# A stack from Sweden, the site that neither model saw. Three frames of true colour; the
# input with three quarters of its patches hidden; the reconstruction (visible patches pasted
# back, hidden ones predicted, each patch brought back from its normalised values with the
# target patch's mean and spread, as MAE papers show it); and the truth. A model that only
# learnt the patch mean would paint flat squares: the structure inside the hidden patches is
# what it learnt from the visible ones.

# %%
from aef_lit.data import DEFAULT_STATS, denormalise
from aef_lit.prithvi import cut_stack, pick_frames, prithvi_source

viewer = shipped if shipped is not None else short
test_site = load_sites("greenearthnet", ["sweden"])[0] if real else samples[0]
fr = prithvi_source(test_site, viewer.cfg)
s_ = viewer.cfg.img_size
r0 = c0 = (min(test_site.grid.shape) - s_) // 2
clear = fr.valid[:, r0:r0 + s_, c0:c0 + s_].mean((1, 2))
idx = pick_frames(fr.times, clear, viewer.cfg.frames, (fr.times[0], fr.times[-1] + 1))
xs, ws, ds = cut_stack(fr, idx, r0, c0, s_)
x = torch.from_numpy(xs)[None].to(dev)
with torch.no_grad():
    loss_v, pred, mask = viewer(x, torch.from_numpy(ws)[None].to(dev), generator=torch.Generator().manual_seed(seed))
target = patchify(x, viewer.cfg)
mean, std = target.mean(-1, keepdim=True), (target.var(-1, keepdim=True) + 1e-6).sqrt()
recon_p = torch.where(mask[..., None].bool(), pred * std + mean, target)
recon = unpatchify(recon_p, viewer.cfg)[0].cpu().numpy()
hidden = unpatchify(mask[..., None].expand(-1, -1, target.shape[-1]), viewer.cfg)[0].cpu().numpy().astype(bool)
spec = test_site.specs["s2"]
band_idx = [spec.bands.index(b) for b in viewer.cfg.bands]
rgb_bands = [viewer.cfg.bands.index(b) for b in ("B04", "B03", "B02")]


def rgb(v):
    """True colour of normalised `C H W` values (inverse of chapter 3's normalisation)."""
    full = np.zeros((spec.channels, *v.shape[1:]), np.float32)
    full[band_idx] = v
    refl = denormalise(full, spec, DEFAULT_STATS)[[spec.bands.index(b) for b in ("B04", "B03", "B02")]]
    return np.clip(refl.transpose(1, 2, 0) / 0.15, 0, 1)


fig, axes = plt.subplots(viewer.cfg.frames, 3, figsize=(6.4, 2.1 * viewer.cfg.frames), squeeze=False)
for t in range(viewer.cfg.frames):
    masked_in = np.where(hidden[:, t], np.nan, xs[:, t])
    show = rgb(np.nan_to_num(masked_in))
    show[hidden[0, t]] = 0.85
    for j, (img, title) in enumerate([(rgb(xs[:, t]), "truth"), (show, "the input: 75 % hidden"),
                                      (rgb(recon[:, t]), "reconstruction")]):
        axes[t, j].imshow(img, interpolation="nearest")
        axes[t, j].set_xticks([]), axes[t, j].set_yticks([])
        if t == 0:
            axes[t, j].set_title(title, fontsize=9)
    axes[t, 0].set_ylabel(str(from_days(fr.times[idx[t]]).astype("datetime64[D]")), fontsize=8)
plt.suptitle(f"Sweden, {s_} x {s_} px: loss {loss_v.item():.3f}", fontsize=9)
plt.tight_layout()
plt.show()
