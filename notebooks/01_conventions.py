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
# # 1. Conventions: axes, layouts, configs, devices
#
# Before any model code, this chapter fixes the vocabulary every later chapter uses: the
# names of the tensor axes, the one internal layout of a training batch, the configuration
# objects with their named presets, how a device is picked, and how randomness is seeded.
# Everything here is exported to `aef_lit.conventions`.
#
# AlphaEarth Foundations {cite}`brown2025alphaearth` (AEF) reads, for one site, a set of
# *frames* from several *sources* (Sentinel-2, Sentinel-1, Landsat, ...), each frame with
# its own timestamp, all on one 10 m grid of $L \times L$ pixels, and returns for a
# requested period $[t_s, t_e)$ one 64-dimensional unit vector per pixel.

# %% tags=["parameters"]
# Parameters (papermill injects values here). Defaults are sized for a 2-core CPU.
preset = "tiny"  # model preset: "tiny" (CI), "small", "paper"
device = "auto"  # "auto" = XLA if importable, then CUDA, MPS, CPU
seed = 0
data = "auto"  # "auto" = the real samples if present, else the synthetic generator

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
#| default_exp conventions
# %% [markdown]
# ## The axis vocabulary
#
# | axis | meaning | typical size (`paper`) |
# |---|---|---|
# | `B` | rows of a batch (one site and its time series each) | 256 |
# | `T` | frames of one source, padded to a fixed count | 65 (S2), 17 (S1), 21 (Landsat) |
# | `S` | sources | 3 inputs + target-only sources |
# | `C` | bands (channels) of one source | 10 (S2), 2 (S1) |
# | `H`, `W` | pixel rows and columns of the 10 m grid | $L = 128$ |
# | `D` | an operator's hidden width | 1024 (space), 512 (time), 128 (precision) |
# | `E` | embedding dimension | 64 |
# | `P` | periods $[t_s, t_e)$ requested in one pass | 1 or more |
#
# **The one internal layout.** Inputs are `B T C H W` per source, timestamps `B T`
# (float64 days), frame masks `B T`, per-pixel loss weights `B T H W`. Layout changes
# happen only at a module boundary and always with an `einops` pattern, so that a reader
# can see which axes are merged. The port criticised in the notes (§12) merged pixels into
# the time axis with `.view`; an einops pattern names the axes and makes that mistake
# visible.
#
# **Time.** Timestamps are `float64` *days since 1970-01-01*. The unofficial port (§12)
# fed float32 *millisecond* epochs to its sinusoids: near 2021 such a number is about
# $1.6\times10^{12}$, a float32 holds it only to about two minutes, and the phase
# $2\pi t/p$ of any sinusoid of period $p$ is then a huge number whose float32 rounding
# error exceeds $2\pi$. Codes of instants one day apart came out nearly orthogonal: no
# notion of time. Days in float64 are exact to microseconds for any date we care about,
# and chapter 4 computes phases in float64 before casting to float32.

# %%
#| export
from __future__ import annotations

import logging
import os
import random
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Literal, Mapping

import numpy as np
import torch
from jaxtyping import Bool, Float, Float64, Shaped
from torch import Tensor

log = logging.getLogger("aef_lit")

EMBED_DIM = 64
"""E: the embedding dimension of AEF (points on S^63)."""

EPOCH = np.datetime64("1970-01-01T00:00:00", "ms")
"""Timestamps are float64 days since this instant."""

YEAR_DAYS = 365.25
"""Days in a mean (Julian) year: the unit of calendar features and of the longest period."""

MIN_PERIOD_DAYS = 4.0
"""A valid period [t_s, t_e) is strictly longer than this (paper §5: "longer than 4 days")."""

MAX_PERIOD_DAYS = YEAR_DAYS
"""The longest period the objective samples: a year, the span of the annual layer (§5)."""

