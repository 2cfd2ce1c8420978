# generated from notebooks/07_time.py by tools/nb_export.py: do not edit.
# Edit the notebook, then run `python tools/nb_export.py`.

from __future__ import annotations

import torch.nn.functional as F
from einops import rearrange
from jaxtyping import Bool, Float
from torch import Tensor, nn


class FeedForward(nn.Module):
    """The transformer MLP: Linear -> GELU -> Linear, hidden width `mlp_ratio * d`."""

    def __init__(self, d: int, mlp_ratio: float = 4.0):
        super().__init__()
        hidden = int(round(d * mlp_ratio))
        self.net = nn.Sequential(nn.Linear(d, hidden), nn.GELU(), nn.Linear(hidden, d))

    def forward(self, x: Float[Tensor, "... d"]) -> Float[Tensor, "... d"]:
        return self.net(x)


class PreNormAttention(nn.Module):
    """One pre-norm transformer layer over token sets `N L d`: attention, then an MLP.

    `cond` (same shape as `x`, optional) is added to the normalised tokens that make the
    queries, keys and values. Subclasses change how heads attend by overriding `attend`.
    """

    def __init__(self, d: int, heads: int, mlp_ratio: float = 4.0):
        super().__init__()
        self.heads = heads
        self.norm1 = nn.LayerNorm(d)
        self.qkv = nn.Linear(d, 3 * d)
        self.out = nn.Linear(d, d)
        self.norm2 = nn.LayerNorm(d)
        self.mlp = FeedForward(d, mlp_ratio)

    def forward(self, x: Float[Tensor, "N L d"], cond: Float[Tensor, "N L d"] | None = None,
                **attend_kw) -> Float[Tensor, "N L d"]:
        h = self.norm1(x) if cond is None else self.norm1(x) + cond
        q, k, v = rearrange(self.qkv(h), "n l (three h e) -> three n h l e", three=3, h=self.heads)
        a = self.attend(q, k, v, **attend_kw)
        x = x + self.out(rearrange(a, "n h l e -> n l (h e)"))
        return x + self.mlp(self.norm2(x))

    def attend(self, q: Float[Tensor, "N h L e"], k: Float[Tensor, "N h L e"], v: Float[Tensor, "N h L e"],
               attn_mask: Bool[Tensor, "N 1 1 L"] | None = None) -> Float[Tensor, "N h L e"]:
        return F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)
