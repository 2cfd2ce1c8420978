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
# # 7. The Time operator: attention along time at each pixel
#
# The Time operator works on the L/8 grid (16 × 16 for $L = 128$) at width 512 in the
# paper. At *each pixel* it runs "self-attention along time; each frame conditioned on its
# sinusoidal timecode" (`AEF_NOTES.md` §2, {cite}`brown2025alphaearth`). The frames of all
# sources are one sequence; padded frames are masked out.
#
# This is where the unofficial port of §12 went wrong: it reshaped a `(B, T, H, W, C)`
# tensor with `.view` into sequences that were not the frames of one pixel, so its
# "temporal" attention pooled neighbouring pixels. Here every reshape is an einops pattern
# that names the axes, `b t d h w -> (b h w) t d`, and a test perturbs one pixel to prove
# that no other pixel notices.
#
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
#| default_exp model.time
# %% [markdown]
# ## What we chose
#
# - **A pre-norm transformer layer over the `T` axis**: multi-head self-attention
#   (`F.scaled_dot_product_attention`) then an MLP of ratio `mlp_ratio` (4, as in ViT;
#   the paper is silent on both, §2).
# - **Timecode conditioning at the attention input.** A linear map of the frame's timecode
#   (chapter 4) is added to the *normalised* tokens that make queries, keys and values, at
#   every layer (as DETR adds its positional codes), rather than once to the residual
#   stream: the code keeps its full strength at every depth and never accumulates in the
#   state. Attention has no other notion of order, so permuting frames together with their
#   timestamps permutes the output (tested).
# - **Masking.** `mask` (True = real frame) becomes the keys' attention mask: no query ever
#   attends to a padded frame, so a padded frame's values cannot reach a real frame. A row
#   with no real frame at all would give a softmax over nothing (NaN); for such rows we let
#   every key through, an output nobody reads but one that stays finite. All of this is
#   tensor algebra: no Python branching on data, so `torch.compile(fullgraph=True)` works.
# - **Depth.** `depth` layers per operator (1 by default; chapter 10 fixes the count).

# %% [markdown]
# The layer itself is the same pre-norm block the Space operator (chapter 8) uses, so it
# gets a module of its own, `aef_lit.model.attention`: normalise, make queries, keys and
# values (here after adding the condition), attend, project back, add; then an MLP,
# added. What differs between Time and Space is only *how* the heads attend (a key mask
# here, rotary positions there), which a subclass says in `attend`.

# %%
#| export model.attention
from __future__ import annotations

import torch.nn.functional as F
from einops import rearrange
from jaxtyping import Bool, Float
from torch import Tensor, nn


class FeedForward(nn.Module):
    """The transformer MLP: Linear -> GELU -> Linear, hidden width `mlp_ratio * d`."""

    def __init__(self, d: int, mlp_ratio: float = 4.0):
        super().__init__()
        hidden = int(round(d * mlp_ratio))
        self.net = nn.Sequential(nn.Linear(d, hidden), nn.GELU(), nn.Linear(hidden, d))

    def forward(self, x: Float[Tensor, "... d"]) -> Float[Tensor, "... d"]:
        return self.net(x)


class PreNormAttention(nn.Module):
    """One pre-norm transformer layer over token sets `N L d`: attention, then an MLP.

    `cond` (same shape as `x`, optional) is added to the normalised tokens that make the
    queries, keys and values. Subclasses change how heads attend by overriding `attend`.
    """

    def __init__(self, d: int, heads: int, mlp_ratio: float = 4.0):
        super().__init__()
        self.heads = heads
        self.norm1 = nn.LayerNorm(d)
        self.qkv = nn.Linear(d, 3 * d)
        self.out = nn.Linear(d, d)
        self.norm2 = nn.LayerNorm(d)
        self.mlp = FeedForward(d, mlp_ratio)

    def forward(self, x: Float[Tensor, "N L d"], cond: Float[Tensor, "N L d"] | None = None,
                **attend_kw) -> Float[Tensor, "N L d"]:
        h = self.norm1(x) if cond is None else self.norm1(x) + cond
        q, k, v = rearrange(self.qkv(h), "n l (three h e) -> three n h l e", three=3, h=self.heads)
        a = self.attend(q, k, v, **attend_kw)
        x = x + self.out(rearrange(a, "n h l e -> n l (h e)"))
        return x + self.mlp(self.norm2(x))

    def attend(self, q: Float[Tensor, "N h L e"], k: Float[Tensor, "N h L e"], v: Float[Tensor, "N h L e"],
               attn_mask: Bool[Tensor, "N 1 1 L"] | None = None) -> Float[Tensor, "N h L e"]:
        return F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)

# %%
#| export
from __future__ import annotations

from einops import rearrange, repeat
from jaxtyping import Bool, Float
from torch import Tensor, nn

from aef_lit.model.attention import FeedForward, PreNormAttention  # noqa: F401  (FeedForward: re-exported)


def key_mask(mask: Bool[Tensor, "B T"]) -> Bool[Tensor, "B T"]:
    """Keys a query may attend to: the real frames, or every frame of a row with none."""
    return mask | ~mask.any(dim=1, keepdim=True)


class TimeLayer(PreNormAttention):
    """The shared pre-norm layer over sequences `N T d`, conditioned on codes `N T d`."""

    def forward(self, x: Float[Tensor, "N T d"], cond: Float[Tensor, "N T d"],
                attn_mask: Bool[Tensor, "N 1 1 T"]) -> Float[Tensor, "N T d"]:
        return super().forward(x, cond, attn_mask=attn_mask)


