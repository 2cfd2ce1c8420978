# generated from notebooks/16_uniformity.py by tools/nb_export.py: do not edit.
# Edit the notebook, then run `python tools/nb_export.py`.

from __future__ import annotations

import logging

import torch
from einops import reduce
from jaxtyping import Float
from torch import Tensor

log = logging.getLogger("aef_lit")
_warned_single_row = False


def batch_partners(u: Float[Tensor, "B ..."], shift: int = 1) -> Float[Tensor, "B ..."]:
    """The partner batch u': `u` rotated by `shift` rows along the batch axis (dim 0) only."""
    return torch.roll(u, shifts=shift, dims=0)


def batch_uniformity(u: Float[Tensor, " B *rest"], embed_dim: int = -3,
                     shift: int = 1) -> Float[Tensor, ""]:
    """Mean |u . u'| between each embedding and its partner from another sample (§7, Eq. 4).

    Args:
        u: unit embeddings with the batch on dim 0 and the embedding on `embed_dim`
            (`B E H W`, `B P E H W` with the default -3, or `B E` with `embed_dim=-1`).
        embed_dim: the axis holding the 64 embedding channels.
        shift: rotation along the batch axis (1: row b meets row b+1).

    Returns:
        A scalar in [0, 1] for unit vectors (0 when B = 1: there is no other sample).
    """
    global _warned_single_row
    if u.shape[0] < 2:
        if not _warned_single_row:
            log.warning("batch_uniformity: a batch of one row has no partner sample; the term is 0")
            _warned_single_row = True
        return u.sum() * 0.0
    u = u.float()
    dots = (u * batch_partners(u, shift)).sum(dim=embed_dim)
    return reduce(dots.abs(), "... -> ", "mean")
