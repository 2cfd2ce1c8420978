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
# # 31. Prithvi: training on our data, and its features
#
# Chapter 30 built the Prithvi masked autoencoder and its loader for the published weights.
# This chapter trains it on the same sites, bands and year as the shipped AEF model: stacks
# cut from our samples, a resumable loop, a command line, and the features that chapter 26's
# evaluation reads (the comparison with AEF is there, and its numbers in the lab notes). The
# code goes to `aef_lit.prithvi.train`, `.cli` and `.method`.

# %% tags=["parameters"]
# Parameters (papermill injects values here). Defaults are sized for a 2-core CPU.
preset = "tiny"  # the Prithvi preset of the short run: "tiny" (CI) or "100m" (the paper's)
device = "auto"  # "auto" = XLA if importable, then CUDA, MPS, CPU
seed = 0
data = "auto"  # "auto" = the real samples if present, else the synthetic generator
steps = 60  # steps of the short training run in this chapter

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

import numpy as np
import pandas as pd
import torch
from einops import repeat  # noqa: F401

from aef_lit.conventions import select_device
from aef_lit.prithvi import patchify, prithvi_config, unpatchify

dev = select_device(device)
cfg = prithvi_config(preset)

# %% [markdown]
# ## 1. Stacks from our samples
#
# Prithvi reads a fixed number of frames. From a site's Sentinel-2 series (normalised as for
# AEF: log1p and z-score, chapter 3; clouds zeroed and kept as weights) a training stack is a
# random `img_size²` window and `frames` frames, drawn in time order from a random support
# window of at least 60 days among the frames that are clear on at least half of the window
# (chapter 20's rows, with Prithvi's fixed frame count). For embedding a period, the choice is
# deterministic: the period is cut into `frames` equal parts and the clearest frame of each
# part is taken (a part without a frame borrows the clearest frame left), the rule of a
# user who builds one cloud-free image per season.

# %%
#| export prithvi.train
from __future__ import annotations

import csv
import json
import time
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from aef_lit.conventions import from_days
from aef_lit.data import DataError, Sample, SourceFrames, normalise_frames
from aef_lit.prithvi.mae import PrithviConfig, PrithviMAE, count_parameters


def prithvi_source(sample: Sample, cfg: PrithviConfig, source: str = "s2") -> SourceFrames:
    """The normalised frames of `sample`'s `source`, restricted to (and ordered as) `cfg.bands`."""
    if source not in sample.sources:
        raise DataError(f"{sample.site} has no source {source!r} (it has {', '.join(sample.sources)})")
    spec = sample.specs[source]
    missing = [b for b in cfg.bands if b not in spec.bands]
    if missing:
        raise DataError(f"{sample.site}: source {source!r} lacks the bands {missing} of this Prithvi "
                        f"(it has {', '.join(spec.bands)})")
    fr = normalise_frames(sample.sources[source], spec)
    idx = [spec.bands.index(b) for b in cfg.bands]
    return SourceFrames(fr.values[:, idx], fr.times, fr.valid, fr.meta, fr.name)


def pick_frames(times: np.ndarray, clear: np.ndarray, n: int, period: tuple[float, float]) -> np.ndarray:
    """`n` frame indices in time order: the clearest frame in each of `n` equal parts of `period`
    (a part without frames borrows the clearest unused frame; too few frames repeat)."""
    inside = np.flatnonzero((times >= period[0]) & (times < period[1]))
    if inside.size == 0:
        raise DataError("no frame in the period")
    edges = np.linspace(period[0], period[1], n + 1)
    chosen: list[int] = []
    for a, b in zip(edges[:-1], edges[1:]):
        part = [i for i in inside if a <= times[i] < b and i not in chosen]
        if part:
            chosen.append(max(part, key=lambda i: clear[i]))
    rest = sorted((i for i in inside if i not in chosen), key=lambda i: -clear[i])
    chosen += rest[:n - len(chosen)]
    while len(chosen) < n:
        chosen.append(chosen[len(chosen) % max(1, len(chosen))])
    return np.sort(np.array(chosen[:n]))


