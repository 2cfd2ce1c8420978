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
# # 6. The Precision operator: 3×3 convolutions on the L/2 grid
#
# Of the three STP operators, Precision keeps the fine detail: it works on the L/2 grid
# (64 × 64 for $L = 128$) at the smallest width (128 in the paper) with "3×3 convolutions
# per frame" (`AEF_NOTES.md` §2, §S2.4 of {cite}`brown2025alphaearth`). It never looks at
# other frames, and it sees only a small neighbourhood: long-range context reaches it
# through the pyramid exchange (chapter 9) from the Space and Time operators.
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
#| default_exp model.precision
# %% [markdown]
# ## What we chose
#
# The paper gives the kernel size and the grid, not the block. Ours is a pre-norm residual
# block, the same skeleton as the two attention operators so that all three read alike:
#
# $$ x \leftarrow x + \mathrm{Conv}_{3\times3}\big(\mathrm{GELU}(\mathrm{Conv}_{3\times3}(\mathrm{LN}(x)))\big) $$
#
# - **LayerNorm over channels at each pixel of each frame**, never over frames: a padded
#   frame must not influence any other frame, not even through normalisation statistics
#   (a BatchNorm or a GroupNorm over `T` would leak it).
# - **Two convolutions, hidden width = `d`** (no expansion): a 5×5 receptive field per
#   block, and 15 blocks reach 61 × 61 cells on their own; the exchange with Space gives the
#   rest. Frames are folded into the batch axis (`(b t)`), so frames never meet here.

# %%
#| export
from __future__ import annotations

from einops import rearrange
from jaxtyping import Float
from torch import Tensor, nn


class PrecisionOperator(nn.Module):
    """Pre-norm residual 3x3 conv block applied to every frame independently: `B T D h w` -> same."""

    def __init__(self, d: int, hidden: int | None = None):
        super().__init__()
        hidden = hidden or d
        self.norm = nn.LayerNorm(d)
        self.conv1 = nn.Conv2d(d, hidden, 3, padding=1)
        self.act = nn.GELU()
        self.conv2 = nn.Conv2d(hidden, d, 3, padding=1)

    def forward(self, x: Float[Tensor, "B T D h w"]) -> Float[Tensor, "B T D h w"]:
        b = x.shape[0]
        y = self.norm(rearrange(x, "b t d h w -> (b t) h w d"))  # LN over channels only
        y = self.conv2(self.act(self.conv1(rearrange(y, "bt h w d -> bt d h w"))))
        return x + rearrange(y, "(b t) d h w -> b t d h w", b=b)


# %% [markdown]
# ## The property: local, and per frame
#
# We perturb one cell of one frame and look where the output changes: only inside the
# 5 × 5 window around that cell, and only in that frame. This is the receptive field
# argument made visible.

# %%
import matplotlib.pyplot as plt
import torch

from aef_lit.conventions import get_config, seed_everything, select_device

cfg = get_config(preset)
device = select_device(device)
g = seed_everything(seed)
op = PrecisionOperator(cfg.d_precision)
h, w = cfg.tile // 2, cfg.tile // 2 + 8  # non-square on purpose
x = torch.randn(2, 3, cfg.d_precision, h, w, generator=g)
y = op(x)
assert y.shape == x.shape
x2 = x.clone()
x2[0, 1, :, 6, 9] += 1.0
change = (op(x2) - y).abs().sum(2)  # B T h w
assert change[0, [0, 2]].max() == 0 and change[1].max() == 0, "other frames and rows untouched"
rows, cols = change[0, 1].nonzero().T
assert rows.min() >= 4 and rows.max() <= 8 and cols.min() >= 7 and cols.max() <= 11, "5x5 receptive field"

# %%
fig, axes = plt.subplots(1, 3, figsize=(11, 3.2))
for k, ax in enumerate(axes):
    ax.imshow(change[0, k].detach().numpy(), cmap="magma")
    ax.set_title(f"|Δ output|, frame {k}" + (" (perturbed at (6, 9))" if k == 1 else ""))
    ax.set_xlabel("L/2 column")
axes[0].set_ylabel("L/2 row")
plt.tight_layout()
plt.show()
