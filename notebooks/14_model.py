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
# # 14. The model: AEF end to end
#
# This chapter assembles the pieces into one module with the interface every later chapter
# uses (`AEF_NOTES.md` §1–§5) {cite}`brown2025alphaearth`:
#
# | step | chapter | shape |
# |---|---|---|
# | `encode(batch)`: per-source projection to $L/2$, sources concatenated along T, STP encoder | 5–10 | `B T Dp h w` (+ t, mask) |
# | `summarise(enc, periods)`: one query per period, pooled along time, $L/2 \to L$, unit norm | 11 | `B P E H W` |
# | `sample(mu)`: vMF($\mu$, $\kappa = 8000$) in training, $\mu$ in eval | 12 | `B P E H W` |
# | `decode(source, z, u, meta)`: per-source implicit MLP | 13 | `N C_out H W` |
#
# `forward(batch, periods)` is encode + summarise: the embedding $\mu$. The losses
# (chapters 15–19) call the four steps separately, because a training step encodes the
# teacher input once and summarises several periods from it (one per held-out target, §5),
# and encodes the student input once more (§6). `embed(model, batch, periods)` is the
# inference entry point: eval mode, no gradients, $\mu$ at the input resolution.

# %% tags=["parameters"]
# Parameters (papermill injects values here). Defaults are sized for a 2-core CPU.
preset = "tiny"  # model preset: "tiny" (CI), "small", "paper"
device = "auto"  # "auto" = XLA if importable, then CUDA, MPS, CPU
seed = 0
data = "auto"  # "auto" = the real samples if present, else the synthetic generator
run_compile = False  # torch.compile(fullgraph=True) with inductor: ~2 min on a 2-core CPU

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
#| default_exp model

# %% [markdown]
# ## The module
#
# `Encoded` carries what the summariser needs from an encoding: the per-frame features
# and, aligned with them along T, the float64 timestamps and the frame mask. Keeping the
# three together prevents the classic mistake of summarising with the timestamps of a
# different (e.g. unperturbed) input.
#
# Two guards live here because they concern the whole model:
# - *Tile size.* $H$ and $W$ must be multiples of 16 (the Space operator works on the $L/16$
#   grid); any such $H \ne W$ works (the port crashed on non-square inputs, §12). The check is
#   on shapes only, so it is free under `torch.compile`.
# - *Masked frames.* The projectors zero masked frames (chapter 5) and the encoder zeroes
#   their features (chapter 10); the summariser gives them weight exactly zero (chapter 11).
#   A padded or dropped frame therefore cannot change the embedding, whatever its values.

# %%
#| export
from __future__ import annotations

from dataclasses import dataclass

import torch
from jaxtyping import Bool, Float, Float64
from torch import Tensor, nn

from aef_lit.conventions import Batch, ModelConfig, batch_to, get_config
from aef_lit.decoders import Decoders
from aef_lit.encoder import STPEncoder, count_parameters
from aef_lit.projectors import InputProjection
from aef_lit.summariser import Summariser
from aef_lit.vmf import VMFBottleneck


@dataclass
class Encoded:
    """An encoded input: per-frame features on the L/2 grid, with their timestamps and mask."""

    features: Float[Tensor, "B T D h w"]
    t: Float64[Tensor, "B T"]
    mask: Bool[Tensor, "B T"]


