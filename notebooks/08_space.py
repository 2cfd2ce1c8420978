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
# # 8. The Space operator: ViT-like attention over the L/16 grid of each frame
#
# The Space operator is the widest and coarsest: width 1024 on the L/16 grid (8 × 8 for
# $L = 128$), "ViT-like self-attention over the pixels of each frame" (`AEF_NOTES.md` §2,
# {cite}`brown2025alphaearth`). It gives every cell the context of the whole tile, one
# frame at a time; frames meet only in the Time operator.
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
#| default_exp model.space
# %% [markdown]
# ## What we chose
#
# - **A pre-norm ViT layer** (attention, then an MLP of ratio `mlp_ratio`), applied to the
#   $h \cdot w$ tokens of each frame separately (`b t d h w -> (b t) (h w) d`).
# - **2-D position information by rotary embeddings (RoPE), axial.** Half of each head's
#   channels are rotated by the token's row, the other half by its column, each with
#   frequencies $\theta_k = 100^{-k/m}$ per grid cell. With RoPE the attention *score*
#   between two tokens depends only on their **offset**, not on where the tile starts.
#   AEF tiles overlap and are blended at inference (§9 of the notes), so a cell should not
#   care whether it sits at the edge or in the middle of its tile; a learned absolute table
#   would also tie the model to one tile size, while RoPE works for any $h \times w$,
#   square or not. It has no parameters.
# - The head width `d / heads` must be a multiple of 4 (two axes, sin/cos pairs).

# %%
#| export
from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange, repeat
from jaxtyping import Float
from torch import Tensor, nn

from aef_lit.model.attention import PreNormAttention


def rope_2d_angles(h: int, w: int, head_dim: int, base: float = 100.0,
                   device: torch.device | str | None = None) -> Float[Tensor, "hw half"]:
    """Rotation angles of the `h*w` tokens (row-major): rows for the first half of the
    pairs, columns for the second. `half = head_dim // 2` (one angle per channel pair)."""
    m = head_dim // 4
    theta = base ** (-torch.arange(m, dtype=torch.float32, device=device) / m)
    rows = torch.arange(h, dtype=torch.float32, device=device)
    cols = torch.arange(w, dtype=torch.float32, device=device)
    ar = repeat(rows[:, None] * theta, "h m -> (h w) m", w=w)
    ac = repeat(cols[:, None] * theta, "w m -> (h w) m", h=h)
    return torch.cat([ar, ac], dim=-1)


def apply_rope(x: Float[Tensor, "*lead e"], angles: Float[Tensor, "*pos half"]) -> Float[Tensor, "*lead e"]:
    """Rotate consecutive channel pairs of `x` by `angles` (rotary position embedding)."""
    pairs = rearrange(x, "... (k two) -> ... k two", two=2)
    cos, sin = torch.cos(angles), torch.sin(angles)
    x0, x1 = pairs[..., 0], pairs[..., 1]
    out = torch.stack([x0 * cos - x1 * sin, x0 * sin + x1 * cos], dim=-1)
    return rearrange(out, "... k two -> ... (k two)")


