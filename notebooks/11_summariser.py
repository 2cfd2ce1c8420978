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
# # 11. The summary: one query per period, pooled along time
#
# The encoder (chapters 5–10) returns one feature map per input frame on the $L/2$ grid:
# `B T D h w`. AEF's output is not per frame: the caller asks for a *valid period*
# $[t_s, t_e)$ and gets ONE 64-d unit vector per pixel summarising the site over that
# period, whether the period covers many frames, falls between frames (interpolation) or
# outside the series (extrapolation) (`AEF_NOTES.md` §1, §3) {cite}`brown2025alphaearth`.
#
# The paper's summary (§3, §S2.2.1) is:
# 1. *time-axial attention pooling* at every pixel of the $L/2$ grid, with ONE learned query
#    derived from the sinusoidal timecodes of $[t_s, t_e)$; padded or missing frames are
#    masked out;
# 2. a learned upsampling from $L/2$ to $L$;
# 3. a projection to 64 dimensions and a normalisation to unit length: $\mu$.
#
# Several periods can be summarised in one forward pass: the encoder runs once, each period
# is one more query. Two defects of the port of §12 live exactly here: it reshaped
# `(B, T, H, W, C)` with `.view` so that its "temporal" pooling mixed neighbouring pixels,
# and it never upsampled back to $L$.

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
#| default_exp model.summariser
# %% [markdown]
# ## Attention pooling with one query
#
# At one pixel, the encoder gives frame features $f_1, \dots, f_T \in \mathbb{R}^D$ at times
# $t_1, \dots, t_T$. Pooling with a single query $q$ is ordinary attention with one row:
#
# $$ a_k = \operatorname{softmax}_k\!\Big(\frac{q^\top K_k}{\sqrt{d}}\Big), \qquad
#    s = \sum_k a_k V_k , $$
#
# one query per period, one weight per frame, the same for every channel of a head. The
# query comes from the period alone: $q = \mathrm{MLP}(c(t_s) \,\|\, c(t_e))$ with $c$ the
# sinusoidal timecode of chapter 4 (`period_code`). It does not depend on the pixel: the
# same question ("what happened in $[t_s, t_e)$?") is asked of every pixel, and each pixel
# answers from its own frames.
#
# **What we chose and why (open in the paper).**
# - *Keys carry the frame's timecode.* $K_k = W_K \,\mathrm{LN}(f_k) + W_T\, c(t_k)$,
#   $V_k = W_V \,\mathrm{LN}(f_k)$. The encoder's Time operator has already conditioned the
#   features on timecodes, but an explicit time term in the key lets the query select frames
#   *by date* from the first step of training: the logit $q^\top W_T c(t_k)$ is a Fourier
#   series in $t_k$ whose coefficients the MLP derives from $(t_s, t_e)$, so it can learn a
#   bump over the period, a decay outside it, or a seasonal preference.
# - *A learned empty slot.* We append one learned key/value pair that is never masked
#   ("attention sink"). A row with no valid frame at all (all masked) then pools the empty
#   slot instead of producing `NaN` from a softmax over nothing, with static shapes and no
#   data-dependent branch, and the model can learn to say "little evidence" for a period.
# - *Masking.* Masked frames get a `False` in the boolean attention mask of
#   `F.scaled_dot_product_attention`: weight exactly zero, so their values cannot matter.
# - *Heads:* `cfg.heads_summary` (4 in `tiny`, 8 in `paper`), width `d_precision`.
#
# Everything is written with einops patterns that name the axes. The pixel axes `h w` are
# merged into the *batch* of the attention, never into the frame axis: that is the whole
# difference with the port's `.view` bug.

# %%
#| export
from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange, repeat
from jaxtyping import Bool, Float, Float64
from torch import Tensor, nn

from aef_lit.conventions import ModelConfig
from aef_lit.model.timecodes import period_code_cfg, timecode_cfg


