# generated from notebooks/04_timecodes.py by tools/nb_export.py: do not edit.
# Edit the notebook, then run `python tools/nb_export.py`.

from __future__ import annotations

import math

import torch
from einops import rearrange
from jaxtyping import Float, Float64
from torch import Tensor

from aef_lit.conventions import ModelConfig

_TWO_PI = 2.0 * math.pi


def wavelengths(dim: int, min_days: float = 1.0, max_days: float = 1461.0,
                device: torch.device | str | None = None) -> Float64[Tensor, " n"]:
    """The `dim // 2` wavelengths (days per radian), geometric from min_days to max_days."""
    n = dim // 2
    k = torch.arange(n, dtype=torch.float64, device=device) / max(n - 1, 1)
    return min_days * (max_days / min_days) ** k


def timecode(t: Float[Tensor, "*batch"], dim: int, min_days: float = 1.0,
             max_days: float = 1461.0) -> Float[Tensor, "*batch dim"]:
    """Sinusoidal code of instants `t` (float64 days since 1970-01-01): [sin | cos], float32.

    Phases `t / lambda_k` are computed and reduced modulo 2*pi in float64, then cast.
    """
    if t.dtype != torch.float64:
        raise TypeError("timecode needs float64 days (float32 epochs lose the notion of time)")
    if dim % 2:
        raise ValueError(f"dim must be even, got {dim}")
    lam = wavelengths(dim, min_days, max_days, device=t.device)
    phase = torch.remainder(t[..., None] / lam, _TWO_PI)
    return torch.cat([torch.sin(phase), torch.cos(phase)], dim=-1).float()


def timecode_cfg(t: Float[Tensor, "*batch"], cfg: ModelConfig) -> Float[Tensor, "*batch dim"]:
    """`timecode` with the width and wavelengths of a ModelConfig."""
    return timecode(t, cfg.timecode_dim, cfg.timecode_min_days, cfg.timecode_max_days)


def period_code(periods: Float64[Tensor, "*batch 2"], dim: int, min_days: float = 1.0,
                max_days: float = 1461.0) -> Float[Tensor, "*batch two_dim"]:
    """Code of periods [t_s, t_e): the timecodes of t_s and t_e concatenated (2 * dim)."""
    codes = timecode(periods, dim, min_days, max_days)  # *batch 2 dim
    return rearrange(codes, "... two d -> ... (two d)")


def period_code_cfg(periods: Float64[Tensor, "*batch 2"], cfg: ModelConfig) -> Float[Tensor, "*batch two_dim"]:
    """`period_code` with the width and wavelengths of a ModelConfig."""
    return period_code(periods, cfg.timecode_dim, cfg.timecode_min_days, cfg.timecode_max_days)


_ONE_MINUS = 1.0 - 2.0**-24


def normalise_in_period(t: Float64[Tensor, "*batch"], periods: Float64[Tensor, "*batch 2"]) -> Float[Tensor, "*batch"]:
    """u = (t - t_s) / (t_e - t_s) clamped to [0, 1), computed in float64, returned float32."""
    ts, te = periods[..., 0], periods[..., 1]
    u = (t - ts) / (te - ts).clamp_min(1e-9)
    return u.clamp(0.0, _ONE_MINUS).float()


def instant_code(u: Float[Tensor, "*batch"], dim: int) -> Float[Tensor, "*batch dim"]:
    """Sinusoidal code of a normalised instant u in [0, 1): periods from 2 down to 2/dim."""
    if dim % 2:
        raise ValueError(f"dim must be even, got {dim}")
    n = dim // 2
    periods = 2.0 * (1.0 / n) ** (torch.arange(n, dtype=torch.float32, device=u.device) / max(n - 1, 1))
    phase = _TWO_PI * u.float()[..., None] / periods
    return torch.cat([torch.sin(phase), torch.cos(phase)], dim=-1)
