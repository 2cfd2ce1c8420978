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
# # 13. Implicit decoders
#
# AEF learns its embedding by *reconstruction*: from the (vMF-sampled) embedding of a
# period, each source's decoder predicts what that source measured at one instant of the
# period (`AEF_NOTES.md` §5) {cite}`brown2025alphaearth`. The decoders are *implicit*: they
# do not output a time series; they are functions
#
# $$ \hat y(x, t) = g_s\big(z(x),\; c(u),\; m\big), \qquad u = \frac{t - t_s}{t_e - t_s} \in [0, 1), $$
#
# evaluated at one pixel $x$ and one instant $t$ of the valid period: the sampled
# embedding $z(x) \in S^{63}$, a sinusoidal code $c(u)$ of the instant *normalised within
# the period* (chapter 4's `normalise_in_period` and `instant_code`), and optional sensor
# metadata $m$ (Sentinel-1's orbit direction here). The paper's $g_s$ is an MLP with two
# hidden layers of 512, applied per pixel; one per decoded source, input sources (held-out
# frames) and target-only sources (elevation, land cover) alike. Continuous sources are
# trained with L1, categorical ones (land cover) output *logits* for a cross-entropy loss
# (chapter 15).
#
# Why normalise the instant within the period? The embedding is a summary of $[t_s, t_e)$;
# the decoder is asked "what did S2 see at 30 % of this period?". With an absolute date the
# decoder could ignore the embedding and learn a global seasonal climatology; with $u$ it
# must read the season from $z$ and the position in the period from $u$.

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
#| default_exp model.decoders
# %% [markdown]
# ## One decoder
#
# The input of the first layer is the concatenation $[z(x) \,\|\, c(u) \,\|\, m]$. Only
# $z(x)$ changes from pixel to pixel; $c(u)$ and $m$ are one vector per row (one target
# frame). A linear layer on a concatenation is the sum of linear layers on the parts:
#
# $$ W [z \,\|\, c \,\|\, m] + b = W_z z + (W_c c + W_m m) + b , $$
#
# so we compute the conditioning term once per row and broadcast it over the $H \times W$
# pixels instead of copying the code into every pixel (at $L = 128$ that is 16,384 copies per
# frame). The function is exactly the paper's MLP.
#
# **What we chose and why (open in the paper).**
# - *Activation* GELU; *no normalisation* layers: the input $z$ is already a unit vector.
# - *Instant code width* `cfg.timecode_dim`, chapter 4's `instant_code` (periods from 2 down
#   to $2/n$ of the period, so $u \in [0, 1)$ is coded without wrap-around).
# - *Missing metadata.* A source declaring metadata but called with `meta=None` gets zeros
#   (an "unknown" value; our S1 orbit flag is 0/1, so zero means descending: callers with real
#   metadata should pass it). Metadata of the wrong width is refused.
# - *Outputs* are in the normalised units of chapter 3 (continuous) or class logits.

# %%
#| export
from __future__ import annotations

import torch
from einops import rearrange
from jaxtyping import Float
from torch import Tensor, nn

from aef_lit.conventions import ModelConfig, SourceSpec
from aef_lit.model.timecodes import instant_code


class ImplicitDecoder(nn.Module):
    """Per-pixel MLP g_s(z, code(u), meta) of one source (AEF §5): `N E H W` -> `N C_out H W`.

    `decoder_layers` hidden layers of width `decoder_hidden`; C_out = `spec.decoded_channels`
    (logits for a categorical source).
    """

    def __init__(self, spec: SourceSpec, cfg: ModelConfig):
        super().__init__()
        self.spec = spec
        self.code_dim = cfg.timecode_dim
        self.meta_dim = len(spec.metadata)
        hidden = cfg.decoder_hidden
        self.embed = nn.Linear(cfg.embed_dim, hidden)  # W_z z + b
        self.condition = nn.Linear(self.code_dim + self.meta_dim, hidden, bias=False)  # W_c c + W_m m
        layers: list[nn.Module] = [nn.GELU()]
        for _ in range(cfg.decoder_layers - 1):
            layers += [nn.Linear(hidden, hidden), nn.GELU()]
        layers.append(nn.Linear(hidden, spec.decoded_channels))
        self.mlp = nn.Sequential(*layers)

    def forward(
        self, z: Float[Tensor, "N E H W"], t_norm: Float[Tensor, " N"], meta: Float[Tensor, "N M"] | None = None,
    ) -> Float[Tensor, "N C_out H W"]:
        cond = instant_code(t_norm, self.code_dim)
        if self.meta_dim:
            if meta is None:
                meta = torch.zeros(t_norm.shape[0], self.meta_dim, dtype=cond.dtype, device=cond.device)
            if meta.shape[-1] != self.meta_dim:
                raise ValueError(f"{self.spec.name}: meta has {meta.shape[-1]} columns, expected "
                                 f"{self.meta_dim} {self.spec.metadata}")
            cond = torch.cat([cond, meta.to(cond.dtype)], dim=-1)
        h = self.embed(rearrange(z, "n e h w -> n h w e")) + rearrange(self.condition(cond), "n d -> n 1 1 d")
        return rearrange(self.mlp(h), "n h w c -> n c h w")


