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
# # 10. The STP encoder
#
# Chapters 5–9 built the parts; this chapter assembles them into the Space–Time–Precision
# encoder of `AEF_NOTES.md` §2 (§S2.4 of {cite}`brown2025alphaearth`): per-source
# projectors onto the L/2 grid, **15 STP blocks**, each running the Space (L/16, width
# 1024), Time (L/8, 512) and Precision (L/2, 128) operators side by side and ending with the
# learned Laplacian-pyramid exchange, then a final learned resampling to L/2: one feature
# map per input frame. The paper reports about **480M** parameters for the model it kept.
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
#| default_exp model.encoder
# %% [markdown]
# ## What we chose
#
# - **Initial states by downsampling the projected input.** The projectors (chapter 5)
#   give the precision state $p_0$ on L/2. The time and space states start as learned
#   REDUCEs of it (chapter 9's `Downsample`, ×4 to L/8 and ×8 to L/16, projecting to
#   their widths): every operator sees the input from block 1 on.
# - **Timecodes once.** The frames' codes (chapter 4) are computed once from float64 days
#   and handed to the Time operator of every block.
# - **Two layers per operator per block** (`OPERATOR_DEPTH = 2`, a module constant, not a
#   config field). The paper gives the widths and the block count but not the depth of an
#   operator. With one layer each, the `paper` preset has about 270M parameters; with
#   two, about 500M, within 5 % of the paper's ~480M (counted below). The deeper reading
#   is also the more plausible one: a ViT "layer" of width 1024 is 12.6M parameters and
#   the space operator dominates the count.
# - **Padded frames never influence other frames.** Only the Time operator mixes frames,
#   and it masks them as keys; every norm is a LayerNorm over channels; resampling is per
#   frame. The encoder also writes zeros at padded frames of its output, so nothing
#   downstream can read garbage there; a padded frame's input values then change nothing
#   at all in the output (tested).
# - **Static shapes.** No `.item()`, no Python branches on tensor values, masks instead of
#   dropped frames: `torch.compile(fullgraph=True)` traces the whole encoder in one graph.
#   In eager mode (below, "Memory and time") the encoder skips the frames a row lacks;
#   under `torch.compile` it keeps the static path.

# %%
#| export
from __future__ import annotations

import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor, nn

from aef_lit.conventions import ModelConfig
from aef_lit.model.precision import PrecisionOperator
from aef_lit.model.pyramid import Downsample, FinalResample, PyramidExchange
from aef_lit.model.space import SpaceOperator
from aef_lit.model.time import TimeOperator
from aef_lit.model.timecodes import timecode_cfg

OPERATOR_DEPTH = 2
"""Layers per operator per STP block (open in the paper; 2 puts `paper` near its ~480M)."""


def count_parameters(module: nn.Module) -> int:
    """Number of (unique) parameters of a module; works on the meta device too."""
    return sum(p.numel() for p in module.parameters())


class STPBlock(nn.Module):
    """Space, Time and Precision side by side, then the pyramid exchange."""

    def __init__(self, cfg: ModelConfig, depth: int = OPERATOR_DEPTH):
        super().__init__()
        self.space = SpaceOperator(cfg.d_space, cfg.heads_space, cfg.mlp_ratio, depth)
        self.time = TimeOperator(cfg.d_time, cfg.heads_time, cfg.timecode_dim, cfg.mlp_ratio, depth)
        self.precision = nn.Sequential(*(PrecisionOperator(cfg.d_precision) for _ in range(depth)))
        self.exchange = PyramidExchange(cfg)

    def forward(self, s: Float[Tensor, "B T Ds hs ws"], t: Float[Tensor, "B T Dt ht wt"],
                p: Float[Tensor, "B T Dp hp wp"], tcode: Float[Tensor, "B T Dc"],
                mask: Bool[Tensor, "B T"]) -> tuple[Tensor, Tensor, Tensor]:
        return self.exchange(self.space(s), self.time(t, tcode, mask), self.precision(p))


def channels_last(x: Float[Tensor, "B T D h w"]) -> Float[Tensor, "B T D h w"]:
    """The same values with channels innermost in memory (`B T h w D` strides).

    Every channel LayerNorm then reads contiguous rows and the 3x3 convolutions take the
    layout as it is: no copy between a norm and a convolution (the values are unchanged).
    """
    return x.permute(0, 1, 3, 4, 2).contiguous().permute(0, 1, 4, 2, 3)


