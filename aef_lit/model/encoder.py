# generated from notebooks/10_encoder.py by tools/nb_export.py: do not edit.
# Edit the notebook, then run `python tools/nb_export.py`.

from __future__ import annotations

import torch
from jaxtyping import Bool, Float
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


class STPEncoder(nn.Module):
    """The STP encoder: projected frames `B T Dp H/2 W/2` -> features `B T Dp H/2 W/2`.

    `t` are float64 days (B T), `mask` True for real frames; padded frames come out as zeros
    and never influence real ones. H and W are any multiples of 16.
    """

    def __init__(self, cfg: ModelConfig, depth: int = OPERATOR_DEPTH):
        super().__init__()
        self.cfg = cfg
        self.init_time = Downsample(cfg.d_precision, cfg.d_time, 4)
        self.init_space = Downsample(cfg.d_precision, cfg.d_space, 8)
        self.blocks = nn.ModuleList(STPBlock(cfg, depth) for _ in range(cfg.n_blocks))
        self.final = FinalResample(cfg)

    def forward(self, x: Float[Tensor, "B T Dp hp wp"], t: Float[Tensor, "B T"],
                mask: Bool[Tensor, "B T"]) -> Float[Tensor, "B T Dp hp wp"]:
        tcode = timecode_cfg(t, self.cfg)
        p, tt, s = x, self.init_time(x), self.init_space(x)
        for block in self.blocks:
            s, tt, p = block(s, tt, p, tcode, mask)
        y = self.final(s, tt, p)
        return torch.where(mask[:, :, None, None, None], y, torch.zeros((), dtype=y.dtype, device=y.device))
