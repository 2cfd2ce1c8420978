# generated from notebooks/17_consistency.py by tools/nb_export.py: do not edit.
# Edit the notebook, then run `python tools/nb_export.py`.

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from einops import reduce
from jaxtyping import Bool, Float, Float64, Int
from torch import Tensor

from aef_lit.conventions import (
    MAX_PERIOD_DAYS,
    MIN_PERIOD_DAYS,
    YEAR_DAYS,
    Batch,
    ModelConfig,
    SourceBatch,
    SourceSpec,
    uniform,
)

SIX_MONTHS_DAYS = YEAR_DAYS / 2


@dataclass(frozen=True)
class PerturbationConfig:
    """Student perturbation rates (paper §6 defaults) and the consistency period's bounds.

    Attributes:
        drop_source_landsat, drop_source_s1, drop_source_s2: probability of dropping every
            frame of that source in a row (S2 never, paper).
        drop_frame_landsat, drop_frame_s1, drop_frame_s2: per-frame drop probability in mode (a).
        mode_probs: probabilities of (a) random frames, (b) last six months, (c) first six
            months (open in the paper; equal here).
        months_days: the length of "six months" in days.
        min_period_days: the shared period is strictly longer than this (paper: 4 days).
        max_period_days: and at most this long.
    """

    drop_source_landsat: float = 0.3
    drop_source_s1: float = 0.3
    drop_source_s2: float = 0.0
    drop_frame_landsat: float = 0.3
    drop_frame_s1: float = 0.3
    drop_frame_s2: float = 0.5
    mode_probs: tuple[float, float, float] = (1 / 3, 1 / 3, 1 / 3)
    months_days: float = SIX_MONTHS_DAYS
    min_period_days: float = MIN_PERIOD_DAYS
    max_period_days: float = MAX_PERIOD_DAYS

    def rates(self, spec: SourceSpec) -> tuple[float, float]:
        """(drop whole source, drop one frame in mode a) for a source, keyed on its kind."""
        kind = sensor_kind(spec)
        return getattr(self, f"drop_source_{kind}"), getattr(self, f"drop_frame_{kind}")


def sensor_kind(spec: SourceSpec) -> str:
    """'landsat', 's1' or 's2' (any other input source is treated like Sentinel-2)."""
    name = spec.name.lower()
    if "landsat" in name:
        return "landsat"
    if name.startswith("s1") or "sentinel1" in name or spec.modality == "sar":
        return "s1"
    return "s2"


def support(batch: Batch, specs: list[SourceSpec]) -> tuple[Float64[Tensor, " B"], Float64[Tensor, " B"]]:
    """First and last instant of each row's existing input frames (0, 0 for an empty row)."""
    t = torch.cat([batch[s.name].t for s in specs], dim=1)
    m = torch.cat([batch[s.name].frame_mask for s in specs], dim=1)
    inf = torch.full_like(t, float("inf"))
    lo = torch.where(m, t, inf).amin(dim=1)
    hi = torch.where(m, t, -inf).amax(dim=1)
    empty = ~m.any(dim=1)
    return torch.where(empty, 0.0, lo), torch.where(empty, 0.0, hi)


def period_inside(lo: Float64[Tensor, " B"], hi: Float64[Tensor, " B"], generator=None,
                  min_days: float = MIN_PERIOD_DAYS, max_days: float = MAX_PERIOD_DAYS) -> Float64[Tensor, "B 2"]:
    """A random period [t_s, t_e) inside [lo, hi], strictly longer than `min_days`.

    Where the window is too short, a period of min_days + 1 days centred on it is used.
    """
    u = uniform((2, *lo.shape), generator, lo.device, torch.float64)
    avail = (hi - lo).clamp_max(max_days)
    fits = avail > min_days
    length = torch.where(fits, min_days + (avail - min_days) * (1.0 - u[0]), torch.full_like(lo, min_days + 1.0))
    start = torch.where(fits, lo + (hi - lo - length) * u[1], (lo + hi) / 2 - length / 2)
    return torch.stack([start, start + length], dim=-1)


