# generated from notebooks/11_summariser.py by tools/nb_export.py: do not edit.
# Edit the notebook, then run `python tools/nb_export.py`.

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange, repeat
from jaxtyping import Bool, Float, Float64
from torch import Tensor, nn

from aef_lit.conventions import ModelConfig
from aef_lit.model.timecodes import period_code_cfg, timecode_cfg


class TimePooling(nn.Module):
    """Time-axial attention pooling: one query per period, at every pixel (AEF §3).

    features `B T D h w` + timestamps `B T` + mask `B T` + periods `B P 2` -> `B P D h w`.
    """

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        D, tc = cfg.d_precision, cfg.timecode_dim
        if D % cfg.heads_summary:
            raise ValueError(f"d_precision={D} is not divisible by heads_summary={cfg.heads_summary}")
        self.cfg = cfg
        self.heads = cfg.heads_summary
        self.norm = nn.LayerNorm(D)
        self.key = nn.Linear(D, D)
        self.value = nn.Linear(D, D)
        self.key_time = nn.Linear(tc, D, bias=False)
        self.query = nn.Sequential(nn.Linear(2 * tc, D), nn.GELU(), nn.Linear(D, D))
        self.empty_key = nn.Parameter(torch.randn(D) * 0.02)
        self.empty_value = nn.Parameter(torch.randn(D) * 0.02)
        self.out = nn.Linear(D, D)

    def keys_values(self, features: Float[Tensor, "B T D h w"], t: Float64[Tensor, "B T"],
                    mask: Bool[Tensor, "B T"]) -> tuple[Tensor, Tensor, Tensor]:
        """The period-free half: keys and values `B (h w) n T+1 e` (the empty slot first), and the
        key mask. Computed once, they serve any number of periods (chapter 32's period slider)."""
        B, T, D, h, w = features.shape
        f = self.norm(rearrange(features, "b t d h w -> b h w t d"))
        tcode = timecode_cfg(t, self.cfg).to(features.device)  # float64 days may live on the CPU (MPS)
        k = self.key(f) + rearrange(self.key_time(tcode), "b t d -> b 1 1 t d")
        v = self.value(f)
        k = torch.cat([repeat(self.empty_key, "d -> b h w 1 d", b=B, h=h, w=w), k], dim=3)
        v = torch.cat([repeat(self.empty_value, "d -> b h w 1 d", b=B, h=h, w=w), v], dim=3)
        keep = torch.cat([torch.ones_like(mask[:, :1]), mask], dim=1)  # the empty slot is always there
        # pixels go to the attention's batch axis, frames stay the key axis: no pixel mixing
        k = rearrange(k, "b h w t (n e) -> b (h w) n t e", n=self.heads)
        v = rearrange(v, "b h w t (n e) -> b (h w) n t e", n=self.heads)
        return k, v, rearrange(keep, "b t -> b 1 1 1 t")

    def attend(self, kv: tuple[Tensor, Tensor, Tensor], periods: Float64[Tensor, "#B P 2"], h: int,
               return_attention: bool = False):
        """The per-period half: one query per period against prepared keys and values -> `B P D h w`."""
        k, v, attn_mask = kv
        q = self.query(period_code_cfg(periods, self.cfg).to(k.device))  # B P D: one query per period
        q = repeat(q, "b p (n e) -> b x n p e", n=self.heads, x=k.shape[1])
        pooled = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)
        pooled = self.out(rearrange(pooled, "b (h w) n p e -> b p h w (n e)", h=h))
        pooled = rearrange(pooled, "b p h w d -> b p d h w")
        if not return_attention:
            return pooled
        logits = torch.einsum("bxnpe,bxnte->bxnpt", q, k) / k.shape[-1] ** 0.5
        weights = logits.masked_fill(~attn_mask, float("-inf")).softmax(-1).mean(2)  # mean over heads
        weights = rearrange(weights[..., 1:], "b (h w) p t -> b p t h w", h=h)  # frames only
        return pooled, weights

    def forward(
        self, features: Float[Tensor, "B T D h w"], t: Float64[Tensor, "B T"], mask: Bool[Tensor, "B T"],
        periods: Float64[Tensor, "#B P 2"], return_attention: bool = False,
    ) -> Float[Tensor, "B P D h w"] | tuple[Float[Tensor, "B P D h w"], Float[Tensor, "B P T h w"]]:
        return self.attend(self.keys_values(features, t, mask), periods, features.shape[-2], return_attention)


def bilinear_kernel(channels: int, factor: int = 2) -> Float[Tensor, "C C k k"]:
    """ConvTranspose2d weights (in, out, k, k), k = 2 * factor, that upsample each channel bilinearly."""
    k = 2 * factor
    centre = (k - 1) / 2
    taps = 1 - (torch.arange(k, dtype=torch.float32) - centre).abs() / factor
    weight = torch.zeros(channels, channels, k, k)
    weight[range(channels), range(channels)] = taps[:, None] * taps[None, :]
    return weight


class Summariser(nn.Module):
    """Period summaries: time pooling on L/2, learned upsampling to L, projection to E, unit norm.

    forward(features `B T D h w`, t `B T`, mask `B T`, periods `B P 2`) -> mu `B P E 2h 2w`.
    """

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        D = cfg.d_precision
        self.pool = TimePooling(cfg)
        self.up = nn.ConvTranspose2d(D, D, kernel_size=4, stride=2, padding=1)
        with torch.no_grad():
            self.up.weight.copy_(bilinear_kernel(D))
            self.up.bias.zero_()
        self.project = nn.Sequential(nn.GELU(), nn.Conv2d(D, cfg.embed_dim, kernel_size=1))

    def forward(
        self, features: Float[Tensor, "B T D h w"], t: Float64[Tensor, "B T"], mask: Bool[Tensor, "B T"],
        periods: Float64[Tensor, "#B P 2"], return_attention: bool = False,
    ) -> Float[Tensor, "B P E H W"] | tuple[Float[Tensor, "B P E H W"], Float[Tensor, "B P T h w"]]:
        pooled = self.pool(features, t, mask, periods, return_attention=return_attention)
        return self.finish(pooled, return_attention)

    def finish(self, pooled, return_attention: bool = False):
        """Pooled `B P D h w` (or with attention weights) -> unit embeddings `B P E 2h 2w`."""
        if return_attention:
            pooled, weights = pooled
        P = pooled.shape[1]
        y = self.project(self.up(rearrange(pooled, "b p d h w -> (b p) d h w")))
        mu = F.normalize(rearrange(y.float(), "(b p) e h w -> b p e h w", p=P), dim=2)  # float32 on the sphere
        return (mu, weights) if return_attention else mu
