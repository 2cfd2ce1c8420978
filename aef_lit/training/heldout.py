# generated from notebooks/22_release.py by tools/nb_export.py: do not edit.
# Edit the notebook, then run `python tools/nb_export.py`.

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