AXES = {
    "B": "batch rows (one site and its time series each)",
    "T": "frames of one source (padded to a fixed count, see frame_mask)",
    "S": "sources",
    "C": "bands of one source",
    "H": "pixel rows of the 10 m grid",
    "W": "pixel columns of the 10 m grid",
    "D": "an operator's hidden width",
    "E": "embedding dimension (64)",
    "P": "periods [t_s, t_e) requested in one pass",
}


def to_days(times) -> np.ndarray | np.floating:
    """Convert datetimes (numpy datetime64, pandas, ISO strings) to float64 days since EPOCH."""
    arr = np.asarray(times, dtype="datetime64[ms]")
    return (arr - EPOCH).astype("timedelta64[ms]").astype(np.float64) / 86_400_000.0


def from_days(days) -> np.ndarray | np.datetime64:
    """Inverse of `to_days`: float64 days since EPOCH to datetime64[ms]."""
    ms = np.round(np.asarray(days, dtype=np.float64) * 86_400_000.0).astype("int64")
    return EPOCH + ms.astype("timedelta64[ms]")


# %% [markdown]
# A quick check of the time convention: a date survives the round trip, and one day is
# exactly `1.0`.

# %%
days = to_days(["2021-06-01", "2021-06-02T12:00"])
assert days.dtype == np.float64 and abs((days[1] - days[0]) - 1.5) < 1e-9
assert str(from_days(days[0])) == "2021-06-01T00:00:00.000"
days

# %% [markdown]
# ## Sources
#
# A *source* is one sensor product with a fixed band list. Each source has a `modality`
# that decides how it is preprocessed (chapter 3) and how it is reconstructed
# (chapter 15): `optical` bands get log(x+1) and a clipped z-score, `sar` bands are
# decibels with a validity window, `static` layers (elevation) are z-scored, and
# `categorical` layers (land cover) hold class indices and are reconstructed with a
# cross-entropy loss. Its `role` says whether the encoder sees it (`input`, also decoded
# as a held-out target) or only the decoders predict it (`target`, e.g. DEM and land
# cover in the paper, §5).

# %%
#| export
Modality = Literal["optical", "sar", "static", "categorical"]
Role = Literal["input", "target"]


@dataclass(frozen=True)
class SourceSpec:
    """One sensor product: its band names, how it is preprocessed and decoded.

    Attributes:
        name: short key used everywhere (`"s2"`, `"s1"`, `"dem"`, ...).
        bands: band names in channel order; `C = len(bands)`.
        modality: `optical`, `sar`, `static` or `categorical` (see chapter 3).
        role: `input` sources are encoded and decoded; `target` sources only decoded.
        n_classes: number of classes of a categorical source (class ids 0..n-1).
        loss_weight: per-source weight of its reconstruction term (paper §5).
        metadata: names of per-frame sensor metadata fed to its decoder (e.g. S1 orbit).
    """

    name: str
    bands: tuple[str, ...]
    modality: Modality = "optical"
    role: Role = "input"
    n_classes: int = 0
    loss_weight: float = 1.0
    metadata: tuple[str, ...] = ()

    def __post_init__(self):
        if not self.bands:
            raise ValueError(f"source {self.name!r} has no bands")
        if self.modality == "categorical" and self.n_classes < 2:
            raise ValueError(f"categorical source {self.name!r} needs n_classes >= 2")
        if self.modality == "categorical" and self.role == "input":
            raise ValueError(f"categorical source {self.name!r} can only be a target")

    @property
    def channels(self) -> int:
        """C, the number of bands."""
        return len(self.bands)

    @property
    def categorical(self) -> bool:
        return self.modality == "categorical"

    @property
    def decoded_channels(self) -> int:
        """Width of the decoder output: logits for categorical sources, bands otherwise."""
        return self.n_classes if self.categorical else self.channels


