# generated from notebooks/21_training.py by tools/nb_export.py: do not edit.
# Edit the notebook, then run `python tools/nb_export.py`.

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
