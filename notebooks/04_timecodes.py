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
# # 4. Timecodes: sinusoids of float64 days
#
# AEF reads frames at irregular instants and is asked for summaries of arbitrary periods
# $[t_s, t_e)$, so time enters the model as a *code*: each frame of the Time operator is
# conditioned on the sinusoidal timecode of its timestamp (`AEF_NOTES.md` §2), the summary
# query is derived from the timecodes of the period (§3), and each implicit decoder gets a
# timecode of its target instant normalised to $[0, 1)$ within the period (§5)
# {cite}`brown2025alphaearth`.
#
# The paper says only that the codes are sinusoidal. Their frequencies are **open** (§2).
# What it does require is that *nearby instants get similar codes*; the unofficial port
# criticised in §12 missed exactly that, because it fed float32 millisecond epochs to its
# sinusoids: codes one day apart came out with cosine 0.02.

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
#| default_exp model.timecodes
# %% [markdown]
# ## The code of an instant
#
# We use the Transformer's sinusoidal code {cite}`brown2025alphaearth` borrows in spirit:
# for $n = \text{dim}/2$ *wavelengths* $\lambda_k$ spaced geometrically between
# `min_days` and `max_days`,
#
# $$ c(t) = \big[\sin(t/\lambda_0), \dots, \sin(t/\lambda_{n-1}),\;
#              \cos(t/\lambda_0), \dots, \cos(t/\lambda_{n-1})\big], $$
#
# with $t$ in days since 1970-01-01. This is exactly the convention of
# $\sin(\text{pos}/10000^{2i/d})$: the angular frequencies $1/\lambda_k$ run from
# $1/\text{min\_days}$ to $1/\text{max\_days}$ radians per day, so the periods run from
# $2\pi \cdot 1 \approx 6.3$ days (about one Sentinel-2 revisit) to
# $2\pi \cdot 1461 \approx 25$ years (the code is unambiguous over the whole Sentinel era).
#
# **What we chose and why (open in the paper).**
# - *Wavelengths 1 day … 4 years* (`ModelConfig.timecode_min_days/max_days`): the
#   seasonal cycle, the revisit interval and the multi-year horizon of a support period
#   are all inside the band.
# - *Phases in float64, result in float32.* In 2021, $t \approx 18\,700$ days; the phase
#   $t/\lambda$ for $\lambda = 1$ is $1.9\times10^4$ radians. float64 holds it to
#   $10^{-12}$ rad; float32 to $10^{-3}$ rad, which is still fine, but float32
#   *milliseconds* ($1.6\times10^{12}$) are only held to about two minutes and their phases
#   carry errors far beyond $2\pi$. So the function *requires* float64 input and reduces the
#   phase modulo $2\pi$ before the cast.
# - *The kernel.* The cosine between two codes is
#   $\frac{1}{n}\sum_k \cos\big((t-t')/\lambda_k\big)$, a function of $t - t'$ alone:
#   the code is shift-equivariant, and its similarity decays with the time gap.

# %%
#| export
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


# %% [markdown]
# A first look: the code of one instant is a vector of `dim` numbers in $[-1, 1]$, and a
# float32 timestamp is refused outright.

# %%
import matplotlib.pyplot as plt
import numpy as np

from aef_lit.conventions import get_config, seed_everything, select_device, to_days

cfg = get_config(preset)
device = select_device(device)
g = seed_everything(seed)
t0 = float(to_days("2021-01-01"))
c = timecode_cfg(torch.tensor([t0], dtype=torch.float64), cfg)
assert c.shape == (1, cfg.timecode_dim) and c.dtype == torch.float32
try:
    timecode(torch.tensor([t0], dtype=torch.float32), cfg.timecode_dim)
except TypeError as err:
    print("refused:", err)
else:
    raise AssertionError("float32 timestamps must be refused")

# %% [markdown]
# ## The property: nearby instants are similar, distant ones are not
#
# The test §12 asks for: the cosine between codes of instants one day apart. We compare
# with the port's recipe (float32 millisecond epochs, phases in float32), re-created here
# the way such a port typically does it: the Transformer's $10000^{2i/d}$ wavelengths
# applied to millisecond epochs, in float32.