S2 = SourceSpec("s2", ("B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B11", "B12"), "optical")
S1 = SourceSpec("s1", ("VV", "VH"), "sar", metadata=("ascending",))
LANDSAT = SourceSpec("landsat", ("B2", "B3", "B4", "B5", "B6", "B7", "B10"), "optical")
DEM = SourceSpec("dem", ("elevation",), "static", role="target")
WORLDCOVER_CLASSES = ("tree", "shrub", "grassland", "cropland", "built-up", "bare", "water", "wetland")
LANDCOVER = SourceSpec("landcover", ("class",), "categorical", role="target", n_classes=len(WORLDCOVER_CLASSES))
DEFAULT_SOURCES: tuple[SourceSpec, ...] = (S2, S1, LANDSAT, DEM, LANDCOVER)
"""The source set of the synthetic generator and of the presets (paper §1 plus two targets)."""

# %% [markdown]
# ## The batch layout
#
# A batch is a mapping from source name to a `SourceBatch`. Every source keeps its own
# padded frame count `T`, so shapes stay static from step to step (XLA and
# `torch.compile` recompile on every new shape). Missing frames are *padding*, switched
# off with `frame_mask`; perturbations of chapter 17 (dropping frames) also only flip
# mask bits, they never change shapes. Nodata and cloud masks become per-pixel loss
# `weight`s: the paper uses them to weight the reconstruction loss and **never** feeds
# them to the model (§1).

# %%
#| export
@dataclass
class SourceBatch:
    """The frames of one source for a batch, in the internal layout.

    Attributes:
        x: normalised values (`B T C H W`, float32); categorical sources hold class ids.
            Values under a zero `weight` or a False `frame_mask` are never trusted.
        t: timestamps, float64 days since EPOCH (`B T`).
        frame_mask: True where a frame exists (`B T`); padding and dropped frames are False.
        weight: per-pixel loss weight in [0, 1] (`B T H W`): 0 for nodata and clouds.
        meta: optional per-frame sensor metadata (`B T M`), e.g. S1 orbit direction.
        cloud: optional normalised values measured under clouds (`B T C H W`; 0 where `x` is
            valid or nothing was measured). Only a model with `gap_fill="raw"` reads them.
    """

    x: Shaped[Tensor, "B T C H W"]  # float; embed() refuses integers (digital numbers) with the fix
    t: Float64[Tensor, "B T"]
    frame_mask: Bool[Tensor, "B T"]
    weight: Float[Tensor, "B T H W"]
    meta: Float[Tensor, "B T M"] | None = None
    cloud: Float[Tensor, "B T C H W"] | None = None

    def __post_init__(self):
        B, T = self.x.shape[:2]
        H, W = self.x.shape[-2:]
        if self.x.ndim != 5:
            raise ValueError(f"x must be B T C H W, got shape {tuple(self.x.shape)}")
        if tuple(self.t.shape) != (B, T) or tuple(self.frame_mask.shape) != (B, T):
            raise ValueError(f"t and frame_mask must be (B, T) = {(B, T)}, got "
                             f"{tuple(self.t.shape)} and {tuple(self.frame_mask.shape)}")
        if tuple(self.weight.shape) != (B, T, H, W):
            raise ValueError(f"weight must be (B, T, H, W) = {(B, T, H, W)}, got {tuple(self.weight.shape)}")
        if self.t.dtype != torch.float64:
            raise TypeError("timestamps must be float64 days since EPOCH (float32 loses days)")
        if self.frame_mask.dtype != torch.bool:
            raise TypeError("frame_mask must be a bool tensor")
        if self.cloud is not None and tuple(self.cloud.shape) != tuple(self.x.shape):
            raise ValueError(f"cloud must have the shape of x {tuple(self.x.shape)}, got {tuple(self.cloud.shape)}")

    @property
    def shape(self) -> tuple[int, int, int, int, int]:
        return tuple(self.x.shape)  # type: ignore[return-value]

    def to(self, device: torch.device | str, non_blocking: bool = False) -> "SourceBatch":
        """Move to a device. Timestamps stay float64 unless the device lacks it (MPS)."""
        dev = torch.device(device)
        t = self.t if dev.type == "mps" else self.t.to(dev, non_blocking=non_blocking)
        return SourceBatch(
            x=self.x.to(dev, non_blocking=non_blocking), t=t,
            frame_mask=self.frame_mask.to(dev, non_blocking=non_blocking),
            weight=self.weight.to(dev, non_blocking=non_blocking),
            meta=None if self.meta is None else self.meta.to(dev, non_blocking=non_blocking),
            cloud=None if self.cloud is None else self.cloud.to(dev, non_blocking=non_blocking),
        )

    def replace(self, **changes) -> "SourceBatch":
        """A copy with some fields replaced (e.g. a perturbed `frame_mask`)."""
        return replace(self, **changes)


