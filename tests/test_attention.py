"""aef_lit.model.attention: one pre-norm layer, specialised by Time (masks) and Space (RoPE)."""
from __future__ import annotations

import torch

from aef_lit.model.attention import PreNormAttention
from aef_lit.model.space import SpaceLayer
from aef_lit.model.time import TimeLayer


def _copy(dst, src):
    dst.load_state_dict(src.state_dict())
    return dst


def test_time_and_space_layers_are_the_shared_layer_with_the_same_parameters():
    base = PreNormAttention(32, 4)
    for layer in (TimeLayer(32, 4), SpaceLayer(32, 4)):
        assert isinstance(layer, PreNormAttention)
        assert layer.state_dict().keys() == base.state_dict().keys()


def test_zero_condition_and_open_mask_reduce_time_to_the_plain_layer():
    g = torch.Generator().manual_seed(0)
    base = PreNormAttention(32, 4).eval()
    time = _copy(TimeLayer(32, 4), base).eval()
    x = torch.randn(5, 7, 32, generator=g)
    open_mask = torch.ones(5, 1, 1, 7, dtype=torch.bool)
    torch.testing.assert_close(time(x, torch.zeros_like(x), open_mask), base(x))
    # a closed key changes the output: the mask reaches the attention
    closed = open_mask.clone()
    closed[..., 3] = False
    assert not torch.allclose(time(x, torch.zeros_like(x), closed), base(x))


def test_zero_angles_reduce_space_to_the_plain_layer():
    g = torch.Generator().manual_seed(1)
    base = PreNormAttention(32, 4).eval()
    space = _copy(SpaceLayer(32, 4), base).eval()
    x = torch.randn(3, 9, 32, generator=g)
    zero = torch.zeros(9, 32 // 4 // 2)
    torch.testing.assert_close(space(x, zero), base(x))
    assert not torch.allclose(space(x, torch.full_like(zero, 0.7) * torch.arange(9.0)[:, None]), base(x))
