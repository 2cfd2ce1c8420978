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
# # 22. Release: many devices, a command line, a shipped model
#
# Chapter 21's loop trains a model in one process. This chapter takes it the rest of the
# way: the same loop on many devices (`torchrun` and `DistributedDataParallel`, mixed
# precision, activation checkpointing), the `aef-train` command line, the `paper` preset's
# settings for a GPU or TPU, then what a trained model is worth, measured on frames it
# did not see at a site it never saw, and how it leaves the run folder as a small, safe
# model that later chapters load with `load_pretrained()`. The last section reports what
# the model shipped with this book has learned, and what it has not.
#
# Modules: `aef_lit.training.runtime` (devices, precision, `torchrun`), `cli` (`aef-train`),
# `heldout` (held-out reconstruction) and `release` (export, load, ship, the model card).

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
#| export training.runtime
from __future__ import annotations

import hashlib
import os
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Sequence

import torch
import torch.distributed as dist
from torch import Tensor, nn

from aef_lit.conventions import autocast_dtype, select_device
from aef_lit.training.checkpoint import unwrap


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
#| export training.runtime
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




def unwrap_ddp(m: nn.Module) -> nn.Module:
    """The DDP module under a `torch.compile` wrapper (for `no_sync`)."""
    return m._orig_mod if hasattr(m, "_orig_mod") else m


def reduce_mean(x: Tensor, info: DistInfo) -> Tensor:
    """The mean of `x` over the job's processes (`x` itself in a one-process job)."""
    if info.distributed:
        x = x.clone()
        dist.all_reduce(x, op=dist.ReduceOp.SUM)
        x = x / info.world_size
    return x


# %% [markdown]
# Every random draw of a step comes from `step_generator`, so its stream is a pure function
# of (seed, step, micro-batch, rank): the same arguments give the same numbers in any
# process at any time (which is what makes a resumed run exact), and two ranks never share
# a stream. `params_digest` is how a distributed run proves its replicas equal.

# %%
_draw = lambda *a: torch.rand(4, generator=step_generator(*a))  # noqa: E731
assert torch.equal(_draw(0, 5, 1, 0), _draw(0, 5, 1, 0)), "a pure function of its arguments"
assert len({tuple(_draw(*a).tolist()) for a in [(0, 5, 1, 0), (0, 5, 1, 1), (0, 6, 1, 0), (1, 5, 1, 0)]}) == 4
_lin = nn.Linear(3, 2)
_copy = nn.Linear(3, 2)
_copy.load_state_dict(_lin.state_dict())
assert params_digest(_lin) == params_digest(_copy) != params_digest(nn.Linear(3, 2)), "equal weights, equal digests"
assert isinstance(autocast_context(torch.device("cpu")), nullcontext), "no bf16 on the CPU"
assert DistInfo().is_main and not DistInfo().distributed, "outside torchrun: one process, rank 0"

# %% [markdown]
# ## The command line
#
# `aef-train` (or `python -m aef_lit.training`) takes an optional `--config run.json|run.yaml`
# and one flag per `TrainConfig` field; flags override the file. Booleans have `--x/--no-x`
# forms, tuples take several values. The parser is generated from the dataclass, so the
# two cannot drift apart: `--help` lists the flags in the configuration's sections
# (`SECTIONS`), each with its field's sentence from `TrainConfig`'s docstring:
#
# ```bash
# aef-train --preset tiny --steps 300 --lr 1e-3 --sites portugal hungary --out-dir runs/tiny
# torchrun --standalone --nproc_per_node 2 -m aef_lit.training --config run.yaml
# ```
#
# Exit status 0 on success, 2 when the loss became non-finite (the message says where the
# last good checkpoint is), 1 on any other error.

# %%
#| export training.cli
from __future__ import annotations

import argparse
import inspect
import logging
import os
import re
import typing
from dataclasses import fields
from typing import Sequence

import torch.distributed as dist

from aef_lit.training.config import TrainConfig
from aef_lit.training.loop import NonFiniteLossError, train

log = logging.getLogger("aef_lit.training.cli")