Batch = Mapping[str, SourceBatch]
"""A training or inference batch: source name -> SourceBatch."""


def batch_to(batch: Batch, device: torch.device | str) -> dict[str, SourceBatch]:
    """Move every source of a batch to `device`."""
    return {k: v.to(device) for k, v in batch.items()}


def batch_size(batch: Batch) -> tuple[int, int, int]:
    """(B, H, W) shared by every source of a batch; raises if sources disagree."""
    dims = {name: (sb.x.shape[0], sb.x.shape[-2], sb.x.shape[-1]) for name, sb in batch.items()}
    if len(set(dims.values())) != 1:
        raise ValueError(f"sources disagree on (B, H, W): {dims}")
    return next(iter(dims.values()))


# %% [markdown]
# Model chapters need inputs before the data chapter's loaders come in; `random_batch`
# makes a batch of the right layout from a generator: irregular sorted timestamps,
# some padded frames, a few zero-weight (cloudy) pixels. It is a shape-and-mask fixture,
# not data: chapter 2's synthetic generator is the stand-in for real imagery.

# %%
#| export
def random_batch(
    cfg: "ModelConfig", B: int = 2, T: int | Mapping[str, int] = 4, H: int | None = None,
    W: int | None = None, generator: torch.Generator | None = None, t0: float = 18_628.0,
    span_days: float = 365.0, n_padded: int = 1,
) -> dict[str, SourceBatch]:
    """A random batch in the internal layout for every source of `cfg` (tests and demos).

    Input sources get `T` frames (the last `n_padded` of each row masked as padding) at
    sorted random times in [t0, t0 + span_days); target-only sources get one frame at
    mid-span. Categorical sources hold random class ids.
    """
    g = generator if generator is not None else torch.Generator().manual_seed(0)
    H = cfg.tile if H is None else H
    W = H if W is None else W
    out = {}
    for spec in cfg.sources:
        n = (T[spec.name] if isinstance(T, Mapping) else T) if spec.role == "input" else 1
        if spec.categorical:
            x = torch.randint(0, spec.n_classes, (B, n, 1, H, W), generator=g).float()
        else:
            x = torch.randn(B, n, spec.channels, H, W, generator=g)
        if spec.role == "input":
            t = t0 + torch.sort(torch.rand(B, n, generator=g, dtype=torch.float64) * span_days, dim=1).values
            mask = torch.ones(B, n, dtype=torch.bool)
            if n_padded and n > n_padded:
                mask[:, n - n_padded:] = False
        else:
            t = torch.full((B, n), t0 + span_days / 2, dtype=torch.float64)
            mask = torch.ones(B, n, dtype=torch.bool)
        weight = (torch.rand(B, n, H, W, generator=g) > 0.1).float() * mask[..., None, None]
        meta = torch.rand(B, n, len(spec.metadata), generator=g).round() if spec.metadata else None
        out[spec.name] = SourceBatch(x=x, t=t, frame_mask=mask, weight=weight, meta=meta)
    return out


# %% [markdown]
# A `SourceBatch` refuses the two mistakes that cost the most to find later: timestamps
# that are not float64, and masks whose shape does not match the frames.

# %%
_x = torch.zeros(2, 3, 4, 16, 16)
try:
    SourceBatch(_x, torch.zeros(2, 3), torch.ones(2, 3, dtype=torch.bool), torch.ones(2, 3, 16, 16))
