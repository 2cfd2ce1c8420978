# generated from notebooks/15_reconstruction.py by tools/nb_export.py: do not edit.
# Edit the notebook, then run `python tools/nb_export.py`.

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from jaxtyping import Bool, Float, Float64, Int
from torch import Tensor

from aef_lit.conventions import MAX_PERIOD_DAYS, MIN_PERIOD_DAYS, Batch, ModelConfig, SourceBatch, SourceSpec, uniform
from aef_lit.model import AEF
from aef_lit.model.timecodes import normalise_in_period


def pick_frames(frame_mask: Bool[Tensor, "B T"], generator: torch.Generator | None = None
                ) -> tuple[Int[Tensor, " B"], Bool[Tensor, " B"]]:
    """One frame index per row, uniform among the True bits of `frame_mask`.

    Returns the indices and whether the row had any frame at all (else index 0, invalid).
    """
    scores = uniform(frame_mask.shape, generator, frame_mask.device)
    scores = torch.where(frame_mask, scores, torch.full_like(scores, -1.0))
    return scores.argmax(dim=1), frame_mask.any(dim=1)


def random_periods_containing(t: Float64[Tensor, "*b"], generator: torch.Generator | None = None,
                              min_days: float = MIN_PERIOD_DAYS, max_days: float = MAX_PERIOD_DAYS
                              ) -> Float64[Tensor, "*b 2"]:
    """Random periods [t_s, t_e) with min_days < t_e - t_s <= max_days and t_s <= t < t_e."""
    u_len = uniform((2, *t.shape), generator, t.device, torch.float64)
    length = min_days + (max_days - min_days) * (1.0 - u_len[0])  # in (min_days, max_days]
    start = t - u_len[1] * length  # t - start in [0, length): t is inside
    return torch.stack([start, start + length], dim=-1)


@dataclass
class Target:
    """The held-out frame of one decoded source, for every row.

    Attributes:
        x: target values (`B C H W`); class ids (as floats) for categorical sources.
        weight: per-pixel weight (`B H W`), zero where invalid, cloudy or the row has no target.
        t: the target's instant, float64 days (`B`).
        period: its own valid period [t_s, t_e) (`B 2`), longer than 4 days, containing t.
        t_norm: t normalised within the period, in [0, 1) (`B`): what the decoder sees.
        meta: per-frame sensor metadata (`B M`) or None.
        index: the frame's index on the source's padded T axis (`B`).
        valid: whether the row has a target for this source (`B`).
    """

    x: Float[Tensor, "B C H W"]
    weight: Float[Tensor, "B H W"]
    t: Float64[Tensor, " B"]
    period: Float64[Tensor, "B 2"]
    t_norm: Float[Tensor, " B"]
    meta: Float[Tensor, "B M"] | None
    index: Int[Tensor, " B"]
    valid: Bool[Tensor, " B"]


@dataclass
class HeldOut:
    """Encoder input with one frame per input source removed, and every source's target."""

    inputs: dict[str, SourceBatch]
    targets: dict[str, Target]
    periods: Float64[Tensor, "B P 2"]

    @property
    def sources(self) -> list[str]:
        """Decoded sources, in the order of the P axis of `periods`."""
        return list(self.targets)


def _gather_frame(v: Tensor, index: Int[Tensor, " B"]) -> Tensor:
    """v[b, index[b]] for a tensor with B, T leading axes."""
    idx = index.view(-1, 1, *([1] * (v.ndim - 2))).expand(-1, 1, *v.shape[2:])
    return torch.gather(v, 1, idx).squeeze(1)


