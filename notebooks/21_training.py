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
# Foundations {cite}`brown2025alphaearth` learns. This chapter is about *how* it is trained
# without losing a week of compute to a detail: the paper's schedule scaled to the run,
# gradient accumulation, checkpoints that survive a kill and resume the *same* run, a weight
# average, a NaN loss stopping the run clearly. It builds `aef_lit.training.config`,
# `checkpoint` and `loop`; chapter 22 takes the loop to many devices and the command line.

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

    subprocess.run([sys.executable, "-m", "pip", "install", "-q",
                    "aef-lit[text] @ git+https://github.com/aef-lit/aef-lit"], check=True)

# %% [markdown]
# ## The run's configuration
#
# One frozen dataclass holds every knob of a run; JSON/YAML files and the flags (chapter 22)
# map onto its fields. The model is a `preset` (chapter 1) with `model_overrides`. The paper
# (`AEF_NOTES.md` §8): Adam, learning rate from 0 to $10^{-4}$ over 1,000 steps then linearly
# to 0 at 100,000, batches of 256. We keep that *shape*, scaled to the run (`warmup_frac =
# 0.01`). **Open**, our choice: clipping at global norm 1.0, no weight decay.

# %%
#| export training.config
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

from aef_lit.conventions import ModelConfig

TERMS = ("total", "reconstruction", "uniformity", "consistency", "text")
"""The loss terms logged at every step, in this order (chapter 19's objective returns them)."""