def _dates(times: np.ndarray) -> np.ndarray:
    """(year, day of year) of each time, for Prithvi-EO-2.0's date code."""
    d = from_days(times).astype("datetime64[D]")
    year = d.astype("datetime64[Y]")
    return np.stack([year.astype(int) + 1970, (d - year).astype(int) + 1], -1).astype(np.float32)


def cut_stack(fr: SourceFrames, index: np.ndarray, r: int, c: int, size: int):
    """(x `C T H W`, clear weight `T H W`, dates `T 2`) of frames `index` in the window at (r, c)."""
    x = fr.values[index][:, :, r:r + size, c:c + size].transpose(1, 0, 2, 3)
    w = fr.valid[index][:, r:r + size, c:c + size].astype(np.float32)
    return np.ascontiguousarray(x), w, _dates(fr.times[index])


def random_stack(fr: SourceFrames, cfg: PrithviConfig, rng: np.random.Generator, min_clear: float = 0.5,
                 min_span_days: float = 60.0, tries: int = 20):
    """A random training stack of one site's frames (see the text above)."""
    H, W = fr.values.shape[-2:]
    s = cfg.img_size
    if H < s or W < s:
        raise DataError(f"{fr.name}: {H} x {W} pixels, smaller than Prithvi's {s} x {s} input")
    for _ in range(tries):
        r, c = int(rng.integers(0, H - s + 1)), int(rng.integers(0, W - s + 1))
        clear = fr.valid[:, r:r + s, c:c + s].mean((1, 2))
        t = fr.times
        span = float(t[-1] - t[0])
        length = span if span <= min_span_days else float(rng.uniform(min_span_days, span))
        t0 = t[0] + float(rng.uniform(0.0, span - length))
        ok = np.flatnonzero((t >= t0) & (t <= t0 + length) & (clear >= min_clear))
        if ok.size:
            pick = np.sort(rng.choice(ok, size=cfg.frames, replace=ok.size < cfg.frames))
            return cut_stack(fr, pick, r, c, s)
    raise DataError(f"{fr.name}: no window with {cfg.frames} frames clear on {min_clear:.0%} in {tries} draws")


# %% [markdown]
# ## 2. Training
#
# `train_prithvi` is the smallest loop that a user can trust: AdamW (β = 0.9, 0.95, weight
# decay 0.05, MAE's settings) with a linear warm-up and cosine decay, a step or wall-clock
# budget, the loss of every step in `metrics.csv`, and a checkpoint every `save_every` steps
# that a rerun resumes from (nothing is lost on interruption). `ship_prithvi` writes the
# weights as safetensors with a `config.json` and a card, `load_prithvi` reads them back.

# %%
#| export prithvi.train
CHECKPOINT, METRICS = "ckpt.pt", "metrics.csv"
PRITHVI_SHIPPED = Path(__file__).resolve().parents[2] / "data" / "models" / "prithvi-tiny-greenearthnet" \
    if "__file__" in globals() else Path("../data/models/prithvi-tiny-greenearthnet")
"""The Prithvi model shipped with the repository (trained beside the shipped AEF model)."""


def _lr(step: int, steps: int, peak: float, warmup: int) -> float:
    if step < warmup:
        return peak * (step + 1) / warmup
    return float(peak * 0.5 * (1 + np.cos(np.pi * min(1.0, (step - warmup) / max(1, steps - warmup)))))


def _write_metrics(path: Path, log: Sequence[dict]) -> None:
    """The loss log as `metrics.csv` (step, loss, lr, wall_s), the format of the AEF runs' logs."""
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["step", "loss", "lr", "wall_s"])
        w.writeheader()
        w.writerows(log)


