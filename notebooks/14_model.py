# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 14. The model: AEF end to end
#
# This chapter assembles the pieces into one module with the interface every later chapter
# uses (`AEF_NOTES.md` §1–§5) {cite}`brown2025alphaearth`:
#
# | step | chapter | shape |
# |---|---|---|
# | `encode(batch)`: per-source projection to $L/2$, sources concatenated along T, STP encoder | 5–10 | `B T Dp h w` (+ t, mask) |
# | `summarise(enc, periods)`: one query per period, pooled along time, $L/2 \to L$, unit norm | 11 | `B P E H W` |
# | `sample(mu)`: vMF($\mu$, $\kappa = 8000$) in training, $\mu$ in eval | 12 | `B P E H W` |
# | `decode(source, z, u, meta)`: per-source implicit MLP | 13 | `N C_out H W` |
#
# `forward(batch, periods)` is encode + summarise: the embedding $\mu$. The losses
# (chapters 15–19) call the four steps separately, because a training step encodes the
# teacher input once and summarises several periods from it (one per held-out target, §5),
# and encodes the student input once more (§6). `embed(model, batch, periods)` is the
# inference entry point: eval mode, no gradients, $\mu$ at the input resolution.

# %% tags=["parameters"]
# Parameters (papermill injects values here). Defaults are sized for a 2-core CPU.
preset = "tiny"  # model preset: "tiny" (CI), "small", "paper"
device = "auto"  # "auto" = XLA if importable, then CUDA, MPS, CPU
seed = 0
data = "auto"  # "auto" = the real samples if present, else the synthetic generator
run_compile = False  # torch.compile(fullgraph=True) with inductor: ~2 min on a 2-core CPU

# %%
# Colab: install the package (and the text extra) from the repository; elsewhere a no-op.
import sys

if "google.colab" in sys.modules:  # pragma: no cover - only on Colab
    import subprocess

    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q",
         "aef-lit[text] @ git+https://github.com/aef-lit/aef-lit"],
        check=True,
    )

# %%
#| default_exp model.aef
# %% [markdown]
# ## The module
#
# `Encoded` carries what the summariser needs from an encoding: the per-frame features
# and, aligned with them along T, the float64 timestamps and the frame mask. Keeping the
# three together prevents the classic mistake of summarising with the timestamps of a
# different (e.g. unperturbed) input.
#
# Two guards live here because they concern the whole model:
# - *Tile size.* $H$ and $W$ must be multiples of 16 (the Space operator works on the $L/16$
#   grid); any such $H \ne W$ works (the port crashed on non-square inputs, §12). The check is
#   on shapes only, so it is free under `torch.compile`.
# - *Masked frames.* The projectors zero masked frames (chapter 5) and the encoder zeroes
#   their features (chapter 10); the summariser gives them weight exactly zero (chapter 11).
#   A padded or dropped frame therefore cannot change the embedding, whatever its (finite)
#   values. A NaN timestamp would still poison the attention at weight zero, so `embed`
#   replaces the NaN or inf time of a masked frame by 0.
#
# The inference entry point `embed` guards much more, for the data users bring: see the
# section after the module.

# %%
#| export
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