except TypeError as err:
    print("refused:", err)
else:
    raise AssertionError("float32 timestamps must be refused")

# %% [markdown]
# ## Configurations and presets
#
# One frozen dataclass holds everything that decides the model's shape. The `paper`
# preset follows `AEF_NOTES.md` §2–§5: 15 STP blocks, widths 1024 (space, on the
# $L/16$ grid), 512 (time, $L/8$), 128 (precision, $L/2$), tiles of $L = 128$, decoders
# with two hidden layers of 512, $E = 64$, $\kappa = 8000$. What the paper leaves open
# (heads, MLP ratio, timecode frequencies) is chosen in the chapter that uses it and
# recorded here. `tiny` runs a forward pass in well under a second on a laptop CPU and is
# what CI uses; `small` is the size of the model trained in chapter 21 and shipped with
# the repository.

# %%
#| export
GAP_FILLS = ("zero", "mean", "raw")
"""How input projectors treat pixels without an observation (`ModelConfig.gap_fill`, chapter 5)."""


@dataclass(frozen=True)
class ModelConfig:
    """Everything that decides the shape of the AEF model.

    Attributes:
        name: preset name, for logs and model cards.
        tile: L, training tile size in pixels (a multiple of 16).
        n_blocks: number of STP blocks (15 in the paper).
        d_space, d_time, d_precision: widths of the three operators.
        heads_space, heads_time: attention heads (open in the paper).
        mlp_ratio: hidden/width ratio of the transformer MLPs (open; 4 as in ViT).
        timecode_dim: size of a sinusoidal timecode (open; see chapter 4).
        timecode_min_days, timecode_max_days: shortest and longest sinusoid periods.
        heads_summary: heads of the summariser's attention pooling.
        embed_dim: E, the embedding size (64).
        kappa: vMF concentration of the bottleneck (8000, fixed).
        decoder_hidden, decoder_layers: implicit decoder MLP (512 x 2 in the paper).
        gap_fill: what the input projectors put where a frame has no observation (a pixel the
            loader zeroed: cloud, nodata, synthetic gap): "zero" leaves the zeros, "mean" puts
            the mean of that pixel's observed frames in the row there, "raw" puts what the
            sensor measured under a cloud where the batch carries it (`SourceBatch.cloud`; the
            paper's choice, §1), else the zero (chapter 5).
        sources: the sources the model encodes and decodes.
    """

    name: str = "tiny"
    tile: int = 32
    n_blocks: int = 2
    d_space: int = 64
    d_time: int = 32
    d_precision: int = 16
    heads_space: int = 4
    heads_time: int = 4
    mlp_ratio: float = 4.0
    timecode_dim: int = 32
    timecode_min_days: float = 1.0
    timecode_max_days: float = 4 * YEAR_DAYS
    heads_summary: int = 4
    embed_dim: int = EMBED_DIM
    kappa: float = 8000.0
    decoder_hidden: int = 64
    decoder_layers: int = 2
    gap_fill: str = "zero"
    sources: tuple[SourceSpec, ...] = DEFAULT_SOURCES

    def __post_init__(self):
        if self.tile % 16:
            raise ValueError(f"tile must be a multiple of 16 (L/16 grid), got {self.tile}")
        for d, h, what in ((self.d_space, self.heads_space, "space"), (self.d_time, self.heads_time, "time")):
            if d % h:
                raise ValueError(f"d_{what}={d} is not divisible by heads_{what}={h}")
        if self.timecode_dim % 2:
            raise ValueError("timecode_dim must be even (sin and cos pairs)")
        if self.gap_fill not in GAP_FILLS:
            raise ValueError(f"gap_fill must be one of {GAP_FILLS}, got {self.gap_fill!r}")
        names = [s.name for s in self.sources]
        if len(set(names)) != len(names):
            raise ValueError(f"duplicate source names: {names}")
        if not self.input_sources:
            raise ValueError("at least one source must have role='input'")

    @property
    def input_sources(self) -> tuple[SourceSpec, ...]:
        """Sources the encoder reads (and that are also reconstructed)."""
        return tuple(s for s in self.sources if s.role == "input")

    @property
    def target_sources(self) -> tuple[SourceSpec, ...]:
        """Every decoded source: inputs (held-out frames) and target-only sources."""
        return self.sources

    def source(self, name: str) -> SourceSpec:
        for s in self.sources:
            if s.name == name:
                return s
        raise KeyError(f"no source {name!r}; known: {[s.name for s in self.sources]}")

    def replace(self, **changes) -> "ModelConfig":
        return replace(self, **changes)


