# generated from notebooks/30_prithvi.py by tools/nb_export.py: do not edit.
# Edit the notebook, then run `python tools/nb_export.py`.

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