class TimePooling(nn.Module):
    """Time-axial attention pooling: one query per period, at every pixel (AEF §3).

    features `B T D h w` + timestamps `B T` + mask `B T` + periods `B P 2` -> `B P D h w`.
    """

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        D, tc = cfg.d_precision, cfg.timecode_dim
        if D % cfg.heads_summary:
            raise ValueError(f"d_precision={D} is not divisible by heads_summary={cfg.heads_summary}")
        self.cfg = cfg
        self.heads = cfg.heads_summary
        self.norm = nn.LayerNorm(D)
        self.key = nn.Linear(D, D)
        self.value = nn.Linear(D, D)
        self.key_time = nn.Linear(tc, D, bias=False)
        self.query = nn.Sequential(nn.Linear(2 * tc, D), nn.GELU(), nn.Linear(D, D))
        self.empty_key = nn.Parameter(torch.randn(D) * 0.02)
        self.empty_value = nn.Parameter(torch.randn(D) * 0.02)
        self.out = nn.Linear(D, D)

    def keys_values(self, features: Float[Tensor, "B T D h w"], t: Float64[Tensor, "B T"],
                    mask: Bool[Tensor, "B T"]) -> tuple[Tensor, Tensor, Tensor]:
        """The period-free half: keys and values `B (h w) n T+1 e` (the empty slot first), and the
        key mask. Computed once, they serve any number of periods (chapter 32's period slider)."""
        B, T, D, h, w = features.shape
        f = self.norm(rearrange(features, "b t d h w -> b h w t d"))
        tcode = timecode_cfg(t, self.cfg).to(features.device)  # float64 days may live on the CPU (MPS)
        k = self.key(f) + rearrange(self.key_time(tcode), "b t d -> b 1 1 t d")
        v = self.value(f)
        k = torch.cat([repeat(self.empty_key, "d -> b h w 1 d", b=B, h=h, w=w), k], dim=3)
        v = torch.cat([repeat(self.empty_value, "d -> b h w 1 d", b=B, h=h, w=w), v], dim=3)
        keep = torch.cat([torch.ones_like(mask[:, :1]), mask], dim=1)  # the empty slot is always there
        # pixels go to the attention's batch axis, frames stay the key axis: no pixel mixing
        k = rearrange(k, "b h w t (n e) -> b (h w) n t e", n=self.heads)
        v = rearrange(v, "b h w t (n e) -> b (h w) n t e", n=self.heads)
        return k, v, rearrange(keep, "b t -> b 1 1 1 t")

    def attend(self, kv: tuple[Tensor, Tensor, Tensor], periods: Float64[Tensor, "#B P 2"], h: int,
               return_attention: bool = False):
        """The per-period half: one query per period against prepared keys and values -> `B P D h w`."""
        k, v, attn_mask = kv
        q = self.query(period_code_cfg(periods, self.cfg).to(k.device))  # B P D: one query per period
        q = repeat(q, "b p (n e) -> b x n p e", n=self.heads, x=k.shape[1])
        pooled = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)
        pooled = self.out(rearrange(pooled, "b (h w) n p e -> b p h w (n e)", h=h))
        pooled = rearrange(pooled, "b p h w d -> b p d h w")
        if not return_attention:
            return pooled
        logits = torch.einsum("bxnpe,bxnte->bxnpt", q, k) / k.shape[-1] ** 0.5
        weights = logits.masked_fill(~attn_mask, float("-inf")).softmax(-1).mean(2)  # mean over heads
        weights = rearrange(weights[..., 1:], "b (h w) p t -> b p t h w", h=h)  # frames only
        return pooled, weights

    def forward(
        self, features: Float[Tensor, "B T D h w"], t: Float64[Tensor, "B T"], mask: Bool[Tensor, "B T"],
        periods: Float64[Tensor, "#B P 2"], return_attention: bool = False,
    ) -> Float[Tensor, "B P D h w"] | tuple[Float[Tensor, "B P D h w"], Float[Tensor, "B P T h w"]]:
        return self.attend(self.keys_values(features, t, mask), periods, features.shape[-2], return_attention)


# %% [markdown]
# ### Check: pooling never mixes pixels
#
# The property that the port's `.view` broke: perturb ONE pixel of ONE frame, and only that
# pixel's summary may change. We also check the other two promises: a masked frame has
# exactly no effect, and the weights over the frames are a distribution (they sum to one
# minus the weight of the empty slot).