class Decoders(nn.ModuleDict):
    """One ImplicitDecoder per decoded source of `cfg` (inputs and target-only sources)."""

    def __init__(self, cfg: ModelConfig):
        super().__init__({spec.name: ImplicitDecoder(spec, cfg) for spec in cfg.target_sources})

    def decode(self, source: str, z: Float[Tensor, "N E H W"], t_norm: Float[Tensor, " N"],
               meta: Float[Tensor, "N M"] | None = None) -> Float[Tensor, "N C_out H W"]:
        if source not in self:
            raise KeyError(f"no decoder for source {source!r}; known: {list(self.keys())}")
        return self[source](z, t_norm, meta)


# %% [markdown]
# ### Checks
#
# The shapes per source (bands for continuous sources, one logit per class for land
# cover); the split first layer equals the paper's MLP on the concatenated input; the
# decoder works per pixel (changing one pixel's $z$ changes that pixel's output only); and
# both the instant and the metadata matter.

# %%
import torch.nn.functional as F

from aef_lit.conventions import get_config, seed_everything

cfg = get_config(preset)
g = seed_everything(seed)
decoders = Decoders(cfg).eval()
N, H, W = 3, 16, 12
z = F.normalize(torch.randn(N, cfg.embed_dim, H, W, generator=g), dim=1)
u = torch.rand(N, generator=g)
for spec in cfg.target_sources:
    meta = torch.ones(N, len(spec.metadata)) if spec.metadata else None
    y = decoders.decode(spec.name, z, u, meta)
    print(f"{spec.name:10s} {spec.modality:12s} -> {tuple(y.shape)}")
    assert y.shape == (N, spec.decoded_channels, H, W)

dec = decoders["s1"]
with torch.no_grad():
    meta = torch.tensor([[0.0], [1.0], [1.0]])
    y = dec(z, u, meta)
    # the paper's form: one Linear on [z | code(u) | meta] copied into every pixel
    full = torch.cat([dec.embed.weight, dec.condition.weight], dim=1)
    x_cat = torch.cat([rearrange(z, "n e h w -> n h w e"),
                       rearrange(torch.cat([instant_code(u, cfg.timecode_dim), meta], -1), "n c -> n 1 1 c")
                       .expand(-1, H, W, -1)], dim=-1)
    y_cat = rearrange(dec.mlp(F.linear(x_cat, full, dec.embed.bias)), "n h w c -> n c h w")
    assert torch.allclose(y, y_cat, atol=1e-5)
    z2 = z.clone()
    z2[1, :, 5, 7] = F.normalize(torch.randn(cfg.embed_dim, generator=g), dim=0)
    changed = ((dec(z2, u, meta) - y).abs().amax(1) > 0).nonzero().tolist()
    assert changed == [[1, 5, 7]], changed
    assert not torch.allclose(dec(z, u + 0.25, meta), y)
    assert not torch.allclose(dec(z, u, 1 - meta), y)

# %% [markdown]
# ## A decoder is a function of time
#
# For a fixed embedding the decoder traces a curve through the period as $u$ goes from 0 to
# 1: that is how one 64-d vector can stand for a whole season of observations. Untrained, the
# curves are smooth random functions (the instant code's lowest frequency spans the period
# once, its highest $n/2$ times); after training (chapter 21) the Sentinel-2 decoder's curve
# for a cropland pixel rises and falls with the crop.

# %%
import matplotlib.pyplot as plt

s2 = cfg.source("s2")
us = torch.linspace(0, 1 - 1e-6, 200)
with torch.no_grad():
    zs = F.normalize(torch.randn(3, cfg.embed_dim, 1, 1, generator=g), dim=1)
    curves = [decoders["s2"](zs[k:k + 1].expand(len(us), -1, -1, -1), us)[:, :, 0, 0] for k in range(3)]
fig, axes = plt.subplots(1, 3, figsize=(11, 3), sharey=True)
for k, (ax, c) in enumerate(zip(axes, curves)):
    for band in (0, 2, 6, 8):
        ax.plot(us, c[:, band], label=s2.bands[band])
    ax.set_title(f"embedding {k + 1}", fontsize=9)
    ax.set_xlabel("u: instant within the period")
axes[0].set_ylabel("decoded S2 value (normalised)")
axes[-1].legend(fontsize=7)
fig.suptitle("untrained S2 decoder: one embedding, a curve through the period", fontsize=10)
plt.tight_layout()
plt.show()

# %% [markdown]
# ## Size
#
# Per source, $(E + n_c + M) \cdot h + (\text{layers} - 1)(h^2 + h) + h + (h + 1)\, C_{out}$
# parameters. In the `paper` preset ($h = 512$, two hidden layers, $n_c = 128$) that is
# about 0.37 M per source: the decoders are a negligible part of a ~480 M model (§2); they
# are deliberately weak, so the information has to be in the embedding.

# %%
import pandas as pd

rows = {}
for name in ("tiny", "paper"):
    c = get_config(name)
    d = Decoders(c)
    rows[name] = {s: sum(p.numel() for p in d[s].parameters()) for s in d}
table = pd.DataFrame(rows)
table
