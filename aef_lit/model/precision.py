# generated from notebooks/06_precision.py by tools/nb_export.py: do not edit.
# Edit the notebook, then run `python tools/nb_export.py`.

from __future__ import annotations

from einops import rearrange
from jaxtyping import Float
from torch import Tensor, nn


class PrecisionOperator(nn.Module):
    """Pre-norm residual 3x3 conv block applied to every frame independently: `B T D h w` -> same."""

    def __init__(self, d: int, hidden: int | None = None):
        super().__init__()
        hidden = hidden or d
        self.norm = nn.LayerNorm(d)
        self.conv1 = nn.Conv2d(d, hidden, 3, padding=1)
        self.act = nn.GELU()
        self.conv2 = nn.Conv2d(hidden, d, 3, padding=1)

    def forward(self, x: Float[Tensor, "B T D h w"]) -> Float[Tensor, "B T D h w"]:
        b = x.shape[0]
        y = self.norm(rearrange(x, "b t d h w -> (b t) h w d"))  # LN over channels only
        y = self.conv2(self.act(self.conv1(rearrange(y, "bt h w d -> bt d h w"))))
        return x + rearrange(y, "(b t) d h w -> b t d h w", b=b)