PRESETS: dict[str, ModelConfig] = {
    "tiny": ModelConfig(),
    "small": ModelConfig(
        name="small", tile=64, n_blocks=4, d_space=128, d_time=64, d_precision=32,
        heads_space=4, heads_time=4, timecode_dim=64, decoder_hidden=128,
    ),
    "paper": ModelConfig(
        name="paper", tile=128, n_blocks=15, d_space=1024, d_time=512, d_precision=128,
        heads_space=16, heads_time=8, heads_summary=8, timecode_dim=128, decoder_hidden=512,
    ),
}


def get_config(preset: str | ModelConfig = "tiny", **overrides) -> ModelConfig:
    """A preset by name (`tiny`, `small`, `paper`), with optional field overrides."""
    if isinstance(preset, ModelConfig):
        return preset.replace(**overrides) if overrides else preset
    if preset not in PRESETS:
        raise KeyError(f"unknown preset {preset!r}; choose one of {sorted(PRESETS)}")
    unknown = set(overrides) - {f.name for f in fields(ModelConfig)}
    if unknown:
        raise TypeError(f"unknown ModelConfig fields: {sorted(unknown)}")
    return PRESETS[preset].replace(**overrides)


# %%
import pandas as pd

pd.DataFrame(
    {name: {f.name: getattr(cfg, f.name) for f in fields(cfg) if f.name not in ("sources", "name")}
     for name, cfg in PRESETS.items()}
)

# %% [markdown]
# ## Devices
#
# `device="auto"` picks, in order: an XLA device (TPU) if `torch_xla` imports, then CUDA,
# then Apple's MPS, then the CPU. Code that should run on a TPU keeps shapes static and
# avoids data-dependent Python control flow (chapter 14 checks this with
# `torch.compile(fullgraph=True)` on the CPU, the proxy we can test here).

# %%
#| export
def select_device(device: str | torch.device = "auto") -> torch.device:
    """Resolve `"auto"` to XLA (TPU), CUDA, MPS or CPU, in that order; pass others through."""
    if isinstance(device, torch.device):
        return device
    if device != "auto":
        return torch.device(device)
    try:  # pragma: no cover - torch_xla cannot be installed on the CI machines
        import torch_xla

        return torch_xla.device()
    except ImportError:
        pass
    if torch.cuda.is_available():  # pragma: no cover
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():  # pragma: no cover
        return torch.device("mps")
    return torch.device("cpu")


def autocast_dtype(device: torch.device) -> torch.dtype | None:
    """bf16 autocast on accelerators, none on the CPU (slow there, and tests want float32)."""
    return torch.bfloat16 if device.type in ("cuda", "xla") else None


# %% [markdown]
# ## Seeding
#
# Library functions never draw from the global random state behind the caller's back:
# anything random takes a `generator=` argument (as Prithvi's masking takes `noise=`), so a
# notebook or a test is repeatable. `seed_everything` seeds the global generators too, for
# code we do not control (DataLoader workers, third-party layers).

