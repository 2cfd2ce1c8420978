# generated from notebooks/14_model.py by tools/nb_export.py: do not edit.
# Edit the notebook, then run `python tools/nb_export.py`.

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Mapping

import numpy as np
import torch
from jaxtyping import Bool, Float, Float64
from numpy.typing import ArrayLike
from torch import Tensor, nn

from aef_lit.conventions import Batch, ModelConfig, SourceBatch, batch_to, get_config
from aef_lit.data import DataError
from aef_lit.data.preprocess import CLIP_SIGMA
from aef_lit.model.decoders import Decoders
from aef_lit.model.encoder import STPEncoder, count_parameters
from aef_lit.model.projectors import InputProjection
from aef_lit.model.summariser import Summariser
from aef_lit.model.vmf import VMFBottleneck


@dataclass
class Encoded:
    """An encoded input: per-frame features on the L/2 grid, with their timestamps and mask."""

    features: Float[Tensor, "B T D h w"]
    t: Float64[Tensor, "B T"]
    mask: Bool[Tensor, "B T"]


class AEF(nn.Module):
    """AlphaEarth Foundations: encode, summarise per period, vMF bottleneck, implicit decoders."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.projection = InputProjection(cfg)
        self.encoder = STPEncoder(cfg)
        self.summariser = Summariser(cfg)
        self.bottleneck = VMFBottleneck(cfg.kappa, dim=2)
        self.decoders = Decoders(cfg)

    def encode(self, batch: Batch) -> Encoded:
        """Input sources only (target-only sources are ignored); frame_mask respected."""
        for spec in self.cfg.input_sources:
            H, W = batch[spec.name].x.shape[-2:]
            if H % 16 or W % 16:
                raise ValueError(f"H and W must be multiples of 16, got {H}x{W} for {spec.name!r}")
        x, t, mask = self.projection(batch)
        return Encoded(self.encoder(x, t, mask), t, mask)

    def summarise(self, enc: Encoded, periods: Float64[Tensor, "#B P 2"]) -> Float[Tensor, "B P E H W"]:
        """Unit-norm embeddings mu of each period [t_s, t_e), at the input resolution."""
        return self.summariser(enc.features, enc.t, enc.mask, periods)

    def forward(self, batch: Batch, periods: Float64[Tensor, "#B P 2"]) -> Float[Tensor, "B P E H W"]:
        return self.summarise(self.encode(batch), periods)

    def sample(self, mu: Float[Tensor, "B P E H W"], generator: torch.Generator | None = None
               ) -> Float[Tensor, "B P E H W"]:
        """z ~ vMF(mu, kappa) in training mode, mu itself in eval mode."""
        return self.bottleneck(mu, generator=generator)

    def decode(self, source: str, z: Float[Tensor, "N E H W"], t_norm: Float[Tensor, " N"],
               meta: Float[Tensor, "N M"] | None = None) -> Float[Tensor, "N C_out H W"]:
        """Source `source` at instants t_norm in [0, 1) of the period of z (logits if categorical)."""
        return self.decoders.decode(source, z, t_norm, meta)

    def parameter_counts(self) -> dict[str, int]:
        """Parameters per part, and the total."""
        parts = {name: count_parameters(m) for name, m in self.named_children()}
        return {**parts, "total": count_parameters(self)}


def build_model(preset: str | ModelConfig = "tiny", **overrides) -> AEF:
    """An AEF model from a preset name (`tiny`, `small`, `paper`) or a ModelConfig, with overrides."""
    return AEF(get_config(preset, **overrides))


class EmbedInputError(DataError):
    """Input `embed` cannot turn into meaningful embeddings; the message says how to fix it."""


class EmbedInputWarning(UserWarning):
    """Input that is probably a mistake but may be legitimate (`embed(..., strict=True)` raises)."""


MAX_DAYS = 100_000.0
"""|days since 1970-01-01| beyond this (the year 2243) are not days: seconds, ms, Julian dates."""
UNNORMALISED_SIGMA = 4 * CLIP_SIGMA
"""`collate`'s values lie in +-CLIP_SIGMA; an observed value beyond this was never normalised."""
SATURATED_FRACTION = 0.9
"""An optical source with this share of every band at +CLIP_SIGMA was fed digital numbers."""