RETIRED_FIELDS = ("halt_after", "save_rank_weights")
"""Fields older run folders and checkpoints hold that are no longer part of a run's configuration
(they were test hooks, now keyword-only arguments of `train`); `from_dict` drops them."""


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
        captions: `site` (the site's one caption) or `row` (place, months, sky of the row; chapter 20).
        gain: radiometric augmentation of optical bands (chapter 20; 0 = off).
        occlude: probability of a synthetic cloud-shaped gap per input frame (chapter 20; 0 = off).
        loss_weights: the weights a b c d of reconstruction, uniformity, consistency and text
            (chapter 19), divided by their sum (paper: 1 0.05 0.02 0.001).
        time_shift: move each row's timestamps by one random U(-time_shift, time_shift) days
            (chapter 20; 0 = off).
        targets: the target-only sources the model learns to decode where a site has them
            (chapter 20's `keep_targets`); `none` (or an empty tuple) = none: no label the
            evaluation scores (WorldCover, DEM) can leak into the model (chapter 25).
        init_from: start from the weights of this checkpoint or safetensors file (a new
            run: fresh optimiser and schedule); ignored when resuming.
        progress: show a tqdm bar (rank 0 only).
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
    captions: str = "site"
    gain: float = 0.0
    occlude: float = 0.0
    time_shift: float = 0.0
    loss_weights: tuple[float, ...] = (1.0, 0.05, 0.02, 0.001)
    targets: tuple[str, ...] = ("dem", "landcover")
    init_from: str = ""
    progress: bool = True

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
        try:
            weights = tuple(float(w) for w in self.loss_weights)
        except (TypeError, ValueError):
            raise ValueError(f"loss_weights are four numbers a b c d, got {self.loss_weights!r}") from None
        if len(weights) != 4 or min(weights) < 0 or sum(weights) <= 0:
            raise ValueError(f"loss_weights are four non-negative numbers a b c d with a positive sum, got {weights}")
        object.__setattr__(self, "loss_weights", weights)
        if self.captions not in ("site", "row"):
            raise ValueError(f"captions is `site` or `row`, got {self.captions!r}")
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
        """Build from a plain dict (JSON/YAML), refusing unknown keys; lists become tuples.

        The `RETIRED_FIELDS` of older run folders and checkpoints are dropped.
        """
        d = {k: v for k, v in d.items() if k not in RETIRED_FIELDS}
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
assert TrainConfig.from_dict({"steps": 300, "lr": 1e-3, "halt_after": 0}) == cfg_demo, "older run folders load"
try:
    TrainConfig(checkpoint_every=0)
except ValueError as err:
    print("refused:", err)

# %% [markdown]
# ## The learning-rate schedule (§8)
#
# $$ \eta(s) = \eta_{\max}\cdot\begin{cases} s / W & s < W \\ (N - s)/(N - W) & W \le s \le N \end{cases}
#    \qquad W = \mathrm{round}(f_{\text{warm}} N) $$
#
# for step $s$ of $N$. The unofficial port trained at a constant rate (§12); the check below
# would have caught it. A resumed run needs only the step number to be back on the curve.

# %%
#| export training.config
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
fig, axes = plt.subplots(1, 2, figsize=(10, 2.6))
axes[0].plot(np.arange(0, N + 1, 50), curve)
axes[0].set(title="paper: 100k steps, warm-up 1k", xlabel="step", ylabel="learning rate")
axes[1].plot([lr_at(s, 300, 1e-3, f) for s in range(301)])
axes[1].set(title="the same shape scaled to a 300-step run", xlabel="step")
plt.tight_layout()
plt.show()

# %% [markdown]
# ## Checkpoints, the weight average, the metrics log
#
# A checkpoint holds what the next step depends on: weights, Adam's moments, the step and the
# generators' states; **only tensors and plain values** (`torch.load(weights_only=True)`),
# **atomic** (`ckpt.pt.tmp`, then `os.replace`), **one file** overwritten every
# `checkpoint_every` steps (the port wrote 1.2 GB every step, §12). Step $s$'s tiles and draws
# come from generators seeded by `(seed, s)`, so a resume sees the same batches.
#
# **A moving average of the weights** (`ema`, off by default; the paper is silent, **open**)
# moves $1 - d$ of the way towards them each step ($d = 0.999$: about a thousand steps); it is
# checkpointed and shipped, and a resume with another `--ema` is refused.

# %%
#| export training.checkpoint
from __future__ import annotations

import csv
import json
import os
from dataclasses import asdict
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import Tensor, nn

from aef_lit.conventions import ModelConfig, SourceSpec
from aef_lit.training.config import TrainConfig

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
                    cfg: TrainConfig, model_cfg: ModelConfig | None = None, **extra) -> Path:
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
    holds only tensors and numbers (checkpoints stay `weights_only`-loadable). An update is one
    `torch._foreach_lerp_` over cached `Parameter` objects (`module.to` keeps them); buffers,
    which it replaces, are looked up at each update.
    """

    def __init__(self, model: nn.Module, decay: float):
        self.decay = float(decay)
        self.updates = 0
        self.shadow = {k: v.detach().clone() for k, v in unwrap(model).state_dict().items()}
        self._cache: tuple | None = None

    def _lists(self, model: nn.Module):
        net = unwrap(model)
        if self._cache is None or self._cache[0] is not net or self._cache[3] is not self.shadow:
            params = [(k, p) for k, p in net.named_parameters(remove_duplicate=False) if k in self.shadow]
            self._cache = (net, [self.shadow[k] for k, _ in params], [p for _, p in params], self.shadow)
        return self._cache

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        self.updates += 1
        d = min(self.decay, (1 + self.updates) / (10 + self.updates))
        net, shadow, current, _ = self._lists(model)
        if shadow:
            torch._foreach_lerp_(shadow, [p.detach() for p in current], 1.0 - d)
        for k, b in net.named_buffers(remove_duplicate=False):
            if k not in self.shadow:  # a non-persistent buffer
                continue
            if b.dtype.is_floating_point:
                self.shadow[k].lerp_(b, 1.0 - d)
            else:
                self.shadow[k].copy_(b)

    def state_dict(self) -> dict[str, Any]:
        return {"decay": self.decay, "updates": self.updates, "shadow": self.shadow}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue a saved average; its decay must be this one's (the average is a function of it)."""
        saved = float(state["decay"])
        if saved != self.decay:
            raise ValueError(f"the saved weight average has decay (ema) {saved:g}, this one {self.decay:g}: "
                             "an average cannot change its decay part way through a run")
        self.updates = int(state["updates"])
        for k, v in state["shadow"].items():
            self.shadow[k].copy_(v)


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

# %%
import tempfile

_net = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 1))
_opt = torch.optim.Adam(_net.parameters())
_net(torch.randn(2, 3)).sum().backward()
_opt.step()
with tempfile.TemporaryDirectory() as d:
    ck = load_checkpoint(save_checkpoint(Path(d) / CHECKPOINT, _net, _opt, step=7, cfg=cfg_demo))
    assert ck["step"] == 7 and not (Path(d) / (CHECKPOINT + ".tmp")).exists(), "renamed into place"
    assert json.loads(ck["config"]) == json.loads(cfg_demo.to_json()), "the run's config, as JSON"

