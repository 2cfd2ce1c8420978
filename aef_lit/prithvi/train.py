# generated from notebooks/31_prithvi_training.py by tools/nb_export.py: do not edit.
# Edit the notebook, then run `python tools/nb_export.py`.

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