class SpaceLayer(PreNormAttention):
    """The shared pre-norm layer (chapter 7) over the tokens `N L d` of a frame, with 2-D RoPE."""

    def __init__(self, d: int, heads: int, mlp_ratio: float = 4.0):
        if (d // heads) % 4:
            raise ValueError(f"head width d/heads = {d // heads} must be a multiple of 4 for 2-D RoPE")
        super().__init__(d, heads, mlp_ratio)

    def forward(self, x: Float[Tensor, "N L d"], angles: Float[Tensor, "L half"]) -> Float[Tensor, "N L d"]:
        return super().forward(x, angles=angles)

    def attend(self, q, k, v, angles: Float[Tensor, "L half"]) -> Tensor:
        return F.scaled_dot_product_attention(apply_rope(q, angles), apply_rope(k, angles), v)


class SpaceOperator(nn.Module):
    """ViT-like self-attention over the `h*w` cells of each frame: `B T D h w` -> same (residual)."""

    def __init__(self, d: int, heads: int, mlp_ratio: float = 4.0, depth: int = 1):
        super().__init__()
        self.head_dim = d // heads
        self.layers = nn.ModuleList([SpaceLayer(d, heads, mlp_ratio) for _ in range(depth)])

    def forward(self, x: Float[Tensor, "B T D h w"]) -> Float[Tensor, "B T D h w"]:
        b, _, _, h, w = x.shape
        tokens = rearrange(x, "b t d h w -> (b t) (h w) d")  # one token set per frame
        angles = rope_2d_angles(h, w, self.head_dim, device=x.device)
        for layer in self.layers:
            tokens = layer(tokens, angles)
        return rearrange(tokens, "(b t) (h w) d -> b t d h w", b=b, h=h, w=w)


# %% [markdown]
# ## Properties
#
# 1. **Frames never mix**: perturbing any cell of one frame changes that frame's output
#    (everywhere: attention is global within a frame) and no other frame's.
# 2. **Non-square grids** work (the L/16 grid of a 128 × 192 tile is 8 × 12).
# 3. **Relative positions only**: the RoPE attention score $q_i \cdot k_j$ is unchanged when
#    both positions shift by the same offset.

# %%
import matplotlib.pyplot as plt

from aef_lit.conventions import get_config, seed_everything, select_device

cfg = get_config(preset)
device = select_device(device)
g = seed_everything(seed)
B, T, h, w = 2, 3, cfg.tile // 16, cfg.tile // 16 + 2
op = SpaceOperator(cfg.d_space, cfg.heads_space, cfg.mlp_ratio).eval()
x = torch.randn(B, T, cfg.d_space, h, w, generator=g)
y = op(x)
assert y.shape == x.shape
x1 = x.clone()
x1[1, 0, :, 0, 1] += 1.0
d1 = (op(x1) - y).abs().sum(2)
assert d1[0].max() == 0 and d1[1, 1:].max() == 0, "other frames untouched"
assert (d1[1, 0] > 0).all(), "global attention within the frame"

e = cfg.d_space // cfg.heads_space
q, k = torch.randn(2, e, generator=g)
big = rope_2d_angles(12, 12, e)  # positions on a 12 x 12 grid, row-major


def score(i, j):
    return apply_rope(q[None], big[i][None]) @ apply_rope(k[None], big[j][None]).T


s_near = score(0 * 12 + 0, 1 * 12 + 2)  # offset (1, 2) from (0, 0)
s_shift = score(5 * 12 + 7, 6 * 12 + 9)  # same offset from (5, 7)
torch.testing.assert_close(s_near, s_shift, atol=1e-4, rtol=1e-4)

# %% [markdown]
# The score of a fixed query/key pair as a function of the offset between them: a
# pattern of offsets, the same wherever the pair sits.

# %%
qa = apply_rope(q[None].expand(144, e), big[0].expand(144, -1))
sc = (qa * apply_rope(k[None].expand(144, e), big)).sum(-1).reshape(12, 12)
qb = apply_rope(q[None].expand(144, e), big[3 * 12 + 3].expand(144, -1))
sc2 = (qb * apply_rope(k[None].expand(144, e), big)).sum(-1).reshape(12, 12)
fig, axes = plt.subplots(1, 3, figsize=(12, 3.6))
axes[0].imshow(sc.numpy(), cmap="RdBu_r")
axes[0].set_title("score of query at (0, 0) vs key position")
axes[1].imshow(sc2.numpy(), cmap="RdBu_r")
axes[1].set_title("query at (3, 3): the same pattern, shifted")
im = axes[2].imshow(torch.log10(d1[1, 0] + 1e-12).detach().numpy(), cmap="magma")
fig.colorbar(im, ax=axes[2], shrink=0.7)
axes[2].set_title("log10 |Δ output|, frame 0, cell (0, 1) changed", fontsize=9)
for ax in axes:
    ax.set_xlabel("column")
    ax.set_ylabel("row")
plt.tight_layout()
plt.show()
torch.testing.assert_close(sc[:9, :9], sc2[3:, 3:], atol=1e-4, rtol=1e-4)
