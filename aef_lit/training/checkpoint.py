# generated from notebooks/21_training.py by tools/nb_export.py: do not edit.
# Edit the notebook, then run `python tools/nb_export.py`.

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
