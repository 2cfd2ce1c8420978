"""Implicit decoders (chapter 13): shapes, per-pixel, time and metadata conditioning, sizes."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from aef_lit.conventions import get_config
from aef_lit.model.decoders import Decoders, ImplicitDecoder


def _z(cfg, gen, N=2, H=8, W=12):
    return F.normalize(torch.randn(N, cfg.embed_dim, H, W, generator=gen), dim=1)


def test_one_decoder_per_source_with_the_right_width(tiny_cfg, gen):
    dec = Decoders(tiny_cfg)
    assert set(dec.keys()) == {s.name for s in tiny_cfg.target_sources}
    z = _z(tiny_cfg, gen)
    u = torch.tensor([0.1, 0.9])
    for spec in tiny_cfg.target_sources:
        y = dec.decode(spec.name, z, u)
        assert y.shape == (2, spec.decoded_channels, 8, 12)
    assert dec.decode("landcover", z, u).shape[1] == tiny_cfg.source("landcover").n_classes
    with pytest.raises(KeyError, match="no decoder"):
        dec.decode("gedi", z, u)


def test_paper_decoder_has_two_hidden_layers_of_512():
    cfg = get_config("paper")
    dec = ImplicitDecoder(cfg.source("s2"), cfg)
    linears = [m for m in dec.modules() if isinstance(m, torch.nn.Linear)]
    widths = [m.out_features for m in linears]
    assert widths == [512, 512, 512, 10]  # embed + condition (one layer, split), hidden, output
    assert dec.embed.in_features == 64 and dec.condition.in_features == cfg.timecode_dim


def test_decoding_is_per_pixel(tiny_cfg, gen):
    dec = ImplicitDecoder(tiny_cfg.source("s2"), tiny_cfg).eval()
    z = _z(tiny_cfg, gen)
    u = torch.tensor([0.3, 0.6])
    with torch.no_grad():
        ref = dec(z, u)
        z2 = z.clone()
        z2[0, :, 2, 9] = -z2[0, :, 2, 9]
        changed = ((dec(z2, u) - ref).abs().amax(1) > 0).nonzero().tolist()
    assert changed == [[0, 2, 9]]


def test_instant_and_metadata_matter(tiny_cfg, gen):
    dec = ImplicitDecoder(tiny_cfg.source("s1"), tiny_cfg).eval()
    z = _z(tiny_cfg, gen)
    u = torch.tensor([0.3, 0.6])
    meta = torch.tensor([[0.0], [1.0]])
    with torch.no_grad():
        ref = dec(z, u, meta)
        assert (dec(z, u + 0.2, meta) - ref).abs().max() > 1e-4
        assert (dec(z, u, 1 - meta) - ref).abs().max() > 1e-4
        assert torch.equal(dec(z, u, None), dec(z, u, torch.zeros(2, 1)))  # missing meta = zeros
    with pytest.raises(ValueError, match="meta has 3 columns"):
        dec(z, u, torch.zeros(2, 3))


def test_every_decoder_parameter_gets_a_gradient(tiny_cfg, gen):
    dec = Decoders(tiny_cfg)
    z = _z(tiny_cfg, gen).requires_grad_()
    u = torch.tensor([0.2, 0.7])
    loss = sum(dec.decode(s.name, z, u, torch.ones(2, len(s.metadata)) if s.metadata else None).square().mean()
               for s in tiny_cfg.target_sources)
    loss.backward()
    missing = [n for n, p in dec.named_parameters() if p.grad is None or p.grad.abs().sum() == 0]
    assert not missing, missing
    assert z.grad is not None and z.grad.abs().sum() > 0
