# generated from notebooks/09_pyramid.py by tools/nb_export.py: do not edit.
# Edit the notebook, then run `python tools/nb_export.py`.

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