def packed_order(mask: Bool[Tensor, "B T"]) -> Int[Tensor, "B Tp"] | None:
    """Per row, the indices of its real frames first (in order), cut to the longest row.

    None when every column holds a real frame of some row (nothing to skip).
    """
    n = int(mask.sum(dim=1).max().clamp_min(1))
    if n == mask.shape[1]:
        return None
    return torch.argsort((~mask).to(torch.int8), dim=1, stable=True)[:, :n]


class STPEncoder(nn.Module):
    """The STP encoder: projected frames `B T Dp H/2 W/2` -> features `B T Dp H/2 W/2`.

    `t` are float64 days (B T), `mask` True for real frames; padded frames come out as zeros
    and never influence real ones. H and W are any multiples of 16.

    `pack_frames` (default on) runs the blocks on each row's real frames only, so frames a
    row lacks (padding, held-out targets, the student's dropped frames) cost nothing; the
    result is the static path's to float rounding. Under `torch.compile` the static path
    runs (no packing, static shapes).
    """

    def __init__(self, cfg: ModelConfig, depth: int = OPERATOR_DEPTH):
        super().__init__()
        self.cfg = cfg
        self.init_time = Downsample(cfg.d_precision, cfg.d_time, 4)
        self.init_space = Downsample(cfg.d_precision, cfg.d_space, 8)
        self.blocks = nn.ModuleList(STPBlock(cfg, depth) for _ in range(cfg.n_blocks))
        self.final = FinalResample(cfg)
        self.pack_frames = True

    def forward(self, x: Float[Tensor, "B T Dp hp wp"], t: Float[Tensor, "B T"],
                mask: Bool[Tensor, "B T"]) -> Float[Tensor, "B T Dp hp wp"]:
        order = packed_order(mask) if self.pack_frames and not torch.compiler.is_compiling() else None
        if order is None:
            return self.encode_frames(x, t, mask)
        rows = torch.arange(x.shape[0], device=x.device)[:, None]
        y = self.encode_frames(x[rows, order], t[rows, order], mask[rows, order])
        out = y.new_zeros(x.shape[:2] + y.shape[2:])
        out[rows, order] = y
        return out

    def encode_frames(self, x: Float[Tensor, "B T Dp hp wp"], t: Float[Tensor, "B T"],
                      mask: Bool[Tensor, "B T"]) -> Float[Tensor, "B T Dp hp wp"]:
        """The blocks on every frame given (static shapes): what `forward` runs after packing."""
        tcode = timecode_cfg(t, self.cfg)
        x = channels_last(x)
        p, tt, s = x, self.init_time(x), self.init_space(x)
        for block in self.blocks:
            s, tt, p = block(s, tt, p, tcode, mask)
        y = self.final(s, tt, p)
        return torch.where(mask[:, :, None, None, None], y, torch.zeros((), dtype=y.dtype, device=y.device))


# %% [markdown]
# ## A forward pass
#
# A random batch of the chosen preset, projected by chapter 5's `InputProjection`, then
# encoded, on a non-square tile.

# %%
import time as _time

import matplotlib.pyplot as plt
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch

from aef_lit.conventions import PRESETS, get_config, random_batch, seed_everything, select_device
from aef_lit.model.projectors import InputProjection

cfg = get_config(preset)
device = select_device(device)
g = seed_everything(seed)
proj, enc = InputProjection(cfg).to(device), STPEncoder(cfg).to(device).eval()
batch = random_batch(cfg, B=2, T={"s2": 4, "s1": 2, "landsat": 2}, H=cfg.tile, W=cfg.tile + 16, generator=g)
batch = {k: v.to(device) for k, v in batch.items()}
with torch.no_grad():
    x, t, mask = proj(batch)
    t0 = _time.perf_counter()
    y = enc(x, t, mask)
    dt = _time.perf_counter() - t0
print(f"{cfg.name}: in {tuple(x.shape)} -> out {tuple(y.shape)} in {dt:.2f} s on {device}; "
      f"{count_parameters(proj) + count_parameters(enc):,} parameters")
assert y.shape == x.shape and torch.isfinite(y).all()
assert (y[~mask] == 0).all()

