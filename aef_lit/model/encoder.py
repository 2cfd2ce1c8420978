# generated from notebooks/10_encoder.py by tools/nb_export.py: do not edit.
# Edit the notebook, then run `python tools/nb_export.py`.

from __future__ import annotations

import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor, nn

from aef_lit.conventions import ModelConfig
from aef_lit.model.precision import PrecisionOperator
from aef_lit.model.pyramid import Downsample, FinalResample, PyramidExchange
from aef_lit.model.space import SpaceOperator
from aef_lit.model.time import TimeOperator
from aef_lit.model.timecodes import timecode_cfg

OPERATOR_DEPTH = 2
"""Layers per operator per STP block (open in the paper; 2 puts `paper` near its ~480M)."""


def count_parameters(module: nn.Module) -> int:
    """Number of (unique) parameters of a module; works on the meta device too."""
    return sum(p.numel() for p in module.parameters())


class STPBlock(nn.Module):
    """Space, Time and Precision side by side, then the pyramid exchange."""

    def __init__(self, cfg: ModelConfig, depth: int = OPERATOR_DEPTH):
        super().__init__()
        self.space = SpaceOperator(cfg.d_space, cfg.heads_space, cfg.mlp_ratio, depth)
        self.time = TimeOperator(cfg.d_time, cfg.heads_time, cfg.timecode_dim, cfg.mlp_ratio, depth)
        self.precision = nn.Sequential(*(PrecisionOperator(cfg.d_precision) for _ in range(depth)))
        self.exchange = PyramidExchange(cfg)

    def forward(self, s: Float[Tensor, "B T Ds hs ws"], t: Float[Tensor, "B T Dt ht wt"],
                p: Float[Tensor, "B T Dp hp wp"], tcode: Float[Tensor, "B T Dc"],
                mask: Bool[Tensor, "B T"]) -> tuple[Tensor, Tensor, Tensor]:
        return self.exchange(self.space(s), self.time(t, tcode, mask), self.precision(p))


def channels_last(x: Float[Tensor, "B T D h w"]) -> Float[Tensor, "B T D h w"]:
    """The same values with channels innermost in memory (`B T h w D` strides).

    Every channel LayerNorm then reads contiguous rows and the 3x3 convolutions take the
    layout as it is: no copy between a norm and a convolution (the values are unchanged).
    """
    return x.permute(0, 1, 3, 4, 2).contiguous().permute(0, 1, 4, 2, 3)


def packed_order(mask: Bool[Tensor, "B T"]) -> Int[Tensor, "B Tp"] | None:
    """Per row, the indices of its real frames first (in order), cut to the longest row.

    None when every column holds a real frame of some row (nothing to skip).
    """
    n = int(mask.sum(dim=1).max().clamp_min(1))
    if n == mask.shape[1]:
        return None
    return torch.argsort((~mask).to(torch.int8), dim=1, stable=True)[:, :n]


class STPEncoder(nn.Module):
    """The STP encoder: projected frames `B T Dp H/2 W/2` -> features `B T Dp H/2 W/2`.

    `t` are float64 days (B T), `mask` True for real frames; padded frames come out as zeros
    and never influence real ones. H and W are any multiples of 16.

    `pack_frames` (default on) runs the blocks on each row's real frames only, so frames a
    row lacks (padding, held-out targets, the student's dropped frames) cost nothing; the
    result is the static path's to float rounding. Under `torch.compile` the static path
    runs (no packing, static shapes).
    """

    def __init__(self, cfg: ModelConfig, depth: int = OPERATOR_DEPTH):
        super().__init__()
        self.cfg = cfg
        self.init_time = Downsample(cfg.d_precision, cfg.d_time, 4)
        self.init_space = Downsample(cfg.d_precision, cfg.d_space, 8)
        self.blocks = nn.ModuleList(STPBlock(cfg, depth) for _ in range(cfg.n_blocks))
        self.final = FinalResample(cfg)
        self.pack_frames = True

    def forward(self, x: Float[Tensor, "B T Dp hp wp"], t: Float[Tensor, "B T"],
                mask: Bool[Tensor, "B T"]) -> Float[Tensor, "B T Dp hp wp"]:
        order = packed_order(mask) if self.pack_frames and not torch.compiler.is_compiling() else None
        if order is None:
            return self.encode_frames(x, t, mask)
        rows = torch.arange(x.shape[0], device=x.device)[:, None]
        y = self.encode_frames(x[rows, order], t[rows, order], mask[rows, order])
        out = y.new_zeros(x.shape[:2] + y.shape[2:])
        out[rows, order] = y
        return out

    def encode_frames(self, x: Float[Tensor, "B T Dp hp wp"], t: Float[Tensor, "B T"],
                      mask: Bool[Tensor, "B T"]) -> Float[Tensor, "B T Dp hp wp"]:
        """The blocks on every frame given (static shapes): what `forward` runs after packing."""
        tcode = timecode_cfg(t, self.cfg)
        x = channels_last(x)
        p, tt, s = x, self.init_time(x), self.init_space(x)
        for block in self.blocks:
            s, tt, p = block(s, tt, p, tcode, mask)
        y = self.final(s, tt, p)
        return torch.where(mask[:, :, None, None, None], y, torch.zeros((), dtype=y.dtype, device=y.device))