SECTIONS: dict[str, tuple[str, ...]] = {
    "model": ("preset", "model_overrides", "tile"),
    "data": ("data", "sites", "frames", "min_span_days", "targets", "text", "captions", "gain", "occlude", "time_shift",
             "workers"),
    "optimisation": ("batch_size", "grad_accum", "lr", "clip", "seed", "loss_weights"),
    "schedule": ("steps", "warmup_frac"),
    "checkpointing": ("out_dir", "checkpoint_every", "keep_best", "ema", "resume", "init_from"),
    "runtime": ("device", "compile", "bf16", "activation_checkpointing", "progress", "log_every"),
}
"""`TrainConfig`'s fields by the part of a run they set (the CLI's argument groups)."""


def field_help() -> dict[str, str]:
    """{field: its description} from the `Attributes:` section of `TrainConfig`'s docstring."""
    doc = inspect.cleandoc(TrainConfig.__doc__ or "")
    out: dict[str, str] = {}
    name = None
    for line in doc.split("Attributes:", 1)[-1].splitlines():
        m = re.match(r"^    (\w+): (.*)$", line)
        if m:
            name = m.group(1)
            out[name] = m.group(2).strip()
        elif name and line.startswith("        "):
            out[name] += " " + line.strip()
    return out


def build_parser() -> argparse.ArgumentParser:
    """An argparse parser with one flag per `TrainConfig` field, grouped by `SECTIONS` (defaults: unset)."""
    ap = argparse.ArgumentParser(prog="aef-train", description="Train AlphaEarth Foundations (aef-lit).")
    ap.add_argument("--config", help="a JSON or YAML file of TrainConfig fields; flags override it")
    ap.add_argument("--log-level", default="INFO", help="logging level of rank 0 (other ranks log warnings only)")
    hints = typing.get_type_hints(TrainConfig)
    by_name = {f.name: f for f in fields(TrainConfig)}
    helps = field_help()
    for section, names in SECTIONS.items():
        group = ap.add_argument_group(section)
        for name in names:
            f, tp = by_name[name], hints[name]
            flags = [f"--{name.replace('_', '-')}"] + ([f"--{name}"] if "_" in name else [])
            help_ = f"{helps[name]} (default: {f.default!r})".replace("%", "%%")
            if tp is bool:
                group.add_argument(*flags, dest=name, action=argparse.BooleanOptionalAction, default=None,
                                   help=help_)
            elif typing.get_origin(tp) is tuple:
                group.add_argument(*flags, dest=name, nargs="+", default=None, help=help_)
            else:
                group.add_argument(*flags, dest=name, type=tp, default=None, help=help_)
    return ap