class TimeOperator(nn.Module):
    """Self-attention along T at every pixel, each frame conditioned on its timecode.

    forward(x `B T D h w`, tcode `B T Dt`, mask `B T`) -> `B T D h w` (residual).
    Pixels never mix; frames with mask False are never attended to.
    """

    def __init__(self, d: int, heads: int, timecode_dim: int, mlp_ratio: float = 4.0, depth: int = 1):
        super().__init__()
        self.time_proj = nn.Linear(timecode_dim, d)
        self.layers = nn.ModuleList([TimeLayer(d, heads, mlp_ratio) for _ in range(depth)])

    def forward(self, x: Float[Tensor, "B T D h w"], tcode: Float[Tensor, "B T Dt"],
                mask: Bool[Tensor, "B T"]) -> Float[Tensor, "B T D h w"]:
        b, _, _, h, w = x.shape
        seq = rearrange(x, "b t d h w -> (b h w) t d")  # one sequence of frames per pixel
        cond = repeat(self.time_proj(tcode), "b t d -> (b h w) t d", h=h, w=w)
        attn_mask = repeat(key_mask(mask), "b t -> (b h w) 1 1 t", h=h, w=w)
        for layer in self.layers:
            seq = layer(seq, cond, attn_mask)
        return rearrange(seq, "(b h w) t d -> b t d h w", b=b, h=h, w=w)


# %% [markdown]
# ## The three properties of §12's defect list
#
# On a random input with a non-square grid and one padded frame per row:
# 1. **Pixels never mix.** Perturb pixel (i, j) of one frame: every other pixel's output,
#    in every frame, is bit-for-bit unchanged.
# 2. **A padded frame has no effect.** Replace its values (and its timestamp): the output
#    at every real frame is identical.
# 3. **Permutation equivariance.** Permute frames together with their timecodes and masks:
#    the output is permuted the same way.

# %%
import matplotlib.pyplot as plt
import torch

from aef_lit.conventions import get_config, seed_everything, select_device
from aef_lit.model.timecodes import timecode_cfg

cfg = get_config(preset)
device = select_device(device)
g = seed_everything(seed)

B, T, h, w = 2, 6, cfg.tile // 8, cfg.tile // 8 + 2
op = TimeOperator(cfg.d_time, cfg.heads_time, cfg.timecode_dim, cfg.mlp_ratio).eval()
x = torch.randn(B, T, cfg.d_time, h, w, generator=g)
t = 18_700 + torch.sort(torch.rand(B, T, generator=g, dtype=torch.float64) * 365, dim=1).values
mask = torch.ones(B, T, dtype=torch.bool)
mask[:, -1] = False
tc = timecode_cfg(t, cfg)
y = op(x, tc, mask)

# 1. pixels never mix
x1 = x.clone()
x1[0, 2, :, 1, 3] += 5.0
d1 = (op(x1, tc, mask) - y).abs().sum(2)  # B T h w
touched = d1.nonzero()[:, 2:].unique(dim=0).tolist()
assert touched == [[1, 3]], f"only pixel (1, 3) may change, got {touched}"

# 2. padded frame: new values and a new timestamp, same output on real frames
x2 = x.clone()
x2[:, -1] = torch.randn(B, cfg.d_time, h, w, generator=g) * 100
tc2 = tc.clone()
tc2[:, -1] = timecode_cfg(t[:, -1] + 1000.0, cfg)
assert torch.equal(op(x2, tc2, mask)[mask], y[mask])

# 3. permuting frames with their timestamps permutes the output
perm = torch.randperm(T, generator=g)
yp = op(x[:, perm], tc[:, perm], mask[:, perm])
torch.testing.assert_close(yp, y[:, perm], atol=1e-5, rtol=1e-5)

# %% [markdown]
# The picture of property 1, beside what the port's `.view` did. Reshaping a channels-last
# `(B, T, H, W, C)` tensor with `.view(B * H * W, T, C)` ignores the axis order: each
# "sequence" it makes holds $T$ consecutive rows of the memory, i.e. mostly neighbouring
# *pixels* of one frame. The same perturbation then changes the output of pixels it should
# never reach.

# %%
def port_view_time_attention(op: TimeOperator, x, tc, mask):
    """The §12 defect, re-created: sequences made with `.view` on a channels-last tensor."""
    b, T_, d, h, w = x.shape
    xl = x.permute(0, 1, 3, 4, 2).contiguous()  # B T H W C, as the port stored it
    seq = xl.view(b * h * w, T_, d)  # wrong: these are not the frames of one pixel
    cond = torch.zeros_like(seq)
    am = torch.ones(b * h * w, 1, 1, T_, dtype=torch.bool)
    out = op.layers[0](seq, cond, am)
    return out.view(b, T_, h, w, d).permute(0, 1, 4, 2, 3)


yv = port_view_time_attention(op, x, tc, mask)
dv = (port_view_time_attention(op, x1, tc, mask) - yv).abs().sum(2)
fig, axes = plt.subplots(2, T, figsize=(2 * T, 4.4))
for k in range(T):
    for r, (dd, who) in enumerate(((d1, "einops"), (dv, "port .view"))):
        axes[r, k].imshow((dd[0, k] > 0).detach().numpy(), cmap="gray_r", vmin=0, vmax=1)
        axes[r, k].set_xticks([])
        axes[r, k].set_yticks([])
        axes[r, k].set_title(f"{who}, frame {k}", fontsize=8)
fig.suptitle("pixels whose output changes when pixel (1, 3) of frame 2 is perturbed (black)")
plt.tight_layout()
plt.show()
leaked = dv.nonzero()[:, 2:].unique(dim=0).tolist()
print("pixels changed by the .view version:", leaked)
assert len(leaked) > 1, "the .view version leaks into other pixels"
