# generated from notebooks/13_decoders.py by tools/nb_export.py: do not edit.
# Edit the notebook, then run `python tools/nb_export.py`.

from __future__ import annotations

import torch
from einops import rearrange
from jaxtyping import Float
from torch import Tensor, nn

from aef_lit.conventions import ModelConfig, SourceSpec
from aef_lit.model.timecodes import instant_code


class ImplicitDecoder(nn.Module):
    """Per-pixel MLP g_s(z, code(u), meta) of one source (AEF §5): `N E H W` -> `N C_out H W`.

    `decoder_layers` hidden layers of width `decoder_hidden`; C_out = `spec.decoded_channels`
    (logits for a categorical source).
    """

    def __init__(self, spec: SourceSpec, cfg: ModelConfig):
        super().__init__()
        self.spec = spec
        self.code_dim = cfg.timecode_dim
        self.meta_dim = len(spec.metadata)
        hidden = cfg.decoder_hidden
        self.embed = nn.Linear(cfg.embed_dim, hidden)  # W_z z + b
        self.condition = nn.Linear(self.code_dim + self.meta_dim, hidden, bias=False)  # W_c c + W_m m
        layers: list[nn.Module] = [nn.GELU()]
        for _ in range(cfg.decoder_layers - 1):
            layers += [nn.Linear(hidden, hidden), nn.GELU()]
        layers.append(nn.Linear(hidden, spec.decoded_channels))
        self.mlp = nn.Sequential(*layers)

    def forward(
        self, z: Float[Tensor, "N E H W"], t_norm: Float[Tensor, " N"], meta: Float[Tensor, "N M"] | None = None,
    ) -> Float[Tensor, "N C_out H W"]:
        cond = instant_code(t_norm, self.code_dim)
        if self.meta_dim:
            if meta is None:
                meta = torch.zeros(t_norm.shape[0], self.meta_dim, dtype=cond.dtype, device=cond.device)
            if meta.shape[-1] != self.meta_dim:
                raise ValueError(f"{self.spec.name}: meta has {meta.shape[-1]} columns, expected "
                                 f"{self.meta_dim} {self.spec.metadata}")
            cond = torch.cat([cond, meta.to(cond.dtype)], dim=-1)
        h = self.embed(rearrange(z, "n e h w -> n h w e")) + rearrange(self.condition(cond), "n d -> n 1 1 d")
        return rearrange(self.mlp(h), "n h w c -> n c h w")


class Decoders(nn.ModuleDict):
    """One ImplicitDecoder per decoded source of `cfg` (inputs and target-only sources)."""

    def __init__(self, cfg: ModelConfig):
        super().__init__({spec.name: ImplicitDecoder(spec, cfg) for spec in cfg.target_sources})

    def decode(self, source: str, z: Float[Tensor, "N E H W"], t_norm: Float[Tensor, " N"],
               meta: Float[Tensor, "N M"] | None = None) -> Float[Tensor, "N C_out H W"]:
        if source not in self:
            raise KeyError(f"no decoder for source {source!r}; known: {list(self.keys())}")
        return self[source](z, t_norm, meta)