# %% [markdown]
# The average on a toy problem: one weight fitted by SGD to noisy targets around 1. The
# weight jumps with each mini-batch's noise; its average settles.

# %%
_w = nn.Linear(1, 1, bias=False)
nn.init.zeros_(_w.weight)
_sgd, _avg = torch.optim.SGD(_w.parameters(), lr=0.2), WeightAverage(_w, decay=0.95)
_gen = torch.Generator().manual_seed(0)
raw_path, avg_path = [], []
for _ in range(300):
    _sgd.zero_grad()
    ((_w(torch.ones(4, 1)) - 1.0 - 0.5 * torch.randn(4, 1, generator=_gen)) ** 2).mean().backward()
    _sgd.step()
    _avg.update(_w)
    raw_path.append(float(_w.weight.detach()))
    avg_path.append(float(_avg.shadow["weight"]))
fig, ax = plt.subplots(figsize=(8, 2.4))
ax.plot(raw_path, lw=0.8, label="weight after each step")
ax.plot(avg_path, lw=2, label="moving average (decay 0.95)")
ax.axhline(1.0, color="k", ls=":", lw=1, label="the best weight")
ax.set(xlabel="step", title="the weights carry each step's noise; their average does not")
ax.legend(fontsize=8)
plt.show()
late_raw, late_avg = np.abs(np.array(raw_path[100:]) - 1).mean(), np.abs(np.array(avg_path[100:]) - 1).mean()
assert late_avg < 0.5 * late_raw, f"the average is much closer to the optimum ({late_avg:.3f} vs {late_raw:.3f})"
try:
    WeightAverage(_w, decay=0.9).load_state_dict(_avg.state_dict())
    raise AssertionError("a different decay must be refused")
except ValueError as err:
    print("refused:", err)

# %% [markdown]
# ## The loop
#
# `train` runs four steps, each a function below: **set up** (`setup_run`: device, job,
# model, objective, data, Adam), **resume or initialise** (`resume_or_init`), **one optimiser
# step** (`optimiser_step`), **record** (`RunLog`, `checkpoint_if_due`); the pieces for many
# devices (`rt.`) are chapter 22's `aef_lit.training.runtime`. The checks (and the tests)
# pass in a stand-in: one linear layer, an objective returning chapter 19's five terms.

# %%
from aef_lit.conventions import get_config


