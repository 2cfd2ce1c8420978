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
# # 16. Batch uniformity: keeping embeddings spread over the sphere
#
# Reconstruction alone does not stop an encoder from crowding every embedding into a small
# cap of $S^{63}$: the decoders can still read a crowded code, but linear and kNN probes
# (chapter 23) get worse. AlphaEarth Foundations {cite}`brown2025alphaearth` adds a *batch
# uniformity* term (`AEF_NOTES.md` §7, Eq. 4):
#
# $$ \mathcal{L}_{\text{unif}} = \frac{1}{|B|\,H W}\sum_{b, h, w} \left|\, u_{b,h,w} \cdot u'_{b,h,w} \right|, $$
#
# where $u'$ is the batch of embeddings **rotated along the batch axis**: the partner of
# pixel $(h, w)$ of row $b$ is pixel $(h, w)$ of row $b+1$, another sample, usually from
# another place on Earth. Minimising the *absolute* dot product pushes unrelated samples
# towards orthogonality (not towards antipodes, which a plain dot product would reward).
# The paper reports that $b = 0$ and $b = 0.1$ were both worse than $b = 0.05$.
#
# This chapter exports `aef_lit.objective.uniformity`: one function, and three checks of
# what it must do.

# %% tags=["parameters"]
# Parameters (papermill injects values here). Defaults are sized for a 2-core CPU.
preset = "tiny"  # model preset: "tiny" (CI), "small", "paper"
device = "auto"  # "auto" = XLA if importable, then CUDA, MPS, CPU
seed = 0
data = "auto"  # unused here: this chapter needs only random unit vectors

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
#| default_exp objective.uniformity
# %% [markdown]
# ## The loss
#
# The embeddings of one pass are `B P E H W` (rows, periods, 64 channels, pixels) or
# `B E H W`. The partner batch is `torch.roll(u, 1, dim=0)`: a rotation along the batch axis
# only, so every pixel meets the *same* pixel of another row. The known port (§12) rolled
# along a pixel axis instead: it compared neighbouring pixels of one image, which are
# *supposed* to be similar, and so fought spatial smoothness rather than collapse.
#
# With a single row there is no other sample; the loss is then zero (and the caller is told
# once through `logging`), rather than the self-similarity 1 that rolling a batch of one
# would give.

# %%
#| export
from __future__ import annotations

import logging

import torch
from einops import reduce
from jaxtyping import Float
from torch import Tensor

log = logging.getLogger("aef_lit")
_warned_single_row = False


def batch_partners(u: Float[Tensor, "B ..."], shift: int = 1) -> Float[Tensor, "B ..."]:
    """The partner batch u': `u` rotated by `shift` rows along the batch axis (dim 0) only."""
    return torch.roll(u, shifts=shift, dims=0)


def batch_uniformity(u: Float[Tensor, " B *rest"], embed_dim: int = -3,
                     shift: int = 1) -> Float[Tensor, ""]:
    """Mean |u . u'| between each embedding and its partner from another sample (§7, Eq. 4).

    Args:
        u: unit embeddings with the batch on dim 0 and the embedding on `embed_dim`
            (`B E H W`, `B P E H W` with the default -3, or `B E` with `embed_dim=-1`).
        embed_dim: the axis holding the 64 embedding channels.
        shift: rotation along the batch axis (1: row b meets row b+1).

    Returns:
        A scalar in [0, 1] for unit vectors (0 when B = 1: there is no other sample).
    """
    global _warned_single_row
    if u.shape[0] < 2:
        if not _warned_single_row:
            log.warning("batch_uniformity: a batch of one row has no partner sample; the term is 0")
            _warned_single_row = True
        return u.sum() * 0.0
    u = u.float()
    dots = (u * batch_partners(u, shift)).sum(dim=embed_dim)
    return reduce(dots.abs(), "... -> ", "mean")


# %% [markdown]
# ## What value to expect
#
# For two independent uniform random unit vectors in $\mathbb{R}^{E}$, $u\cdot v$ has mean 0
# and variance $1/E$, and for $E = 64$ it is very nearly Gaussian, so
# $\mathbb{E}|u\cdot v| \approx \sqrt{2/\pi}/\sqrt{E} = \sqrt{2/\pi}/8 \approx 0.0997$.
# That is the floor a well-spread batch reaches; a collapsed batch (every embedding the
# same) gives exactly 1. The exact value is
# $\mathbb{E}|u\cdot v| = \Gamma(E/2)\,/\,(\sqrt{\pi}\,\Gamma((E+1)/2))$.

# %%
import math

import matplotlib.pyplot as plt
import torch.nn.functional as F

from aef_lit.conventions import EMBED_DIM, seed_everything, select_device