def config_from_args(argv: Sequence[str] | None = None) -> tuple[TrainConfig, argparse.Namespace]:
    """Parse flags (and `--config`) into a `TrainConfig`."""
    args = build_parser().parse_args(argv)
    over = {f.name: getattr(args, f.name) for f in fields(TrainConfig) if getattr(args, f.name) is not None}
    over = {k: tuple(v) if isinstance(v, list) else v for k, v in over.items()}
    cfg = TrainConfig.from_file(args.config, **over) if args.config else TrainConfig(**over)
    return cfg, args


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of `aef-train` and `python -m aef_lit.training`."""
    cfg, args = config_from_args(argv)
    rank = int(os.environ.get("RANK", "0"))
    level = getattr(logging, str(args.log_level).upper(), logging.INFO) if rank == 0 else logging.WARNING
    logging.basicConfig(level=level,
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
_parser = build_parser()
assert all(a.help for a in _parser._actions), "every flag says what it does"
assert sorted(n for g in SECTIONS.values() for n in g) == sorted(f.name for f in fields(TrainConfig)), "one section each"
assert [g.title for g in _parser._action_groups[2:]] == list(SECTIONS), "the config's sections, in order"
print(next(a for a in _parser._actions if a.dest == "ema").help)
_cfg

# %% [markdown]
# ### How the tests hold the loop to its promises
#
# Two tests in `tests/test_training.py` run the loop as a user would, in subprocesses:
#
# - **kill -9 and resume.** An uninterrupted 30-step run of `python -m aef_lit.training` is
#   the reference. A second run of the same command is killed with `SIGKILL` as soon as its
#   checkpoint reaches step 9 (no chance to clean up, as in a preempted VM), then the same
#   command is run again. It must log `resumed from ... at step k`, and its `metrics.csv`
#   must list every step 0…29 exactly once with the reference's learning rates and loss
#   terms, and end with the reference's weights.
# - **torchrun with two processes.** `torchrun --standalone --nproc_per_node 2` on the CPU
#   (gloo), with a small script that parses the same flags and calls `train` with the
#   `_save_rank_weights` hook: after a few steps both ranks' final weights must be bitwise
#   equal, and rank 0 alone must have logged each step once. (`train` also compares
#   parameter digests of all ranks at the end of every distributed run and raises if they
#   differ.)
#
# Smaller tests cover the rest: the schedule's shape, a crash *during* a checkpoint write
# leaving the previous file intact, a NaN at step 7 stopping the run with the step-6
# checkpoint intact and finite, no checkpoint written more often than asked, a resume with
# another `--ema` refused, every flag with a help text, `torch.compile` giving eager's
# losses, activation checkpointing giving the same gradients.

# %% [markdown]
# ## Throughput on a CPU, and the paper on accelerators
#
# `tools/bench_train.py` times the real loop (sampler, model, the full objective, Adam)
# for several presets side by side (`python tools/bench_train.py --steps 4 --warmup 1`). On
# this book's 2-core CPU the `tiny` preset runs about 2 steps of 8 tiles of 32 × 32 per
# second, the `small` preset about 0.3 (the lab notes record the measurements).
#
# For scale: the paper processed about 0.25 sequences per second *per TPU v4 chip* with
# rows of 103 frames at $L = 128$ and a 480M-parameter model (§8).
#
# **The `paper` preset on a GPU or TPU.** The same CLI; what changes is the configuration:
#
# ```yaml
# # paper.yaml: aef-train --config paper.yaml   (or torchrun ... -m aef_lit.training --config paper.yaml)
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
# torchrun --standalone --nproc_per_node 8 -m aef_lit.training --config paper.yaml --out-dir runs/paper
# ```
#
# On Colab: install the package (first cell of every chapter), pick a GPU runtime, and
# run `!aef-train --config paper.yaml` with `batch_size` and `grad_accum` fitted to the
# card's memory; kill the runtime whenever you like and run the same command again: it
# resumes from `runs/paper/ckpt.pt`. On a TPU runtime `device: auto` selects XLA once
# `torch_xla` is installed; shapes are static by construction (chapters 1, 15, 20).
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
# - **temporal mean**: the per-pixel mean of the clear input frames (the baseline a trained model must beat first);
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
#| export training.heldout
from __future__ import annotations

import math
import typing
from dataclasses import replace
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn

from aef_lit.conventions import batch_to
from aef_lit.training.runtime import step_generator

if typing.TYPE_CHECKING:  # imported lazily at run time (chapter 15's module pulls in the model)
    from aef_lit.objective.reconstruction import HeldOut

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
# ### A model to measure
#
# A short run of chapter 21's loop gives a model to score (the same small run as there:
# the `tiny` preset on GreenEarthNet Portugal and Hungary, synthetic cubes where the
# real samples are absent). Sweden is not among its training sites. Below, for a few
# Swedish tiles: the held-out frame (truth), the model's reconstruction from the remaining
# frames, and the per-pixel temporal mean of those frames, in true colour (B04, B03, B02),
# and the error maps. After a minute of training on a CPU the reconstructions are blurry
# and the temporal mean usually still wins; the shipped model below was trained longer.

# %%
import logging
import shutil
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd

from aef_lit.conventions import find_eo_real
from aef_lit.data.preprocess import denormalise
from aef_lit.training import TrainConfig, train
from aef_lit.training.sampling import tile_stream, training_dataset

logging.basicConfig(level=logging.WARNING)
run_dir = Path("../runs/nb22")
shutil.rmtree(run_dir, ignore_errors=True)
result = train(TrainConfig(preset=preset, device=device, seed=seed, data=data, steps=steps, tile=tile, batch_size=4,
                           frames=8, lr=1e-3, warmup_frac=0.05, checkpoint_every=20, out_dir=str(run_dir),
                           progress=False))
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
_scores = evaluate_heldout(result.model, eval_data, eval_sites, rows=16, frames=8, period="row")
assert _scores["pixels"] > 0 and math.isclose(_scores["period_mean"], _scores["temporal_mean"], rel_tol=1e-5), \
    "over the row's whole span the period mean is the temporal mean"
{k: round(_scores[k], 4) for k in ("model", "temporal_mean", "period_mean", "nearest_frame")}

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
#| export training.release
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import nn

from aef_lit.conventions import ModelConfig
from aef_lit.training.checkpoint import (
    CHECKPOINT,
    METRICS,
    load_checkpoint,
    model_config_from_json,
    model_config_to_json,
    read_metrics,
    unwrap,
)
from aef_lit.training.config import TERMS, TrainConfig, warmup_steps
from aef_lit.training.heldout import evaluate_heldout

PRETRAINED = Path(__file__).resolve().parents[2] / "data" / "models" / "aef-tiny-greenearthnet" \
    if "__file__" in globals() else Path("../data/models/aef-tiny-greenearthnet")
"""The model trained with chapter 21's loop and shipped with the repository (chapter 22)."""


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
    """(model, cfg) of a shipped model folder (default: `PRETRAINED`, the shipped one), in eval mode."""
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
        "hardware": hardware
        or f"{platform.machine()} CPU, {torch.get_num_threads()} threads, torch {torch.__version__}",
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
    names = {"dem": "Copernicus DEM", "landcover": "ESA WorldCover"}
    targets = (" and ".join(names.get(t, t) for t in tcfg.targets) + " as target-only sources" if tcfg.targets
               else "no target-only source: no evaluated label reached the model")
    if tcfg.data != "multisite":
        return (f"GreenEarthNet minicubes {', '.join(tcfg.sites)} (2021 Sentinel-2 L2A B02 B03 B04 B8A at "
                f"~20 m, 128 x 128 px, clouds from the minicube mask as loss weights; {targets}), from "
                "dongzhang04/greenearthnet (MIT; modified Copernicus Sentinel data; WorldCover CC-BY 4.0).")
    return (f"the `multisite` sites {', '.join(tcfg.sites)} (chapter 20), all brought to Sentinel-2 B02 B03 "
            "B04 B8A on a 10 m UTM grid: GreenEarthNet minicubes and per-date GeoTIFFs (2021 L2A; "
            "dongzhang04/greenearthnet, MIT), WorldCereal's Belgian monthly composites (B08 for B8A; "
            "WorldCereal/worldcereal-classification, MIT) and eo-learn's Slovenian L1C scenes (B08 for "
            "B8A; sentinel-hub/eo-learn, MIT); modified Copernicus Sentinel data, WorldCover CC-BY 4.0. "
            + ("DEM and land cover are target-only sources where a site has them." if tcfg.targets
               else "No target-only source: no evaluated label reached the model."))