def train_prithvi(samples: Sequence[Sample], cfg: PrithviConfig, steps: int, batch_size: int = 8,
                  lr: float = 1e-3, warmup: int = 100, minutes: float | None = None, seed: int = 0,
                  out_dir: str | Path | None = None, save_every: int = 500, source: str = "s2",
                  device: str | torch.device = "cpu", progress: bool = True) -> tuple[PrithviMAE, list[dict]]:
    """Train a Prithvi MAE on random stacks of `samples` for `steps` steps (or `minutes` of wall
    time, whichever ends first), resuming from `out_dir/ckpt.pt` if it exists."""
    from tqdm.auto import tqdm

    if steps < 1 or batch_size < 1:
        raise ValueError(f"steps ({steps}) and batch_size ({batch_size}) must be positive")
    frames = [prithvi_source(s, cfg, source) for s in samples]
    torch.manual_seed(seed)
    model = PrithviMAE(cfg).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.9, 0.95), weight_decay=0.05)
    out = Path(out_dir) if out_dir is not None else None
    step, log, spent = 0, [], 0.0
    if out is not None and (out / CHECKPOINT).exists():
        state = torch.load(out / CHECKPOINT, map_location=device, weights_only=True)  # plain values only
        if state["cfg"] != cfg.to_dict():
            raise ValueError(f"{out / CHECKPOINT} was trained with another configuration; use a new out_dir")
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["opt"])
        step, log, spent = state["step"], state["log"], state["seconds"]

    def save():
        if out is not None:
            out.mkdir(parents=True, exist_ok=True)
            tmp = out / (CHECKPOINT + ".tmp")
            torch.save({"cfg": cfg.to_dict(), "model": model.state_dict(), "opt": opt.state_dict(), "step": step,
                        "log": log, "seconds": spent}, tmp)
            tmp.replace(out / CHECKPOINT)
            _write_metrics(out / METRICS, log)

    t0 = time.perf_counter() - spent
    bar = tqdm(total=steps, initial=step, desc="prithvi", disable=not progress)
    model.train()
    while step < steps and (minutes is None or time.perf_counter() - t0 < minutes * 60):
        rng = np.random.default_rng([seed, step])
        batch = [random_stack(frames[int(rng.integers(len(frames)))], cfg, rng) for _ in range(batch_size)]
        x, w, d = (torch.from_numpy(np.stack(a)).to(device) for a in zip(*batch))
        for g in opt.param_groups:
            g["lr"] = _lr(step, steps, lr, warmup)
        gen = torch.Generator().manual_seed(int(rng.integers(2 ** 62)))  # masks: a function of (seed, step)
        loss, _, _ = model(x, w, dates=d, generator=gen)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        step += 1
        spent = time.perf_counter() - t0
        log.append({"step": step, "loss": round(loss.item(), 5), "lr": opt.param_groups[0]["lr"],
                    "wall_s": round(spent, 2)})
        bar.update(1)
        bar.set_postfix(loss=f"{loss.item():.3f}")
        if step % save_every == 0:
            save()
    bar.close()
    save()
    return model.eval(), log


