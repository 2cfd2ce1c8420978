# generated from notebooks/21_training.py by tools/nb_export.py: do not edit.
# Edit the notebook, then run `python tools/nb_export.py`.

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


def warmup_steps(steps: int, warmup_frac: float) -> int:
    """W: warm-up length in steps (at least 1, so step 0 has learning rate 0)."""
    return max(1, round(warmup_frac * steps))


def lr_at(step: int, steps: int, peak: float = 1e-4, warmup_frac: float = 0.01) -> float:
    """Linear warm-up from 0 to `peak` over W steps, then linear decay to 0 at `steps` (§8)."""
    w = warmup_steps(steps, warmup_frac)
    if step < w:
        return peak * step / w
    return peak * max(0.0, (steps - step) / max(1, steps - w))