def _not_days(what: str, peak: float) -> str:
    """The message for timestamps that are not days since 1970, with the likely conversion."""
    if peak >= 1e11:
        guess = "milliseconds since 1970: divide by 86400000 (86400 * 1000)"
    elif peak >= 1e8:
        guess = "seconds since 1970 (Unix time): divide by 86400"
    elif 2.2e6 <= peak < 2.7e6:
        guess = "Julian dates: subtract 2440587.5"
    elif 6e5 <= peak < 8e5:
        guess = "days since the year 1 (date.toordinal()): subtract 719163"
    else:
        guess = "seconds (divide by 86400) or another epoch"
    return (f"{what} reach {peak:.6g}, which is not a day count since 1970-01-01 (days of the years "
            f"1970-2100 are below 47500; {MAX_DAYS:g} is the year 2243): they look like {guess}. "
            "aef_lit.conventions.to_days converts datetimes to days.")


def _periods_tensor(periods) -> Float64[Tensor, "..."]:
    """periods as a float64 tensor: float64 and integer values converted exactly, others refused."""
    how = ("build them with torch.tensor([[t_s, t_e], ...], dtype=torch.float64) in days since "
           "1970-01-01 (aef_lit.conventions.to_days converts dates)")
    if isinstance(periods, Tensor):
        if periods.dtype == torch.float64:
            return periods
        if periods.is_floating_point() or periods.is_complex() or periods.dtype == torch.bool:
            raise TypeError(f"periods must be float64 days since 1970-01-01, got {periods.dtype} (a float32 "
                            f"day count is only good to a few minutes): {how}")
        return periods.to(torch.float64)  # integer days are exact
    if not isinstance(periods, (list, tuple, np.ndarray)):
        raise TypeError(f"periods must be a float64 tensor of shape (B, 2) or (B, P, 2), got a "
                        f"{type(periods).__name__}: {how}")
    try:
        arr = np.asarray(periods)
    except ValueError as err:  # a ragged list
        raise EmbedInputError(f"periods is a ragged list ({err}); every row needs the same number of "
                              f"[t_s, t_e) pairs: {how}") from None
    if arr.dtype.kind == "M":
        raise TypeError("periods hold datetimes: convert them with aef_lit.conventions.to_days(...) "
                        "to float64 days since 1970-01-01")
    if arr.dtype.kind in "iu" or arr.dtype == np.float64:
        return torch.from_numpy(arr.astype(np.float64))
    raise TypeError(f"periods hold {arr.dtype} values; float64 (or integer) days since 1970-01-01 are "
                    f"needed (float32 loses minutes): {how}")


def _flag(msg: str, strict: bool) -> None:
    if strict:
        raise EmbedInputError(msg + " (an error because strict=True)")
    warnings.warn(msg, EmbedInputWarning, stacklevel=4)