def ship_prithvi(model: PrithviMAE, log: Sequence[dict], out_dir: str | Path, facts: dict | None = None) -> Path:
    """Write `model.safetensors`, `config.json`, `metrics.csv` and `MODEL_CARD.md` to `out_dir`."""
    from safetensors.torch import save_file

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    save_file({k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}, str(out / "model.safetensors"))
    tail = [float(r["loss"]) for r in log[-max(1, len(log) // 20):]]
    meta = {"prithvi_config": model.cfg.to_dict(), "params": count_parameters(model), "steps": len(log),
            "train_seconds": float(log[-1]["wall_s"]) if log else 0.0,
            "final_loss": round(float(np.mean(tail)), 5) if tail else None, **(facts or {})}
    (out / "config.json").write_text(json.dumps(meta, indent=1, sort_keys=True))
    _write_metrics(out / METRICS, log)
    (out / "MODEL_CARD.md").write_text(prithvi_card(meta))
    return out


def load_prithvi(folder: str | Path, device: str | torch.device = "cpu") -> PrithviMAE:
    """A shipped Prithvi model folder (see `ship_prithvi`), in eval mode."""
    from safetensors.torch import load_file

    folder = Path(folder)
    if not (folder / "model.safetensors").exists():
        raise FileNotFoundError(f"no Prithvi model at {folder} (expected model.safetensors and config.json)")
    meta = json.loads((folder / "config.json").read_text())
    model = PrithviMAE(PrithviConfig.from_dict(meta["prithvi_config"]))
    model.load_state_dict(load_file(str(folder / "model.safetensors")))
    return model.to(device).eval()


def prithvi_card(meta: dict) -> str:
    """The model card of a shipped Prithvi model."""
    c = PrithviConfig.from_dict(meta["prithvi_config"])
    lines = [f"# {meta.get('name', 'prithvi-tiny')}: a Prithvi-style masked autoencoder (aef-lit, chapter 30)", "",
             "A small Prithvi MAE (Jakubik et al. 2023) as re-implemented in aef-lit, trained on a CPU beside the "
             "shipped AEF model to compare the two with the same evaluation. A teaching artefact; not the "
             "published Prithvi weights (load those with `aef_lit.prithvi.load_official`).", "",
             "## Model",
             f"- {c.in_chans} bands ({' '.join(c.bands)}), {c.frames} frames, {c.img_size} x {c.img_size} px in "
             f"{c.tubelet} x {c.patch} x {c.patch} patches ({np.prod(c.grid)} tokens), mask ratio {c.mask_ratio}.",
             f"- encoder width {c.dim}, {c.depth} layers, {c.heads} heads; decoder width {c.decoder_dim}, "
             f"{c.decoder_depth} layers; {meta['params']:,} parameters; float32 safetensors.",
             "- inputs normalised with `aef_lit.data.DEFAULT_STATS` (log1p + z-score); cloudy pixels zeroed and "
             "left out of the loss.",
             "- load: `from aef_lit.prithvi import load_prithvi; model = load_prithvi(folder)`.", "",
             "## Training",
             f"- {meta['steps']} steps in {meta['train_seconds'] / 60:.1f} min; final loss (mean of the last 5 %) "
             f"{meta['final_loss']}.", f"- {meta.get('notes', '')}", ""]
    if meta.get("probes"):
        lines += ["## Sparse-label probes (chapter 26)", "", meta["probes"], ""]
    return "\n".join(lines)


# %% [markdown]
# ## 3. Features for the probes
#
# The evaluation wants one vector per pixel. From a Prithvi encoder the natural choice, and the
# one of Prithvi's own segmentation heads, is the last layer's patch tokens: we run the encoder
# on the whole unmasked stack, **average the tokens of the frames** (time pooling: one vector
# per patch for the period) and **upsample bilinearly** from the token grid to pixels. A site is
# padded to a multiple of `img_size` and embedded tile by tile, each tile with its own choice of
# frames (section 1); a lone labelled pixel is repeated over one tile, as for AEF. The features
# are `dim` float32 values per pixel: 512 bytes for `tiny` against AEF's 64 int8 values.
# Unlike AEF's unit vectors they carry per-dimension scales, so the evaluation z-scores them
# (`standardise`), as it does the designed baselines.

# %%
#| export prithvi.method
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from aef_lit.data import DataError, Sample
from aef_lit.evaluation.methods import Method
from aef_lit.evaluation.tasks import Period
from aef_lit.prithvi.mae import PrithviMAE
from aef_lit.prithvi.train import cut_stack, pick_frames, prithvi_source


def prithvi_features(model: PrithviMAE, sample: Sample, period: Period, source: str = "s2",
                     batch_size: int = 16) -> np.ndarray:
    """`D H W` features of `sample` over `period`: tokens of the unmasked stack, averaged over
    frames and upsampled bilinearly to pixels (see the text above)."""
    cfg = model.cfg
    fr = prithvi_source(sample, cfg, source)
    if not np.any((fr.times >= period[0]) & (fr.times < period[1])):
        raise DataError(f"{sample.site}: no {source} frame in the period")
    s = cfg.img_size
    H, W = sample.grid.shape
    if (H, W) == (1, 1):  # a labelled pixel: repeated over one tile, read at its centre
        tiled = type(fr)(np.tile(fr.values, (1, 1, s, s)), fr.times, np.tile(fr.valid, (1, s, s)), fr.meta, fr.name)
        clear = tiled.valid.mean((1, 2))
        f = _encode(model, [cut_stack(tiled, pick_frames(tiled.times, clear, cfg.frames, period), 0, 0, s)])[0]
        return f[:, s // 2:s // 2 + 1, s // 2:s // 2 + 1]
    Hp, Wp = -(-H // s) * s, -(-W // s) * s
    padded = type(fr)(np.pad(fr.values, ((0, 0), (0, 0), (0, Hp - H), (0, Wp - W))), fr.times,
                      np.pad(fr.valid, ((0, 0), (0, Hp - H), (0, Wp - W))), fr.meta, fr.name)
    corners = [(r, c) for r in range(0, Hp, s) for c in range(0, Wp, s)]
    out = np.zeros((cfg.dim, Hp, Wp), np.float32)
    for b in range(0, len(corners), batch_size):
        chunk = corners[b:b + batch_size]
        stacks = []
        for r, c in chunk:
            clear = padded.valid[:, r:r + s, c:c + s].mean((1, 2))
            stacks.append(cut_stack(padded, pick_frames(padded.times, clear, cfg.frames, period), r, c, s))
        for (r, c), f in zip(chunk, _encode(model, stacks)):
            out[:, r:r + s, c:c + s] = f
    return out[:, :H, :W]


def _encode(model: PrithviMAE, stacks) -> np.ndarray:
    """Frame-averaged, pixel-upsampled features of a list of stacks: `n D s s`."""
    dev = next(model.parameters()).device
    x, _, d = (torch.from_numpy(np.stack(a)).to(dev) for a in zip(*stacks))
    tok = model.features(x, dates=d).mean(2)  # B D h w: time pooled
    up = F.interpolate(tok, size=(model.cfg.img_size,) * 2, mode="bilinear", align_corners=False)
    return up.float().cpu().numpy()


class PrithviMethod(Method):
    """A Prithvi model's per-pixel features (`prithvi_features`), for `aef_lit.evaluation.evaluate`.

    The features are not unit vectors and their dimensions have scales of their own, so the
    evaluation z-scores them per dimension, as it does the designed baselines."""

    standardise = True

    def __init__(self, model: PrithviMAE, name: str = "prithvi", source: str = "s2", batch_size: int = 16):
        self.model, self.name, self.source, self.batch_size = model, name, source, batch_size

    def key(self) -> str:
        from aef_lit.training import params_digest

        return f"{self.name}/{params_digest(self.model)[:16]}"

    def __call__(self, samples: Sequence[Sample], periods: Sequence[Period]) -> list[np.ndarray]:
        return [prithvi_features(self.model, s, p, self.source, self.batch_size) for s, p in zip(samples, periods)]

# %% [markdown]
# ## 4. A short run, and the shipped model's curve
#
# The command line wraps `train_prithvi` and `ship_prithvi`:
# `python -m aef_lit.prithvi --sites portugal hungary --minutes 85 --out-dir runs/prithvi --ship
# data/models/prithvi-tiny-greenearthnet` trains on the same sites, bands and 2021 series as the
# shipped AEF model, for the same wall time on the same 2-core CPU (one torch thread). Here a
# short run of `steps` steps shows the loop working; the shipped model's curve (its
# `metrics.csv`) shows where the long run went.

# %%
#| export prithvi.cli
from __future__ import annotations

import argparse
from typing import Sequence

from aef_lit.prithvi.mae import PRITHVI_PRESETS, prithvi_config
from aef_lit.prithvi.train import ship_prithvi, train_prithvi


def build_prithvi_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m aef_lit.prithvi", formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        description="Train a Prithvi-style masked autoencoder (chapters 30-31) on the real sites of eo_real/ and "
                    "optionally ship it as a model folder for the evaluation (chapter 26).")
    p.add_argument("--preset", default="tiny", choices=list(PRITHVI_PRESETS), help="the Prithvi configuration")
    p.add_argument("--data", default="greenearthnet", help="the samples, as for aef-train: greenearthnet, real, "
                   "multisite, synthetic")
    p.add_argument("--sites", nargs="+", default=["portugal", "hungary"], help="training sites (hold the others out)")
    p.add_argument("--steps", type=int, default=28000, help="optimiser steps (the cosine schedule's length)")
    p.add_argument("--minutes", type=float, default=None, help="stop after this much wall time, even before --steps")
    p.add_argument("--batch-size", type=int, default=16, help="stacks per step")
    p.add_argument("--lr", type=float, default=1e-3, help="peak learning rate (AdamW)")
    p.add_argument("--warmup", type=int, default=500, help="linear warm-up steps")
    p.add_argument("--seed", type=int, default=5, help="seed of the weights, the stacks and the masks")
    p.add_argument("--out-dir", default="runs/prithvi", help="checkpoint and metrics.csv; a rerun resumes from it")
    p.add_argument("--save-every", type=int, default=500, help="steps between checkpoints")
    p.add_argument("--ship", default=None, help="after training, write the model folder here (weights, config, card)")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    p.add_argument("--device", default="cpu", help="cpu, cuda, mps or auto")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_prithvi_parser().parse_args(argv)
    if args.steps < 1 or args.batch_size < 1 or (args.minutes is not None and args.minutes <= 0):
        raise SystemExit("prithvi: --steps, --batch-size and --minutes must be positive")
    import platform

    import torch

    from aef_lit.conventions import select_device
    from aef_lit.data import load_sites

    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        samples = load_sites(args.data, args.sites)
    except (ValueError, FileNotFoundError) as err:
        raise SystemExit(f"prithvi: {err}") from None
    cfg = prithvi_config(args.preset)
    model, log = train_prithvi(samples, cfg, args.steps, args.batch_size, args.lr, args.warmup, args.minutes,
                               args.seed, args.out_dir, args.save_every, device=select_device(args.device),
                               progress=not args.no_progress)
    print(f"{len(log)} steps, final loss {log[-1]['loss'] if log else float('nan')}")
    if args.ship:
        notes = (f"trained on {args.data} {', '.join(args.sites)}: batch {args.batch_size}, peak lr {args.lr}, "
                 f"{args.warmup} warm-up steps, cosine decay over {args.steps}, seed {args.seed}; "
                 f"{platform.machine()} CPU, {torch.get_num_threads()} torch threads, torch {torch.__version__}")
        out = ship_prithvi(model, log, args.ship, {"name": f"prithvi-{args.preset}-{args.data}", "data": args.data,
                                                   "sites": list(args.sites), "notes": notes})
        print(f"shipped {out}")
    return 0


# %%
import json

import matplotlib.pyplot as plt

from aef_lit.conventions import find_eo_real, from_days
from aef_lit.data import load_sites
from aef_lit.prithvi import PRITHVI_SHIPPED, load_prithvi, train_prithvi

real = data != "synthetic" and find_eo_real(required=data == "real") is not None
samples = load_sites("greenearthnet" if real else "synthetic", ["portugal", "hungary"] if real else ["a", "b"])
short, short_log = train_prithvi(samples, cfg, steps=steps, batch_size=8, warmup=max(1, steps // 10), seed=seed,
                                 device=dev, progress=False)
assert np.mean([r["loss"] for r in short_log[-10:]]) < np.mean([r["loss"] for r in short_log[:10]])
shipped = load_prithvi(PRITHVI_SHIPPED, dev) if (PRITHVI_SHIPPED / "model.safetensors").exists() else None
ship_meta = json.loads((PRITHVI_SHIPPED / "config.json").read_text()) if shipped is not None else {}

fig, axes = plt.subplots(1, 2 if shipped is not None else 1, figsize=(9, 3), squeeze=False)
ax = axes[0, 0]
ax.plot([r["step"] for r in short_log], [r["loss"] for r in short_log], lw=1)
ax.set(xlabel="step", ylabel="masked-patch loss", title=f"this chapter's run ({steps} steps, {preset})")
if shipped is not None:
    ship_log = pd.read_csv(PRITHVI_SHIPPED / "metrics.csv")
    ax = axes[0, 1]
    ax.plot(ship_log["step"], ship_log["loss"], lw=0.3, alpha=0.4, color="grey")
    ax.plot(ship_log["step"], ship_log["loss"].rolling(200, min_periods=1).mean(), lw=1.5)
    ax.set(xlabel="step", title=f"the shipped model ({len(ship_log)} steps, {ship_meta['train_seconds'] / 60:.0f} min)")
plt.tight_layout()
plt.show()

# %% [markdown]
# ## 5. What it sees and what it reconstructs
#
# A stack from Sweden, the site that neither model saw. Three frames of true colour; the
# input with three quarters of its patches hidden; the reconstruction (visible patches pasted
# back, hidden ones predicted, each patch brought back from its normalised values with the
# target patch's mean and spread, as MAE papers show it); and the truth. A model that only
# learnt the patch mean would paint flat squares: the structure inside the hidden patches is
# what it learnt from the visible ones.

# %%
from aef_lit.data import DEFAULT_STATS, denormalise
from aef_lit.prithvi import cut_stack, pick_frames, prithvi_source

viewer = shipped if shipped is not None else short
test_site = load_sites("greenearthnet", ["sweden"])[0] if real else samples[0]
fr = prithvi_source(test_site, viewer.cfg)
s_ = viewer.cfg.img_size
r0 = c0 = (min(test_site.grid.shape) - s_) // 2
clear = fr.valid[:, r0:r0 + s_, c0:c0 + s_].mean((1, 2))
idx = pick_frames(fr.times, clear, viewer.cfg.frames, (fr.times[0], fr.times[-1] + 1))
xs, ws, ds = cut_stack(fr, idx, r0, c0, s_)
x = torch.from_numpy(xs)[None].to(dev)
with torch.no_grad():
    loss_v, pred, mask = viewer(x, torch.from_numpy(ws)[None].to(dev), generator=torch.Generator().manual_seed(seed))
target = patchify(x, viewer.cfg)
mean, std = target.mean(-1, keepdim=True), (target.var(-1, keepdim=True) + 1e-6).sqrt()
recon_p = torch.where(mask[..., None].bool(), pred * std + mean, target)
recon = unpatchify(recon_p, viewer.cfg)[0].cpu().numpy()
hidden = unpatchify(mask[..., None].expand(-1, -1, target.shape[-1]), viewer.cfg)[0].cpu().numpy().astype(bool)
spec = test_site.specs["s2"]
band_idx = [spec.bands.index(b) for b in viewer.cfg.bands]
rgb_bands = [viewer.cfg.bands.index(b) for b in ("B04", "B03", "B02")]


def rgb(v):
    """True colour of normalised `C H W` values (inverse of chapter 3's normalisation)."""
    full = np.zeros((spec.channels, *v.shape[1:]), np.float32)
    full[band_idx] = v
    refl = denormalise(full, spec, DEFAULT_STATS)[[spec.bands.index(b) for b in ("B04", "B03", "B02")]]
    return np.clip(refl.transpose(1, 2, 0) / 0.15, 0, 1)


fig, axes = plt.subplots(viewer.cfg.frames, 3, figsize=(6.4, 2.1 * viewer.cfg.frames), squeeze=False)
for t in range(viewer.cfg.frames):
    masked_in = np.where(hidden[:, t], np.nan, xs[:, t])
    show = rgb(np.nan_to_num(masked_in))
    show[hidden[0, t]] = 0.85
    for j, (img, title) in enumerate([(rgb(xs[:, t]), "truth"), (show, "the input: 75 % hidden"),
                                      (rgb(recon[:, t]), "reconstruction")]):
        axes[t, j].imshow(img, interpolation="nearest")
        axes[t, j].set_xticks([]), axes[t, j].set_yticks([])
        if t == 0:
            axes[t, j].set_title(title, fontsize=9)
    axes[t, 0].set_ylabel(str(from_days(fr.times[idx[t]]).astype("datetime64[D]")), fontsize=8)
plt.suptitle(f"Sweden, {s_} x {s_} px: loss {loss_v.item():.3f}", fontsize=9)
plt.tight_layout()
plt.show()