# %% [markdown]
# ## Guarding `embed`: the mistakes users make
#
# `embed` is where users hand the model data from their own rasters: "a real model to run
# on their own imagery" is among the first things they ask for, and the mistakes they make
# with the public layer (a linear de-quantisation, bottom-up rasters) all have one thing in
# common: nothing fails, the vectors are just wrong (the users' digest, `USERS.md`). The
# network does not complain either: a Sentinel-2 tile in digital numbers, timestamps in
# seconds or a frame mask that is all False each give 64-d unit vectors, meaningless ones.
# So `check_embed_inputs(model_cfg, batch, periods)` looks at the input *before* the forward
# pass. It raises an `EmbedInputError` (a `DataError` of chapter 2, hence a `ValueError`) or
# a `TypeError` that says what is wrong and how to fix it; where the input may be legitimate
# it warns (`EmbedInputWarning`), and `embed(..., strict=True)` turns every warning into an
# error.
#
# | | the mistake | without the guard | the guard |
# |---|---|---|---|
# | 1 | periods as a Python list or a numpy array | an `AttributeError`, or a "must be float64" for a float64 array | *converted* to float64 when that is exact (Python numbers, integers, float64) and the shape is `B 2` or `B P 2`; float32 is refused (near 2021 a float32 day count is only good to ~3 minutes); datetimes are pointed to `to_days` |
# | 2 | an empty ($t_e = t_s$) or reversed ($t_e < t_s$) period | unit vectors, silently | error |
# | 3 | NaN or inf in a period or in the time of an observed frame | NaN embeddings | error; a *masked* frame's NaN time is padding, and `embed` replaces it by 0 |
# | 4 | times in seconds or milliseconds since 1970 (or Julian dates, `date.toordinal()`) | timecodes of the wrong scale, silently | error beyond $10^5$ days (the year 2243), naming the conversion (seconds: divide by 86400) |
# | 5 | no frame at all ($T = 0$); no observed frame | a shape error; the period's prior alone, silently | error; a warning when *no* row has an observed frame (a mask built the wrong way round?). A single row without one is legitimate, a padding or cloud-covered tile of chapter 26's `embed_sample`, and passes unless `strict` |
# | 6 | the wrong band count in a hand-built batch | a shape error inside a linear layer | error naming the bands, in order |
# | 7 | an input source missing; a key the model does not know | a `KeyError`; silently ignored | error with the fix (`collate` pads a source a row lacks with masked frames); a warning for unknown keys (names are case-sensitive; extra sources are ignored) |
# | 8 | optical values in digital numbers (0–10 000) instead of reflectance (0–1) | saturated inputs, silently | warning (below) |
# | 9 | $H$, $W$ not multiples of 16 | the error of `encode` | the same error, naming the padded size |
#
# Digital numbers (8) need a look at what `collate` produces (chapter 3). Optical reflectance
# goes through log1p, a per-band z-score and a clip to $\pm 6$, so a correct batch never leaves
# $[-6, 6]$, and only the odd bright pixel (snow or a cloud edge in the visible bands) sits at
# the clip. Digital numbers passed to `collate` become $\log(1 + 1000) \approx 7$, some two
# hundred standard deviations above the mean: *every* band is clipped to $+6$ at nearly every
# pixel. A batch built by hand, bypassing `collate`, keeps the raw 0–10 000. The guard
# therefore warns when an observed value lies beyond $\pm 24$ (four times the clip) or when at
# least 90 % of the observed non-zero values of *every* band of an optical source sit at $+6$.
# Neither fires on `collate`'s output from reflectance (the tests run it on the synthetic
# generator), and both are warnings, not errors, because a user may bring a normalisation of
# their own.
#
# The checks are cheap: shapes, the periods, the `B T` timestamps of the observed frames, and
# per source two reductions of the values to per-frame, per-band extremes (no copy; two
# counts more only when every band reaches the clip somewhere). They are plain Python before
# the model runs, so the compiled forward pass stays one graph.

# %%
#| export
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


# %% [markdown]
# ## A first forward pass
#
# The tiny preset on a random batch (chapter 1's `random_batch`: each input source with a
# padded frame) of a *non-square* tile, two periods at once.

# %%
import time

import torch.nn.functional as F

from aef_lit.conventions import random_batch, seed_everything, select_device

device = select_device(device)
g = seed_everything(seed)
model = build_model(preset).to(device)
cfg = model.cfg
H, W = cfg.tile, cfg.tile + 16
batch = random_batch(cfg, B=2, T=5, H=H, W=W, generator=g)
t0 = 18_628.0
periods = torch.tensor([[[t0, t0 + 180], [t0 + 180, t0 + 365]]] * 2, dtype=torch.float64)
start = time.perf_counter()
mu = embed(model, batch, periods)
print(f"{cfg.name}: mu {tuple(mu.shape)} in {time.perf_counter() - start:.2f} s; parameters:",
      {k: f"{v:,}" for k, v in model.parameter_counts().items()})
assert mu.shape == (2, 2, cfg.embed_dim, H, W)
assert torch.allclose(mu.norm(dim=2), torch.ones(()), atol=1e-5)

# %% [markdown]
# ### The guards at work
#
# Three mistakes from the table, each caught before the model runs (the message is what the
# user reads), periods as a plain list accepted, and digital numbers: one synthetic site
# (chapter 2) through `collate` twice, once in reflectance and once multiplied by 10 000 as an
# unscaled Sentinel-2 product would be. Only the second warns.

# %%
from dataclasses import replace

from aef_lit.data import synthetic_sample
from aef_lit.data.preprocess import collate


def caught(call, error=EmbedInputError) -> bool:
    """Run `call`; print and return True if it raised `error`."""
    try:
        call()
    except error as err:
        print(f"{type(err).__name__}: {err}\n")
        return True
    return False


