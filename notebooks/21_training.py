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
# # 21. Training: a loop a researcher can trust
#
# The model (chapters 4–14) and its objective (chapters 15–19) define *what* AlphaEarth
# Foundations {cite}`brown2025alphaearth` learns. This chapter is about *how* it is
# trained without losing a week of compute to a detail: the paper's learning-rate schedule
# scaled to the run's length, mixed precision and gradient accumulation, checkpoints that
# survive a hard kill and resume the *same* run, a loss that turns NaN stopping the run
# with a clear message, the same script on 1 CPU or on many GPUs with
# `DistributedDataParallel`, and a command line. The last sections train a small model on
# the real samples, compare its reconstructions of held-out frames with a per-pixel
# temporal-mean baseline on a site it never saw, and document the `paper` preset's settings
# for a GPU or TPU.
#
# Everything here is exported to `aef_lit.training.core`; the tile sampler it draws batches from
# is chapter 20 (`aef_lit.training.sampling`).

# %% tags=["parameters"]
# Parameters (papermill injects values here). Defaults are sized for a 2-core CPU.
preset = "tiny"  # model preset: "tiny" (CI), "small", "paper"
device = "auto"  # "auto" = XLA if importable, then CUDA, MPS, CPU
seed = 0
data = "auto"  # "auto" = GreenEarthNet minicubes if present, else synthetic cubes
steps = 40  # length of the short demonstration run
tile = 32  # tile size L of the demonstration run (a multiple of 16)

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
#| default_exp training.core
# %% [markdown]
# ## The run's configuration
#
# One frozen dataclass holds every knob of a run; a JSON or YAML file and command-line
# flags map onto its fields one to one (the CLI at the end of this chapter is generated
# from the dataclass, so the two cannot drift apart). The model's own shape stays in
# `ModelConfig` (chapter 1): a run names a `preset`, and its tile size and source list come
# from the run (`tile`) and from the data (the sources the sampler found). To try a
# different width without inventing a preset, `model_overrides` takes a JSON object of
# `ModelConfig` fields (`--model-overrides '{"d_precision": 64}'`); the checkpoint and the
# shipped `config.json` record the resulting `ModelConfig` in full.
#
# The paper's settings (`AEF_NOTES.md` §8): Adam, learning rate rising linearly from 0 to
# $10^{-4}$ over the first 1,000 steps and falling linearly to 0 at step 100,000, batches
# of 256 sequences. We keep the *shape* of that schedule and scale it to the run: warm-up
# is a fraction of the run (`warmup_frac = 0.01` is the paper's 1,000 / 100,000), so a
# 300-step CPU run warms up over 3 steps and decays to 0 exactly at its last step. What
# the paper leaves **open** and we chose: gradient clipping at a global norm of 1.0, and
# no weight decay (the paper says plain Adam).

# %%
#| export
from __future__ import annotations

import argparse
import csv
import functools
import hashlib
import json
import logging
import math
import os
import sys
import time
import typing
from contextlib import contextmanager, nullcontext
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor, nn

from aef_lit.conventions import (
    ModelConfig, SourceSpec, autocast_dtype, batch_to, get_config, select_device, seed_everything,
)

if typing.TYPE_CHECKING:  # imported lazily at run time (chapter 15's module pulls in the model)
    from aef_lit.objective.reconstruction import HeldOut

log = logging.getLogger("aef_lit.training.core")

TERMS = ("total", "reconstruction", "uniformity", "consistency", "text")
"""The loss terms logged at every step, in this order (chapter 19's objective returns them)."""


@dataclass(frozen=True)
class TrainConfig:
    """Everything that defines a training run (the model's shape is the preset's, plus overrides).

    Attributes:
        preset: model preset (`tiny`, `small`, `paper`, see chapter 1).
        model_overrides: a JSON object of `ModelConfig` fields that replace the preset's,
            e.g. `'{"d_precision": 64, "decoder_hidden": 128}'` ("" = none). `tile` and
            `sources` are not allowed here: they come from `tile` and the data.
        steps: optimiser steps of the whole run (the schedule reaches 0 at the last one).
        batch_size: rows per micro-batch and process.
        grad_accum: micro-batches per optimiser step (effective batch =
            batch_size x grad_accum x processes).
        lr: peak learning rate (paper: 1e-4 for batches of 256).
        warmup_frac: warm-up as a fraction of `steps` (paper: 1,000 / 100,000 = 0.01).
        clip: global gradient-norm clip (0 switches clipping off).
        seed: seeds the model's initialisation, the data stream and every step's draws.
        device: `auto` (XLA, CUDA, MPS, CPU in that order) or a torch device string.
        compile: wrap the training step in `torch.compile`.
        bf16: bfloat16 autocast on accelerators (never on the CPU).
        activation_checkpointing: recompute each STP block in the backward pass (`paper`).
        checkpoint_every: steps between checkpoints (one file, overwritten atomically).
        keep_best: also keep `best.pt`, the checkpoint with the lowest mean loss so far.
        ema: decay of an exponential moving average of the weights, kept beside them and
            saved in every checkpoint (0 = off; e.g. 0.999 averages over ~1,000 steps).
            `ship` exports the average, and `TrainResult.model` carries it.
        log_every: steps between progress-bar updates (metrics are logged every step).
        out_dir: run folder: `ckpt.pt`, `metrics.csv`, `config.json`, `summary.json`.
        resume: continue from `out_dir/ckpt.pt` when it exists.
        data: `auto`, `greenearthnet`, `greenearthnet_geotiff`, `worldcereal`, `multisite` or
            `synthetic` (chapter 20).
        sites: the sites to train on: GreenEarthNet's `portugal`, `hungary`, `sweden`; with
            `multisite` also `portugal_geotiff`, ..., `belgium`, `slovenia` (chapter 20).
        tile: tile size L in pixels (0 = the preset's).
        frames: frames per input source in one row (padded, static shapes).
        min_span_days: shortest random support window a row's frames are drawn from.
        workers: DataLoader worker processes (0 = in the main process).
        text: feed each row's caption to the text term (chapter 18); off = that term is 0.
        gain: radiometric augmentation of optical bands (chapter 20; 0 = off).
        occlude: probability of a synthetic cloud-shaped gap per input frame (chapter 20; 0 = off).
        time_shift: move each row's timestamps by one random U(-time_shift, time_shift) days
            (chapter 20; 0 = off).
        targets: the target-only sources the model learns to decode where a site has them
            (chapter 20's `keep_targets`); `none` (or an empty tuple) = none: no label the
            evaluation scores (WorldCover, DEM) can leak into the model (chapter 25).
        init_from: start from the weights of this checkpoint or safetensors file (a new
            run: fresh optimiser and schedule); ignored when resuming.
        progress: show a tqdm bar (rank 0 only).
        halt_after: stop after this many steps of *this* process, as a preemption would
            (0 = never); the run can be resumed.
        save_rank_weights: every process writes `final_rank{r}.safetensors` (DDP tests).
    """

    preset: str = "tiny"
    model_overrides: str = ""
    steps: int = 1000
    batch_size: int = 8
    grad_accum: int = 1
    lr: float = 1e-4
    warmup_frac: float = 0.01
    clip: float = 1.0
    seed: int = 0
    device: str = "auto"
    compile: bool = False
    bf16: bool = True
    activation_checkpointing: bool = False
    checkpoint_every: int = 100
    keep_best: bool = False
    ema: float = 0.0
    log_every: int = 1
    out_dir: str = "runs/train"
    resume: bool = True
    data: str = "auto"
    sites: tuple[str, ...] = ("portugal", "hungary")
    tile: int = 0
    frames: int = 8
    min_span_days: float = 60.0
    workers: int = 0
    text: bool = True
    gain: float = 0.0
    occlude: float = 0.0
    time_shift: float = 0.0
    targets: tuple[str, ...] = ("dem", "landcover")
    init_from: str = ""
    progress: bool = True
    halt_after: int = 0
    save_rank_weights: bool = False

    def __post_init__(self):
        targets = tuple(self.targets)
        object.__setattr__(self, "targets", () if targets in (("none",), ("",)) else targets)
        if self.steps < 1 or self.batch_size < 1 or self.grad_accum < 1:
            raise ValueError("steps, batch_size and grad_accum must be >= 1")
        if not 0.0 <= self.warmup_frac < 1.0:
            raise ValueError(f"warmup_frac must be in [0, 1), got {self.warmup_frac}")
        if self.checkpoint_every < 1:
            raise ValueError("checkpoint_every must be >= 1 (a checkpoint every step is the port's mistake, §12)")
        if self.tile and self.tile % 16:
            raise ValueError(f"tile must be a multiple of 16, got {self.tile}")
        if not 0.0 <= self.ema < 1.0:
            raise ValueError(f"ema is a decay in [0, 1), got {self.ema}")
        self.overrides()  # fail at parse time, not after the data has loaded

    def overrides(self) -> dict[str, Any]:
        """`model_overrides` parsed and checked against `ModelConfig`'s fields."""
        if not self.model_overrides.strip():
            return {}
        try:
            d = json.loads(self.model_overrides)
        except json.JSONDecodeError as err:
            raise ValueError(f"model_overrides is not valid JSON ({err}): {self.model_overrides!r}") from None
        if not isinstance(d, dict):
            raise ValueError(f"model_overrides must be a JSON object, got {self.model_overrides!r}")
        known = {f.name for f in fields(ModelConfig)} - {"tile", "sources", "name"}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown or reserved ModelConfig fields in model_overrides: {sorted(unknown)}; "
                             f"allowed: {sorted(known)}")
        return d

    def replace(self, **changes) -> "TrainConfig":
        return replace(self, **changes)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1, sort_keys=True)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TrainConfig":
        """Build from a plain dict (JSON/YAML), refusing unknown keys; lists become tuples."""
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise TypeError(f"unknown TrainConfig fields: {sorted(unknown)}; known: {sorted(known)}")
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()})

    @classmethod
    def from_file(cls, path: str | Path, **overrides) -> "TrainConfig":
        """Read a `.json` or `.yaml`/`.yml` file, then apply `overrides` (e.g. CLI flags)."""
        text = Path(path).read_text()
        if str(path).endswith((".yaml", ".yml")):
            import yaml

            d = yaml.safe_load(text) or {}
        else:
            d = json.loads(text)
        return cls.from_dict({**d, **overrides})


# %%
cfg_demo = TrainConfig(steps=300, lr=1e-3)
assert TrainConfig.from_dict(json.loads(cfg_demo.to_json())) == cfg_demo, "JSON round trip"
try:
    TrainConfig(checkpoint_every=0)
except ValueError as err:
    print("refused:", err)
cfg_demo

# %% [markdown]
# ## The learning-rate schedule (§8)
#
# $$ \eta(s) = \eta_{\max}\cdot\begin{cases} s / W & s < W \\ (N - s)/(N - W) & W \le s \le N \end{cases}
#    \qquad W = \mathrm{round}(f_{\text{warm}} N) $$
#
# for step $s$ of a run of $N$ steps. The unofficial port trained at a constant rate (§12);
# the check below would have caught it: the schedule is 0 at the first step and at the end,
# and peaks exactly where warm-up ends. The rate is a pure function of the step, so a
# resumed run needs nothing but the step number to be back on the curve.

# %%
#| export
def warmup_steps(steps: int, warmup_frac: float) -> int:
    """W: warm-up length in steps (at least 1, so step 0 has learning rate 0)."""
    return max(1, round(warmup_frac * steps))


def lr_at(step: int, steps: int, peak: float = 1e-4, warmup_frac: float = 0.01) -> float:
    """Linear warm-up from 0 to `peak` over W steps, then linear decay to 0 at `steps` (§8)."""
    w = warmup_steps(steps, warmup_frac)
    if step < w:
        return peak * step / w
    return peak * max(0.0, (steps - step) / max(1, steps - w))


# %%
import matplotlib.pyplot as plt
import numpy as np

N, f = 100_000, 0.01
curve = np.array([lr_at(s, N, 1e-4, f) for s in range(0, N + 1, 50)])
assert lr_at(0, N, 1e-4, f) == 0.0 and lr_at(N, N, 1e-4, f) == 0.0, "0 at start and end"
assert lr_at(1000, N, 1e-4, f) == 1e-4 == curve.max(), "peak where warm-up ends (step 1,000)"
assert all(lr_at(s, 300, 1e-3, f) <= lr_at(3, 300, 1e-3, f) for s in range(301)), "scaled to a short run"

fig, axes = plt.subplots(1, 2, figsize=(10, 2.8))
axes[0].plot(np.arange(0, N + 1, 50), curve)
axes[0].set(title="paper: 100k steps, warm-up 1k", xlabel="step", ylabel="learning rate")
axes[1].plot([lr_at(s, 300, 1e-3, f) for s in range(301)])
axes[1].set(title="the same shape scaled to a 300-step run", xlabel="step")
plt.tight_layout()
plt.show()