class _Toy(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(4, 1)


class _ToyObjective(nn.Module):
    def forward(self, model, batch, captions=None, generator=None):
        noise = 0.01 * torch.randn(batch["y"].shape, generator=generator)
        rec = (model.lin(batch["x"]) - batch["y"] - noise).abs().mean()
        z = torch.zeros(())
        return {"total": rec, "reconstruction": rec, "uniformity": z, "consistency": z, "text": z}


def _toy_batches(start):
    for s in range(start, 10**9):
        x = torch.randn(8, 4, generator=torch.Generator().manual_seed(s))
        yield {"x": x, "y": x @ torch.tensor([[1.0], [-2.0], [0.5], [3.0]])}


def _toy_cfg(out, **kw):
    return TrainConfig(steps=12, lr=0.5, checkpoint_every=3, out_dir=str(out), progress=False, **kw)


_toy = dict(objective=_ToyObjective(), model_cfg=get_config("tiny"), make_batches=_toy_batches)

# %% [markdown]
# ### Set up
#
# By default the model is the preset's, with the run's tile size and the data's sources
# (chapter 14) and `model_overrides` on top; the data is chapter 20's stream, started at the
# micro-batch of the step to resume from. `Run` holds what every later step needs.

# %%
#| export training.loop
from __future__ import annotations

import json
import logging
import math
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import torch
import torch.distributed as dist
from torch import nn

import aef_lit.training.runtime as rt  # devices, precision, DDP (chapter 22)
from aef_lit.conventions import ModelConfig, SourceSpec, batch_to, get_config, seed_everything, select_device
from aef_lit.training.checkpoint import (
    BEST,
    CHECKPOINT,
    METRICS,
    MetricsLog,
    WeightAverage,
    load_checkpoint,
    read_metrics,
    save_checkpoint,
    set_rng_state,
    unwrap,
)
from aef_lit.training.config import TERMS, TrainConfig, lr_at

log = logging.getLogger("aef_lit.training.loop")


@dataclass
class TrainResult:
    """What a finished (or halted) run returns."""

    model: nn.Module
    model_cfg: ModelConfig
    step: int
    metrics: list[dict[str, str]]
    out_dir: Path
    seconds: float


def build_model_and_objective(cfg: TrainConfig, specs: Sequence[SourceSpec]
                              ) -> tuple[ModelConfig, nn.Module, nn.Module]:
    """The preset's model for the data's sources (chapter 14), and chapter 19's objective."""
    from aef_lit.model import build_model
    from aef_lit.objective import AEFObjective, LossWeights

    base = get_config(cfg.preset, **cfg.overrides())
    model_cfg = base.replace(tile=cfg.tile or base.tile, sources=tuple(specs))
    model = build_model(model_cfg)
    return model_cfg, model, AEFObjective(model_cfg, LossWeights(*cfg.loss_weights))


def default_data(cfg: TrainConfig, model_tile: int, info: rt.DistInfo):
    """(specs, make_batches) from chapter 20: real tiles when present, else synthetic."""
    from aef_lit.training.sampling import tile_stream, training_dataset

    ds = training_dataset(cfg.data, cfg.sites, tile=model_tile, frames=cfg.frames, seed=cfg.seed,
                          min_span_days=cfg.min_span_days, gain=cfg.gain, occlude=cfg.occlude,
                          time_shift=cfg.time_shift, targets=cfg.targets, captions=cfg.captions)

    def make_batches(start_step: int) -> Iterator:
        return tile_stream(ds, batch_size=cfg.batch_size, start=start_step * cfg.grad_accum,
                           rank=info.rank, world_size=info.world_size, workers=cfg.workers,
                           captions=cfg.text)

    return ds.specs, make_batches


@dataclass
class Run:
    """A run in progress: its configuration, place in the job, modules, optimiser and data."""

    cfg: TrainConfig
    info: rt.DistInfo
    device: torch.device
    model: nn.Module
    objective: nn.Module
    model_cfg: ModelConfig
    params: list[nn.Parameter]
    optimizer: torch.optim.Optimizer
    make_batches: Callable[[int], Iterator]
    t_start: float
    start: int = 0  # the step the run begins at (the checkpoint's, when resumed)
    average: WeightAverage | None = None
    step_module: nn.Module | None = None  # model and objective as one (DDP-, compile-wrapped) module

    @property
    def out(self) -> Path:
        return Path(self.cfg.out_dir)

    @property
    def ckpt_path(self) -> Path:
        return self.out / CHECKPOINT


def setup_run(cfg: TrainConfig, *, model: nn.Module | None = None, objective: nn.Module | None = None,
              model_cfg: ModelConfig | None = None, make_batches: Callable[[int], Iterator] | None = None,
              specs: Sequence[SourceSpec] | None = None) -> Run:
    """The device and the job, model, objective, data and Adam (learning rate set per step)."""
    t_start = time.perf_counter()
    info = rt.init_distributed(select_device(cfg.device))
    device = rt.resolve_device(cfg.device, info)
    seed_everything(cfg.seed)  # identical initial weights on every rank
    if make_batches is None:
        specs, make_batches = default_data(cfg, cfg.tile or get_config(cfg.preset).tile, info)
    if model is None:
        model_cfg, model, objective = build_model_and_objective(cfg, specs)
    if model_cfg is None:
        model_cfg = getattr(model, "cfg", get_config(cfg.preset))
    model.to(device)
    objective.to(device)
    if cfg.activation_checkpointing:
        log.info("activation checkpointing on %d blocks", rt.enable_activation_checkpointing(model))
    params = [p for p in list(model.parameters()) + list(objective.parameters()) if p.requires_grad]
    return Run(cfg=cfg, info=info, device=device, model=model, objective=objective, model_cfg=model_cfg,
               params=params, optimizer=torch.optim.Adam(params, lr=0.0), make_batches=make_batches,
               t_start=t_start)

# %%
_mc, _m, _ = build_model_and_objective(TrainConfig(model_overrides='{"d_precision": 64}', tile=16),
                                       get_config("tiny").sources)
assert (_mc.d_precision, _mc.tile) == (64, 16) and _m.cfg == _mc, "overrides and tile reach the model"

# %% [markdown]
# ### Resume, or start from other weights
#
# A resumed run loads weights, optimiser, random states and the step; its configuration is
# the one it is started with (so `--steps` can extend a run), but another `--ema` is refused.
# Then model and objective are wrapped as one module for DDP and `torch.compile`.

# %%
#| export training.loop
def _resume_average(run: Run, state: dict[str, Any]) -> WeightAverage | None:
    """The weight average; a resumed one must keep the checkpoint's decay (no average = decay 0)."""
    cfg = run.cfg
    saved = float(state["ema"]["decay"]) if "ema" in state else 0.0
    if state and saved != cfg.ema:
        raise ValueError(f"{run.ckpt_path} was written with --ema {saved:g}, this run asks for --ema {cfg.ema:g}: "
                         f"resume with --ema {saved:g}, or start a new run (--no-resume or another --out-dir)")
    average = WeightAverage(run.model, cfg.ema) if cfg.ema > 0 else None
    if average is not None and "ema" in state:
        average.load_state_dict(state["ema"])
    return average


def resume_or_init(run: Run) -> None:
    """Load the checkpoint of `out_dir` (`cfg.resume`) or the weights of `cfg.init_from`; wrap for DDP."""
    cfg, model = run.cfg, run.model
    state: dict[str, Any] = {}  # the checkpoint resumed from, if any
    if cfg.resume and run.ckpt_path.exists():
        state = load_checkpoint(run.ckpt_path, map_location=run.device)
        unwrap(model).load_state_dict(state["model"])
        if "objective" in state:
            run.objective.load_state_dict(state["objective"])
        run.optimizer.load_state_dict(state["optimizer"])
        set_rng_state(state["rng"])
        run.start = int(state["step"])
        log.info("resumed from %s at step %d", run.ckpt_path, run.start)
    elif cfg.init_from:
        if cfg.init_from.endswith(".safetensors"):
            from safetensors.torch import load_file

            weights = load_file(cfg.init_from)
        else:
            weights = load_checkpoint(cfg.init_from, map_location=run.device)["model"]
        unwrap(model).load_state_dict(weights)
        log.info("initialised the weights from %s", cfg.init_from)
    run.average = _resume_average(run, state)

    step_module: nn.Module = rt.TrainStep(model, run.objective)
    if run.info.distributed:
        step_module = nn.parallel.DistributedDataParallel(
            step_module, device_ids=[run.device.index] if run.device.type == "cuda" else None,
            find_unused_parameters=True)
    if cfg.compile:
        step_module = torch.compile(step_module)
    run.step_module = step_module

# %% [markdown]
# ### One optimiser step, and the NaN guard
#
# A NaN or infinite loss (or gradient norm) stops the run *before* the optimiser step: the
# weights never see it and no checkpoint follows it, so the last one on disk is the last good
# state. Under DDP the check runs on the all-reduced loss, so all ranks stop together.

# %%
#| export training.loop
class NonFiniteLossError(RuntimeError):
    """Raised when a loss term or the gradient norm is NaN or infinite."""


def _nan_message(step: int, values: dict[str, float], ckpt: Path) -> str:
    last = f"{ckpt} (step {load_checkpoint(ckpt)['step']})" if ckpt.exists() else "none written yet"
    terms = ", ".join(f"{k}={v:.4g}" for k, v in values.items())
    return (f"non-finite loss at step {step} ({terms}). The run ended before the optimiser step; "
            f"the last good checkpoint is {last} and is intact. Lower --lr, check the data for "
            f"NaNs, then resume (the run continues from that checkpoint).")


def micro_batches(run: Run, step: int, batches: Iterator) -> dict[str, float]:
    """Forward and backward over the step's `grad_accum` micro-batches; the loss terms' mean over
    micro-batches and ranks (DDP all-reduces the gradients on the last micro-batch only)."""
    cfg, info, device = run.cfg, run.info, run.device
    sums = torch.zeros(len(TERMS), device=device)
    for micro in range(cfg.grad_accum):
        item = next(batches)
        batch, captions = item if isinstance(item, tuple) else (item, None)
        batch = batch_to(batch, device)
        gen = rt.step_generator(cfg.seed, step, micro, info.rank)
        last = micro == cfg.grad_accum - 1
        sync = nullcontext() if (last or not info.distributed) else rt.unwrap_ddp(run.step_module).no_sync()
        with sync:
            with rt.autocast_context(device, cfg.bf16):
                terms = run.step_module(batch, captions=captions, generator=gen)
            (terms["total"].float() / cfg.grad_accum).backward()
        sums += torch.stack([terms[k].detach().float() if k in terms else torch.zeros((), device=device)
                             for k in TERMS])
    return dict(zip(TERMS, rt.reduce_mean(sums / cfg.grad_accum, info).tolist()))  # one host sync per step


def optimiser_step(run: Run, step: int, batches: Iterator) -> dict[str, Any]:
    """Step `step` of the run: rate, micro-batches, NaN guard, clip, Adam, average. Its metrics row."""
    cfg = run.cfg
    t0 = time.perf_counter()
    lr = lr_at(step, cfg.steps, cfg.lr, cfg.warmup_frac)
    for group in run.optimizer.param_groups:
        group["lr"] = lr
    run.optimizer.zero_grad(set_to_none=True)
    torch.manual_seed(int(rt.step_generator(cfg.seed, step, -1, run.info.rank).initial_seed()))
    values = micro_batches(run, step, batches)
    if not all(math.isfinite(v) for v in values.values()):
        raise NonFiniteLossError(_nan_message(step, values, run.ckpt_path))
    gn = torch.nn.utils.clip_grad_norm_(run.params, cfg.clip if cfg.clip > 0 else float("inf"))
    grad_norm = float(gn)
    if not math.isfinite(grad_norm):
        raise NonFiniteLossError(_nan_message(step, {**values, "grad_norm": grad_norm}, run.ckpt_path))
    run.optimizer.step()
    if run.average is not None:
        run.average.update(run.model)
    rt.xla_sync(run.device)
    tiles = cfg.batch_size * cfg.grad_accum * run.info.world_size
    return {"step": step, "lr": lr, **values, "grad_norm": grad_norm,
            "tiles_per_s": tiles / (time.perf_counter() - t0), "wall_s": time.perf_counter() - run.t_start}

# %%
import shutil

shutil.rmtree("../runs/nb21_toy", ignore_errors=True)
_run = setup_run(_toy_cfg("../runs/nb21_toy"), model=_Toy(), **_toy)
resume_or_init(_run)
_w0 = _run.model.lin.weight.detach().clone()
assert optimiser_step(_run, 0, _toy_batches(0))["lr"] == 0.0 and torch.equal(_run.model.lin.weight, _w0), "rate 0"
_row = optimiser_step(_run, 1, _toy_batches(1))
assert _row["lr"] > 0 and not torch.equal(_run.model.lin.weight, _w0) and math.isfinite(_row["total"])
_w1 = _run.model.lin.weight.detach().clone()
try:
    optimiser_step(_run, 2, ({"x": b["x"], "y": b["y"] * float("nan")} for b in _toy_batches(2)))
    raise AssertionError("a NaN loss must stop the run")
except NonFiniteLossError as err:
    print(err)
assert torch.equal(_run.model.lin.weight, _w1), "the NaN never reached the weights"

# %% [markdown]
# ### Record, and the whole run
#
# Rank 0 alone writes a row of `metrics.csv` per step, the bar, and every `checkpoint_every`
# steps (and at the last) the checkpoint, with `best.pt` under `keep_best`. At the end
# `train` compares the ranks' parameter digests, swaps the average into the returned model
# and writes `summary.json`. Two keyword-only hooks serve the tests: `_halt_after` stops
# after that many steps, as a preemption would; `_save_rank_weights` saves every rank's weights.

# %%
#| export training.loop
COLUMNS = ("step", "lr", *TERMS, "grad_norm", "tiles_per_s", "wall_s")
"""The columns of `metrics.csv`."""


class RunLog:
    """The run's record on rank 0: `config.json`, `metrics.csv`, the progress bar, the losses
    since the last checkpoint (for `keep_best`)."""

    def __init__(self, run: Run):
        from tqdm.auto import tqdm

        self.run = run
        self.metrics = None
        if run.info.is_main:
            run.out.mkdir(parents=True, exist_ok=True)
            (run.out / "config.json").write_text(run.cfg.to_json())
            self.metrics = MetricsLog(run.out / METRICS, COLUMNS, resume_at=run.start)
        self.bar = tqdm(total=run.cfg.steps, initial=run.start, disable=not (run.cfg.progress and run.info.is_main),
                        desc=f"train {run.model_cfg.name}", dynamic_ncols=True)
        self.window: list[float] = []
        self.best = float("inf")

    def record(self, row: dict[str, Any]) -> None:
        self.window.append(row["total"])
        if self.metrics is not None:
            self.metrics.write(row)
        self.bar.update(1)
        if (row["step"] + 1) % self.run.cfg.log_every == 0:
            self.bar.set_postfix({k[:5]: f"{row[k]:.4f}" for k in TERMS} | {"tile/s": f"{row['tiles_per_s']:.1f}"})

    def close(self) -> None:
        self.bar.close()
        if self.metrics is not None:
            self.metrics.close()


def checkpoint_if_due(run: Run, done: int, record: RunLog) -> bool:
    """After `done` steps: write the checkpoint (and `best.pt`) when due. Whether it was due."""
    cfg = run.cfg
    if done % cfg.checkpoint_every and done != cfg.steps:
        return False
    if run.info.is_main:
        extra = {} if run.average is None else {"ema": run.average.state_dict()}
        objective = unwrap(run.objective).state_dict()
        save_checkpoint(run.ckpt_path, run.model, run.optimizer, done, cfg, run.model_cfg, objective=objective,
                        **extra)
        mean = sum(record.window) / len(record.window)
        if cfg.keep_best and mean < record.best:
            record.best = mean
            save_checkpoint(run.out / BEST, run.model, run.optimizer, done, cfg, run.model_cfg,
                            objective=objective, mean_loss=mean, **extra)
    record.window.clear()
    if run.info.distributed:
        dist.barrier()
    return True


def finish_run(run: Run, step: int, save_rank_weights: bool = False) -> TrainResult:
    """Check the replicas agree, swap in the weight average, write `summary.json`."""
    info, model, out = run.info, run.model, run.out
    if info.distributed:
        digests = [None] * info.world_size
        dist.all_gather_object(digests, rt.params_digest(model))
        if len(set(digests)) != 1:  # pragma: no cover - DDP keeps replicas equal
            raise RuntimeError(f"replicas diverged: {digests}")
    if save_rank_weights:
        from safetensors.torch import save_file

        out.mkdir(parents=True, exist_ok=True)
        save_file({k: v.detach().cpu().contiguous() for k, v in unwrap(model).state_dict().items()},
                  str(out / f"final_rank{info.rank}.safetensors"))
    if run.average is not None:  # the run is over: the returned model carries the average
        unwrap(model).load_state_dict(run.average.shadow)
    seconds = time.perf_counter() - run.t_start
    if info.is_main:
        (out / "summary.json").write_text(json.dumps(
            {"step": step, "steps": run.cfg.steps, "seconds": seconds, "world_size": info.world_size,
             "device": str(run.device), "digest": rt.params_digest(model)}, indent=1))
    return TrainResult(model=unwrap(model), model_cfg=run.model_cfg, step=step,
                       metrics=read_metrics(out / METRICS) if info.is_main else [], out_dir=out, seconds=seconds)


def train(cfg: TrainConfig, *, model: nn.Module | None = None, objective: nn.Module | None = None,
          model_cfg: ModelConfig | None = None, make_batches: Callable[[int], Iterator] | None = None,
          specs: Sequence[SourceSpec] | None = None, _halt_after: int = 0,
          _save_rank_weights: bool = False) -> TrainResult:
    """Run (or resume) the training run `cfg` describes; see chapter 21 for each step.

    `_halt_after` and `_save_rank_weights` are test hooks (see `finish_run`), not settings.
    """
    run = setup_run(cfg, model=model, objective=objective, model_cfg=model_cfg, make_batches=make_batches,
                    specs=specs)
    resume_or_init(run)
    record = RunLog(run)
    batches = run.make_batches(run.start)
    step = run.start
    run.model.train()
    run.objective.train()
    try:
        for step in range(run.start, cfg.steps):
            record.record(optimiser_step(run, step, batches))
            done = step + 1
            checkpoint_if_due(run, done, record)
            step = done
            if _halt_after and done - run.start >= _halt_after:
                log.info("halting after %d steps (_halt_after)", _halt_after)
                break
        else:
            step = cfg.steps
    finally:
        record.close()
    return finish_run(run, step, save_rank_weights=_save_rank_weights)

# %% [markdown]
# The loop's promise, on the stand-in: the loss falls, checkpoints come every third step,
# and a run halted at step 5 and resumed from its step-3 checkpoint reproduces the
# uninterrupted run's loss curve *exactly*.

# %%
def _toy_run(out, halt_after=0, **kw):
    torch.manual_seed(0)
    return train(_toy_cfg(out, **kw), model=_Toy(), **_toy, _halt_after=halt_after)


with tempfile.TemporaryDirectory() as d:
    ref = _toy_run(Path(d) / "ref")
    _toy_run(Path(d) / "cut", halt_after=5)  # stops at step 5, checkpoint at 3
    assert load_checkpoint(Path(d) / "cut" / CHECKPOINT)["step"] == 3
    res = _toy_run(Path(d) / "cut")  # resumes from step 3
    a, b = ([float(r["total"]) for r in x.metrics] for x in (ref, res))
    assert [int(r["step"]) for r in res.metrics] == list(range(12)), "no step lost or repeated"
    assert a == b, "resumed run continues the uninterrupted run exactly"
    assert a[-1] < a[0] / 2, "the loss falls"
shutil.rmtree("../runs/nb21_toy", ignore_errors=True)
print([round(v, 3) for v in a])

# %% [markdown]
# ## A short run on the real samples
#
# The `tiny` preset on 32 × 32 tiles of GreenEarthNet Portugal and Hungary (synthetic cubes without
# `eo_real/`), peak rate $10^{-3}$ (§8's $10^{-4}$ is for batches of 256 over 100k steps), the paper's
# schedule shape. After a minute the loss has fallen; chapter 22 ships a model trained for longer.

# %%
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
fig, axes = plt.subplots(1, 5, figsize=(15, 2.8))
for ax, k in zip(axes, ("reconstruction", "uniformity", "consistency", "text")):
    ax.plot(hist.step, hist[k], lw=0.8, alpha=0.5)
    ax.plot(hist.step, hist[k].rolling(8, min_periods=1).mean(), lw=1.5)
    ax.set(title=k, xlabel="step")
axes[4].plot(hist.step, hist.lr); axes[4].set(title="learning rate", xlabel="step")
plt.tight_layout(); plt.show()
