# generated from notebooks/26_representations.py by tools/nb_export.py: do not edit.
# Edit the notebook, then run `python tools/nb_export.py`.

from __future__ import annotations

from typing import Sequence

import numpy as np

from aef_lit.conventions import SourceSpec
from aef_lit.data import DataError, Sample
from aef_lit.evaluation import baselines as _bl
from aef_lit.evaluation.methods import BaselineMethod, Method
from aef_lit.evaluation.tasks import Period


def embed_sample(model, sample: Sample, period: Period, tile: int | None = None, batch_size: int = 16,
                 min_valid: float = 0.05) -> np.ndarray:
    """The model's `E H W` embedding of one site over `period`, from the frames in the period.

    The site is padded to a multiple of `tile` (default: the model's training tile; 0 = one
    pass over the whole padded site) with unobserved pixels and embedded tile by tile; each
    tile reads the frames that are clear on at least `min_valid` of it (chapter 20's rule for
    training rows). A 1 x 1 sample (a labelled pixel) is repeated over one tile.
    """
    import torch
    import torch.nn.functional as F
    from einops import rearrange

    from aef_lit.conventions import SourceBatch
    from aef_lit.data.preprocess import collate
    from aef_lit.model import embed

    cfg = model.cfg
    L = cfg.tile if tile is None else tile
    s = _in_period(sample, period)
    batch = collate([s], _model_specs(model, s))
    H, W = sample.grid.shape
    side = L or 16
    if (H, W) == (1, 1):
        return embed_pixels(model, [sample], [period], side)[0]
    Hp, Wp = -(-H // side) * side, -(-W // side) * side
    pad = (0, Wp - W, 0, Hp - H)
    batch = {k: v.replace(x=F.pad(v.x, pad), weight=F.pad(v.weight, pad),
                          cloud=None if v.cloud is None else F.pad(v.cloud, pad)) for k, v in batch.items()}
    if L:  # tiles as a batch; a tile reads only the frames clear on >= min_valid of it, as in training
        n = (Hp // L) * (Wp // L)
        tiles = {}
        for k, v in batch.items():
            w = rearrange(v.weight, "b t (i h) (j w) -> (b i j) t h w", h=L, w=L)
            timeless = sample.specs[k].modality in _bl.TIMELESS
            clear = v.frame_mask.repeat(n, 1) & ((w.mean((-2, -1)) >= min_valid) | timeless)
            cut = "b t c (i h) (j w) -> (b i j) t c h w"
            tiles[k] = SourceBatch(x=rearrange(v.x, cut, h=L, w=L), t=v.t.repeat(n, 1), frame_mask=clear, weight=w,
                                   meta=None if v.meta is None else v.meta.repeat(n, 1, 1),
                                   cloud=None if v.cloud is None else rearrange(v.cloud, cut, h=L, w=L))
        per = torch.tensor([period], dtype=torch.float64).repeat(n, 1)
        out = []
        for s0 in range(0, n, batch_size):
            part = slice(s0, s0 + batch_size)
            chunk = {k: SourceBatch(x=v.x[part], t=v.t[part], frame_mask=v.frame_mask[part], weight=v.weight[part],
                                    meta=None if v.meta is None else v.meta[part],
                                    cloud=None if v.cloud is None else v.cloud[part])
                     for k, v in tiles.items()}
            out.append(embed(model, chunk, per[s0:s0 + batch_size]).cpu())
        mu = rearrange(torch.cat(out), "(i j) e h w -> e (i h) (j w)", i=Hp // L, j=Wp // L)
    else:
        mu = embed(model, batch, torch.tensor([period], dtype=torch.float64))[0].cpu()
    return mu[:, :H, :W].float().numpy()


def _in_period(sample: Sample, period: Period) -> Sample:
    """The sample with only its frames in [t_s, t_e) (sources left without a frame dropped)."""
    inside = {n: fr.select(np.flatnonzero((fr.times >= period[0]) & (fr.times < period[1])))
              for n, fr in sample.sources.items()}
    inside = {n: fr for n, fr in inside.items() if fr.T > 0}
    if not inside:
        raise DataError(f"{sample.site}: no input frame in the period")
    return Sample(sample.site, sample.grid, inside, {n: sample.specs[n] for n in inside})


def _model_specs(model, sample: Sample) -> list[SourceSpec]:
    specs = [sp for sp in model.cfg.input_sources if sp.name in sample.sources]
    if not specs:
        raise DataError(f"{sample.site} has none of the model's input sources "
                        f"{[sp.name for sp in model.cfg.input_sources]}")
    return specs


def embed_pixels(model, samples: Sequence[Sample], periods: Sequence[Period], tile: int | None = None,
                 batch_size: int = 64) -> list[np.ndarray]:
    """`E 1 1` embeddings of labelled pixels (1 x 1 samples), each repeated over one tile, in batches."""
    import torch

    from aef_lit.data.preprocess import collate
    from aef_lit.model import embed

    L = tile or model.cfg.tile
    out = []
    for s0 in range(0, len(samples), batch_size):
        chunk = [_in_period(s, p) for s, p in zip(samples[s0:s0 + batch_size], periods[s0:s0 + batch_size])]
        if any(s.grid.shape != (1, 1) for s in chunk):
            raise ValueError("embed_pixels takes 1 x 1 samples (labelled pixels)")
        specs = {sp.name: sp for s in chunk for sp in _model_specs(model, s)}
        batch = collate(chunk, list(specs.values()))
        batch = {k: v.replace(x=v.x.expand(-1, -1, -1, L, L), weight=v.weight.expand(-1, -1, L, L),
                              cloud=None if v.cloud is None else v.cloud.expand(-1, -1, -1, L, L))
                 for k, v in batch.items()}
        per = torch.tensor(list(periods[s0:s0 + batch_size]), dtype=torch.float64)
        mu = embed(model, batch, per)[:, :, L // 2:L // 2 + 1, L // 2:L // 2 + 1]
        out += list(mu.float().cpu().numpy())
    return out


class ModelMethod(Method):
    """An AEF model's embeddings (`embed_sample` per sample)."""

    def __init__(self, model, name: str = "model", tile: int | None = None, batch_size: int = 16):
        self.model, self.name, self.tile, self.batch_size = model, name, tile, batch_size

    def key(self) -> str:
        from aef_lit.training import params_digest

        return f"{self.name}/{params_digest(self.model)[:16]}/tile{self.tile}"

    def __call__(self, samples, periods):
        if samples and all(s.grid.shape == (1, 1) for s in samples):
            return embed_pixels(self.model, samples, periods, self.tile)
        return [embed_sample(self.model, s, p, self.tile, self.batch_size) for s, p in zip(samples, periods)]


def untrained_model(cfg, seed: int, device: str = "cpu"):
    """A network of architecture `cfg` with the initial weights of `seed` (never trained), in eval mode."""
    import torch

    from aef_lit.model import build_model

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = build_model(cfg)
    return model.to(device).eval()


def default_methods(model=None, name: str = "model", untrained_seeds: Sequence[int] = (0, 1),
                    baselines: Sequence[str] = _bl.BASELINES, arch=None, device: str = "cpu",
                    tile: int | None = None) -> dict[str, Method]:
    """The model (if given), untrained networks of its architecture (or `arch`), and the baselines."""
    methods: dict[str, Method] = {}
    if model is not None:
        methods[name] = ModelMethod(model, name, tile)
    cfg = arch if arch is not None else (model.cfg if model is not None else None)
    if cfg is not None:
        for s in untrained_seeds:
            methods[f"untrained_{s}"] = ModelMethod(untrained_model(cfg, s, device), f"untrained_{s}", tile)
    for b in baselines:
        methods[b] = BaselineMethod(b)
    return methods