# %% [markdown]
# ## Checkpoints that survive a hard kill
#
# A checkpoint holds everything the next step depends on: the model's weights, Adam's
# moments, the step counter (the schedule is a function of it), the random-number
# generators' states and the data position. Three rules:
#
# - **Only tensors and plain Python values**, so it loads with
#   `torch.load(weights_only=True)`: unpickling a file must never run code. The run's
#   config is stored as a JSON string; RNG states are uint8 tensors.
# - **Atomic**: written to `ckpt.pt.tmp`, flushed to disk, then `os.replace`d over
#   `ckpt.pt`. A kill during the write leaves the previous checkpoint intact, never half a
#   file.
# - **One file, overwritten every `checkpoint_every` steps** (optionally a `best.pt`).
#   The port wrote a 1.2 GB checkpoint at every step (§12).
#
# The data position needs no state of its own: chapter 20's sampler draws the tiles of
# step $s$ from a generator seeded by `(seed, s)`, and every step's random draws (held-out
# frames, periods, perturbations, vMF samples) come from a generator seeded the same way.
# A resumed run therefore sees exactly the batches and draws the uninterrupted run would
# have seen: its loss curve continues step for step.
#
# **A moving average of the weights** (`ema`, off by default) is kept beside the weights
# when asked: after every optimiser step it moves a fraction $1 - d$ of the way towards
# them ($d = 0.999$ averages over about the last thousand steps). It lives in the
# checkpoint too, so a resumed run ends with the same average; `ship` exports the
# average, not the last weights. Why bother: with small batches the weights at any one
# step carry that step's noise, and the measurements at the end of this chapter found the
# error on an unseen site moving by ±0.02 from one checkpoint to the next. The paper says
# nothing about averaging (**open**); it is a standard remedy (Polyak averaging) that
# costs one copy of the weights and no change to training.

# %%
#| export
CHECKPOINT = "ckpt.pt"
BEST = "best.pt"
METRICS = "metrics.csv"


def unwrap(model: nn.Module) -> nn.Module:
    """The plain module under DDP and `torch.compile` wrappers."""
    while True:
        if isinstance(model, nn.parallel.DistributedDataParallel):
            model = model.module
        elif hasattr(model, "_orig_mod"):
            model = model._orig_mod
        else:
            return model


def rng_state() -> dict[str, Tensor]:
    """The global torch RNG states as tensors (weights_only-safe)."""
    out = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():  # pragma: no cover - no GPU in CI
        out["cuda"] = torch.stack(torch.cuda.get_rng_state_all())
    return out


def set_rng_state(state: dict[str, Tensor]) -> None:
    torch.set_rng_state(state["torch"].cpu())
    if "cuda" in state and torch.cuda.is_available():  # pragma: no cover
        torch.cuda.set_rng_state_all(list(state["cuda"].cpu()))


def save_checkpoint(path: str | Path, model: nn.Module, optimizer: torch.optim.Optimizer, step: int,
                    cfg: "TrainConfig", model_cfg: ModelConfig | None = None, **extra) -> Path:
    """Write a weights_only-loadable checkpoint atomically (temp file, fsync, rename).

    `step` is the number of optimiser steps completed; the run continues at `step`.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {
        "format": 1,
        "step": int(step),
        "model": unwrap(model).state_dict(),
        "optimizer": optimizer.state_dict(),
        "rng": rng_state(),
        "data": {"seed": int(cfg.seed), "next_step": int(step)},
        "schedule": {"peak": float(cfg.lr), "warmup_frac": float(cfg.warmup_frac), "steps": int(cfg.steps)},
        "config": cfg.to_json(),
        "model_config": model_config_to_json(model_cfg) if model_cfg is not None else "",
        **extra,
    }
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as fh:
        torch.save(state, fh)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    return path


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint with `weights_only=True` (no arbitrary code runs on load)."""
    return torch.load(path, map_location=map_location, weights_only=True)


def model_config_to_json(cfg: ModelConfig) -> str:
    return json.dumps(asdict(cfg), sort_keys=True)


def model_config_from_json(text: str | dict) -> ModelConfig:
    """Inverse of `model_config_to_json` (sources rebuilt as `SourceSpec`s, lists as tuples)."""
    d = json.loads(text) if isinstance(text, str) else dict(text)
    srcs = tuple(SourceSpec(**{k: tuple(v) if isinstance(v, list) else v for k, v in s.items()})
                 for s in d.pop("sources"))
    return ModelConfig(**d, sources=srcs)


class WeightAverage:
    """An exponential moving average of a model's weights (Polyak averaging), for `TrainConfig.ema`.

    After the n-th update the average moves towards the current weights by 1 - d_n, with
    d_n = min(decay, (1 + n) / (10 + n)), so that the first steps do not leave it stuck
    near the initial weights. Integer buffers are copied, not averaged. Its `state_dict`
    holds only tensors and numbers (checkpoints stay `weights_only`-loadable).
    """

    def __init__(self, model: nn.Module, decay: float):
        self.decay = float(decay)
        self.updates = 0
        self.shadow = {k: v.detach().clone() for k, v in unwrap(model).state_dict().items()}

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        self.updates += 1
        d = min(self.decay, (1 + self.updates) / (10 + self.updates))
        for k, v in unwrap(model).state_dict().items():
            if v.dtype.is_floating_point:
                self.shadow[k].lerp_(v.detach(), 1.0 - d)
            else:
                self.shadow[k].copy_(v)

    def state_dict(self) -> dict[str, Any]:
        return {"decay": self.decay, "updates": self.updates, "shadow": self.shadow}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.updates = int(state["updates"])
        for k, v in state["shadow"].items():
            self.shadow[k].copy_(v)


# %%
import tempfile

_net = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 1))
_opt = torch.optim.Adam(_net.parameters())
_net(torch.randn(2, 3)).sum().backward()
_opt.step()
with tempfile.TemporaryDirectory() as d:
    p = save_checkpoint(Path(d) / CHECKPOINT, _net, _opt, step=7, cfg=cfg_demo)
    ck = load_checkpoint(p)  # weights_only=True: a plain dict of tensors and Python values
    assert ck["step"] == 7 and not (Path(d) / (CHECKPOINT + ".tmp")).exists(), "renamed into place"
    assert TrainConfig.from_dict(json.loads(ck["config"])) == cfg_demo
    size = p.stat().st_size
sorted(ck), f"{size} bytes"

# %% [markdown]
# The average on a toy problem: one weight fitted by SGD to noisy targets around 1. The
# weight keeps jumping with every mini-batch's noise; its average settles.

# %%
_w = nn.Linear(1, 1, bias=False)
nn.init.zeros_(_w.weight)
_sgd = torch.optim.SGD(_w.parameters(), lr=0.2)
_avg = WeightAverage(_w, decay=0.95)
_gen = torch.Generator().manual_seed(0)
raw_path, avg_path = [], []
for _ in range(300):
    _x = torch.ones(4, 1)
    _y = 1.0 + 0.5 * torch.randn(4, 1, generator=_gen)
    _sgd.zero_grad()
    ((_w(_x) - _y) ** 2).mean().backward()
    _sgd.step()
    _avg.update(_w)
    raw_path.append(float(_w.weight.detach()))
    avg_path.append(float(_avg.shadow["weight"]))
fig, ax = plt.subplots(figsize=(8, 2.6))
ax.plot(raw_path, lw=0.8, label="weight after each step")
ax.plot(avg_path, lw=2, label="moving average (decay 0.95)")
ax.axhline(1.0, color="k", ls=":", lw=1, label="the best weight")
ax.set(xlabel="step", title="the weights carry each step's noise; their average does not")
ax.legend(fontsize=8)
plt.tight_layout()
plt.show()
late_raw, late_avg = np.array(raw_path[100:]), np.array(avg_path[100:])
print(f"after step 100: mean |w - 1| {np.abs(late_raw - 1).mean():.3f} (weights), {np.abs(late_avg - 1).mean():.3f} (average)")
assert np.abs(late_avg - 1).mean() < 0.5 * np.abs(late_raw - 1).mean(), "the average is much closer to the optimum"

# %% [markdown]
# ## Devices, precision, compilation, memory
#
# - **Device** `auto`: XLA (TPU) if `torch_xla` imports, then CUDA, MPS, CPU
#   (`select_device`, chapter 1). On XLA a step ends with `torch_xla.sync()`, and the code
#   keeps shapes static (masks, never dropped tensors).
# - **Precision**: bfloat16 autocast on accelerators (`autocast_dtype`); float32 on the
#   CPU, where bf16 is slow and where our tests want exact numbers. Losses are computed in
#   float32 inside the objective either way.
# - **`torch.compile`**: optional; it wraps the whole training step (model and objective).
# - **Activation checkpointing**: the `paper` preset keeps 15 STP blocks of activations for
#   103 frames at three resolutions; recomputing each block in the backward pass trades
#   about a third more compute for most of that memory. We wrap every module found in a
#   `ModuleList` called `blocks`.

# %%
#| export
def autocast_context(device: torch.device, bf16: bool = True):
    """bf16 autocast on accelerators when asked, a no-op context otherwise."""
    dtype = autocast_dtype(device) if bf16 else None
    if dtype is None:
        return nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def enable_activation_checkpointing(model: nn.Module) -> int:
    """Recompute every block of each `ModuleList` named `blocks` in the backward pass.

    Returns the number of wrapped blocks.
    """
    from torch.utils.checkpoint import checkpoint

    n = 0
    for name, mod in model.named_modules():
        if isinstance(mod, nn.ModuleList) and name.split(".")[-1] == "blocks":
            for blk in mod:
                plain = blk.forward

                def wrapped(*args, _f=plain, **kwargs):
                    return checkpoint(_f, *args, use_reentrant=False, **kwargs)

                blk.forward = wrapped
                n += 1
    return n


def xla_sync(device: torch.device) -> None:
    """End an XLA step (a no-op elsewhere)."""
    if device.type == "xla":  # pragma: no cover - no TPU here
        import torch_xla

        torch_xla.sync()


# %% [markdown]
# ## Scale-out: `torchrun` and `DistributedDataParallel`
#
# The paper trained on 512 TPU v4 chips (§8). We do not write our own engine: the same
# script runs under `torchrun`, which starts one process per device and sets `RANK`,
# `WORLD_SIZE` and `LOCAL_RANK`. Each process builds the same model from the same seed,
# wraps it in `DistributedDataParallel` (gloo on CPUs, NCCL on GPUs), and draws *its own*
# tiles: the sampler of chapter 20 shards the stream of tiles by rank, like PyTorch's
# `DistributedSampler` shards a finite dataset. DDP averages gradients during the backward
# pass, so every rank takes the same optimiser step and the replicas stay identical; only
# rank 0 writes logs and checkpoints.
#
# DDP only synchronises gradients for computations that go through the wrapper's
# `forward`. The objective (chapter 19) calls several methods of the model (`encode`,
# `summarise`, `decode`), so we wrap *model and objective together* in one small module,
# `TrainStep`, whose forward is a whole loss evaluation. With gradient accumulation the
# first micro-batches run under `no_sync()` and only the last one all-reduces.

# %%
#| export
@dataclass(frozen=True)
class DistInfo:
    """This process's place in a (possibly one-process) job."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def init_distributed(device: torch.device) -> DistInfo:
    """Join the process group that `torchrun` describes in the environment (gloo or NCCL)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend=backend)
    return DistInfo(rank=dist.get_rank(), world_size=dist.get_world_size(),
                    local_rank=int(os.environ.get("LOCAL_RANK", "0")))


def resolve_device(name: str, info: DistInfo | None = None) -> torch.device:
    """`select_device`, with one CUDA device per local rank under torchrun."""
    dev = select_device(name)
    local = int(os.environ.get("LOCAL_RANK", "0")) if info is None else info.local_rank
    if dev.type == "cuda" and dev.index is None:  # pragma: no cover - no GPU in CI
        dev = torch.device("cuda", local)
        torch.cuda.set_device(dev)
    return dev


class TrainStep(nn.Module):
    """Model and objective as one module: `forward(batch) -> loss terms` (what DDP wraps)."""

    def __init__(self, model: nn.Module, objective: nn.Module):
        super().__init__()
        self.model = model
        self.objective = objective

    def forward(self, batch, captions: Sequence[str] | None = None,
                generator: torch.Generator | None = None) -> dict[str, Tensor]:
        return self.objective(self.model, batch, captions=captions, generator=generator)


