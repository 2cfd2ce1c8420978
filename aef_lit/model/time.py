# generated from notebooks/07_time.py by tools/nb_export.py: do not edit.
# Edit the notebook, then run `python tools/nb_export.py`.

from __future__ import annotations

from einops import rearrange, repeat
from jaxtyping import Bool, Float
from torch import Tensor, nn

from aef_lit.model.attention import FeedForward, PreNormAttention  # noqa: F401  (FeedForward: re-exported)


def key_mask(mask: Bool[Tensor, "B T"]) -> Bool[Tensor, "B T"]:
    """Keys a query may attend to: the real frames, or every frame of a row with none."""
    return mask | ~mask.any(dim=1, keepdim=True)


class TimeLayer(PreNormAttention):
    """The shared pre-norm layer over sequences `N T d`, conditioned on codes `N T d`."""

    def forward(self, x: Float[Tensor, "N T d"], cond: Float[Tensor, "N T d"],
                attn_mask: Bool[Tensor, "N 1 1 T"]) -> Float[Tensor, "N T d"]:
        return super().forward(x, cond, attn_mask=attn_mask)


class TimeOperator(nn.Module):
    """Self-attention along T at every pixel, each frame conditioned on its timecode.

    forward(x `B T D h w`, tcode `B T Dt`, mask `B T`) -> `B T D h w` (residual).
    Pixels never mix; frames with mask False are never attended to.
    """

    def __init__(self, d: int, heads: int, timecode_dim: int, mlp_ratio: float = 4.0, depth: int = 1):
        super().__init__()
        self.time_proj = nn.Linear(timecode_dim, d)
        self.layers = nn.ModuleList([TimeLayer(d, heads, mlp_ratio) for _ in range(depth)])

    def forward(self, x: Float[Tensor, "B T D h w"], tcode: Float[Tensor, "B T Dt"],
                mask: Bool[Tensor, "B T"]) -> Float[Tensor, "B T D h w"]:
        b, _, _, h, w = x.shape
        seq = rearrange(x, "b t d h w -> (b h w) t d")  # one sequence of frames per pixel
        cond = repeat(self.time_proj(tcode), "b t d -> (b h w) t d", h=h, w=w)
        attn_mask = repeat(key_mask(mask), "b t -> (b h w) 1 1 t", h=h, w=w)
        for layer in self.layers:
            seq = layer(seq, cond, attn_mask)
        return rearrange(seq, "(b h w) t d -> b t d h w", b=b, h=h, w=w)
