# generated from notebooks/21_training.py by tools/nb_export.py: do not edit.
# Edit the notebook, then run `python tools/nb_export.py`.

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


def warmup_steps(steps: int, warmup_frac: float) -> int:
    """W: warm-up length in steps (at least 1, so step 0 has learning rate 0)."""
    return max(1, round(warmup_frac * steps))


def lr_at(step: int, steps: int, peak: float = 1e-4, warmup_frac: float = 0.01) -> float:
    """Linear warm-up from 0 to `peak` over W steps, then linear decay to 0 at `steps` (§8)."""
    w = warmup_steps(steps, warmup_frac)
    if step < w:
        return peak * step / w
    return peak * max(0.0, (steps - step) / max(1, steps - w))


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
