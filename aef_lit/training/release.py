# generated from notebooks/22_release.py by tools/nb_export.py: do not edit.
# Edit the notebook, then run `python tools/nb_export.py`.

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
