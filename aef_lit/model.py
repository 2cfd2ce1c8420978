# generated from notebooks/14_model.py by tools/nb_export.py: do not edit.
# Edit the notebook, then run `python tools/nb_export.py`.

from __future__ import annotations

from dataclasses import dataclass

import torch
from jaxtyping import Bool, Float, Float64
from torch import Tensor, nn

from aef_lit.conventions import Batch, ModelConfig, batch_to, get_config
from aef_lit.decoders import Decoders
from aef_lit.encoder import STPEncoder, count_parameters
from aef_lit.projectors import InputProjection
from aef_lit.summariser import Summariser
from aef_lit.vmf import VMFBottleneck


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

    def summarise(self, enc: Encoded, periods: Float64[Tensor, "B P 2"]) -> Float[Tensor, "B P E H W"]:
        """Unit-norm embeddings mu of each period [t_s, t_e), at the input resolution."""
        return self.summariser(enc.features, enc.t, enc.mask, periods)

    def forward(self, batch: Batch, periods: Float64[Tensor, "B P 2"]) -> Float[Tensor, "B P E H W"]:
        return self.summarise(self.encode(batch), periods)

    def sample(self, mu: Float[Tensor, "B P E H W"], generator: torch.Generator | None = None
               ) -> Float[Tensor, "B P E H W"]:
        """z ~ vMF(mu, kappa) in training mode, mu itself in eval mode."""
        return self.bottleneck(mu, generator=generator)

    def decode(self, source: str, z: Float[Tensor, "N E H W"], t_norm: Float[Tensor, "N"],
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


def embed(model: AEF, batch: Batch, periods: Float64[Tensor, "B 2"] | Float64[Tensor, "B P 2"]
          ) -> Float[Tensor, "B E H W"] | Float[Tensor, "B P E H W"]:
    """Embeddings mu (eval mode, no gradients) for one period per row (`B 2`) or several (`B P 2`).

    The batch and periods are moved to the model's device; the model's train/eval mode is restored.
    """
    if periods.ndim not in (2, 3) or periods.shape[-1] != 2:
        raise ValueError(f"periods must be (B, 2) or (B, P, 2), got {tuple(periods.shape)}")
    if periods.dtype != torch.float64:
        raise TypeError("periods must be float64 days since 1970-01-01")
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
