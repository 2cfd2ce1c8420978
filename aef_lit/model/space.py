# generated from notebooks/08_space.py by tools/nb_export.py: do not edit.
# Edit the notebook, then run `python tools/nb_export.py`.

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange, repeat
from jaxtyping import Float
from torch import Tensor, nn

from aef_lit.model.attention import PreNormAttention


def rope_2d_angles(h: int, w: int, head_dim: int, base: float = 100.0,
                   device: torch.device | str | None = None) -> Float[Tensor, "hw half"]:
    """Rotation angles of the `h*w` tokens (row-major): rows for the first half of the
    pairs, columns for the second. `half = head_dim // 2` (one angle per channel pair)."""
    m = head_dim // 4
    theta = base ** (-torch.arange(m, dtype=torch.float32, device=device) / m)
    rows = torch.arange(h, dtype=torch.float32, device=device)
    cols = torch.arange(w, dtype=torch.float32, device=device)
    ar = repeat(rows[:, None] * theta, "h m -> (h w) m", w=w)
    ac = repeat(cols[:, None] * theta, "w m -> (h w) m", h=h)
    return torch.cat([ar, ac], dim=-1)


def apply_rope(x: Float[Tensor, "*lead e"], angles: Float[Tensor, "*pos half"]) -> Float[Tensor, "*lead e"]:
    """Rotate consecutive channel pairs of `x` by `angles` (rotary position embedding)."""
    pairs = rearrange(x, "... (k two) -> ... k two", two=2)
    cos, sin = torch.cos(angles), torch.sin(angles)
    x0, x1 = pairs[..., 0], pairs[..., 1]
    out = torch.stack([x0 * cos - x1 * sin, x0 * sin + x1 * cos], dim=-1)
    return rearrange(out, "... k two -> ... (k two)")


class SpaceLayer(PreNormAttention):
    """The shared pre-norm layer (chapter 7) over the tokens `N L d` of a frame, with 2-D RoPE."""

    def __init__(self, d: int, heads: int, mlp_ratio: float = 4.0):
        if (d // heads) % 4:
            raise ValueError(f"head width d/heads = {d // heads} must be a multiple of 4 for 2-D RoPE")
        super().__init__(d, heads, mlp_ratio)

    def forward(self, x: Float[Tensor, "N L d"], angles: Float[Tensor, "L half"]) -> Float[Tensor, "N L d"]:
        return super().forward(x, angles=angles)

    def attend(self, q, k, v, angles: Float[Tensor, "L half"]) -> Tensor:
        return F.scaled_dot_product_attention(apply_rope(q, angles), apply_rope(k, angles), v)


class SpaceOperator(nn.Module):
    """ViT-like self-attention over the `h*w` cells of each frame: `B T D h w` -> same (residual)."""

    def __init__(self, d: int, heads: int, mlp_ratio: float = 4.0, depth: int = 1):
        super().__init__()
        self.head_dim = d // heads
        self.layers = nn.ModuleList([SpaceLayer(d, heads, mlp_ratio) for _ in range(depth)])

    def forward(self, x: Float[Tensor, "B T D h w"]) -> Float[Tensor, "B T D h w"]:
        b, _, _, h, w = x.shape
        tokens = rearrange(x, "b t d h w -> (b t) (h w) d")  # one token set per frame
        angles = rope_2d_angles(h, w, self.head_dim, device=x.device)
        for layer in self.layers:
            tokens = layer(tokens, angles)
        return rearrange(tokens, "(b t) (h w) d -> b t d h w", b=b, h=h, w=w)