device = select_device(device)
g = seed_everything(seed)
E = EMBED_DIM
exact = math.exp(math.lgamma(E / 2) - math.lgamma((E + 1) / 2)) / math.sqrt(math.pi)

u_random = F.normalize(torch.randn(16, E, 8, 8, generator=g), dim=1)
u_collapsed = F.normalize(torch.randn(E, generator=g), dim=0)[None, :, None, None].expand(16, E, 8, 8)
val_random = batch_uniformity(u_random)
val_collapsed = batch_uniformity(u_collapsed)
print(f"uniform random on S^63: {val_random:.4f} (exact E|u.v| = {exact:.4f}); collapsed: {val_collapsed:.4f}")
assert abs(val_random - exact) < 0.01
assert abs(val_collapsed - 1.0) < 1e-5

# %% [markdown]
# ## The property that catches the port's defect
#
# If every pixel of one sample has the *same* embedding (a perfectly smooth field, e.g. a
# uniform lake), the loss must not care: it only compares *different samples*. A loss
# rolled along a pixel axis would jump to 1 for that sample.

# %%
u_smooth = u_random.clone()
u_smooth[3] = u_random[3, :, :1, :1]  # row 3: all pixels equal to its first pixel
u_smooth = F.normalize(u_smooth, dim=1)
val_smooth = batch_uniformity(u_smooth)
pixel_rolled = (u_smooth * torch.roll(u_smooth, 1, dims=-1)).sum(1).abs()[3].mean()
print(f"random: {val_random:.4f}; one row spatially constant: {val_smooth:.4f}; "
      f"the port's pixel-roll on that row: {pixel_rolled:.3f}")
assert abs(val_smooth - val_random) < 0.02
assert pixel_rolled > 0.999

# %% [markdown]
# The same function serves the `B P E H W` embeddings of one training pass (several
# periods): the rotation is still along `B` only, so two periods of the same row are never
# compared (they may legitimately be close).

# %%
u_periods = F.normalize(torch.randn(8, 3, E, 4, 4, generator=g), dim=2)
assert abs(batch_uniformity(u_periods) - exact) < 0.02
same_row_twice = u_periods.clone()
same_row_twice[:, 1] = same_row_twice[:, 0]  # two identical periods per row: still no penalty
assert abs(batch_uniformity(same_row_twice) - batch_uniformity(u_periods)) < 0.02

# %% [markdown]
# ## The loss falls as a batch spreads out
#
# A picture of what the term rewards: start from a collapsed batch (all rows within a small
# cap around one direction) and minimise the loss by gradient descent on the vectors
# themselves. It falls from near 1, through the random-pair value of about 0.1, and below
# it: with $B = 32 \le E = 64$ rows the partners can all be made exactly orthogonal. In
# training, the reconstruction term keeps embeddings where the data put them, and the
# uniformity term only stops them from crowding together.

# %%
base = F.normalize(torch.randn(E, generator=g), dim=0)
v = (base[None] + 0.05 * torch.randn(32, E, generator=g)).requires_grad_(True)
opt = torch.optim.SGD([v], lr=0.5)
curve = []
for step in range(150):
    loss = batch_uniformity(F.normalize(v, dim=-1), embed_dim=-1)
    opt.zero_grad()
    loss.backward()
    opt.step()
    curve.append(float(loss))
assert curve[0] > 0.8 and curve[-1] < exact, (curve[0], curve[-1])

fig, ax = plt.subplots(1, 2, figsize=(10, 3.2))
ax[0].plot(curve)
ax[0].axhline(exact, ls="--", c="gray", label=r"$\mathbb{E}|u\cdot v|$ on $S^{63}$")
ax[0].set_xlabel("gradient step")
ax[0].set_ylabel("batch uniformity")
ax[0].set_title("from a collapsed batch to a spread one")
ax[0].legend()
dots = (u_random * batch_partners(u_random)).sum(1).flatten()
ax[1].hist(dots.numpy(), bins=40, density=True, alpha=0.7, label="random pairs")
xs = torch.linspace(-0.5, 0.5, 200)
ax[1].plot(xs, torch.exp(-xs**2 * E / 2) * math.sqrt(E / (2 * math.pi)), label=r"$N(0, 1/64)$")
ax[1].set_xlabel(r"$u\cdot u'$")
ax[1].set_title("dot products of partners from another sample")
ax[1].legend()
plt.tight_layout()
plt.show()

# %% [markdown]
# **Summary.** `batch_uniformity(u)` is the mean absolute dot product between each pixel
# embedding and the same pixel of the next row (rotation along `B` only). It is ≈ 0.1 for a
# batch spread uniformly over $S^{63}$, 1 for a collapsed batch, blind to how smooth a
# single sample is, and zero for a one-row batch. Chapter 19 weights it with $b = 0.05$.