def model_card(mcfg: ModelConfig, tcfg: TrainConfig, facts: dict[str, Any]) -> str:
    """The MODEL_CARD.md text of a shipped model."""
    h = facts["heldout"]
    ft = facts["final_terms"]
    flags = (f"--preset {tcfg.preset} --data {tcfg.data} --sites {' '.join(tcfg.sites)} --tile {mcfg.tile} "
             f"--frames {tcfg.frames} --batch-size {tcfg.batch_size} --steps {tcfg.steps} --lr {tcfg.lr:g} "
             f"--warmup-frac {tcfg.warmup_frac:g} --seed {tcfg.seed}"
             + (f" --model-overrides '{tcfg.model_overrides}'" if tcfg.model_overrides else "")
             + (f" --gain {tcfg.gain:g}" if tcfg.gain else "")
             + (f" --occlude {tcfg.occlude:g}" if tcfg.occlude else "")
             + (f" --time-shift {tcfg.time_shift:g}" if tcfg.time_shift else "")
             + (f" --captions {tcfg.captions}" if tcfg.captions != "site" else "")
             + ("" if tcfg.text else " --no-text")
             + (f" --targets {' '.join(tcfg.targets) or 'none'}" if tuple(tcfg.targets) != ("dem", "landcover")
                else "")
             + (f" --ema {tcfg.ema:g}" if tcfg.ema else "")
             + (f" --loss-weights {' '.join(f'{w:g}' for w in tcfg.loss_weights)}"
                if tcfg.loss_weights != TrainConfig().loss_weights else "")
             + (f" --init-from {tcfg.init_from}" if tcfg.init_from else ""))
    w = ", ".join(f"{x:g}" for x in tcfg.loss_weights)
    weights_text = (f"of the paper ({w}, normalised)" if tcfg.loss_weights == TrainConfig().loss_weights
                    else f"({w}, normalised; the paper's are 1, 0.05, 0.02, 0.001)")
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
- load: `from aef_lit.training import load_pretrained; model, cfg = load_pretrained()`.