# %% [markdown]
# ## The properties, end to end
#
# The operator chapters proved them for each part; here they are for the whole stack.
# 1. A padded frame: new values, the output is identical (all of it).
# 2. Permuting frames with their timestamps and masks permutes the output.
# 3. Time matters: the same frames stamped with other dates give other features.

# %%
with torch.no_grad():
    x2 = x.clone()
    x2[~mask] = torch.randn(x2[~mask].shape, generator=g).to(device) * 10
    assert torch.equal(enc(x2, t, mask), y), "a padded frame must change nothing"
    perm = torch.randperm(x.shape[1], generator=g).to(device)
    torch.testing.assert_close(enc(x[:, perm], t[:, perm], mask[:, perm]), y[:, perm], atol=1e-4, rtol=1e-4)
    assert not torch.allclose(enc(x, t + 100.0, mask), y, atol=1e-3)

# %% [markdown]
# **`torch.compile(fullgraph=True)`.** A graph break (a `.item()`, a branch on data) would
# raise here. We trace with the `eager` backend, which checks exactly that, on a one-block
# encoder: the loop over blocks is unrolled Python, so one block exercises every code path
# at half the tracing time. The tests also compile with the default (inductor) backend
# (marked slow: about a minute on two cores).

# %%
enc1 = STPEncoder(cfg.replace(n_blocks=1)).to(device).eval()
compiled = torch.compile(enc1, fullgraph=True, backend="eager")
with torch.no_grad():
    torch.testing.assert_close(compiled(x, t, mask), enc1(x, t, mask))

# %% [markdown]
# ## Memory and time
#
# Training keeps, for the backward pass, every intermediate that a gradient needs: for the
# encoder that is most of the step's memory, since the Precision lane and the pyramid
# exchange work at L/2 on every frame (`tools/profile_memory.py` charges each saved tensor
# to the part that saved it). Three economies change how much is kept or computed, never
# what comes out (the measured effect of each is in the lab notes, "Performance"):
#
# 1. **Channels innermost.** The states are laid out `B T h w D` in memory while their
#    shape stays `B T D h w`: a channel LayerNorm is then a norm over contiguous rows and a
#    convolution reads the layout directly, so the copies between them disappear (the
#    values are bit-identical; an embed at the port's widths took 0.82× the time).
# 2. **Packing frames.** A frame a row lacks (padding, the held-out target, a frame the
#    student lost) is computed and then zeroed in the static path. Since such a frame
#    never influences a real one, the encoder can run on each row's real frames only
#    (`packed_order`) and write zeros back: the student, which loses about half its frames,
#    then costs about half.
# 3. **Recomputing blocks.** Activation checkpointing keeps only each block's three input
#    states and runs the block again during the backward pass (`torch.utils.checkpoint`):
#    one more forward pass of the blocks for a fraction of the memory. Training switches
#    it on with `--activation-checkpointing` (chapter 22); here we wrap the blocks by hand.
#
# The check: the three paths give the same features and the same gradients, and the
# bytes autograd keeps fall.

# %%
from torch.utils.checkpoint import checkpoint


def saved_bytes(fn) -> tuple[int, Tensor]:
    """Bytes of the distinct tensors autograd keeps for backward while `fn()` runs."""
    seen, params = {}, {q.untyped_storage().data_ptr() for q in enc_m.parameters()}

    def pack(tensor):
        st = tensor.untyped_storage()
        if st.data_ptr() not in params:
            seen[st.data_ptr()] = st.nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        out = fn()
    return sum(seen.values()), out