# %%
def cosine(a: Tensor, b: Tensor) -> Tensor:
    return torch.nn.functional.cosine_similarity(a, b, dim=-1)


def port_timecode(t_days: Tensor, dim: int) -> Tensor:
    """The defect of §12 re-created: the Transformer code sin(t / 10000^(2i/d)) applied to
    float32 millisecond epochs, every operation in float32."""
    t_ms = (t_days * 86_400_000.0).float()
    lam = 10000.0 ** (torch.arange(dim // 2, dtype=torch.float32) / (dim // 2))
    phase = t_ms[..., None] / lam
    return torch.cat([torch.sin(phase), torch.cos(phase)], dim=-1)


pair = torch.tensor([t0, t0 + 1.0], dtype=torch.float64)
ours = cosine(*timecode_cfg(pair, cfg))
port = cosine(*port_timecode(pair, cfg.timecode_dim))
print(f"cosine of codes one day apart: ours {ours:.3f}, float32-ms port {port:.3f}")
assert ours > 0.9, "codes one day apart must be nearly parallel"
far = cosine(*timecode_cfg(torch.tensor([t0, t0 + 730.0], dtype=torch.float64), cfg))
assert far < 0.5 * ours, "codes two years apart must be far less similar than one day apart"

# %% [markdown]
# A picture of the code: the similarity matrix of the codes of every day of two
# years. The bright diagonal band is "nearby instants are similar"; its width is set by
# the short wavelengths, the faint off-diagonal stripes by the long ones. On the right, the
# port's recipe: no structure at all.

# %%
days = t0 + torch.arange(0, 730, dtype=torch.float64)
codes = timecode_cfg(days, cfg)
codes = codes / codes.norm(dim=-1, keepdim=True)
sim = codes @ codes.T
pc = port_timecode(days, cfg.timecode_dim)
pc = pc / pc.norm(dim=-1, keepdim=True)
psim = pc @ pc.T

fig, axes = plt.subplots(1, 3, figsize=(15, 4.4))
for ax, m, title in ((axes[0], sim, "ours: float64 days"), (axes[1], psim, "port: float32 ms epochs (§12)")):
    im = ax.imshow(m.numpy(), cmap="RdBu_r", vmin=-1, vmax=1)
    ax.set_title(f"cosine of codes\n{title}")
    ax.set_xlabel("day since 2021-01-01")
axes[0].set_ylabel("day since 2021-01-01")
fig.colorbar(im, ax=axes[:2], shrink=0.8)
gaps = torch.logspace(-2, np.log10(730), 400, dtype=torch.float64)
ref = timecode_cfg(torch.tensor([t0], dtype=torch.float64), cfg)
pref = port_timecode(torch.tensor([t0], dtype=torch.float64), cfg.timecode_dim)
axes[2].plot(gaps.numpy(), cosine(ref, timecode_cfg(t0 + gaps, cfg)).numpy(), label="ours")
axes[2].plot(gaps.numpy(), cosine(pref, port_timecode(t0 + gaps, cfg.timecode_dim)).numpy(), label="port", alpha=0.7)
axes[2].axvline(1.0, color="gray", ls=":", lw=1)
axes[2].set_xscale("log")
axes[2].set_xlabel("gap (days)")
axes[2].set_ylabel("cosine to 2021-01-01")
axes[2].legend()
axes[2].set_title("similarity against the time gap")
plt.show()

# %% [markdown]
# Because the kernel depends on $t - t'$ only, the matrix is constant along its diagonals
# (up to float32 rounding of the codes): shifting every timestamp by the same amount
# changes nothing the attention layers can see in dot products of codes.

# %%
assert torch.allclose(torch.diagonal(sim, 1), torch.diagonal(sim, 1)[0].expand(729), atol=1e-4)

# %% [markdown]
# ## The code of a period, for the summary query (§3)
#
# The summariser asks for the embedding of a period $[t_s, t_e)$; its query is derived
# from "the sinusoidal timecodes of $[t_s, t_e)$" (§3). **We chose** the concatenation
# $[c(t_s), c(t_e)]$: it determines both ends exactly (so also the midpoint and the
# duration, which a learned layer can read off), needs no second frequency band for
# durations, and periods that share a start or an end share half their code.

# %%
#| export
def period_code(periods: Float64[Tensor, "*batch 2"], dim: int, min_days: float = 1.0,
                max_days: float = 1461.0) -> Float[Tensor, "*batch two_dim"]:
    """Code of periods [t_s, t_e): the timecodes of t_s and t_e concatenated (2 * dim)."""
    codes = timecode(periods, dim, min_days, max_days)  # *batch 2 dim
    return rearrange(codes, "... two d -> ... (two d)")


def period_code_cfg(periods: Float64[Tensor, "*batch 2"], cfg: ModelConfig) -> Float[Tensor, "*batch two_dim"]:
    """`period_code` with the width and wavelengths of a ModelConfig."""
    return period_code(periods, cfg.timecode_dim, cfg.timecode_min_days, cfg.timecode_max_days)


# %%
year = torch.tensor([[t0, t0 + 365.0], [t0, t0 + 366.0], [t0 + 730.0, t0 + 1095.0]], dtype=torch.float64)
pcode = period_code_cfg(year, cfg)
assert pcode.shape == (3, 2 * cfg.timecode_dim)
assert cosine(pcode[0], pcode[1]) > 0.9 > cosine(pcode[0], pcode[2])

# %% [markdown]
# ## An instant within its period, for the decoders (§5)
#
# Each decoder is told *when* inside the valid period its target frame lies: the instant
# normalised to $[0, 1)$, $u = (t - t_s)/(t_e - t_s)$, clamped (a target outside the period
# is a caller's bug, but must not produce values outside the range) to
# $[0, 1 - 2^{-24}]$, the largest float32 below one. Its code is small: `dim` sinusoids
# of $u$ with periods between 2 (so $u=0$ and $u \to 1$ are far apart, no wrap-around) and
# $2/\text{dim}$ (a resolution of about one part in `dim` of the period).

# %%
#| export
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


# %%
per = torch.tensor([t0, t0 + 365.0], dtype=torch.float64)
ts_ = torch.tensor([t0 - 10, t0, t0 + 182.5, t0 + 365.0, t0 + 400], dtype=torch.float64)
u = normalise_in_period(ts_, per.expand(5, 2))
print("u:", u.tolist())
assert (u >= 0).all() and (u < 1).all() and abs(u[2] - 0.5) < 1e-6
ic = instant_code(torch.linspace(0, _ONE_MINUS, 200), 16)
ics = torch.nn.functional.normalize(ic, dim=-1)
assert (ics[0] @ ics[-1]) < 0.5, "the start and the end of a period must not look alike"

# %%
fig, axes = plt.subplots(1, 2, figsize=(10, 3))
axes[0].imshow(ic.T.numpy(), aspect="auto", cmap="RdBu_r", extent=(0, 1, 16, 0))
axes[0].set_xlabel("u (position in the valid period)")
axes[0].set_ylabel("channel")
axes[0].set_title("instant_code(u, 16)")
axes[1].imshow((ics @ ics.T).numpy(), cmap="RdBu_r", vmin=-1, vmax=1, extent=(0, 1, 1, 0))
axes[1].set_title("cosine between instant codes")
axes[1].set_xlabel("u")
axes[1].set_ylabel("u")
plt.tight_layout()
plt.show()

# %% [markdown]
# ## Summary
# - `timecode(t, dim)`: sinusoids of float64 days, wavelengths 1 day … 4 years, float32
#   out; one day apart the cosine is about 0.95 (the §12 port: about 0).
# - `period_code(periods, dim)`: $[c(t_s), c(t_e)]$, the summary query's input.
# - `normalise_in_period` and `instant_code`: the decoders' view of time.