def step_generator(seed: int, step: int, micro: int = 0, rank: int = 0) -> torch.Generator:
    """A CPU generator for one micro-step's draws, a pure function of (seed, step, micro, rank)."""
    h = hashlib.blake2b(f"aef-train/{seed}/{step}/{micro}/{rank}".encode(), digest_size=8).digest()
    return torch.Generator().manual_seed(int.from_bytes(h, "little") & (2**63 - 1))


def params_digest(model: nn.Module) -> str:
    """A hash of every parameter and buffer: equal digests mean bitwise-equal replicas."""
    h = hashlib.sha256()
    for k, v in sorted(unwrap(model).state_dict().items()):
        h.update(k.encode())
        h.update(v.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


# %% [markdown]
# ## Metrics, the progress bar, and the NaN guard
#
# Every step appends one row to `metrics.csv` (step, learning rate, the loss terms,
# gradient norm, tiles per second, wall time); the tqdm bar shows the same numbers. On
# resume, the rows of steps after the checkpoint (computed, then lost with the killed
# process) are dropped, so the file continues without duplicates.
#
# A NaN or infinite loss (or gradient norm) stops the run *before* the optimiser step:
# the weights are never touched by it and no checkpoint is written after it, so the last
# checkpoint on disk is the last good state. Under DDP the check runs on the all-reduced
# loss, so every rank stops together instead of leaving the others waiting forever.

# %%
#| export
class NonFiniteLossError(RuntimeError):
    """Raised when a loss term or the gradient norm is NaN or infinite."""


class MetricsLog:
    """Append-only CSV of per-step metrics that survives a kill and a resume."""

    def __init__(self, path: str | Path, columns: Sequence[str], resume_at: int = 0):
        self.path = Path(path)
        self.columns = list(columns)
        kept = [r for r in read_metrics(self.path) if int(r["step"]) < resume_at] if resume_at else []
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fh = open(self.path, "w", newline="")
        self._w = csv.DictWriter(self._fh, fieldnames=self.columns, extrasaction="ignore")
        self._w.writeheader()
        for r in kept:
            self._w.writerow(r)
        self._fh.flush()

    def write(self, row: dict[str, Any]) -> None:
        self._w.writerow({k: (f"{v:.8g}" if isinstance(v, float) else v) for k, v in row.items()})
        self._fh.flush()

    def close(self) -> None:
        self._fh.close()


def read_metrics(path: str | Path) -> list[dict[str, str]]:
    """The complete rows of a metrics CSV (a row cut by a kill is dropped)."""
    path = Path(path)
    if not path.exists():
        return []
    with open(path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    return [r for r in rows if None not in r.values() and all(v != "" for v in r.values())]


# %% [markdown]
# ## The loop
#
# `train` puts the pieces together. It builds (or receives) the model, the objective and a
# stream of micro-batches that starts at the step to resume from; each step sets the
# learning rate from the schedule, runs `grad_accum` micro-batches (forward under autocast,
# backward, DDP all-reduce on the last), averages the loss terms over micro-batches and
# ranks, checks them, clips, steps, logs, and every `checkpoint_every` steps writes the
# checkpoint. Model, objective and data can be passed in, which is how the tests drive it
# with small stand-ins; by default they come from chapters 14, 19 and 20.

# %%
#| export
@dataclass
class TrainResult:
    """What a finished (or halted) run returns."""

    model: nn.Module
    model_cfg: ModelConfig
    step: int
    metrics: list[dict[str, str]]
    out_dir: Path
    seconds: float


def build_model_and_objective(cfg: TrainConfig, specs: Sequence[SourceSpec]) -> tuple[ModelConfig, nn.Module, nn.Module]:
    """The preset's model for the data's sources (chapter 14), and chapter 19's objective."""
    from aef_lit.objective import AEFObjective
    from aef_lit.model import build_model

    base = get_config(cfg.preset, **cfg.overrides())
    model_cfg = base.replace(tile=cfg.tile or base.tile, sources=tuple(specs))
    model = build_model(model_cfg)
    return model_cfg, model, AEFObjective(model_cfg)


def default_data(cfg: TrainConfig, model_tile: int, info: DistInfo):
    """(specs, make_batches) from chapter 20: real tiles when present, else synthetic."""
    from aef_lit.training.sampling import tile_stream, training_dataset

    ds = training_dataset(cfg.data, cfg.sites, tile=model_tile, frames=cfg.frames, seed=cfg.seed,
                          min_span_days=cfg.min_span_days, gain=cfg.gain, occlude=cfg.occlude,
                          time_shift=cfg.time_shift, targets=cfg.targets)

    def make_batches(start_step: int) -> Iterator:
        return tile_stream(ds, batch_size=cfg.batch_size, start=start_step * cfg.grad_accum,
                           rank=info.rank, world_size=info.world_size, workers=cfg.workers,
                           captions=cfg.text)

    return ds.specs, make_batches


def _reduce_mean(x: Tensor, info: DistInfo) -> Tensor:
    if info.distributed:
        x = x.clone()
        dist.all_reduce(x, op=dist.ReduceOp.SUM)
        x = x / info.world_size
    return x


def train(cfg: TrainConfig, *, model: nn.Module | None = None, objective: nn.Module | None = None,
          model_cfg: ModelConfig | None = None, make_batches: Callable[[int], Iterator] | None = None,
          specs: Sequence[SourceSpec] | None = None) -> TrainResult:
    """Run (or resume) a training run described by `cfg`; see the chapter for each stage."""
    t_start = time.perf_counter()
    device0 = select_device(cfg.device)
    info = init_distributed(device0)
    device = resolve_device(cfg.device, info)
    out = Path(cfg.out_dir)
    ckpt_path = out / CHECKPOINT

    # --- model, objective, data -------------------------------------------------------
    seed_everything(cfg.seed)  # identical initial weights on every rank
    if make_batches is None:
        tile = cfg.tile or get_config(cfg.preset).tile
        specs, make_batches = default_data(cfg, tile, info)
    if model is None:
        model_cfg, model, objective = build_model_and_objective(cfg, specs)
    if model_cfg is None:
        model_cfg = getattr(model, "cfg", get_config(cfg.preset))
    model.to(device)
    objective.to(device)
    if cfg.activation_checkpointing:
        log.info("activation checkpointing on %d blocks", enable_activation_checkpointing(model))
    params = [p for p in list(model.parameters()) + list(objective.parameters()) if p.requires_grad]
    optimizer = torch.optim.Adam(params, lr=0.0)

    # --- resume -----------------------------------------------------------------------
    start = 0
    state: dict[str, Any] = {}  # the checkpoint resumed from, if any
    if cfg.resume and ckpt_path.exists():
        state = load_checkpoint(ckpt_path, map_location=device)
        unwrap(model).load_state_dict(state["model"])
        if "objective" in state:
            objective.load_state_dict(state["objective"])
        optimizer.load_state_dict(state["optimizer"])
        set_rng_state(state["rng"])
        start = int(state["step"])
        log.info("resumed from %s at step %d", ckpt_path, start)
    elif cfg.init_from:
        if cfg.init_from.endswith(".safetensors"):
            from safetensors.torch import load_file

            weights = load_file(cfg.init_from)
        else:
            weights = load_checkpoint(cfg.init_from, map_location=device)["model"]
        unwrap(model).load_state_dict(weights)
        log.info("initialised the weights from %s", cfg.init_from)

    average = WeightAverage(model, cfg.ema) if cfg.ema > 0 else None
    if average is not None and "ema" in state:
        average.load_state_dict(state["ema"])

    step_module: nn.Module = TrainStep(model, objective)
    if info.distributed:
        step_module = nn.parallel.DistributedDataParallel(
            step_module, device_ids=[device.index] if device.type == "cuda" else None,
            find_unused_parameters=True)
    if cfg.compile:
        step_module = torch.compile(step_module)

    # --- logging ----------------------------------------------------------------------
    columns = ["step", "lr", *TERMS, "grad_norm", "tiles_per_s", "wall_s"]
    metrics = None
    if info.is_main:
        out.mkdir(parents=True, exist_ok=True)
        (out / "config.json").write_text(cfg.to_json())
        metrics = MetricsLog(out / METRICS, columns, resume_at=start)
    from tqdm.auto import tqdm

    bar = tqdm(total=cfg.steps, initial=start, disable=not (cfg.progress and info.is_main),
               desc=f"train {model_cfg.name}", dynamic_ncols=True)
    tiles_per_step = cfg.batch_size * cfg.grad_accum * info.world_size
    best = float("inf")
    window: list[float] = []

    # --- the steps --------------------------------------------------------------------
    batches = make_batches(start)
    step = start
    model.train()
    objective.train()
    try:
        for step in range(start, cfg.steps):
            t0 = time.perf_counter()
            lr = lr_at(step, cfg.steps, cfg.lr, cfg.warmup_frac)
            for group in optimizer.param_groups:
                group["lr"] = lr
            optimizer.zero_grad(set_to_none=True)
            torch.manual_seed(int(step_generator(cfg.seed, step, -1, info.rank).initial_seed()))
            sums = torch.zeros(len(TERMS), device=device)
            for micro in range(cfg.grad_accum):
                item = next(batches)
                batch, captions = item if isinstance(item, tuple) else (item, None)
                batch = batch_to(batch, device)
                gen = step_generator(cfg.seed, step, micro, info.rank)
                last = micro == cfg.grad_accum - 1
                sync = nullcontext() if (last or not info.distributed) else unwrap_ddp(step_module).no_sync()
                with sync:
                    with autocast_context(device, cfg.bf16):
                        terms = step_module(batch, captions=captions, generator=gen)
                    (terms["total"].float() / cfg.grad_accum).backward()
                sums += torch.stack([terms[k].detach().float() if k in terms else torch.zeros((), device=device)
                                     for k in TERMS])
            terms_mean = _reduce_mean(sums / cfg.grad_accum, info)
            values = dict(zip(TERMS, terms_mean.tolist()))  # one host sync per step
            if not all(math.isfinite(v) for v in values.values()):
                raise NonFiniteLossError(_nan_message(step, values, ckpt_path))
            gn = torch.nn.utils.clip_grad_norm_(params, cfg.clip if cfg.clip > 0 else float("inf"))
            grad_norm = float(gn)
            if not math.isfinite(grad_norm):
                raise NonFiniteLossError(_nan_message(step, {**values, "grad_norm": grad_norm}, ckpt_path))
            optimizer.step()
            if average is not None:
                average.update(model)
            xla_sync(device)
            done = step + 1
            dt = time.perf_counter() - t0
            row = {"step": step, "lr": lr, **values, "grad_norm": grad_norm,
                   "tiles_per_s": tiles_per_step / dt, "wall_s": time.perf_counter() - t_start}
            window.append(values["total"])
            if metrics is not None:
                metrics.write(row)
            bar.update(1)
            if done % cfg.log_every == 0:
                bar.set_postfix({k[:5]: f"{values[k]:.4f}" for k in TERMS} | {"tile/s": f"{row['tiles_per_s']:.1f}"})
            if done % cfg.checkpoint_every == 0 or done == cfg.steps:
                if info.is_main:
                    extra = {} if average is None else {"ema": average.state_dict()}
                    save_checkpoint(ckpt_path, model, optimizer, done, cfg, model_cfg,
                                    objective=unwrap(objective).state_dict(), **extra)
                    mean = sum(window) / len(window)
                    if cfg.keep_best and mean < best:
                        best = mean
                        save_checkpoint(out / BEST, model, optimizer, done, cfg, model_cfg,
                                        objective=unwrap(objective).state_dict(), mean_loss=mean, **extra)
                window.clear()
                if info.distributed:
                    dist.barrier()
            step = done
            if cfg.halt_after and done - start >= cfg.halt_after:
                log.info("halting after %d steps (halt_after)", cfg.halt_after)
                break
        else:
            step = cfg.steps
    finally:
        bar.close()
        if metrics is not None:
            metrics.close()

    if info.distributed:
        digests = [None] * info.world_size
        dist.all_gather_object(digests, params_digest(model))
        if len(set(digests)) != 1:  # pragma: no cover - DDP keeps replicas equal
            raise RuntimeError(f"replicas diverged: {digests}")
    if cfg.save_rank_weights:
        from safetensors.torch import save_file

        out.mkdir(parents=True, exist_ok=True)
        save_file({k: v.detach().cpu().contiguous() for k, v in unwrap(model).state_dict().items()},
                  str(out / f"final_rank{info.rank}.safetensors"))
    if average is not None:  # the run is over: the returned model carries the average
        unwrap(model).load_state_dict(average.shadow)
    seconds = time.perf_counter() - t_start
    if info.is_main:
        (out / "summary.json").write_text(json.dumps(
            {"step": step, "steps": cfg.steps, "seconds": seconds, "world_size": info.world_size,
             "device": str(device), "digest": params_digest(model)}, indent=1))
    return TrainResult(model=unwrap(model), model_cfg=model_cfg, step=step,
                       metrics=read_metrics(out / METRICS) if info.is_main else [], out_dir=out, seconds=seconds)


def unwrap_ddp(m: nn.Module) -> nn.Module:
    """The DDP module under a `torch.compile` wrapper (for `no_sync`)."""
    return m._orig_mod if hasattr(m, "_orig_mod") else m


def _nan_message(step: int, values: dict[str, float], ckpt: Path) -> str:
    last = f"{ckpt} (step {load_checkpoint(ckpt)['step']})" if ckpt.exists() else "none written yet"
    terms = ", ".join(f"{k}={v:.4g}" for k, v in values.items())
    return (f"non-finite loss at step {step} ({terms}). The run stopped before the optimiser step; "
            f"the last good checkpoint is {last} and is intact. Lower --lr, check the data for "
            f"NaNs, then resume (the run continues from that checkpoint).")


# %% [markdown]
# ### The loop on a stand-in, before the real model
#
# A small check of the loop's machinery with a one-layer stand-in model and a trivial
# objective (the real ones follow below): the loss falls, a checkpoint exists, and a run
# halted at step 5 and resumed reproduces the uninterrupted run's loss curve *exactly*.

# %%
class _Toy(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(4, 1)


class _ToyObjective(nn.Module):
    def forward(self, model, batch, captions=None, generator=None):
        x, y = batch["x"], batch["y"]
        noise = 0.01 * torch.randn(y.shape, generator=generator)
        rec = (model.lin(x) - y - noise).abs().mean()
        z = torch.zeros(())
        return {"total": rec, "reconstruction": rec, "uniformity": z, "consistency": z, "text": z}


def _toy_batches(start):
    s = start
    while True:
        g = torch.Generator().manual_seed(s)
        x = torch.randn(8, 4, generator=g)
        yield {"x": x, "y": x @ torch.tensor([[1.0], [-2.0], [0.5], [3.0]])}
        s += 1


def _toy_run(out, **kw):
    torch.manual_seed(0)
    c = TrainConfig(steps=12, lr=0.5, checkpoint_every=3, out_dir=str(out), progress=False, **kw)
    return train(c, model=_Toy(), objective=_ToyObjective(), model_cfg=get_config("tiny"),
                 make_batches=_toy_batches)


with tempfile.TemporaryDirectory() as d:
    ref = _toy_run(Path(d) / "ref")
    _toy_run(Path(d) / "cut", halt_after=5)  # stops at step 5, checkpoint at 3
    res = _toy_run(Path(d) / "cut")  # resumes from step 3
    a = [float(r["total"]) for r in ref.metrics]
    b = [float(r["total"]) for r in res.metrics]
    assert [int(r["step"]) for r in res.metrics] == list(range(12)), "no step lost or repeated"
    assert a == b, "resumed run continues the uninterrupted run exactly"
    assert a[-1] < a[0] / 2, "the loss falls"
print([round(v, 3) for v in a])

# %% [markdown]
# ## The command line
#
# `python -m aef_lit.training.core` (or the console script `aef-train`) takes an optional
# `--config run.json|run.yaml` and one flag per `TrainConfig` field; flags override the
# file. Booleans have `--x/--no-x` forms, tuples take several values:
#
# ```bash
# aef-train --preset tiny --steps 300 --lr 1e-3 --sites portugal hungary --out-dir runs/tiny
# torchrun --standalone --nproc_per_node 2 -m aef_lit.training.core --config run.yaml
# ```
#
# Exit status 0 on success, 2 when the loss became non-finite (the message says where the
# last good checkpoint is), 1 on any other error.

# %%
#| export
def _field_type(f) -> Any:
    hints = typing.get_type_hints(TrainConfig)
    return hints[f.name]


def build_parser() -> argparse.ArgumentParser:
    """An argparse parser with one flag per `TrainConfig` field (defaults: unset)."""
    ap = argparse.ArgumentParser(prog="aef-train", description="Train AlphaEarth Foundations (aef-lit).")
    ap.add_argument("--config", help="a JSON or YAML file of TrainConfig fields; flags override it")
    ap.add_argument("--log-level", default="INFO")
    for f in fields(TrainConfig):
        tp = _field_type(f)
        names = [f"--{f.name.replace('_', '-')}"] + ([f"--{f.name}"] if "_" in f.name else [])
        help_ = f"(default: {f.default!r})"
        if tp is bool:
            ap.add_argument(*names, dest=f.name, action=argparse.BooleanOptionalAction, default=None, help=help_)
        elif typing.get_origin(tp) is tuple:
            ap.add_argument(*names, dest=f.name, nargs="+", default=None, help=help_)
        else:
            ap.add_argument(*names, dest=f.name, type=tp, default=None, help=help_)
    return ap


def config_from_args(argv: Sequence[str] | None = None) -> tuple[TrainConfig, argparse.Namespace]:
    """Parse flags (and `--config`) into a `TrainConfig`."""
    args = build_parser().parse_args(argv)
    over = {f.name: getattr(args, f.name) for f in fields(TrainConfig) if getattr(args, f.name) is not None}
    over = {k: tuple(v) if isinstance(v, list) else v for k, v in over.items()}
    cfg = TrainConfig.from_file(args.config, **over) if args.config else TrainConfig(**over)
    return cfg, args


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of `aef-train` and `python -m aef_lit.training.core`."""
    cfg, args = config_from_args(argv)
    rank = int(os.environ.get("RANK", "0"))
    logging.basicConfig(level=getattr(logging, str(args.log_level).upper(), logging.INFO) if rank == 0 else logging.WARNING,
                        format=f"%(asctime)s [rank {rank}] %(levelname)s %(name)s: %(message)s")
    try:
        res = train(cfg)
        log.info("finished at step %d in %.1f s; run folder %s", res.step, res.seconds, res.out_dir)
        return 0
    except NonFiniteLossError as err:
        log.error("%s", err)
        return 2
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


# %%
_cfg, _ = config_from_args(["--steps", "50", "--sites", "portugal", "--no-bf16", "--out-dir", "runs/x"])
assert _cfg == TrainConfig(steps=50, sites=("portugal",), bf16=False, out_dir="runs/x")
_cfg

# %% [markdown]
# ### How the tests hold the loop to its promises
#
# Two tests in `tests/test_training.py` run the CLI as a user would, in subprocesses:
#
# - **kill -9 and resume.** An uninterrupted 30-step run is the reference. A second run of
#   the same command is killed with `SIGKILL` as soon as its checkpoint reaches step 9
#   (no chance to clean up, as in a preempted VM), then the same command is run again. It
#   must log `resumed from ... at step k`, and its `metrics.csv` must list every step
#   0…29 exactly once with the reference's learning rates and loss terms, and end with the
#   reference's weights.
# - **torchrun with two processes.** `torchrun --standalone --nproc_per_node 2 -m
#   aef_lit.training.core ... --save-rank-weights` on the CPU (gloo): after a few steps both
#   ranks' final weights must be bitwise equal, and rank 0 alone must have logged each step
#   once. (`train` also compares parameter digests of all ranks at the end of every
#   distributed run and raises if they differ.)
#
# Smaller tests cover the rest: the schedule's shape, a crash *during* a checkpoint write
# leaving the previous file intact, a NaN at step 7 stopping the run with the step-6
# checkpoint intact and finite, no checkpoint written more often than asked,
# `torch.compile` giving eager's losses, activation checkpointing giving the same gradients.

# %% [markdown]
# ## Measuring reconstruction of held-out frames
#
# The question a trained model must answer first: given the other frames of a place, how
# well does it predict a frame it did not see? We hold out one Sentinel-2 frame per row
# exactly as in training (chapter 15: a random frame, a random valid period containing
# it), embed the period **without** vMF noise (inference uses $\mu$ itself, §4), decode
# at the held-out instant, and measure the L1 error over the frame's clear pixels in
# normalised units (log reflectance z-scores, chapter 3) and in reflectance.
#
# Three baselines that need no training, computed from the same remaining input frames on
# the same pixels:
# - **temporal mean**: the per-pixel mean of the clear input frames (the issue's baseline);
# - **period mean**: the same mean over only the clear input frames *inside the target's
#   period*, the frames the summary is asked to describe (where a pixel has none there, the
#   temporal mean stands in);
# - **nearest frame**: per pixel, the clear input frame closest in time (a stronger one
#   for slowly changing land, a weak one across a harvest).
#
# Which period? Training draws a random one per target (§S2.2.3), and so does this
# measurement by default (`period="random"`). But the temporal mean uses every input frame
# of the row, while a random period may summarise only a few of them; `period="row"`
# instead gives every target the row's whole span, first frame to last (the way the public
# product summarises a calendar year), so that the model and the temporal mean describe the
# same frames. We report both where it matters.

# %%
#| export
HELDOUT_PERIODS = ("random", "row")
"""How `heldout_errors` picks each target's period: as in training, or the row's whole span."""


def row_periods(held: HeldOut, source: str = "s2") -> HeldOut:
    """`held` with every target's period set to its row's span of `source` frames.

    The span runs from the row's first frame to one day past its last, the held-out frame
    included (as a calendar-year summary would include it); timecodes are recomputed.
    """
    from aef_lit.model.timecodes import normalise_in_period

    tg = held.targets[source]
    t_in = held.inputs[source].t
    present = held.inputs[source].frame_mask.clone()
    present[torch.arange(len(tg.index)), tg.index] |= tg.valid  # the held-out frame counts too
    start = torch.where(present, t_in, torch.full_like(t_in, math.inf)).min(1).values
    end = torch.where(present, t_in, torch.full_like(t_in, -math.inf)).max(1).values + 1.0
    span = torch.stack([torch.minimum(start, tg.t), torch.maximum(end, tg.t + 1.0)], -1)
    targets = {k: replace(v, period=span, t_norm=normalise_in_period(v.t, span)) for k, v in held.targets.items()}
    return replace(held, targets=targets, periods=torch.stack([v.period for v in targets.values()], dim=1))


@torch.no_grad()
def heldout_errors(model: nn.Module, batch, source: str = "s2", generator: torch.Generator | None = None,
                   stats=None, period: str = "random") -> dict[str, Any]:
    """L1 errors of the model and of three baselines on one held-out frame per row.

    `period` is "random" (each target's period drawn as in training) or "row" (the row's
    whole span, see `row_periods`). Returns the summed absolute errors and pixel counts
    (normalised units and reflectance) for `model`, `temporal_mean`, `period_mean` and
    `nearest_frame`, plus the held-out truth, the predictions and the baselines
    (`truth`, `pred`, `mean`, `mean_in_period`, `nearest`: `B C H W`) for plots.
    """
    from aef_lit.data.preprocess import denormalise
    from aef_lit.objective.reconstruction import decode_targets, hold_out

    if period not in HELDOUT_PERIODS:
        raise ValueError(f"period must be one of {HELDOUT_PERIODS}, got {period!r}")
    was_training = model.training
    model.eval()
    cfg = model.cfg
    held = hold_out(batch, cfg, generator)
    if period == "row":
        held = row_periods(held, source)
    mu = model.summarise(model.encode(held.inputs), held.periods)
    pred = decode_targets(model, mu, held)[source].float()
    tg = held.targets[source]
    sb = held.inputs[source]
    w_in = sb.weight * sb.frame_mask[..., None, None]  # B T H W, clear input frames only
    n_in = w_in.sum(1)  # B H W
    mean = (sb.x * w_in[:, :, None]).sum(1) / n_in.clamp_min(1)[:, None]
    inside = ((sb.t >= tg.period[:, :1]) & (sb.t < tg.period[:, 1:])).float()[..., None, None]
    w_p = w_in * inside  # clear input frames inside the target's period
    n_p = w_p.sum(1)
    period_mean = torch.where((n_p > 0)[:, None], (sb.x * w_p[:, :, None]).sum(1) / n_p.clamp_min(1)[:, None], mean)
    dt = (sb.t - tg.t[:, None]).abs().float()[..., None, None].expand_as(w_in)
    dt = torch.where(w_in > 0, dt, torch.full_like(dt, float("inf")))
    idx = dt.argmin(1)  # B H W
    nearest = torch.gather(sb.x, 1, idx[:, None, None].expand(-1, 1, sb.x.shape[2], -1, -1)).squeeze(1)
    ok = (tg.weight > 0) & (n_in > 0)  # pixels where the truth and every baseline exist
    spec = cfg.source(source)
    out: dict[str, Any] = {"pixels": int(ok.sum())}
    for name, est in (("model", pred), ("temporal_mean", mean), ("period_mean", period_mean),
                      ("nearest_frame", nearest)):
        err = (est - tg.x).abs().mean(1)
        refl = np.abs(denormalise(est.cpu().numpy(), spec, stats)
                      - denormalise(tg.x.cpu().numpy(), spec, stats)).mean(1)
        out[name] = float(err[ok].sum())
        out[name + "_refl"] = float(torch.from_numpy(refl)[ok.cpu()].sum())
    out.update(truth=tg.x, pred=pred, mean=mean, mean_in_period=period_mean, nearest=nearest, valid=ok, t=tg.t,
               period=tg.period)
    model.train(was_training)
    return out


def evaluate_heldout(model: nn.Module, data: str = "greenearthnet", sites: Sequence[str] = ("sweden",),
                     rows: int = 64, batch_size: int = 16, tile: int | None = None, frames: int = 8,
                     seed: int = 1234, period: str = "random", shift_days: float = 0.0) -> dict[str, float]:
    """Mean held-out L1 of the model and the baselines over `rows` random rows of `sites`.

    Rows, held-out frames and periods are a pure function of `seed`: every model is scored
    on the same frames. `period`: see `heldout_errors`. `shift_days` moves every timestamp
    of every row by that many days (the frames are unchanged): a probe of how much the
    model reads the calendar rather than the frames.
    """
    from aef_lit.training.sampling import tile_stream, training_dataset

    ds = training_dataset(data, sites, tile=tile or model.cfg.tile, frames=frames, seed=seed)
    stream = tile_stream(ds, batch_size)
    names = ("model", "temporal_mean", "period_mean", "nearest_frame")
    sums = {k + suffix: 0.0 for k in names for suffix in ("", "_refl")}
    pixels = 0
    for i in range(max(1, rows // batch_size)):
        batch = next(stream)
        if shift_days:
            batch = {k: replace(v, t=v.t + shift_days) for k, v in batch.items()}
        res = heldout_errors(model, batch_to(batch, next(model.parameters()).device),
                             generator=step_generator(seed, i), period=period)
        pixels += res["pixels"]
        for k in sums:
            sums[k] += res[k]
    return {k: v / max(pixels, 1) for k, v in sums.items()} | {"pixels": pixels, "rows": rows, "period": period,
                                                                "shift_days": shift_days}


# %% [markdown]
# ## Shipping a trained model
#
# A trained model leaves the run folder as three files: `model.safetensors` (weights only:
# loading it cannot run code, and it holds no optimiser state, a quarter of the
# checkpoint's size), `config.json` (the `ModelConfig`, the `TrainConfig` of the run and
# its final numbers) and `MODEL_CARD.md`. `load_pretrained()` rebuilds the model from the
# config and loads the weights; later chapters use it to show real embeddings without
# training in CI. Inputs are normalised with chapter 3's `DEFAULT_STATS`, as in training.

# %%
#| export
PRETRAINED = Path(__file__).resolve().parents[2] / "data" / "models" / "aef-tiny-greenearthnet" \
    if "__file__" in globals() else Path("../data/models/aef-tiny-greenearthnet")
"""The model trained in this chapter and shipped with the repository."""


def export_model(model: nn.Module, model_cfg: ModelConfig, out_dir: str | Path, train_cfg: TrainConfig | None = None,
                 facts: dict[str, Any] | None = None, card: str | None = None) -> Path:
    """Write `model.safetensors`, `config.json` (and `MODEL_CARD.md` when `card` is given)."""
    from safetensors.torch import save_file

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous().clone() for k, v in unwrap(model).state_dict().items()}
    save_file(state, str(out / "model.safetensors"), metadata={"format": "pt", "preset": model_cfg.name})
    meta = {"model_config": json.loads(model_config_to_json(model_cfg)),
            "train_config": json.loads(train_cfg.to_json()) if train_cfg is not None else None,
            "normalisation": "aef_lit.preprocess.DEFAULT_STATS", **(facts or {})}
    (out / "config.json").write_text(json.dumps(meta, indent=1, sort_keys=True))
    if card is not None:
        (out / "MODEL_CARD.md").write_text(card)
    return out


def load_pretrained(path: str | Path | None = None, device: str | torch.device = "cpu"
                    ) -> tuple[nn.Module, ModelConfig]:
    """(model, cfg) of a shipped model folder (default: the one trained in chapter 21), in eval mode."""
    from safetensors.torch import load_file

    from aef_lit.model import build_model

    folder = Path(path) if path is not None else PRETRAINED
    if not (folder / "model.safetensors").exists():
        raise FileNotFoundError(f"no trained model at {folder} (expected model.safetensors and config.json)")
    meta = json.loads((folder / "config.json").read_text())
    cfg = model_config_from_json(meta["model_config"])
    model = build_model(cfg)
    model.load_state_dict(load_file(str(folder / "model.safetensors")))
    return model.to(device).eval(), cfg


def _final_terms(rows: list[dict[str, str]], frac: float = 0.05) -> dict[str, float]:
    tail = rows[-max(1, int(len(rows) * frac)):]
    return {k: round(sum(float(r[k]) for r in tail) / len(tail), 5) for k in TERMS}


def ship(run_dir: str | Path, out_dir: str | Path | None = None, eval_data: str = "greenearthnet",
         eval_sites: Sequence[str] = ("sweden",), rows: int = 128, hardware: str = "", notes: str = "",
         total_steps: int | None = None, total_seconds: float | None = None) -> dict[str, Any]:
    """Turn a finished run into a shipped model folder: weights, config, card, held-out scores.

    `notes` (free text, e.g. the run's history) goes into the card and the config;
    `total_steps` / `total_seconds` override the last run's own counts for multi-stage runs.
    """
    import platform

    from aef_lit.model import build_model

    run = Path(run_dir)
    state = load_checkpoint(run / CHECKPOINT)
    tcfg = TrainConfig.from_dict(json.loads(state["config"]))
    mcfg = model_config_from_json(state["model_config"])
    model = build_model(mcfg)
    model.load_state_dict(state["ema"]["shadow"] if "ema" in state else state["model"])  # the average, if kept
    model.eval()
    rows_log = read_metrics(run / METRICS)
    summary = json.loads((run / "summary.json").read_text()) if (run / "summary.json").exists() else {}
    seconds = float(rows_log[-1]["wall_s"]) if rows_log else summary.get("seconds", 0.0)
    scores = evaluate_heldout(model, eval_data, eval_sites, rows=rows, frames=tcfg.frames)
    whole = evaluate_heldout(model, eval_data, eval_sites, rows=rows, frames=tcfg.frames, period="row")
    facts = {
        "steps": int(total_steps or state["step"]), "train_seconds": round(total_seconds or seconds, 1),
        "hardware": hardware or f"{platform.machine()} CPU, {torch.get_num_threads()} threads, torch {torch.__version__}",
        "params": sum(p.numel() for p in model.parameters()),
        "final_terms": _final_terms(rows_log), "heldout": {"data": eval_data, "sites": list(eval_sites), **scores},
        "heldout_row_period": {"data": eval_data, "sites": list(eval_sites), **whole},
        "notes": notes,
    }
    folder = Path(out_dir) if out_dir is not None else PRETRAINED
    export_model(model, mcfg, folder, tcfg, facts, card=model_card(mcfg, tcfg, facts))
    if (run / METRICS).exists():  # the training curve travels with the model (a few hundred kB)
        (folder / METRICS).write_text((run / METRICS).read_text())
    return facts


def _training_data_text(tcfg: TrainConfig) -> str:
    """The card's sentence on the training data, for `greenearthnet` and `multisite` runs."""
    if tcfg.data != "multisite":
        return (f"GreenEarthNet minicubes {', '.join(tcfg.sites)} (2021 Sentinel-2 L2A B02 B03 B04 B8A at "
                "~20 m, 128 x 128 px, clouds from the minicube mask as loss weights; Copernicus DEM and ESA "
                "WorldCover as target-only sources), from dongzhang04/greenearthnet (MIT; modified Copernicus "
                "Sentinel data; WorldCover CC-BY 4.0).")
    return (f"the `multisite` sites {', '.join(tcfg.sites)} (chapter 20), all brought to Sentinel-2 B02 B03 "
            "B04 B8A on a 10 m UTM grid: GreenEarthNet minicubes and per-date GeoTIFFs (2021 L2A; "
            "dongzhang04/greenearthnet, MIT), WorldCereal's Belgian monthly composites (B08 for B8A; "
            "WorldCereal/worldcereal-classification, MIT) and eo-learn's Slovenian L1C scenes (B08 for "
            "B8A; sentinel-hub/eo-learn, MIT); modified Copernicus Sentinel data, WorldCover CC-BY 4.0. "
            "DEM and land cover are target-only sources where a site has them.")


def model_card(mcfg: ModelConfig, tcfg: TrainConfig, facts: dict[str, Any]) -> str:
    """The MODEL_CARD.md text of a shipped model."""
    h = facts["heldout"]
    ft = facts["final_terms"]
    flags = (f"--preset {tcfg.preset} --data {tcfg.data} --sites {' '.join(tcfg.sites)} --tile {mcfg.tile} "
             f"--frames {tcfg.frames} --batch-size {tcfg.batch_size} --steps {tcfg.steps} --lr {tcfg.lr:g} "
             f"--warmup-frac {tcfg.warmup_frac:g} --seed {tcfg.seed}"
             + (f" --model-overrides '{tcfg.model_overrides}'" if tcfg.model_overrides else "")
             + (f" --gain {tcfg.gain:g}" if tcfg.gain else "") + (f" --occlude {tcfg.occlude:g}" if tcfg.occlude else "")
             + (f" --time-shift {tcfg.time_shift:g}" if tcfg.time_shift else "")
             + (f" --targets {' '.join(tcfg.targets) or 'none'}" if tuple(tcfg.targets) != ("dem", "landcover") else "")
             + (f" --ema {tcfg.ema:g}" if tcfg.ema else "") + (f" --init-from {tcfg.init_from}" if tcfg.init_from else ""))
    stage = "the last stage: " if facts.get("notes") else ""
    over = f" with `model_overrides` {tcfg.model_overrides}" if tcfg.model_overrides else ""
    corpus = "real Sentinel-2 samples from several places" if tcfg.data == "multisite" else "GreenEarthNet"
    return f"""# {mcfg.name} AEF model trained on {corpus} (aef-lit, chapter 21)

A small AlphaEarth Foundations model (Brown et al. 2025, arXiv 2507.22291) as re-implemented
in aef-lit, trained on a CPU so that the book can show real embeddings without training in CI.
It is a teaching artefact: tiny, trained briefly on a few small sites. Do not use it for mapping.

## Model
- preset `{mcfg.name}`{over}: {mcfg.n_blocks} STP blocks, widths space {mcfg.d_space} / time {mcfg.d_time} /
  precision {mcfg.d_precision}, tile L = {mcfg.tile}, embedding E = {mcfg.embed_dim}, kappa = {mcfg.kappa:g};
  {facts['params']:,} parameters; float32 safetensors.
- sources: {', '.join(f"`{s.name}` ({s.role}, {s.modality}, {len(s.bands)} band(s))" for s in mcfg.sources)}.
- inputs normalised with `aef_lit.preprocess.DEFAULT_STATS` (log1p + z-score for optical).
- load: `from aef_lit.training.core import load_pretrained; model, cfg = load_pretrained()`.

## Data
- training: {_training_data_text(tcfg)} Random {mcfg.tile} x {mcfg.tile} tiles with up to
  {tcfg.frames} frames from random support windows (chapter 20).
- held out: {', '.join(h['sites'])} (a site never seen in training). The normalisation statistics
  were fitted on all real samples including it (8 numbers per band; a negligible leak).

## Training
- {facts['steps']} steps in all ({stage}{tcfg.steps} steps of batch {tcfg.batch_size} x {tcfg.grad_accum} accumulation), Adam, peak lr {tcfg.lr:g},
  linear warm-up over {warmup_steps(tcfg.steps, tcfg.warmup_frac)} steps then linear decay to 0, clip {tcfg.clip:g},
  seed {tcfg.seed}; loss weights of the paper (1, 0.05, 0.02, 0.001, normalised).
- wall time {facts['train_seconds'] / 60:.1f} min on {facts['hardware']}.
- final loss terms (mean of the last 5 % of steps): total {ft['total']:.4f}, reconstruction
  {ft['reconstruction']:.4f}, uniformity {ft['uniformity']:.4f}, consistency {ft['consistency']:.4f},
  text {ft['text']:.4f}.
- reproduce ({stage.rstrip(": ") or "the run"}): `aef-train {flags} --out-dir runs/ship`, then
  `python -c "from aef_lit.training.core import ship; ship('runs/ship')"`.

## Held-out reconstruction ({', '.join(h['sites'])}, {h['rows']} rows, {h['pixels']:,} clear pixels)
One Sentinel-2 frame per row is removed from the input and predicted at its instant from
the summary of a random period containing it, as in training (embedding mu, no vMF noise).
Mean absolute error per band over the clear pixels:

| estimate | L1 (normalised units) | L1 (reflectance) |
|---|---|---|
| this model | {h['model']:.4f} | {h['model_refl']:.4f} |
| per-pixel temporal mean of the clear input frames | {h['temporal_mean']:.4f} | {h['temporal_mean_refl']:.4f} |
""" + (f"| per-pixel mean of the clear input frames inside the period | {h['period_mean']:.4f} | "
       f"{h['period_mean_refl']:.4f} |\n" if "period_mean" in h else "") + f"""\
| per-pixel nearest clear input frame in time | {h['nearest_frame']:.4f} | {h['nearest_frame_refl']:.4f} |
""" + (f"""
Summarising instead each row's whole span (`period="row"`, as an annual product would), on the
same frames: this model {w['model']:.4f}, temporal mean {w['temporal_mean']:.4f}, nearest frame
{w['nearest_frame']:.4f} (normalised units).
""" if (w := facts.get("heldout_row_period")) else "") + (f"""
## Sparse-label probes (chapter 25, `aef-eval`)
Embeddings of this model, untrained networks of its architecture and designed baselines, probed
with the paper's protocol ({(p := facts['probes'])['settings'].get('folds')} folds, spatial splits, 95 % t intervals).
Tasks marked *leak* had their labels as a training target of this model at that site: not a
measure of mapping from few labels.

{p['table']}
""" if facts.get("probes") else "") + (f"\n## Notes\n{facts['notes']}\n" if facts.get("notes") else "")


if __name__ == "__main__" and "ipykernel" not in sys.modules:  # pragma: no cover - via subprocesses
    sys.exit(main())

# %% [markdown]
# ## A short run on the real samples
#
# The whole system on the real data, small enough for CI: the `tiny` preset on 32 × 32
# tiles of GreenEarthNet Portugal and Hungary (synthetic cubes where `eo_real/` is absent),
# a peak learning rate of $10^{-3}$ (ten times the paper's: a short run with small batches
# needs it; §8's $10^{-4}$ is for batches of 256 over 100k steps), and the paper's schedule
# shape. The progress bar is off in the book (a terminal shows it: loss terms and tiles/s);
# the metrics file holds the same numbers.

# %%
import shutil

import pandas as pd

logging.basicConfig(level=logging.WARNING)
run_dir = Path("../runs/nb21")
shutil.rmtree(run_dir, ignore_errors=True)
run_cfg = TrainConfig(preset=preset, device=device, seed=seed, data=data, steps=steps, tile=tile,
                      batch_size=4, frames=8, lr=1e-3, warmup_frac=0.05, checkpoint_every=20,
                      out_dir=str(run_dir), progress=False)
result = train(run_cfg)
hist = pd.DataFrame(result.metrics).astype(float)
print(f"{type(result.model).__name__} ({sum(p.numel() for p in result.model.parameters()):,} parameters): "
      f"{result.step} steps in {result.seconds:.1f} s, median {hist.tiles_per_s.median():.1f} tiles/s")
first, last = hist.reconstruction[:8].mean(), hist.reconstruction[-8:].mean()
assert last < first, f"the reconstruction loss falls over the run ({first:.3f} -> {last:.3f})"
assert load_checkpoint(run_dir / CHECKPOINT)["step"] == steps
hist.tail(3)

# %%
fig, axes = plt.subplots(1, 5, figsize=(15, 2.8))
for ax, k in zip(axes, ("reconstruction", "uniformity", "consistency", "text")):
    ax.plot(hist.step, hist[k], lw=0.8, alpha=0.5)
    ax.plot(hist.step, hist[k].rolling(8, min_periods=1).mean(), lw=1.5)
    ax.set(title=k, xlabel="step")
axes[4].plot(hist.step, hist.lr)
axes[4].set(title="learning rate", xlabel="step")
plt.tight_layout()
plt.show()

# %% [markdown]
# ### Held-out frames of a site the model never saw
#
# Sweden is not among the training sites. Below, for a few Swedish tiles: the held-out
# frame (truth), the model's reconstruction from the remaining frames, and the per-pixel
# temporal mean of those frames, in true colour (B04, B03, B02), and the error maps.
# After a minute of training on a CPU the reconstructions are blurry and the temporal mean
# usually still wins; the shipped model below was trained longer.

# %%
from aef_lit.data.preprocess import denormalise
from aef_lit.training.sampling import tile_stream, training_dataset

from aef_lit.conventions import find_eo_real

real_data = data in ("auto", "greenearthnet") and find_eo_real(required=False) is not None
eval_data, eval_sites = ("greenearthnet", ("sweden",)) if real_data else ("synthetic", ("held_out",))


def show_reconstructions(model, title, n=4, sites=None, data=None):
    ds_eval = training_dataset(data or eval_data, sites or eval_sites, tile=model.cfg.tile, frames=8, seed=99)
    b = next(tile_stream(ds_eval, n))
    r = heldout_errors(model, b, generator=step_generator(99, 0))
    spec = model.cfg.source("s2")
    rgb_i = [spec.bands.index(x) for x in ("B04", "B03", "B02")]

    def rgb(x):
        return np.clip(denormalise(x.numpy(), spec)[rgb_i].transpose(1, 2, 0) / 0.25, 0, 1)

    fig, axes = plt.subplots(n, 5, figsize=(11, 2.3 * n))
    for i in range(n):
        ok = r["valid"][i].numpy()
        e_model = (r["pred"][i] - r["truth"][i]).abs().mean(0).numpy()
        e_mean = (r["mean"][i] - r["truth"][i]).abs().mean(0).numpy()
        truth = np.where(ok[..., None], rgb(r["truth"][i]), 1.0)  # clouds and nodata in white
        for ax, img, name in zip(axes[i], (truth, rgb(r["pred"][i]), rgb(r["mean"][i])),
                                 ("held-out truth", "model", "temporal mean")):
            ax.imshow(img)
            ax.set_title(name, fontsize=9)
        for ax, e, name in ((axes[i, 3], e_model, "model"), (axes[i, 4], e_mean, "mean")):
            ax.imshow(np.where(ok, e, np.nan), vmin=0, vmax=1, cmap="magma")
            ax.set_title(f"|error| {name}: {np.nanmean(np.where(ok, e, np.nan)):.3f}", fontsize=9)
        for ax in axes[i]:
            ax.axis("off")
    fig.suptitle(title)
    plt.tight_layout()
    plt.show()


show_reconstructions(result.model, f"after {result.step} steps ({eval_sites[0]}, never seen in training)")

# %% [markdown]
# ## The shipped model
#
# `data/models/aef-tiny-greenearthnet/` holds a `tiny` model with a wider precision path
# (`--model-overrides '{"d_precision": 64, "decoder_hidden": 128}'`, 0.8M parameters),
# trained with this chapter's CLI on GreenEarthNet Portugal and Hungary for much longer
# than the run above (its `MODEL_CARD.md` lists the data, steps, time, hardware and final
# loss terms; its `metrics.csv` the last stage's training curve). Here we load it with
# `load_pretrained()`, check that it embeds a real tile into unit vectors, and score it on
# held-out frames of every GreenEarthNet site against the two baselines, on the same frames
# and pixels: its held-out site (Sweden, named in its `config.json`) and its training sites.

# %%
if (PRETRAINED / "model.safetensors").exists():
    shipped, shipped_cfg = load_pretrained()
    facts = json.loads((PRETRAINED / "config.json").read_text())
    shipped_train_cfg = TrainConfig.from_dict(facts["train_config"])
    print(f"{PRETRAINED.name}: {facts['params']:,} parameters, {facts['steps']} steps, "
          f"{facts['train_seconds'] / 60:.0f} min on {facts['hardware']}")
    curve = pd.read_csv(PRETRAINED / METRICS)
    fig, axes = plt.subplots(1, 4, figsize=(14, 2.6))
    for ax, k in zip(axes, ("reconstruction", "uniformity", "consistency", "text")):
        ax.plot(curve.step, curve[k].rolling(50, min_periods=1).mean())
        ax.set(title=f"{k} (shipped run)", xlabel="step")
    plt.tight_layout()
    plt.show()
else:
    shipped = None
    print(f"no shipped model at {PRETRAINED}")

# %%
if shipped is not None and real_data:
    from aef_lit.model import embed
    from aef_lit.training.sampling import GREENEARTHNET_SITES

    held_data, held_sites = facts["heldout"]["data"], tuple(facts["heldout"]["sites"])
    train_sites = tuple(facts["train_config"]["sites"])
    ds_held = training_dataset(held_data, held_sites, tile=shipped_cfg.tile, frames=8, seed=5)
    tile_batch = ds_held.collate([ds_held[0]])
    t = tile_batch["s2"].t[tile_batch["s2"].frame_mask]
    periods = torch.tensor([[[float(t.min()), float(t.max()) + 1.0]]], dtype=torch.float64)
    with torch.no_grad():
        emb = embed(shipped, tile_batch, periods)
    print("embedding", tuple(emb.shape), "trained on", train_sites, "held out", held_sites)
    assert torch.allclose(emb.norm(dim=2), torch.ones(()), atol=1e-4), "unit vectors on S^63"
    rows = {}
    for site in GREENEARTHNET_SITES:
        sc = evaluate_heldout(shipped, held_data, (site,), rows=64, frames=8)
        rows[site] = {"role": "held out" if site in held_sites else "training",
                      "model": sc["model"], "temporal mean": sc["temporal_mean"],
                      "nearest frame": sc["nearest_frame"], "model (reflectance)": sc["model_refl"],
                      "temporal mean (reflectance)": sc["temporal_mean_refl"]}
    table = pd.DataFrame(rows).T
    numeric = [c for c in table.columns if c != "role"]
    table[numeric] = table[numeric].astype(float).round(4)
    display(table)
    held_row = rows[held_sites[0]]
    print(f"on {held_sites[0]}: model {held_row['model']:.4f} vs temporal mean {held_row['temporal mean']:.4f}, "
          f"an error {100 * (held_row['model'] / held_row['temporal mean'] - 1):+.1f} % relative to the mean")
    show_reconstructions(shipped, f"shipped model on {held_sites[0]} (never seen in training)", sites=held_sites,
                         data=held_data)

# %% [markdown]
# ### The grid matters: the same model on the paper's 10 m grid
#
# GreenEarthNet's cubes come at ~20 m, and the model summarises at L/2, so on them the
# summary is made at ~40 m and every 20 m pixel's own detail has to be rebuilt by the
# learned upsampling (chapter 11). Two measurements on Sweden say that this is where most
# of the gap lies. Averaged over 2 × 2 blocks, the shipped model's held-out error falls
# almost to the temporal mean's (0.2415 against 0.236; at full resolution 0.269 against
# 0.248), so three quarters of its deficit is detail finer than 40 m. And the paper's
# grid is 10 m (chapter 20's `multisite` resamples every site to it): there the same
# weights, never trained at 10 m, come within about 1 % of the mean on Sweden, and are
# 14-17 % below it on their training sites (measured with 128 rows: Sweden 0.2475 against
# 0.2446, Portugal 0.353 against 0.424, Hungary 0.420 against 0.489). The cell scores
# every site on both grids.

# %%
if shipped is not None and real_data:
    grid_rows = {}
    for site in GREENEARTHNET_SITES:
        sc10 = evaluate_heldout(shipped, "multisite", (site,), rows=64, frames=8)
        grid_rows[site] = {"role": rows[site]["role"],
                           "model / mean, own ~20 m grid": rows[site]["model"] / rows[site]["temporal mean"],
                           "model / mean, 10 m grid": sc10["model"] / sc10["temporal_mean"],
                           "model, 10 m": sc10["model"], "temporal mean, 10 m": sc10["temporal_mean"]}
    grid_table = pd.DataFrame(grid_rows).T
    num = [c for c in grid_table.columns if c != "role"]
    grid_table[num] = grid_table[num].astype(float).round(3)
    display(grid_table)
    g = grid_rows[held_sites[0]]
    assert g["model / mean, 10 m grid"] < g["model / mean, own ~20 m grid"] - 0.03, \
        "on the held-out site the 10 m grid should remove much of the gap to the mean"

# %% [markdown]
# ### Which period is summarised
#
# Everything above summarises a *random* period around each held-out frame, as training
# does. Two consequences are easy to miss. The temporal mean averages every input frame
# of the row, while the summary may describe only a few of them; and a mean restricted to
# the frames inside the period (the **period mean**) is a harder baseline than the
# temporal mean, because it is local in time. Summarising each row's whole span instead
# (`period="row"`, what an annual product does) gives the model and the temporal mean the
# same frames. The cell scores the shipped model on its held-out site both ways, on the
# same rows and frames.

# %%
if shipped is not None and real_data:
    per = {}
    for how in HELDOUT_PERIODS:
        sc = evaluate_heldout(shipped, held_data, held_sites, rows=64, frames=8, period=how)
        per[how] = {k: sc[k] for k in ("model", "temporal_mean", "period_mean", "nearest_frame")}
    per_table = pd.DataFrame(per).T
    display(per_table.round(4))
    fig, ax = plt.subplots(figsize=(7, 2.8))
    per_table.T.plot.barh(ax=ax)
    ax.set(xlabel="held-out L1 (normalised units)", title=f"{held_sites[0]}: random period vs the row's span")
    ax.set_xlim(0.8 * per_table.values.min(), 1.02 * per_table.values.max())
    plt.tight_layout()
    plt.show()
    assert abs(per["row"]["period_mean"] - per["row"]["temporal_mean"]) < 1e-6, "the whole span holds every frame"
    assert per["row"]["model"] < per["random"]["model"], "a summary of every input frame should predict better"
    assert per["random"]["period_mean"] < per["random"]["temporal_mean"], "the period mean is the harder baseline"

# %% [markdown]
# ### What the trained summariser attends to
#
# Chapter 11 showed an *untrained* summariser spreading its attention almost uniformly
# over a pixel's frames. Here is the shipped model on a tile of its held-out site: the
# attention weights (mean over heads) of one pixel for three periods, the first and second
# half of the row's span and the whole span. A useful summariser should have learned to
# weight the frames inside the period more, and to give little weight to cloudy frames
# (crosses: frames whose pixel is cloudy or shadowed in the minicube mask, which the model
# never sees).

# %%
if shipped is not None and real_data:
    b1 = ds_held.collate([ds_held[3]])
    sb1 = b1["s2"]
    tt1 = sb1.t[0][sb1.frame_mask[0]]
    lo, hi = float(tt1.min()), float(tt1.max()) + 1.0
    mid = (lo + hi) / 2
    three = torch.tensor([[[lo, mid], [mid, hi], [lo, hi]]], dtype=torch.float64)
    with torch.no_grad():
        enc1 = shipped.encode(b1)
        _, attn = shipped.summariser(enc1.features, enc1.t, enc1.mask, three, return_attention=True)
    weights_px = attn[0].mean((-1, -2)).numpy()  # P T: averaged over the L/2 grid of the tile
    i, j = shipped_cfg.tile // 4, shipped_cfg.tile // 4
    one_px = attn[0, :, :, i, j].numpy()
    cloudy = (sb1.weight[0][:, 2 * i, 2 * j] == 0).numpy()
    keep = sb1.frame_mask[0].numpy()
    days = (sb1.t[0] - lo).numpy()
    fig, axes = plt.subplots(1, 2, figsize=(12, 3.4), sharey=True)
    for ax, w, name in ((axes[0], one_px, f"pixel {(2 * i, 2 * j)}"), (axes[1], weights_px, "mean over the tile")):
        for p, (color, label) in enumerate(zip(("C0", "C3", "C2"), ("first half", "second half", "whole span"))):
            ax.bar(days[keep] + (p - 1) * 1.5, w[p][keep], width=1.5, color=color, label=label)
        if name.startswith("pixel"):
            ax.scatter(days[keep & cloudy], np.zeros((keep & cloudy).sum()) + 0.01, marker="x", c="k",
                       label="cloudy at this pixel")
        ax.axvline((mid - lo), color="0.5", ls=":", lw=1)
        ax.set(title=f"trained attention, {name} ({held_sites[0]})", xlabel="days since first frame")
    axes[0].set_ylabel("attention weight")
    axes[0].legend(fontsize=7)
    plt.tight_layout()
    plt.show()
    first, second = weights_px[0], weights_px[1]
    early = days[keep] < (mid - lo)
    share_first = float(first[keep][early].sum() / first[keep].sum())
    share_second = float(second[keep][early].sum() / second[keep].sum())
    print(f"share of attention on first-half frames: period 'first half' {share_first:.3f} "
          f"| period 'second half' {share_second:.3f}")
    assert share_first > share_second + 0.2, "the trained query should follow its period"

# %% [markdown]
# Unlike chapter 11's untrained summariser, the trained one has learned to use the period:
# on the Swedish tile measured when this chapter was written, the period "first half" put
# 95 % of its attention (mean over the tile) on frames of the first half, while "second
# half" put only 49 % there, and the frames the minicube marks as cloudy at the pixel got
# almost no weight, although the model never sees the cloud mask. Where a period has few
# clear frames of its own (the second half here), the query borrows from the nearest
# clear frames outside it.

# %% [markdown]
# ### Why a new place is hard: the pixel's own level, and the calendar
#
# Two probes show what a model trained on a few places does at a place it never saw.
#
# **Does a prediction follow the pixel's own level?** A model that reads its input
# predicts a bright pixel brighter and a dark pixel darker, as the pixel's own temporal
# mean does: plotted against that mean, its predictions should fall on a line of slope 1
# (and, with no bias, through the origin). A model that has partly learned its training
# places' look instead of reading the input pulls its predictions towards what it saw in
# training: the slope falls below 1 and the predictions shift. Below, per band, for the
# held-out site and a training site.

# %%
from einops import rearrange


def level_fit(model, data_name, sites, rows=32, seed=1234):
    """Per band: slope and intercept of the model's held-out predictions against the input's
    temporal mean, the mean bias of predictions and of the mean, and the points (for plots)."""
    ds_l = training_dataset(data_name, sites, tile=model.cfg.tile, frames=8, seed=seed)
    stream_l = tile_stream(ds_l, 16)
    P, M, Y = [], [], []
    for i in range(max(1, rows // 16)):
        r = heldout_errors(model, next(stream_l), generator=step_generator(seed, i))
        ok = r["valid"]
        for acc, key in ((P, "pred"), (M, "mean"), (Y, "truth")):
            acc.append(rearrange(r[key], "b c h w -> c b h w")[:, ok])
    P, M, Y = (torch.cat(a, 1).numpy() for a in (P, M, Y))
    fits = np.array([np.polyfit(M[c], P[c], 1) for c in range(P.shape[0])])
    return {"slope": fits[:, 0], "intercept": fits[:, 1], "bias_model": (P - Y).mean(1),
            "bias_mean": (M - Y).mean(1), "pred": P, "mean": M, "truth": Y}


if shipped is not None and real_data:
    train_site = train_sites[0]
    fit_held = level_fit(shipped, held_data, held_sites)
    fit_train = level_fit(shipped, held_data, (train_site,))
    bands = shipped_cfg.source("s2").bands
    fig, axes = plt.subplots(1, len(bands), figsize=(14, 3.3))
    for c, ax in enumerate(axes):
        for fit, name, col in ((fit_train, f"{train_site} (training)", "C0"), (fit_held, f"{held_sites[0]} (held out)", "C3")):
            k = np.random.default_rng(0).choice(fit["mean"].shape[1], size=min(1500, fit["mean"].shape[1]), replace=False)
            ax.scatter(fit["mean"][c, k], fit["pred"][c, k], s=2, alpha=0.25, color=col)
            xs = np.linspace(fit["mean"][c].min(), fit["mean"][c].max(), 2)
            ax.plot(xs, fit["slope"][c] * xs + fit["intercept"][c], color=col, lw=2,
                    label=f"{name}: slope {fit['slope'][c]:.2f}")
        lim = ax.get_xlim()
        ax.plot(lim, lim, "k:", lw=1)
        ax.set(title=bands[c], xlabel="temporal mean of the inputs", ylabel="model" if c == 0 else None)
        ax.legend(fontsize=6)
    fig.suptitle("held-out predictions against the pixel's own temporal mean (normalised units; dotted: slope 1)")
    plt.tight_layout()
    plt.show()
    print(pd.DataFrame({"slope, training site": fit_train["slope"], "slope, held-out site": fit_held["slope"],
                        "bias, held-out site": fit_held["bias_model"], "bias of the mean": fit_held["bias_mean"]},
                       index=bands).round(3).to_string())
    assert (fit_train["slope"] > 0.6).all(), "on a training site predictions follow the input's level"

# %% [markdown]
# **Does the model read the calendar?** Every timestamp of the held-out rows is moved by
# the same number of days; the frames, and so every baseline, stay exactly as they are.
# A model that reads only its frames and their spacing scores the same whatever the
# shift; a model that has tied the look of its training places to their dates does not.
# Chapter 20's `time_shift` augmentation exists because the first shipped model failed
# this probe: on Sweden at 10 m its error rose from 0.243 to 0.262 with a 90-day shift,
# to 0.261 with a year, and to 0.303 with ten years (64 rows; the temporal mean: 0.238).
# A model trained from scratch with `time_shift=365` (run T6 in the findings below) passes
# it: over the six shifts of the cell, on Sweden at 10 m, its error moved by 0.7 %, the
# shipped model's by 34 % (32 rows each; the cell runs on the cubes' own grid, where the
# shipped model's error moved by 22 % when this was written).

# %%
if shipped is not None and real_data:
    shifts = (-365.0, -90.0, 0.0, 90.0, 182.0, 365.0)
    probe = {d: evaluate_heldout(shipped, held_data, held_sites, rows=32, frames=8, shift_days=d) for d in shifts}
    fig, ax = plt.subplots(figsize=(7, 2.8))
    ax.plot(shifts, [probe[d]["model"] for d in shifts], "o-", label="shipped model")
    ax.axhline(probe[0.0]["temporal_mean"], color="k", ls=":", label="temporal mean (does not move)")
    ax.set(xlabel="every timestamp moved by (days)", ylabel="held-out L1", title=f"the calendar probe ({held_sites[0]})")
    ax.legend(fontsize=8)
    plt.tight_layout()
    plt.show()
    spread = max(v["model"] for v in probe.values()) / min(v["model"] for v in probe.values()) - 1
    print(f"largest relative change of the model's error over the shifts: {100 * spread:.1f} %")
    assert all(abs(v["temporal_mean"] - probe[0.0]["temporal_mean"]) < 1e-9 for v in probe.values())
    if shipped_train_cfg.time_shift >= 365:
        assert spread < 0.05, "a model trained with time_shift=365 should barely notice the calendar"
    elif shipped_train_cfg.time_shift == 0:
        assert spread > 0.05, "the text above says a model trained without time_shift reads the calendar"

# %% [markdown]
# **What we found, honestly.** The shipped model embeds real tiles and, *on the sites it
# was trained on*, beats the per-pixel temporal mean (tables above: Portugal and Hungary).
# On Sweden, a site it never saw (boreal forest in spring, darker than anything in Portugal
# or Hungary), it is **still not better than the temporal mean** after the training we
# could afford on a CPU: 8 % worse on the cubes' own grid, 1 % worse on the 10 m grid. The
# best model we trained for the unseen site (T6 below) is 1.5 % *better* than the mean on
# Sweden at 10 m, but that is a tie, not "clearly better", and it gave up the training
# sites to get there. So issue 5's last criterion stays open and its test is a strict
# `xfail`. What we measured
# on the way (held-out L1 in normalised units, 128 rows per site, the same frames and
# pixels for every model of a table; the temporal mean uses the cloud mask, the model
# never sees it):
#
# *On the cubes' own ~20 m grid* (`data="greenearthnet"`):
#
# | model | trained on | steps | Sweden | Portugal | Hungary |
# |---|---|---|---|---|---|
# | previous shipped model, `tiny` (precision width 16) | PT + HU | 8,700 | 0.324 | 0.461 | 0.455 |
# | `tiny` + `{"d_precision": 64, "decoder_hidden": 128}`, stage 1 | PT + HU | 4,500 | 0.306 | 0.445 | 0.459 |
# | **the same, stage 2 (shipped)** | PT + HU | 10,500 | **0.269** | 0.406 | 0.435 |
# | the same recipe, stage 2 | PT + SE | 10,500 | 0.221 | 0.428 | **0.569** |
# | *temporal mean of the clear input frames* | | | 0.248 | 0.445 | 0.507 |
# | *nearest clear input frame* | | | 0.220 | 0.391 | 0.396 |
#
# *On the 10 m grid* (`data="multisite"`, chapter 20), the shipped model and four
# continuations of it (`--init-from` the shipped weights, lr decaying to 0, gain 0.6):
#
# | model | trained on (10 m) | more steps | Sweden | Portugal | Hungary |
# |---|---|---|---|---|---|
# | **shipped model** (never trained at 10 m) | | | **0.2475** | 0.353 | 0.420 |
# | + lr 5e-4 | PT + HU | 5,000 | **0.265** | 0.342 | 0.414 |
# | + lr 5e-4 | six `multisite` sites | 5,000 | **0.302** | 0.355 | 0.431 |
# | + lr 5e-4, `occlude=0.5` | PT + HU | 4,000 | **0.259** | 0.356 | 0.423 |
# | + lr 2e-4, `occlude=0.5` | PT + HU | 4,000 | **0.258** | 0.357 | 0.423 |
# | from scratch, `occlude=0.25` | six `multisite` sites | 12,000 | **0.255** | 0.373 | 0.433 |
# | from scratch, `occlude=0.5` | six `multisite` sites | 12,000 | **0.300** | 0.401 | 0.448 |
# | the `occlude=0.25` run + lr 3e-4 | six `multisite` sites | 5,000 | **0.271** | 0.371 | 0.432 |
# | *temporal mean of the clear input frames* | | | 0.2446 | 0.424 | 0.489 |
# | *nearest clear input frame* | | | 0.214 | 0.380 | 0.398 |
#
# The six `multisite` sites: the Portugal and Hungary cubes and GeoTIFFs, Belgium and
# Slovenia (Sweden's cube and GeoTIFF held out). The two runs from scratch used the
# shipped model's recipe otherwise (tile 16, batch 8, lr 1e-3, gain 0.6), one torch thread
# each, side by side, 89 min each. Bold: the unseen site. What follows:
#
# - **Reconstruction works where the model has seen the site.** Trained with Sweden, the
#   same recipe reaches 0.221 on Swedish held-out frames, level with the nearest clear frame
#   and 11 % below the temporal mean; the shipped model is 14-17 % below the mean on
#   Portugal and Hungary at 10 m.
# - **Most of the remaining gap on the cubes' grid is resolution.** Averaged over 2 × 2
#   blocks the shipped model is almost level with the mean on Sweden (0.2415 against
#   0.236), and on the paper's 10 m grid, where the L/2 summary keeps every native pixel,
#   the same weights are within 1.2 % of it.
# - **More training on few sites moves away from the unseen site.** Every continuation
#   improved (or kept) the training sites and made Sweden worse, on both grids (a third
#   stage at ~20 m: Portugal 0.401, Hungary 0.428, Sweden 0.285). Adding Belgium and
#   Slovenia made it *worse* still: that model predicts Sweden 0.13-0.15 too dark in blue,
#   green and near-infrared (normalised units) and loses even where every input frame is
#   clear (0.293 against 0.229), so four more small places pulled its prior instead of
#   widening it. From scratch, the same six sites did help early on (1,000 steps at ~20 m:
#   Sweden 0.43 against 0.61 with Portugal and Hungary alone), and followed for 12,000
#   steps at 10 m they came closer (0.255 with `occlude=0.25`), but not past the shipped
#   model, let alone the mean; 5,000 more steps at a lower rate once again helped the
#   training sites a little and set Sweden back (0.271). The run with twice the synthetic clouds led at every
#   checkpoint we scored (64 rows; steps 2,500 / 5,000 / 7,500: 0.353 / 0.325 / 0.295
#   against 0.403 / 0.346 / 0.304) and then finished far behind (0.300): with one run per
#   setting, the spread between seeds and checkpoints is as large as the effects we chase.
# - **Clouds are part of it.** Sweden's rows are about 70 % clear pixel-frames, the
#   training sites' about 95 %. Continued at 10 m on Portugal and Hungary, the model stays
#   close to the mean where all input frames are clear (0.239 against 0.229) and loses
#   where most are cloudy (0.323 against 0.269). Synthetic clouds (`occlude=0.5`,
#   chapter 20) fixed that half and cost the other: at pixels where most inputs are cloudy
#   the continued model now *beats* the mean (0.258 against 0.269), at clear pixels it
#   loses more (0.254 against 0.229), and overall it ends at 0.259 instead of 0.265.
# - **What helped before, and what did not.** A wider precision path and summary
#   (`d_precision` 16 → 64) cut the held-out error of a 1,000-step run from 0.79 to 0.61
#   on Sweden (Portugal 0.51 → 0.48, Hungary 0.57 → 0.51). Random per-band gains
#   (chapter 20) took the first model from 0.75 to 0.32. Neither stronger gains (±1.0,
#   ±1.4: 0.337 and 0.335 after 1,200 more steps) nor removing the LayerNorms before the
#   summary (0.59 against 0.61 at 1,000 steps) did much (1,000-step runs: 64 to 128 rows).
#
# - **Which period the summary covers matters, and so does which mean we compare with.**
#   Held-out frames are scored, as in training, from the summary of a random period
#   around them. With every row's whole span instead (`period="row"`, the section above),
#   the model and the temporal mean describe the same frames, and on Sweden at 10 m the
#   shipped model is then 3.0 % under the mean (0.2372 against 0.2446), and the
#   `occlude=0.25` run 1.0 % (0.2422): level, not clearly better. On the training sites
#   the whole span makes the model *worse* (shipped, Portugal 0.353 → 0.380), as it was
#   trained on random periods. And the mean over only the frames inside the random
#   period is a harder baseline than the issue's temporal mean (Sweden 0.2319 against
#   0.2446; Portugal 0.391 against 0.424): the shipped model beats it on its training
#   sites (0.353, 0.420 against 0.391, 0.464), not on Sweden.
#
# - **Taking away the shortcuts: the calendar, the gaps, the level.** The two probes of
#   the previous section name three things the shipped model leans on that do not carry
#   to a new place: the dates of its training rows, zeros where a frame is missing, and
#   its training sites' brightness. We removed them one by one, from scratch on the six
#   `multisite` sites at 10 m, with the `occlude=0.25` recipe above and chapter 20's
#   `time_shift=365` in every run, and scored each checkpoint on Sweden (64 rows, random
#   periods; temporal mean 0.238; two runs at a time, one thread each, 1.1-1.2 steps/s):
#
#   | run | per-band gain | gaps (chapter 5) | weights scored | 2,500 | 5,000 | 7,500 | 10,000 | 12,000 |
#   |---|---|---|---|---|---|---|---|---|
#   | the `occlude=0.25` run above, no `time_shift` | 0.6 | zeros | raw | 0.403 | 0.346 | 0.304 | | 0.255 (128 rows) |
#   | T1 | 0.6 | zeros | raw | 0.387 | stopped | | | |
#   | T3 | 0.6 | `gap_fill="mean"` | raw | 0.388 | 0.295 | 0.313 | stopped | |
#   | T5 | 1.2 | `gap_fill="mean"` | `ema=0.999` | 0.323 | 0.282 | 0.256 | 0.246 | 0.243 |
#   | T6 | 0.9 | `gap_fill="mean"` | `ema=0.999` | 0.284 | 0.310 | 0.267 | 0.241 | **0.235** |
#
#   (Fine-tuning the shipped weights at 10 m with `time_shift` and the gap fill, lr 3e-4,
#   on the Portugal and Hungary cubes and GeoTIFFs: 0.303 after 1,000 steps, 0.290 after
#   2,000; stopped.) T6 is the first model to come out under the mean on Sweden; with 128
#   rows (model / temporal mean, random periods):
#
#   | model | Sweden cube, 10 m | Sweden GeoTIFF, 10 m | Portugal, 10 m | Hungary, 10 m | Sweden, ~20 m |
#   |---|---|---|---|---|---|
#   | shipped model | 1.012 | 1.050 | **0.833** | **0.859** | 1.085 |
#   | T5 (gain 1.2) | 1.019 | 1.094 | 1.063 | 1.030 | 1.146 |
#   | T6 (gain 0.9) | **0.985** | 1.031 | 1.076 | 1.013 | 1.122 |
#
#   The probes moved as intended: T6's error moves by 0.7 % over the calendar shifts (the
#   shipped model's by 34 %), and its predictions follow Sweden's own level more (at 10 m,
#   32 rows: slopes 0.68-0.76 per band against the shipped model's 0.52-0.70; Portugal 1.02-1.21 against
#   1.14-1.21). But the price is plain in the second table: with its training sites'
#   look and dates taken away, T6 is no better than the mean anywhere else, its training
#   sites included (Portugal 7.6 % worse), where the shipped model's 14-17 % lead on its
#   training sites came from knowing them. So we kept the shipped model. The gap fill
#   alone, switched on at inference in the shipped model (`gap_fill="mean"`, the same
#   weights), takes Sweden at 10 m from 0.2475 to 0.2407 (random periods) and, with the
#   row's whole span, from 0.2372 to 0.2317, 5.3 % under the mean; on the Sweden GeoTIFF
#   0.2538 to 0.2492 (random) and 0.2377 to 0.2336 (row). That is the closest any
#   configuration came, and it is not the issue's protocol (random periods, the cubes'
#   grid), so it changes nothing above.
#
# Closing the gap needs what a CPU afternoon cannot give: many more places (the paper
# trains on millions; ours are five, one of them three scenes) and far more steps (the
# paper: 100,000 steps of batch 256; ours: 10,500 of batch 8), starting from scratch on
# the 10 m grid. The next section documents the GPU recipe.

# %% [markdown]
# ## Throughput on a CPU, and the paper on accelerators
#
# `tools/bench_train.py` times the real loop (sampler, model, the full objective, Adam)
# for several presets side by side. On this book's 2-core CPU machine (shared, so numbers
# vary by tens of percent):
#
# ```text
# preset     params  tile frames batch   s/step  steps/s  tiles/s  device
# tiny        0.34M    32      8     8    0.471     2.12     17.0  cpu
# small       2.43M    64      8     8    3.321     0.30      2.4  cpu
# ```
#
# (`python tools/bench_train.py --steps 4 --warmup 1`, full objective with the text term,
# 2 torch threads.) The shipped model's own run (`tiny`, 16 × 16 tiles, batch 8) went at a
# median of 53 tiles/s, 6.6 steps/s when the machine was quiet, and at a tenth of that when
# the other engineers' test suites ran.
#
# For scale: the paper processed about 0.25 sequences per second *per TPU v4 chip* with
# rows of 103 frames at $L = 128$ and a 480M-parameter model (§8).
#
# **The `paper` preset on a GPU or TPU.** The same CLI; what changes is the configuration:
#
# ```yaml
# # paper.yaml: aef-train --config paper.yaml   (or torchrun ... -m aef_lit.training.core --config paper.yaml)
# preset: paper            # 15 STP blocks, widths 1024 / 512 / 128, L = 128 (chapter 1)
# tile: 128
# frames: 65               # S2 frames per row (the paper: 65 S2 + 17 S1 + 21 Landsat)
# batch_size: 8            # per device; 8 x grad_accum 4 x 8 GPUs = 256 rows per step (§8)
# grad_accum: 4
# steps: 100000
# lr: 1.0e-4
# warmup_frac: 0.01        # 1,000 warm-up steps
# clip: 1.0
# bf16: true               # autocast on CUDA/XLA
# activation_checkpointing: true
# compile: true
# checkpoint_every: 1000
# workers: 8
# data: greenearthnet      # replace with a real multi-sensor corpus: these samples are tiny
# ```
#
# ```bash
# torchrun --standalone --nproc_per_node 8 -m aef_lit.training.core --config paper.yaml --out-dir runs/paper
# ```
#
# **The next run for issue 5 on a GPU.** What this chapter's measurements point to, in one
# command: from scratch, on the 10 m grid, every place but the held-out one, synthetic
# clouds at a moderate rate, and ten times the steps we could afford:
#
# ```bash
# aef-train --preset tiny --model-overrides '{"d_precision": 64, "decoder_hidden": 128}' \
#   --data multisite --sites portugal hungary portugal_geotiff hungary_geotiff belgium slovenia \
#   --tile 32 --frames 8 --batch-size 32 --steps 100000 --lr 1e-3 --warmup-frac 0.01 \
#   --gain 0.6 --occlude 0.25 --device auto --out-dir runs/multisite
# python -c "from aef_lit.training.core import ship; ship('runs/multisite', 'runs/multisite/model', eval_data='multisite')"
# ```
#
# On Colab: install the package (first cell of every chapter), pick a GPU runtime, and
# run `!aef-train --config paper.yaml` with `batch_size` and `grad_accum` fitted to the
# card's memory; kill the runtime whenever you like and run the same command again: it
# resumes from `runs/paper/ckpt.pt`. On a TPU runtime `device: auto` selects XLA once
# `torch_xla` is installed; shapes are static by construction (chapters 1, 15, 20).