def check_embed_inputs(model_cfg: ModelConfig | nn.Module, batch: Batch, periods, strict: bool = False
                       ) -> Float64[Tensor, "B 2"] | Float64[Tensor, "B P 2"]:
    """Refuse (`EmbedInputError`, `TypeError`) or warn about (`EmbedInputWarning`) input `embed`
    cannot use; returns the periods as a float64 tensor (lists and numpy arrays are converted).

    Args:
        model_cfg: the model's `ModelConfig` (or the model itself).
        batch: source name -> SourceBatch, as `collate` builds it.
        periods: `B 2` or `B P 2` half-open periods [t_s, t_e) in days since 1970-01-01
            (a single row, `1 2` or `1 P 2`, applies to every row of the batch).
        strict: raise instead of warning, and refuse any row without an observed frame.
    """
    cfg = model_cfg.cfg if isinstance(model_cfg, nn.Module) else model_cfg
    # 1. periods: type and shape
    p = _periods_tensor(periods)
    if p.ndim not in (2, 3) or p.shape[-1] != 2:
        raise EmbedInputError(f"periods must be (B, 2) or (B, P, 2) pairs [t_s, t_e), got shape {tuple(p.shape)}"
                              + (": for one row write [[t_s, t_e]]" if p.ndim == 1 else ""))
    # 3, 4, 2. periods: finite, in days, non-empty
    if not torch.isfinite(p).all():
        where = tuple(torch.nonzero(~torch.isfinite(p))[0].tolist())
        raise EmbedInputError(f"periods hold NaN or inf (first at index {where}): every period needs finite "
                              "[t_s, t_e) in days since 1970-01-01")
    if p.numel() and p.abs().max() > MAX_DAYS:
        raise EmbedInputError(_not_days("periods", float(p.abs().max())))
    bad = p[..., 1] <= p[..., 0]
    if bad.any():
        where = tuple(torch.nonzero(bad)[0].tolist())
        ts, te = (float(v) for v in p[where])
        kind = "empty (t_e == t_s)" if te == ts else "reversed (t_e < t_s)"
        raise EmbedInputError(f"period {where} is {kind}: [{ts:g}, {te:g}). Periods are half-open [t_s, t_e) "
                              "with t_e > t_s" + ("; swap the two columns" if te < ts else ""))
    # 7. sources: present, known
    if not isinstance(batch, Mapping):
        raise TypeError(f"batch must map source names to SourceBatch, got a {type(batch).__name__}")
    for name, sb in batch.items():
        if not isinstance(sb, SourceBatch):
            raise TypeError(f"batch[{name!r}] is a {type(sb).__name__}, not a SourceBatch: build batches with "
                            "aef_lit.preprocess.collate (or SourceBatch(x=, t=, frame_mask=, weight=))")
    inputs = [s.name for s in cfg.input_sources]
    unknown = [k for k in batch if k not in {s.name for s in cfg.sources}]
    typo = f"; the batch's keys {unknown} are not sources of the model (names are case-sensitive)" if unknown else ""
    if not any(n in batch for n in inputs):
        raise EmbedInputError(f"the batch has none of the model's input sources {inputs} (it has "
                              f"{sorted(batch)}){typo}")
    missing = [n for n in inputs if n not in batch]
    if missing:
        raise EmbedInputError(f"the batch lacks the model's input source(s) {missing}{typo}. The model reads every "
                              "input source: give one the rows do not have as frames with frame_mask False "
                              "(collate(samples, model.cfg.input_sources) does that)")
    if unknown:
        _flag(f"batch source(s) {unknown} are not sources of the model {[s.name for s in cfg.sources]}: "
              "they are ignored (names are case-sensitive)", strict)
    # 6, 9. values, channels, tile size
    dims = {}
    for spec in cfg.input_sources:
        sb = batch[spec.name]
        B, _, C, H, W = sb.x.shape
        if not sb.x.is_floating_point():
            raise TypeError(f"source {spec.name!r}: x is {sb.x.dtype}, but the model reads normalised float "
                            "values: integer rasters are raw digital numbers; scale them to physical units "
                            "(reflectance 0-1) and normalise them with aef_lit.preprocess.collate")
        if C != spec.channels:
            raise EmbedInputError(f"source {spec.name!r} has {C} channels, the model expects {spec.channels}: "
                                  f"{', '.join(spec.bands)}, in that order (x is B T C H W; collate checks "
                                  "the band names)")
        if H % 16 or W % 16 or not H or not W:
            up = [max(16, -(-n // 16) * 16) for n in (H, W)]
            raise EmbedInputError(f"H and W must be multiples of 16 (the Space operator works on the L/16 grid), "
                                  f"got {H}x{W} for {spec.name!r}: pad to {up[0]}x{up[1]} (x and weight with "
                                  "zeros: padded pixels are unobserved) or crop")
        dims[spec.name] = (B, H, W)
    if len(set(dims.values())) != 1:
        raise EmbedInputError(f"the input sources disagree on (B, H, W): {dims}; resample them onto one grid "
                              "(aef_lit.preprocess.resample_sample) and collate them together")
    B = next(iter(dims.values()))[0]
    if p.shape[0] not in (1, B):
        raise EmbedInputError(f"periods have {p.shape[0]} rows but the batch has {B}: give one row of periods "
                              "per batch row (or one row for all)")
    # 5. frames
    if sum(batch[n].x.shape[1] for n in inputs) == 0:
        raise EmbedInputError("the batch has no frame at all (T = 0 in every input source): nothing to embed")
    has_frame = torch.zeros(B, dtype=torch.bool)
    for spec in cfg.input_sources:
        sb = batch[spec.name]
        mask = sb.frame_mask.to(sb.t.device)  # t stays on the CPU of an MPS batch
        has_frame |= mask.any(1).cpu()
        # 3, 4. the timestamps of observed frames
        t_obs = sb.t[mask]
        if not torch.isfinite(t_obs).all():
            where = tuple(torch.nonzero(mask & ~torch.isfinite(sb.t))[0].tolist())
            raise EmbedInputError(f"source {spec.name!r}: the observed frame (row, frame) = {where} has a NaN or "
                                  "inf timestamp: give it its acquisition time in days since 1970-01-01 "
                                  "(to_days), or set its frame_mask False if it is padding")
        if t_obs.numel() and t_obs.abs().max() > MAX_DAYS:
            raise EmbedInputError(_not_days(f"the frame timestamps t of source {spec.name!r}",
                                            float(t_obs.abs().max())))
        # 8. the values of observed frames: normalised, not digital numbers. Per frame and band
        # extremes (B T C) first, then the frame mask: two passes over x, no copy of it.
        fm = sb.frame_mask.to(sb.x.device)
        if spec.categorical or not sb.x.numel() or not fm.any():
            continue
        hi, lo = sb.x.amax((-2, -1))[fm], sb.x.amin((-2, -1))[fm]  # N C, N observed frames
        if not (torch.isfinite(hi).all() and torch.isfinite(lo).all()):  # NaN / inf pixels (the model
            xs = sb.x[fm]  # ignores them): the rare slow path copies the observed frames
            xs = torch.where(torch.isfinite(xs), xs, torch.zeros((), dtype=xs.dtype, device=xs.device))
            hi, lo = xs.amax((-2, -1)), xs.amin((-2, -1))
        peak = float(torch.maximum(hi.abs(), lo.abs()).max())
        if peak > UNNORMALISED_SIGMA:
            dn = (" (raw digital numbers, e.g. Sentinel-2 DN 0-10000?): scale them to reflectance 0-1 "
                  "(divide by 10000; scale=1e-4 in load_geotiff_stack / load_xarray_cube), then"
                  if spec.modality == "optical" else ":")
            _flag(f"source {spec.name!r}: observed values reach {peak:.4g}, but collate's normalised values lie "
                  f"within +-{CLIP_SIGMA:g} (chapter 3). The batch looks un-normalised{dn} build it with "
                  "aef_lit.preprocess.collate", strict)
        elif spec.modality == "optical" and (hi.amax(0) >= CLIP_SIGMA - 1e-3).all():  # every band reaches
            nonzero = (sb.x != 0).sum((-2, -1))[fm].sum(0)  # the clip somewhere: count, per band
            top = (sb.x >= CLIP_SIGMA - 1e-3).sum((-2, -1))[fm].sum(0)
            if (top >= SATURATED_FRACTION * nonzero.clamp_min(1)).all():
                share = float((top / nonzero.clamp_min(1)).min())
                most = "all" if share > 0.995 else f"at least {share:.0%}"
                _flag(f"source {spec.name!r}: in every band {most} of the observed values sit at "
                      f"+{CLIP_SIGMA:g}, the clip of the normalisation: the raw values were probably digital "
                      "numbers (Sentinel-2 DN 0-10000) or percent, not reflectance 0-1. Divide DN by 10000 "
                      "(scale=1e-4 in load_geotiff_stack / load_xarray_cube) before collate", strict)
    if not has_frame.any():
        _flag("no row of the batch has an observed frame (frame_mask is False for every frame of every input "
              "source): the embeddings know only the period. frame_mask is True where a frame exists (is "
              "it inverted?)", strict)
    elif strict and not has_frame.all():
        rows = torch.nonzero(~has_frame).flatten().tolist()
        raise EmbedInputError(f"rows {rows} have no observed frame in any input source (strict=True)")
    return p


def embed(model: AEF, batch: Batch, periods: Float64[Tensor, "#B 2"] | Float64[Tensor, "#B P 2"] | ArrayLike, *,
          strict: bool = False) -> Float[Tensor, "B E H W"] | Float[Tensor, "B P E H W"]:
    """Embeddings mu (eval mode, no gradients) for one period per row (`B 2`) or several (`B P 2`).

    The input is checked first (`check_embed_inputs`: errors, and `EmbedInputWarning`s that
    `strict=True` turns into errors); periods may be lists or numpy arrays of float64 or
    integer days. A masked frame's NaN or inf timestamp is replaced by 0 (it has no effect).
    The batch and periods are moved to the model's device; the model's train/eval mode is restored.
    """
    periods = check_embed_inputs(model.cfg, batch, periods, strict=strict)
    batch = {k: v.replace(t=torch.where(torch.isfinite(v.t), v.t, torch.zeros((), dtype=v.t.dtype, device=v.t.device)))
             if not torch.isfinite(v.t).all() else v for k, v in batch.items()}
    dev = next(model.parameters()).device
    batch = batch_to(batch, dev)
    p3 = periods if periods.ndim == 3 else periods[:, None]
    if dev.type != "mps":
        p3 = p3.to(dev)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            mu = model(batch, p3)
    finally:
        model.train(was_training)
    return mu if periods.ndim == 3 else mu[:, 0]