@dataclass
class Perturbation:
    """The student's input and the period teacher and student both summarise.

    Attributes:
        student: the teacher's batch with more `frame_mask` bits off (values unchanged).
        period: the shared valid period (`B 2`).
        mode: 0 random frames, 1 last six months dropped, 2 first six months dropped (`B`).
        dropped_source: per input source, whether the row lost it whole (`B`).
    """

    student: dict[str, SourceBatch]
    period: Float64[Tensor, "B 2"]
    mode: Int[Tensor, " B"]
    dropped_source: dict[str, Bool[Tensor, " B"]]


def perturb(batch: Batch, cfg: ModelConfig, pcfg: PerturbationConfig = PerturbationConfig(),
            generator: torch.Generator | None = None) -> Perturbation:
    """Draw the student's input (masks only) and the shared period, per row (§6)."""
    specs = [s for s in cfg.input_sources if s.name in batch]
    first = batch[specs[0].name]
    B, dev = first.t.shape[0], first.t.device
    lo, hi = support(batch, specs)
    span = hi - lo
    gdev = generator.device if generator is not None else torch.device("cpu")
    probs = torch.tensor(pcfg.mode_probs, dtype=torch.float32, device=gdev).expand(B, 3)
    mode = torch.multinomial(probs, 1, generator=generator).squeeze(1).to(dev)
    cut = torch.minimum(torch.full_like(span, pcfg.months_days), span / 2)
    cut_b, cut_c = hi - cut, lo + cut  # (b) keeps t <= cut_b, (c) keeps t >= cut_c
    win_lo = torch.where(mode == 2, cut_c, lo)
    win_hi = torch.where(mode == 1, cut_b, hi)
    student, dropped, windows = {}, {}, []
    for s in specs:
        sb = batch[s.name]
        p_src, p_frame = pcfg.rates(s)
        drop_src = uniform((B,), generator, dev) < p_src
        keep_a = uniform(sb.t.shape, generator, dev) >= p_frame
        in_window = (sb.t >= win_lo[:, None]) & (sb.t <= win_hi[:, None])
        keep = torch.where((mode == 0)[:, None], keep_a, in_window)
        student[s.name] = sb.frame_mask & keep & ~drop_src[:, None]
        windows.append(sb.frame_mask & in_window)
        dropped[s.name] = drop_src
    # never drop every frame of a row: restore one random frame inside the kept window
    all_kept = torch.cat([student[s.name] for s in specs], dim=1)
    cand = torch.cat(windows, dim=1)
    cand = torch.where(cand.any(dim=1, keepdim=True), cand, torch.cat([batch[s.name].frame_mask for s in specs], dim=1))
    scores = torch.where(cand, uniform(cand.shape, generator, dev), torch.full(cand.shape, -1.0, device=dev))
    restore = F.one_hot(scores.argmax(dim=1), cand.shape[1]).bool() & cand & ~all_kept.any(dim=1, keepdim=True)
    out, offset = {}, 0
    for s in specs:
        T = batch[s.name].t.shape[1]
        out[s.name] = batch[s.name].replace(frame_mask=student[s.name] | restore[:, offset:offset + T])
        offset += T
    for name, sb in batch.items():  # target-only sources pass through
        out.setdefault(name, sb)
    period = period_inside(win_lo, win_hi, generator, pcfg.min_period_days, pcfg.max_period_days)
    return Perturbation(student=out, period=period, mode=mode, dropped_source=dropped)


def consistency_loss(mu_teacher: Float[Tensor, "B E H W"], mu_student: Float[Tensor, "B E H W"],
                     stop_gradient: bool = True, embed_dim: int = 1) -> Float[Tensor, ""]:
    """Mean over rows and pixels of 1 - mu . mu_s (§7); the teacher is detached by default."""
    t = mu_teacher.float()
    if stop_gradient:
        t = t.detach()
    cos = (t * mu_student.float()).sum(dim=embed_dim)
    return reduce(1.0 - cos, "... -> ", "mean")


def student_embedding(model, pert: Perturbation) -> Float[Tensor, "B E H W"]:
    """The student: the same model on the perturbed input, summarising the shared period."""
    enc = model.encode(pert.student)
    return model.summarise(enc, pert.period[:, None, :])[:, 0]