assert caught(lambda: embed(model, batch, periods * 86_400)), "seconds since 1970 are not days"
assert caught(lambda: embed(model, batch, periods.flip(-1))), "a reversed period"
three_bands = dict(batch, s2=batch["s2"].replace(x=batch["s2"].x[:, :, :3]))
assert caught(lambda: embed(model, three_bands, periods)), "3 bands for a 10-band source"
assert torch.allclose(embed(model, batch, periods.tolist()), mu, atol=1e-6), "a list of float64 days is converted"

site = synthetic_sample(cfg.sources, height=H, width=W, seed=seed)
site_dn = replace(site, sources={**site.sources, "s2": replace(site.sources["s2"], values=site.sources["s2"].values * 10_000)})
year = torch.tensor([site.time_span()], dtype=torch.float64)
with warnings.catch_warnings(record=True) as seen:
    warnings.simplefilter("always")
    embed(model, collate([site], cfg.sources), year)
    clean = len(seen)
    embed(model, collate([site_dn], cfg.sources), year)
print("reflectance:", clean, "warnings; digital numbers:", *(str(w.message) for w in seen[clean:]))
assert clean == 0 and [w.category for w in seen[clean:]] == [EmbedInputWarning]

# %% [markdown]
# ## The properties of an embedding
#
# Each check demonstrates one promise of §1–§3 on the *whole* model (the Space operator and
# the pyramid legitimately mix pixels, so pixel locality is checked on the summariser alone,
# chapter 11):
# 1. a masked (padded or dropped) frame has no effect, whatever its values (and a NaN time);
# 2. frames are a *set*: permuting them together with their timestamps changes nothing,
#    while changing only the timestamps changes the embedding;
# 3. the embedding depends on the period, and a period with no frame inside it (before the
#    first frame, after the last) still gives unit vectors (extrapolation);
# 4. several periods in one pass equal one pass per period.

# %%
def same(a, b, atol=2e-5):
    return torch.allclose(a, b, atol=atol)


ref = embed(model, batch, periods)
# 1. masked frames: scramble the values of every padded frame of every input source
scrambled = {k: v.replace(x=torch.where(v.frame_mask[:, :, None, None, None], v.x, torch.randn_like(v.x) * 100))
             for k, v in batch.items()}
assert torch.equal(embed(model, scrambled, periods), ref), "a masked frame must have no effect"
no_time = {k: v.replace(t=torch.where(v.frame_mask, v.t, torch.tensor(float("nan"), dtype=torch.float64)))
           for k, v in batch.items()}
assert torch.equal(embed(model, no_time, periods), ref), "nor a masked frame's NaN timestamp"
# 2. permute the frames of every input source together with t and mask; then shift t alone
permuted = {}
for k, v in batch.items():
    perm = torch.randperm(v.x.shape[1], generator=g)
    permuted[k] = v.replace(x=v.x[:, perm], t=v.t[:, perm], frame_mask=v.frame_mask[:, perm], weight=v.weight[:, perm],
                            meta=None if v.meta is None else v.meta[:, perm])
assert same(embed(model, permuted, periods), ref), "frames are a set"
shifted = {k: v.replace(t=v.t + 40.0) for k, v in batch.items()}
assert (embed(model, shifted, periods) - ref).abs().max() > 1e-4, "timestamps must matter"
# 3. periods: different periods differ; periods without a frame (before / after every frame) work
outside = torch.tensor([[[t0 - 400, t0 - 200], [t0 + 500, t0 + 700]]] * 2, dtype=torch.float64)
mu_out = embed(model, batch, outside)
assert torch.isfinite(mu_out).all() and same(mu_out.norm(dim=2), torch.ones(()))
assert (ref[:, 0] - ref[:, 1]).norm(dim=1).min() > 1e-4
# 4. several periods in one pass == one pass per period
assert same(embed(model, batch, periods[:, 1]), ref[:, 1])
print("masked frames, frame order, timestamps, periods: all as promised")

# %% [markdown]
# ## One tiny training step: every parameter learns
#
# A parameter that receives no gradient is dead weight (or a bug: a branch that was never
# connected). We run the full training path once: encode, summarise three periods, sample
# from the vMF, decode every source (input sources at a frame time, target-only sources at
# mid-period, S1 with its orbit metadata), and a sum of L1 / cross-entropy terms. Every
# parameter of the model must get a non-zero gradient.