# %%
#| export
def seed_everything(seed: int = 0) -> torch.Generator:
    """Seed Python, NumPy and torch; return a CPU `torch.Generator` seeded with `seed`."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def uniform(shape, generator: torch.Generator | None, device: torch.device | str,
            dtype: torch.dtype = torch.float32) -> Tensor:
    """Uniform [0, 1) draws made on the generator's device, then moved there: a CPU generator
    drives the samplers of the objective on any device, reproducibly."""
    gdev = generator.device if generator is not None else torch.device("cpu")
    return torch.rand(shape, generator=generator, device=gdev, dtype=dtype).to(device)


# %%
device = select_device(device)
g = seed_everything(seed)
a = torch.rand(3, generator=g)
assert torch.equal(a, torch.rand(3, generator=seed_everything(seed))), "same seed, same draws"
print(f"device: {device}; preset: {get_config(preset).name}")

# %% [markdown]
# ## Where the real samples live
#
# The real Sentinel-1/2 samples (chapter 2) are not part of the package. They are looked
# up in `$AEF_EO_REAL`, then `shared/eo_real` beside or inside the checkout. When they are
# missing, the error says where to get them; the notebooks then fall back to the
# synthetic generator and say so.

# %%
#| export
EO_REAL_ENV = "AEF_EO_REAL"
EO_REAL_ORIGINS = {
    "worldcereal": "https://github.com/WorldCereal/worldcereal-classification (tests/resources) "
                   "and https://github.com/WorldCereal/prometheo (tests/resources)",
    "greenearthnet": "https://github.com/dongzhang04/greenearthnet (test data; a fork of GreenEarthNet, CVPR 2024)",
    "eolearn_slovenia": "https://github.com/sentinel-hub/eo-learn (example_data/TestEOPatch)",
}


def _eo_real_candidates() -> list[Path]:
    here = Path(__file__).resolve().parent if "__file__" in globals() else Path.cwd()
    out = []
    if os.environ.get(EO_REAL_ENV):
        out.append(Path(os.environ[EO_REAL_ENV]))
    for base in (here.parent, Path.cwd(), Path.cwd().parent):
        out += [base / "shared" / "eo_real", base.parent / "shared" / "eo_real"]
    return out


def find_eo_real(required: bool = True) -> Path | None:
    """The folder of the real samples, or None / a clear error when it is absent."""
    for cand in _eo_real_candidates():
        if cand.is_dir() and any(cand.iterdir()):
            return cand
    if not required:
        return None
    where = "\n".join(f"  - {k}/: {v}" for k, v in EO_REAL_ORIGINS.items())
    raise FileNotFoundError(
        "The real Earth-observation samples were not found. Put the folder `eo_real/` at "
        f"`../shared/eo_real` (beside this checkout) or set ${EO_REAL_ENV} to its path. "
        f"Its parts come from the test data of these MIT-licensed repositories:\n{where}"
    )


# %%
real = find_eo_real(required=False)
print("real samples:", real if real else "absent (notebooks fall back to synthetic data)")

# %% [markdown]
# ## A picture of one training row
#
# The layout above, drawn: each source has its own padded frame axis; real frames
# (filled) sit at irregular times, padding (hatched) exists only to keep shapes static.
# Target-only sources (DEM, land cover) have a single, timeless frame.

# %%
import matplotlib.pyplot as plt

rng = np.random.default_rng(seed)
fig, ax = plt.subplots(figsize=(9, 2.6))
counts = {"s2": (65, 48), "s1": (17, 15), "landsat": (21, 12)}
for row, (name, (T, n_real)) in enumerate(counts.items()):
    times = np.sort(rng.uniform(0, 365, n_real))
    ax.scatter(times, np.full(n_real, row), marker="s", s=40, label=f"{name}: {n_real} of T={T} real")
    ax.text(372, row, f"+{T - n_real} padded", va="center", fontsize=8)
ax.set_yticks(range(len(counts)), list(counts))
ax.set_xlabel("day of the support period")
ax.set_xlim(-5, 420)
ax.set_title("one training row: frames per source at their own timestamps (padding masked)")
ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.35), ncol=3, fontsize=8)
plt.tight_layout()
plt.show()