def hold_out(batch: Batch, cfg: ModelConfig, generator: torch.Generator | None = None,
             min_period_days: float = MIN_PERIOD_DAYS, max_period_days: float = MAX_PERIOD_DAYS) -> HeldOut:
    """Pick one target frame per row and decoded source; remove it from the encoder input.

    Sources are taken in `cfg.sources` order, skipping those absent from `batch`. Input
    sources lose their held-out frame from `frame_mask` (static shapes); target-only
    sources keep theirs (the encoder never reads them).
    """
    specs = [s for s in cfg.sources if s.name in batch]
    picks: dict[str, tuple[Tensor, Tensor]] = {
        s.name: pick_frames(batch[s.name].frame_mask, generator) for s in specs}
    new_masks: dict[str, Tensor] = {}
    for s in specs:
        sb = batch[s.name]
        if s.role == "input":
            idx, _ = picks[s.name]
            onehot = F.one_hot(idx, sb.frame_mask.shape[1]).bool()
            new_masks[s.name] = sb.frame_mask & ~onehot
    # a row must keep at least one input frame: otherwise put its held-out frames back
    remaining = sum(m.sum(dim=1) for m in new_masks.values())
    emptied = remaining == 0 if new_masks else None
    inputs: dict[str, SourceBatch] = dict(batch)
    targets: dict[str, Target] = {}
    for s in specs:
        sb = batch[s.name]
        idx, valid = picks[s.name]
        if s.role == "input":
            mask = torch.where(emptied[:, None], sb.frame_mask, new_masks[s.name])
            inputs[s.name] = sb.replace(frame_mask=mask)
            valid = valid & ~emptied
        t = _gather_frame(sb.t, idx)
        period = random_periods_containing(t, generator, min_period_days, max_period_days)
        targets[s.name] = Target(
            x=_gather_frame(sb.x, idx),
            weight=_gather_frame(sb.weight, idx) * valid[:, None, None],
            t=t, period=period, t_norm=normalise_in_period(t, period),
            meta=None if sb.meta is None else _gather_frame(sb.meta, idx),
            index=idx, valid=valid,
        )
    periods = torch.stack([tg.period for tg in targets.values()], dim=1)
    return HeldOut(inputs=inputs, targets=targets, periods=periods)


def pixel_errors(spec: SourceSpec, pred: Float[Tensor, "B C_out H W"],
                 target: Float[Tensor, "B C H W"]) -> Float[Tensor, "B H W"]:
    """L1 over bands (continuous) or cross-entropy of logits (categorical), per pixel."""
    pred = pred.float()
    if spec.categorical:
        y = target[:, 0].round().long().clamp(0, spec.n_classes - 1)
        return F.cross_entropy(pred, y, reduction="none")
    return (pred - target.float()).abs().mean(dim=1)


def reconstruction_loss(preds: dict[str, Tensor], held: HeldOut, cfg: ModelConfig
                        ) -> tuple[Float[Tensor, ""], dict[str, Float[Tensor, ""]]]:
    """(1/|M|) sum_i w_s m_i f_s(y_i, yhat_i) over every source, row and pixel (§7, Eq. 3).

    Returns the total and, per source, its own weighted mean error (diagnostics).
    """
    num, den = 0.0, 0.0
    per_source: dict[str, Tensor] = {}
    for name, tg in held.targets.items():
        spec = cfg.source(name)
        err = pixel_errors(spec, preds[name], tg.x)
        m = tg.weight.float()
        num = num + spec.loss_weight * (m * err).sum()
        den = den + m.sum()
        per_source[name] = (m * err).sum() / m.sum().clamp_min(1e-6)
    total = num / torch.as_tensor(den).clamp_min(1e-6)
    return total, per_source


def decode_targets(model: AEF, z: Float[Tensor, "B P2 E H W"], held: HeldOut) -> dict[str, Tensor]:
    """Each source's decoder on its own period's (sampled) embedding: name -> `B C_out H W`."""
    out = {}
    for p, (name, tg) in enumerate(held.targets.items()):
        out[name] = model.decode(name, z[:, p], tg.t_norm.to(z.device), tg.meta)
    return out


def reconstruct(model: AEF, batch: Batch, generator: torch.Generator | None = None,
                held: HeldOut | None = None):
    """Hold out, encode, summarise each target's period, sample, decode.

    Returns (preds, mu, held) with mu the unit embeddings `B P E H W`.
    """
    held = hold_out(batch, model.cfg, generator) if held is None else held
    enc = model.encode(held.inputs)
    mu = model.summarise(enc, held.periods)
    z = model.sample(mu, generator=generator)
    return decode_targets(model, z, held), mu, held