class AEF(nn.Module):
    """AlphaEarth Foundations: encode, summarise per period, vMF bottleneck, implicit decoders."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.projection = InputProjection(cfg)
        self.encoder = STPEncoder(cfg)
        self.summariser = Summariser(cfg)
        self.bottleneck = VMFBottleneck(cfg.kappa, dim=2)
        self.decoders = Decoders(cfg)

    def encode(self, batch: Batch) -> Encoded:
        """Input sources only (target-only sources are ignored); frame_mask respected."""
        for spec in self.cfg.input_sources:
            H, W = batch[spec.name].x.shape[-2:]
            if H % 16 or W % 16:
                raise ValueError(f"H and W must be multiples of 16, got {H}x{W} for {spec.name!r}")
        x, t, mask = self.projection(batch)
        return Encoded(self.encoder(x, t, mask), t, mask)

    def summarise(self, enc: Encoded, periods: Float64[Tensor, "B P 2"]) -> Float[Tensor, "B P E H W"]:
        """Unit-norm embeddings mu of each period [t_s, t_e), at the input resolution."""
        return self.summariser(enc.features, enc.t, enc.mask, periods)

    def forward(self, batch: Batch, periods: Float64[Tensor, "B P 2"]) -> Float[Tensor, "B P E H W"]:
        return self.summarise(self.encode(batch), periods)

    def sample(self, mu: Float[Tensor, "B P E H W"], generator: torch.Generator | None = None
               ) -> Float[Tensor, "B P E H W"]:
        """z ~ vMF(mu, kappa) in training mode, mu itself in eval mode."""
        return self.bottleneck(mu, generator=generator)

    def decode(self, source: str, z: Float[Tensor, "N E H W"], t_norm: Float[Tensor, "N"],
               meta: Float[Tensor, "N M"] | None = None) -> Float[Tensor, "N C_out H W"]:
        """Source `source` at instants t_norm in [0, 1) of the period of z (logits if categorical)."""
        return self.decoders.decode(source, z, t_norm, meta)

    def parameter_counts(self) -> dict[str, int]:
        """Parameters per part, and the total."""
        parts = {name: count_parameters(m) for name, m in self.named_children()}
        return {**parts, "total": count_parameters(self)}


def build_model(preset: str | ModelConfig = "tiny", **overrides) -> AEF:
    """An AEF model from a preset name (`tiny`, `small`, `paper`) or a ModelConfig, with overrides."""
    return AEF(get_config(preset, **overrides))


def embed(model: AEF, batch: Batch, periods: Float64[Tensor, "B 2"] | Float64[Tensor, "B P 2"]
          ) -> Float[Tensor, "B E H W"] | Float[Tensor, "B P E H W"]:
    """Embeddings mu (eval mode, no gradients) for one period per row (`B 2`) or several (`B P 2`).

    The batch and periods are moved to the model's device; the model's train/eval mode is restored.
    """
    if periods.ndim not in (2, 3) or periods.shape[-1] != 2:
        raise ValueError(f"periods must be (B, 2) or (B, P, 2), got {tuple(periods.shape)}")
    if periods.dtype != torch.float64:
        raise TypeError("periods must be float64 days since 1970-01-01")
    dev = next(model.parameters()).device
    batch = batch_to(batch, dev)
    p3 = periods if periods.ndim == 3 else periods[:, None]
    if dev.type != "mps":
        p3 = p3.to(dev)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            mu = model(batch, p3)
    finally:
        model.train(was_training)
    return mu if periods.ndim == 3 else mu[:, 0]


# %% [markdown]
# ## A first forward pass
#
# The tiny preset on a random batch (chapter 1's `random_batch`: each input source with a
# padded frame) of a *non-square* tile, two periods at once.

# %%
import time

import torch.nn.functional as F

from aef_lit.conventions import random_batch, seed_everything, select_device

device = select_device(device)
g = seed_everything(seed)
model = build_model(preset).to(device)
cfg = model.cfg
H, W = cfg.tile, cfg.tile + 16
batch = random_batch(cfg, B=2, T=5, H=H, W=W, generator=g)
t0 = 18_628.0
periods = torch.tensor([[[t0, t0 + 180], [t0 + 180, t0 + 365]]] * 2, dtype=torch.float64)
start = time.perf_counter()
mu = embed(model, batch, periods)
print(f"{cfg.name}: mu {tuple(mu.shape)} in {time.perf_counter() - start:.2f} s; parameters:",
      {k: f"{v:,}" for k, v in model.parameter_counts().items()})
assert mu.shape == (2, 2, cfg.embed_dim, H, W)
assert torch.allclose(mu.norm(dim=2), torch.ones(()), atol=1e-5)

# %% [markdown]
# ## The properties of an embedding
#
# Each check demonstrates one promise of §1–§3 on the *whole* model (the Space operator and
# the pyramid legitimately mix pixels, so pixel locality is checked on the summariser alone,
# chapter 11):
# 1. a masked (padded or dropped) frame has no effect, whatever its values;
# 2. frames are a *set*: permuting them together with their timestamps changes nothing,
#    while changing only the timestamps changes the embedding;
# 3. the embedding depends on the period, and a period with no frame inside it (before the
#    first frame, after the last) still gives unit vectors (extrapolation);
# 4. several periods in one pass equal one pass per period.

# %%
def same(a, b, atol=2e-5):
    return torch.allclose(a, b, atol=atol)


ref = embed(model, batch, periods)
# 1. masked frames: scramble the values of every padded frame of every input source
scrambled = {k: v.replace(x=torch.where(v.frame_mask[:, :, None, None, None], v.x, torch.randn_like(v.x) * 100))
             for k, v in batch.items()}
assert torch.equal(embed(model, scrambled, periods), ref), "a masked frame must have no effect"
# 2. permute the frames of every input source together with t and mask; then shift t alone
permuted = {}
for k, v in batch.items():
    perm = torch.randperm(v.x.shape[1], generator=g)
    permuted[k] = v.replace(x=v.x[:, perm], t=v.t[:, perm], frame_mask=v.frame_mask[:, perm], weight=v.weight[:, perm],
                            meta=None if v.meta is None else v.meta[:, perm])
assert same(embed(model, permuted, periods), ref), "frames are a set"
shifted = {k: v.replace(t=v.t + 40.0) for k, v in batch.items()}
assert (embed(model, shifted, periods) - ref).abs().max() > 1e-4, "timestamps must matter"
# 3. periods: different periods differ; empty periods (before / after every frame) work
outside = torch.tensor([[[t0 - 400, t0 - 200], [t0 + 500, t0 + 700]]] * 2, dtype=torch.float64)
mu_out = embed(model, batch, outside)
assert torch.isfinite(mu_out).all() and same(mu_out.norm(dim=2), torch.ones(()))
assert (ref[:, 0] - ref[:, 1]).norm(dim=1).min() > 1e-4
# 4. several periods in one pass == one pass per period
assert same(embed(model, batch, periods[:, 1]), ref[:, 1])
print("masked frames, frame order, timestamps, periods: all as promised")

# %% [markdown]
# ## One tiny training step: every parameter learns
#
# A parameter that receives no gradient is dead weight (or a bug: a branch that was never
# connected). We run the full training path once: encode, summarise three periods, sample
# from the vMF, decode every source (input sources at a frame time, target-only sources at
# mid-period, S1 with its orbit metadata), and a sum of L1 / cross-entropy terms. Every
# parameter of the model must get a non-zero gradient.

# %%
from aef_lit.timecodes import normalise_in_period


def tiny_step_loss(model, batch, periods, generator=None):
    enc = model.encode(batch)
    z = model.sample(model.summarise(enc, periods), generator=generator)
    loss = 0.0
    for k, spec in enumerate(model.cfg.target_sources):
        sb = batch[spec.name]
        p = k % periods.shape[1]
        u = normalise_in_period(sb.t[:, 0], periods[:, p])
        meta = sb.meta[:, 0] if sb.meta is not None else None
        y = model.decode(spec.name, z[:, p], u, meta)
        if spec.categorical:
            loss = loss + F.cross_entropy(y, sb.x[:, 0, 0].long())
        else:
            loss = loss + (y - sb.x[:, 0]).abs().mean()
    return loss


model.train()
model.zero_grad()
three = torch.tensor([[[t0, t0 + 120], [t0 + 100, t0 + 300], [t0 + 250, t0 + 365]]] * 2, dtype=torch.float64)
loss = tiny_step_loss(model, batch, three, generator=g)
loss.backward()
dead = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
print(f"loss {loss.item():.3f}; {sum(1 for _ in model.parameters())} parameter tensors, without gradient: {dead}")
assert not dead, dead

# %% [markdown]
# ## Static shapes: `torch.compile(fullgraph=True)`
#
# A TPU (XLA) traces the step once and replays it; anything data-dependent in Python (a
# `.item()`, an `if` on a tensor value, a loop whose length depends on data, a rejection loop
# in the sampler) breaks the trace. `torch.compile(..., fullgraph=True)` on the CPU refuses
# the same things, so it is the proxy we can run here: the forward pass compiles as one graph.
# The inductor build takes about two minutes on a 2-core CPU, so it is off by default here
# (`run_compile = True` to see it); `tests/test_model.py` checks the one-graph property of the
# forward pass *and* the vMF sample with dynamo alone on every run, and the inductor build in
# a slow test.

# %%
if run_compile:
    model.eval()
    compiled = torch.compile(model, fullgraph=True)
    start = time.perf_counter()
    with torch.no_grad():
        out = compiled(batch, periods)
    print(f"compiled forward (incl. compilation): {time.perf_counter() - start:.1f} s")
    assert torch.allclose(out, ref, atol=1e-4)

# %% [markdown]
# ## The `paper` preset
#
# The full-size model is built on PyTorch's `meta` device (shapes, no memory) to count its
# parameters per part; the paper reports about 480 M for the model it kept (§2). A real
# forward pass of `paper` on one 128² tile is measured by `tools/bench_forward.py` and in a
# slow test (B = 1, 8 frames, 128²: about 45 s on our shared 2-core CPU against 0.7 s for
# `tiny`); it is too slow for a notebook on a 2-core CPU. Nearly all parameters sit in the
# encoder's 15 STP blocks; the summariser and the five decoders are under 0.5 % of the model.

# %%
import pandas as pd

counts = {}
for name in ("tiny", "small", "paper"):
    with torch.device("meta"):
        counts[name] = build_model(name).parameter_counts()
table = pd.DataFrame(counts).map(lambda n: f"{n / 1e6:,.2f} M")
table

# %% [markdown]
# Where the parameters sit, drawn: per part and preset on a log scale, with the paper's
# ~480 M (§2) as a reference. The encoder dominates at every size; `paper` lands 5 % above
# the paper's figure because each operator has two layers per block (chapter 10).

# %%
import matplotlib.pyplot as plt
import numpy as np

parts = [p for p in counts["paper"] if p != "total"]
fig, ax = plt.subplots(figsize=(8, 3))
width = 0.27
for i, name in enumerate(counts):
    ax.bar(np.arange(len(parts) + 1) + (i - 1) * width, [counts[name][p] for p in parts] + [counts[name]["total"]],
           width, label=name)
ax.axhline(480e6, color="k", ls="--", lw=1)
ax.text(len(parts) + 0.45, 480e6, "paper: ~480 M", va="bottom", ha="right", fontsize=8)
ax.set_xticks(np.arange(len(parts) + 1), parts + ["total"])
ax.set_yscale("log")
ax.set_ylabel("parameters")
ax.set_title("parameters per part of the model, by preset")
ax.legend()
plt.tight_layout()
plt.show()
assert counts["paper"]["encoder"] > 0.95 * counts["paper"]["total"]