## Data
- training: {_training_data_text(tcfg)} Random {mcfg.tile} x {mcfg.tile} tiles with up to
  {tcfg.frames} frames from random support windows (chapter 20).
- held out: {', '.join(h['sites'])} (a site never seen in training). The normalisation statistics
  were fitted on all real samples including it (8 numbers per band; a negligible leak).

## Training
- {facts['steps']} steps in all ({stage}{tcfg.steps} steps of batch {tcfg.batch_size} x {tcfg.grad_accum} \
accumulation), Adam, peak lr {tcfg.lr:g},
  linear warm-up over {warmup_steps(tcfg.steps, tcfg.warmup_frac)} steps then linear decay to 0, clip {tcfg.clip:g},
  seed {tcfg.seed}; loss weights {weights_text}.
- wall time {facts['train_seconds'] / 60:.1f} min on {facts['hardware']}.
- final loss terms (mean of the last 5 % of steps): total {ft['total']:.4f}, reconstruction
  {ft['reconstruction']:.4f}, uniformity {ft['uniformity']:.4f}, consistency {ft['consistency']:.4f},
  text {ft['text']:.4f}.
- reproduce ({stage.rstrip(": ") or "the run"}): `aef-train {flags} --out-dir runs/ship`, then
  `python -c "from aef_lit.training import ship; ship('runs/ship')"`.

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

# %% [markdown]
# The round trip on the short run above: `ship` scores it on the held-out site (a few
# rows here; 128 for a real release), writes the folder, and `load_pretrained` gives back
# a model with bitwise the same weights, in eval mode. The folder is small and loading it
# runs no code.

# %%
import tempfile

from aef_lit.training import params_digest

with tempfile.TemporaryDirectory() as d:
    facts = ship(run_dir, Path(d) / "model", eval_data=eval_data, eval_sites=eval_sites, rows=16)
    back, back_cfg = load_pretrained(Path(d) / "model")
    assert params_digest(back) == params_digest(result.model) and not back.training, "the same weights, eval mode"
    assert back_cfg == result.model_cfg and facts["steps"] == steps
    card = (Path(d) / "model" / "MODEL_CARD.md").read_text()
    assert "temporal mean" in card and f"{steps} steps" in card
    print(sorted(p.name for p in (Path(d) / "model").iterdir()), f"{facts['params']:,} parameters")

# %% [markdown]
# ## The shipped model
#
# `data/models/aef-tiny-greenearthnet/` holds a `tiny` model with a wider precision path
# (`--model-overrides '{"d_precision": 64, "decoder_hidden": 128}'`, 0.8M parameters),
# trained with chapter 21's loop on GreenEarthNet Portugal and Hungary for much longer
# than the run above (its `MODEL_CARD.md` lists the data, steps, time, hardware and final
# loss terms; its `metrics.csv` the last stage's training curve). Sweden, named in its
# `config.json`, is its held-out site.

# %%
if (PRETRAINED / "model.safetensors").exists():
    shipped, shipped_cfg = load_pretrained()
    meta = json.loads((PRETRAINED / "config.json").read_text())
    shipped_train_cfg = TrainConfig.from_dict(meta["train_config"])  # an older run folder's config still loads
    print(f"{PRETRAINED.name}: {meta['params']:,} parameters, {meta['steps']} steps, "
          f"{meta['train_seconds'] / 60:.0f} min on {meta['hardware']}")
    assert not set(meta["heldout"]["sites"]) & set(shipped_train_cfg.sites), "held out means never trained on"
    curve = pd.read_csv(PRETRAINED / METRICS)
    fig, axes = plt.subplots(1, 4, figsize=(14, 2.6))
    for ax, k in zip(axes, ("reconstruction", "uniformity", "consistency", "text")):
        ax.plot(curve.step, curve[k].rolling(50, min_periods=1).mean())
        ax.set(title=f"{k} (shipped run)", xlabel="step")
    plt.tight_layout()
    plt.show()
else:
    print(f"no shipped model at {PRETRAINED}")

