# generated from notebooks/05_projectors.py by tools/nb_export.py: do not edit.
# Edit the notebook, then run `python tools/nb_export.py`.

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