# %%
from aef_lit.conventions import get_config, seed_everything, select_device

cfg = get_config(preset)
g = seed_everything(seed)
B, T, h, w = 2, 6, 8, 6  # a non-square grid on purpose
feats = torch.randn(B, T, cfg.d_precision, h, w, generator=g)
t = 18_700.0 + torch.sort(torch.rand(B, T, generator=g, dtype=torch.float64) * 140, dim=1).values
mask = torch.ones(B, T, dtype=torch.bool)
mask[:, -1] = False
periods = torch.tensor([[[18_700.0, 18_800.0], [18_850.0, 19_000.0]]] * B, dtype=torch.float64)
pool = TimePooling(cfg).eval()
with torch.no_grad():
    ref, attn = pool(feats, t, mask, periods, return_attention=True)
    bumped = feats.clone()
    bumped[1, 2, :, 3, 4] += 5.0  # one pixel (3, 4) of one frame
    diff = (pool(bumped, t, mask, periods) - ref).abs().amax(dim=(0, 1, 2))
    masked = feats.clone()
    masked[:, -1] = 1e4  # the masked frame
    same = pool(masked, t, mask, periods)
print("pooled", tuple(ref.shape), "| changed pixels:", (diff > 0).nonzero().tolist())
assert diff[3, 4] > 0 and (diff > 0).sum() == 1, "time pooling must not mix pixels"
assert torch.equal(same, ref), "a masked frame must have no effect"
assert (attn.sum(2) <= 1 + 1e-6).all() and (attn[:, :, -1] == 0).all(), "masked frame: weight exactly 0"

# %% [markdown]
# ## From $L/2$ to $L$, then to the sphere
#
# The pooled summary lives on the $L/2$ grid (the precision grid of the encoder). The paper
# upsamples it with a *learned* kernel (§3). We use a transposed convolution, kernel 4,
# stride 2, initialised to bilinear interpolation (each channel copies itself with the
# weights $[\tfrac14, \tfrac34, \tfrac34, \tfrac14]^{\otimes 2}$, other channels zero), so
# that an untrained model starts smooth rather than with a checkerboard and training can
# learn sharper or cross-channel kernels. A GELU and a 1×1 convolution then project each
# full-resolution pixel to $E = 64$, and $\mu = y / \lVert y \rVert$, normalised in float32 even under
# bf16 autocast (a bf16 unit vector has a norm error of about $4\times10^{-3}$, which the
# dot products of the uniformity and consistency losses would inherit).
#
# The upsampling is the only operator here that mixes neighbouring pixels, and only within
# its $4 \times 4$ kernel: a change of one $L/2$ pixel $(i, j)$ reaches the output rows
# $2i-1 \dots 2i+2$ and columns $2j-1 \dots 2j+2$ and nothing else.

# %%
#| export
def bilinear_kernel(channels: int, factor: int = 2) -> Float[Tensor, "C C k k"]:
    """ConvTranspose2d weights (in, out, k, k), k = 2 * factor, that upsample each channel bilinearly."""
    k = 2 * factor
    centre = (k - 1) / 2
    taps = 1 - (torch.arange(k, dtype=torch.float32) - centre).abs() / factor
    weight = torch.zeros(channels, channels, k, k)
    weight[range(channels), range(channels)] = taps[:, None] * taps[None, :]
    return weight