# %% [markdown]
# ### What it has learned, and what it has not
#
# The measurements behind this section (every table, every configuration tried, and the
# probes' code) are in the lab notes appendix; they need the real samples and an hour or
# more of CPU each, so the book records them rather than recomputing them. Held-out L1 in
# normalised units, 128 rows per site, the same frames and pixels for every estimate:
#
# - **On the places it was trained on, it beats the baselines.** On the 10 m grid it is
#   14–17 % below the per-pixel temporal mean on Portugal (0.353 against 0.424) and Hungary
#   (0.420 against 0.489), and below the nearest clear frame too.
# - **On a place it never saw, it ties the temporal mean, at best.** On Sweden it is 8 %
#   worse than the mean on the cubes' own ~20 m grid (0.269 against 0.248) and 1 % worse on
#   the 10 m grid (0.2475 against 0.2446). Most of the gap on the coarser grid is detail
#   finer than the L/2 summary keeps (averaged over 2 × 2 blocks the model is almost level
#   with the mean: 0.2415 against 0.236).
# - **Which period is summarised matters.** Summarising each row's whole span (`period="row"`)
#   instead of a random period puts the shipped model 3.0 % under the mean on Sweden at 10 m;
#   and the mean over only the frames inside the random period is a harder baseline than
#   the temporal mean (Sweden 0.2319 against 0.2446).
# - **The trained summariser uses its period, and ignores clouds it was never told about.**
#   On a Swedish tile, the query for the first half of the span put 95 % of its attention on
#   first-half frames, the second-half query 49 %; frames the minicube marks as cloudy got
#   almost no weight.
# - **It leans on what does not carry to a new place.** Against the pixel's own temporal
#   mean, its predictions on Sweden follow the input's level with slopes of 0.52–0.70 per
#   band (1.14–1.21 on Portugal), and moving every timestamp by the same number of days
#   moves its error by up to 34 % while no baseline moves: it has tied its training places'
#   look to their dates. Chapter 20's `time_shift` and gap-filling remove these shortcuts,
#   and a model trained from scratch with them ties the mean on Sweden (1.5 % under it at
#   10 m), but gives up its lead on the training sites.
#
# The figure shows the model's error as a fraction of the temporal mean's, per site and grid
# (below 1: the model wins).

# %%
recorded = pd.DataFrame({"cubes' ~20 m grid": [1.085, 0.912, 0.858], "10 m grid": [1.012, 0.833, 0.859]},
                        index=["Sweden (held out)", "Portugal (training)", "Hungary (training)"])
ax = recorded.plot.barh(figsize=(7, 2.6))
ax.axvline(1.0, color="k", ls=":", lw=1)
ax.set(xlabel="held-out L1: shipped model / temporal mean", title="the shipped model against the temporal mean")
ax.set_xlim(0.7, 1.15)
plt.tight_layout()
plt.show()
assert (recorded.iloc[1:] < 1).all().all() and (recorded.iloc[0] > 1).all(), "wins where trained, not elsewhere"

# %% [markdown]
# ### What still needs computing
#
# Whether the model can clearly beat the temporal mean on a place it never saw is open:
# `tests/test_release.py` holds that criterion as a strict `xfail`. Closing the gap needs
# what a CPU afternoon cannot give: many more places (the paper trains on millions; ours
# are five) and far more steps (the paper: 100,000 of batch 256; the shipped model: 10,500
# of batch 8), from scratch on the 10 m grid. What the measurements point to, in one
# command for a GPU (every place but the held-out one, synthetic clouds at a moderate rate,
# ten times the steps we could afford), then the same scores:
#
# ```bash
# aef-train --preset tiny --model-overrides '{"d_precision": 64, "decoder_hidden": 128}' \
#   --data multisite --sites portugal hungary portugal_geotiff hungary_geotiff belgium slovenia \
#   --tile 32 --frames 8 --batch-size 32 --steps 100000 --lr 1e-3 --warmup-frac 0.01 \
#   --gain 0.6 --occlude 0.25 --device auto --out-dir runs/multisite
# python -c "from aef_lit.training import ship; ship('runs/multisite', 'runs/multisite/model', eval_data='multisite')"
# ```
#
# The probes worth rerunning on that model: the score at both grids and both periods, the
# level slopes per band, and the calendar shift (`evaluate_heldout(..., shift_days=d)`).