enc_m = STPEncoder(cfg).to(device).train()
xb = torch.randn(2, 8, cfg.d_precision, cfg.tile // 2, cfg.tile // 2, generator=g).to(device)
tb = torch.sort(torch.rand(2, 8, generator=g, dtype=torch.float64) * 365, dim=1).values.to(device)
mb = torch.rand(2, 8, generator=g).to(device) < 0.5  # a student: about half the frames lost
mb[:, 0] = True
plain_forward = STPBlock.forward


def recomputed_forward(self, *states):
    return checkpoint(plain_forward, self, *states, use_reentrant=False)


modes = {"static path": (False, plain_forward), "packed": (True, plain_forward),
         "packed + recompute": (True, recomputed_forward)}
mem, feats, grads = {}, {}, {}
for name, (pack_on, block_forward) in modes.items():
    enc_m.pack_frames, STPBlock.forward = pack_on, block_forward
    xg = xb.clone().requires_grad_(True)
    mem[name], y_m = saved_bytes(lambda: enc_m(xg, tb, mb))
    (y_m * torch.linspace(-1, 1, y_m.numel(), device=device).view_as(y_m)).sum().backward()
    feats[name], grads[name] = y_m.detach(), xg.grad
STPBlock.forward = plain_forward
for name in modes:
    torch.testing.assert_close(feats[name], feats["static path"], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(grads[name], grads["static path"], atol=1e-5, rtol=1e-5)
assert mem["packed"] < mem["static path"] and mem["packed + recompute"] < mem["packed"]
print(f"{int(mb.sum())} of {mb.numel()} frames real; saved for backward: "
      + ", ".join(f"{k} {v / 2**20:.2f} MB" for k, v in mem.items()))
fig, ax = plt.subplots(figsize=(6, 2.2))
ax.barh(list(mem)[::-1], [v / 2**20 for v in list(mem.values())[::-1]], color=["tab:green", "tab:blue", "tab:gray"])
for i, v in enumerate(list(mem.values())[::-1]):
    ax.text(v / 2**20, i, f" {v / 2**20:.1f} MB", va="center")
ax.set_xlabel("MB kept for the backward pass")
ax.set_title(f"{cfg.name} encoder, B=2, 8 frames, about half of them lost: same features, less memory")
ax.set_xlim(0, max(mem.values()) / 2**20 * 1.25)
plt.tight_layout()
plt.show()

# %% [markdown]
# ## Parameter counts
#
# The `paper` preset is built on PyTorch's `meta` device: parameters have shapes but no
# storage, so counting 500M parameters costs nothing. The projectors are counted apart.

# %%
rows = []
for name, pc in PRESETS.items():
    with torch.device("meta"):
        e1, e = STPEncoder(pc, depth=1), STPEncoder(pc)
        pr = InputProjection(pc)
    rows.append((name, count_parameters(e1), count_parameters(e), count_parameters(pr)))
for name, n1, n2, npr in rows:
    print(f"{name:>6}: encoder {n2 / 1e6:8.2f}M (depth 1: {n1 / 1e6:7.2f}M), projectors {npr / 1e3:6.1f}k")
paper_total = rows[-1][2] + rows[-1][3]
print(f"paper preset, encoder + projectors: {paper_total / 1e6:.1f}M  (paper: ~480M for the whole model)")
assert abs(paper_total / 480e6 - 1) < 0.1

# %%
with torch.device("meta"):
    blk = STPBlock(get_config("paper"))
parts = {k: count_parameters(getattr(blk, k)) for k in ("space", "time", "precision", "exchange")}
fig, ax = plt.subplots(figsize=(6, 2.2))
ax.barh(list(parts), [v / 1e6 for v in parts.values()], color=["tab:purple", "tab:cyan", "tab:olive", "tab:gray"])
for i, v in enumerate(parts.values()):
    ax.text(v / 1e6, i, f" {v / 1e6:.1f}M", va="center")
ax.set_xlabel("parameters per block (M), paper preset")
ax.set_title("where one STP block's parameters are")
plt.tight_layout()
plt.show()

# %% [markdown]
# ## The architecture, drawn
#
# Left: one STP block. Three lanes, one per grid; each operator updates its own state
# (residual), then the pyramid exchange sends every state to every grid (downward arrows
# are REDUCE, upward EXPAND). Right: the whole encoder.

# %%
def box(ax, x, y, w, h, text, color, fs=9):
    ax.add_patch(FancyBboxPatch((x - w / 2, y - h / 2), w, h, boxstyle="round,pad=0.02",
                                fc=color, ec="k", lw=1))
    ax.text(x, y, text, ha="center", va="center", fontsize=fs)


def arrow(ax, a, b, color="k", rad=0.0, lw=1.2):
    ax.add_patch(FancyArrowPatch(a, b, arrowstyle="-|>", mutation_scale=12, color=color, lw=lw,
                                 connectionstyle=f"arc3,rad={rad}"))


pc = get_config("paper")
lanes = [("Space", f"L/16, {pc.d_space}", "ViT attention\nper frame, 2-D RoPE", "#d9c8f0"),
         ("Time", f"L/8, {pc.d_time}", "attention along T\nper pixel, timecodes", "#c8eef0"),
         ("Precision", f"L/2, {pc.d_precision}", "3×3 convs\nper frame", "#e8f0c8")]
fig, (a1, a2) = plt.subplots(1, 2, figsize=(15, 6), gridspec_kw={"width_ratios": [1.25, 1]})
ys = [2.5, 1.5, 0.5]
for (name, grid, what, col), y0 in zip(lanes, ys):
    box(a1, 0.5, y0, 0.8, 0.5, f"{name} state\n{grid}", "white")
    box(a1, 2.0, y0, 1.3, 0.6, f"{name} ×{OPERATOR_DEPTH}\n{what}", col)
    box(a1, 4.6, y0, 0.8, 0.5, f"{name} state'\n{grid}", "white")
    arrow(a1, (0.9, y0), (1.35, y0))
a1.add_patch(FancyBboxPatch((2.95, 0.1), 1.1, 2.8, boxstyle="round,pad=0.02", fc="#f2f2f2", ec="k", ls="--"))
a1.text(3.5, 3.05, "Laplacian-pyramid exchange", ha="center", fontsize=10)
for i, yi in enumerate(ys):
    for j, yj in enumerate(ys):
        col = "k" if i == j else ("tab:blue" if j > i else "tab:red")  # lanes go coarse (top) to fine
        arrow(a1, (2.65, yi), (4.2, yj), color=col, rad=0.0 if i == j else 0.08, lw=1.6 if i == j else 1.0)
a1.text(3.5, -0.15, "black: identity   red: REDUCE (to a coarser grid)   blue: EXPAND (to a finer grid)",
        ha="center", fontsize=8)
a1.text(2.0, 3.05, "operators side by side", ha="center", fontsize=10)
a1.annotate("timecodes of the frames", (1.6, 1.81), (0.75, 2.02), ha="center", va="center", fontsize=8,
            color="tab:cyan", arrowprops=dict(arrowstyle="-|>", color="tab:cyan"))
a1.set_xlim(0, 5.1)
a1.set_ylim(-0.3, 3.5)
a1.axis("off")
a1.set_title("one STP block")

steps = [("S2 frames  B T C H W", "#ffffff"), ("S1 frames", "#ffffff"), ("Landsat frames", "#ffffff")]
for k, (txt, col) in enumerate(steps):
    box(a2, 0.6 + 1.1 * k, 5.4, 1.0, 0.45, txt if k else "S2 frames", col, fs=8)
    box(a2, 0.6 + 1.1 * k, 4.6, 1.0, 0.45, "2×2 patch proj.\n+ source emb.", "#fde2c8", fs=7)
    arrow(a2, (0.6 + 1.1 * k, 5.17), (0.6 + 1.1 * k, 4.83))
    arrow(a2, (0.6 + 1.1 * k, 4.37), (1.7, 3.95))
box(a2, 1.7, 3.7, 2.8, 0.45, "concat along T → B T 128 L/2 L/2 (+ t float64, mask)", "#ffffff", fs=8)
box(a2, 1.7, 2.9, 2.8, 0.5, "initial states: REDUCE ×4 → Time (L/8), ×8 → Space (L/16)", "#f2f2f2", fs=8)
box(a2, 1.7, 2.0, 2.8, 0.6, f"STP block × {pc.n_blocks}", "#e0e0ff", fs=11)
box(a2, 1.7, 1.1, 2.8, 0.5, "final resampling: EXPAND all to L/2, sum, LayerNorm", "#f2f2f2", fs=8)
box(a2, 1.7, 0.3, 2.8, 0.45, "features B T 128 L/2 L/2 (padded frames = 0) → summariser", "#ffffff", fs=8)
for y_a, y_b in ((3.47, 3.15), (2.65, 2.3), (1.7, 1.35), (0.85, 0.53)):
    arrow(a2, (1.7, y_a), (1.7, y_b))
a2.annotate("timecodes\n(float64 days)", (3.12, 2.0), (3.65, 2.0), fontsize=8, color="tab:cyan", va="center",
            ha="center", arrowprops=dict(arrowstyle="-|>", color="tab:cyan"))
a2.set_xlim(0, 4.0)
a2.set_ylim(0, 5.8)
a2.axis("off")
a2.set_title(f"the encoder (paper preset, ≈{paper_total / 1e6:.0f}M parameters)")
plt.tight_layout()
plt.show()