class Summariser(nn.Module):
    """Period summaries: time pooling on L/2, learned upsampling to L, projection to E, unit norm.

    forward(features `B T D h w`, t `B T`, mask `B T`, periods `B P 2`) -> mu `B P E 2h 2w`.
    """

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        D = cfg.d_precision
        self.pool = TimePooling(cfg)
        self.up = nn.ConvTranspose2d(D, D, kernel_size=4, stride=2, padding=1)
        with torch.no_grad():
            self.up.weight.copy_(bilinear_kernel(D))
            self.up.bias.zero_()
        self.project = nn.Sequential(nn.GELU(), nn.Conv2d(D, cfg.embed_dim, kernel_size=1))

    def forward(
        self, features: Float[Tensor, "B T D h w"], t: Float64[Tensor, "B T"], mask: Bool[Tensor, "B T"],
        periods: Float64[Tensor, "#B P 2"], return_attention: bool = False,
    ) -> Float[Tensor, "B P E H W"] | tuple[Float[Tensor, "B P E H W"], Float[Tensor, "B P T h w"]]:
        pooled = self.pool(features, t, mask, periods, return_attention=return_attention)
        return self.finish(pooled, return_attention)

    def finish(self, pooled, return_attention: bool = False):
        """Pooled `B P D h w` (or with attention weights) -> unit embeddings `B P E 2h 2w`."""
        if return_attention:
            pooled, weights = pooled
        P = pooled.shape[1]
        y = self.project(self.up(rearrange(pooled, "b p d h w -> (b p) d h w")))
        mu = F.normalize(rearrange(y.float(), "(b p) e h w -> b p e h w", p=P), dim=2)  # float32 on the sphere
        return (mu, weights) if return_attention else mu


# %% [markdown]
# ### Check: shape, unit norm, locality, periods
#
# On the same non-square features: the output is `B P 64 2h 2w` (full resolution), every
# vector has unit norm, a one-pixel change stays within the upsampler's $4\times4$ footprint,
# and two different periods give two different embeddings of the same frames, including a
# period with no frame inside it (after the last frame: extrapolation). Untrained, the two
# embeddings differ only a little (the attention is near-uniform, see below); a summariser
# that ignored its query would give them *exactly* equal.

# %%
summ = Summariser(cfg).eval()
with torch.no_grad():
    mu = summ(feats, t, mask, periods)
    diff = (summ(bumped, t, mask, periods) - mu).abs().amax(dim=(0, 1, 2))
rows, cols = (diff > 0).nonzero(as_tuple=True)
print("mu", tuple(mu.shape), "| rows", sorted(set(rows.tolist())), "cols", sorted(set(cols.tolist())))
assert mu.shape == (B, 2, cfg.embed_dim, 2 * h, 2 * w)
assert ((mu.norm(dim=2) - 1).abs() < 1e-5).all()
assert rows.min() >= 2 * 3 - 1 and rows.max() <= 2 * 3 + 2 and cols.min() >= 2 * 4 - 1 and cols.max() <= 2 * 4 + 2
assert (t.max() < periods[:, 1, 0]).all(), "the second period has no frame inside it"
gap = (mu[:, 0] - mu[:, 1]).norm(dim=1)
print(f"distance between the two periods' embeddings: min {gap.min():.4f}, mean {gap.mean():.4f}")
assert (gap > 1e-3).all(), "different periods, different embeddings"

# %% [markdown]
# ## What the query sees on a real pixel
#
# One real tile (a GreenEarthNet minicube, chapter 2; the synthetic generator without the
# real samples), encoded by chapter 10's encoder, summarised for two periods. The figure
# shows, for one pixel, (left) the attention weights over its frames for each period and
# (right) what the query has to work with: the cosine between the timecode of any instant
# (curves; dots at this pixel's frames) and the timecodes of the period's two ends.
#
# **An untrained model attends almost uniformly.** Its query is a random function of the
# period code, and with small random keys all logits are close to zero, so every valid frame
# gets about $1/(n+1)$ of the weight (the $+1$ is the empty slot); masked frames get exactly
# zero. What makes learning possible is on the right: the cosine of two codes is a kernel of
# the time difference (chapter 4), high within a few days of $t_s$ or $t_e$ and lower further
# away, so a query built from the period code, scored against keys that contain the frame
# codes, *can* learn to favour the frames of its period (and, for a period with no frame,
# the nearest ones). Chapter 21's trained model shows the
# learned version of the left panel.

# %%
import matplotlib.pyplot as plt
import numpy as np

from aef_lit.data import collate, cut_rows, load_sites, model_sources
from aef_lit.model.timecodes import period_code_cfg, timecode_cfg