# %%
from aef_lit.model.timecodes import normalise_in_period


def tiny_step_loss(model, batch, periods, generator=None):
    enc = model.encode(batch)
    z = model.sample(model.summarise(enc, periods), generator=generator)
    loss = 0.0
    for k, spec in enumerate(model.cfg.target_sources):
        sb = batch[spec.name]
        p = k % periods.shape[1]
        u = normalise_in_period(sb.t[:, 0], periods[:, p])
        meta = sb.meta[:, 0] if sb.meta is not None else None
        y = model.decode(spec.name, z[:, p], u, meta)
        if spec.categorical:
            loss = loss + F.cross_entropy(y, sb.x[:, 0, 0].long())
        else:
            loss = loss + (y - sb.x[:, 0]).abs().mean()
    return loss


model.train()
model.zero_grad()
three = torch.tensor([[[t0, t0 + 120], [t0 + 100, t0 + 300], [t0 + 250, t0 + 365]]] * 2, dtype=torch.float64)
loss = tiny_step_loss(model, batch, three, generator=g)
loss.backward()
dead = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
print(f"loss {loss.item():.3f}; {sum(1 for _ in model.parameters())} parameter tensors, without gradient: {dead}")
assert not dead, dead

# %% [markdown]
# ## Static shapes: `torch.compile(fullgraph=True)`
#
# A TPU (XLA) traces the step once and replays it; anything data-dependent in Python (a
# `.item()`, an `if` on a tensor value, a loop whose length depends on data, a rejection loop
# in the sampler) breaks the trace. `torch.compile(..., fullgraph=True)` on the CPU refuses
# the same things, so it is the proxy we can run here: the forward pass compiles as one graph.
# The inductor build takes about two minutes on a 2-core CPU, so it is off by default here
# (`run_compile = True` to see it); `tests/test_model.py` checks the one-graph property of the
# forward pass *and* the vMF sample with dynamo alone on every run, and the inductor build in
# a slow test.

# %%
if run_compile:
    model.eval()
    compiled = torch.compile(model, fullgraph=True)
    start = time.perf_counter()
    with torch.no_grad():
        out = compiled(batch, periods)
    print(f"compiled forward (incl. compilation): {time.perf_counter() - start:.1f} s")
    assert torch.allclose(out, ref, atol=1e-4)

# %% [markdown]
# ## The `paper` preset
#
# The full-size model is built on PyTorch's `meta` device (shapes, no memory) to count its
# parameters per part; the paper reports about 480 M for the model it kept (§2). A real
# forward pass of `paper` on one 128² tile is measured by `tools/bench_forward.py` and in a
# slow test (B = 1, 8 frames, 128²: about 45 s on our shared 2-core CPU against 0.7 s for
# `tiny`); it is too slow for a notebook on a 2-core CPU. Nearly all parameters sit in the
# encoder's 15 STP blocks; the summariser and the five decoders are under 0.5 % of the model.

# %%
import pandas as pd

counts = {}
for name in ("tiny", "small", "paper"):
    with torch.device("meta"):
        counts[name] = build_model(name).parameter_counts()
table = pd.DataFrame(counts).map(lambda n: f"{n / 1e6:,.2f} M")
table

# %% [markdown]
# Where the parameters sit, drawn: per part and preset on a log scale, with the paper's
# ~480 M (§2) as a reference. The encoder dominates at every size; `paper` lands 5 % above
# the paper's figure because each operator has two layers per block (chapter 10).

# %%
import matplotlib.pyplot as plt
import numpy as np

parts = [p for p in counts["paper"] if p != "total"]
fig, ax = plt.subplots(figsize=(8, 3))
width = 0.27
for i, name in enumerate(counts):
    ax.bar(np.arange(len(parts) + 1) + (i - 1) * width, [counts[name][p] for p in parts] + [counts[name]["total"]],
           width, label=name)
ax.axhline(480e6, color="k", ls="--", lw=1)
ax.text(len(parts) + 0.45, 480e6, "paper: ~480 M", va="bottom", ha="right", fontsize=8)
ax.set_xticks(np.arange(len(parts) + 1), parts + ["total"])
ax.set_yscale("log")
ax.set_ylabel("parameters")
ax.set_title("parameters per part of the model, by preset")
ax.legend()
plt.tight_layout()
plt.show()
assert counts["paper"]["encoder"] > 0.95 * counts["paper"]["total"]