device = select_device(device)
sites = load_sites(data, ("portugal", "hungary"), seed=seed)  # chapter 3: real if present, else synthetic
specs = model_sources(sites)
row0 = cut_rows(sites, [0], cfg.tile, 16, seed=seed)[0]  # training row 0 (chapter 3)
batch = collate([row0], specs, {s.name: 16 for s in specs})
cfg_real = cfg.replace(sources=specs)
try:  # chapter 10's encoder; the projections alone if it is not there yet
    from aef_lit.model.encoder import STPEncoder
except ImportError:  # pragma: no cover
    STPEncoder = None
from aef_lit.model.projectors import InputProjection

torch.manual_seed(seed)
proj = InputProjection(cfg_real).eval()
enc = STPEncoder(cfg_real).eval() if STPEncoder is not None else None
summ_real = Summariser(cfg_real).eval()
sb = batch["s2"]
valid_t = sb.t[0][sb.frame_mask[0]]
t_lo, t_hi = float(valid_t.min()), float(valid_t.max())
mid = (t_lo + t_hi) / 2
two = torch.tensor([[[t_lo - 1, mid], [mid, t_hi + 1]]], dtype=torch.float64)
with torch.no_grad():
    x, tt, mm = proj(batch)
    feats_real = enc(x, tt, mm) if enc is not None else x
    mu_real, weights = summ_real(feats_real, tt, mm, two, return_attention=True)
pix = (cfg.tile // 4, cfg.tile // 4)
wts = weights[0, :, :, pix[0], pix[1]].numpy()  # P T
days = (tt[0] - t_lo).numpy()
dense = torch.linspace(t_lo - 30, t_hi + 30, 400, dtype=torch.float64)
end_codes = timecode_cfg(two[0], cfg_real)  # P 2 dim: codes of t_s and t_e
sim_dense = F.cosine_similarity(timecode_cfg(dense, cfg_real)[None, None], end_codes[:, :, None], dim=-1)
sim_frames = F.cosine_similarity(timecode_cfg(tt[0], cfg_real)[None, None], end_codes[:, :, None], dim=-1)
valid = mm[0].numpy()

fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, 3.6))
for p, color in enumerate(("C0", "C3")):
    lo, hi = (two[0, p] - t_lo).numpy()
    for ax in (a1, a2):
        ax.axvspan(lo, hi, color=color, alpha=0.08)
    a1.bar(days[valid] + (p - 0.5) * 1.6, wts[p][valid], width=1.6, color=color, label=f"period {p + 1}")
    for e, ls in enumerate(("-", "--")):
        a2.plot((dense - t_lo).numpy(), sim_dense[p, e].numpy(), ls, color=color, lw=1,
                label=f"period {p + 1}: to $c(t_{{{'se'[e]}}})$")
        a2.scatter(days[valid], sim_frames[p, e].numpy()[valid], color=color, s=12, zorder=3)
a1.scatter(days[~valid], np.zeros((~valid).sum()), marker="x", c="k", label="masked (weight 0)")
a1.axhline(1 / (valid.sum() + 1), color="0.5", ls=":", lw=1, label="uniform 1/(n+1)")
a1.set_title(f"untrained attention over the frames of pixel {pix} ({row0.site})", fontsize=9)
a1.set_xlabel("days since first frame")
a1.set_ylabel("attention weight")
a1.legend(fontsize=7, loc="lower right")
a2.set_title("what the query can use: cosine of a timecode to the period's end codes", fontsize=9)
a2.set_xlabel("days since first frame (dots: this pixel's frames)")
a2.legend(fontsize=6, loc="lower center", ncol=2)
plt.tight_layout()
plt.show()
assert np.allclose(wts[:, ~valid], 0.0) and ((wts[:, valid] > 0).all())
assert mu_real.shape == (1, 2, cfg.embed_dim, cfg.tile, cfg.tile)

# %% [markdown]
# ## Cost of several periods
#
# Summarising $P$ periods costs one encoder pass plus $P$ query rows in the same attention
# call and $P$ runs of the (small) upsampling head, so the teacher, the student and the
# per-target summaries of training (chapters 15–17) share one encoding per input. The
# encoder is the expensive part; chapter 14 measures both.
