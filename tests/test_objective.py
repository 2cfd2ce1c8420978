"""The combined objective (chapter 19): weights, keys, gradients, text on/off, autocast."""
from __future__ import annotations

import logging

import pytest
import torch
import torch.nn.functional as F

from aef_lit.conventions import random_batch
from aef_lit.model import build_model
from aef_lit.objective import AEFObjective, LossWeights
from aef_lit.objective.text import TEXT_DIM

KEYS = ("total", "reconstruction", "uniformity", "consistency", "text")
H = 16  # small tiles keep the real model quick


def _model(cfg):
    torch.manual_seed(0)
    return build_model(cfg)


class FakeEncoder:
    """Deterministic stand-in sentence vectors (no language model needed)."""

    def __init__(self, available=True):
        self.available = available

    def can_encode(self, captions):
        return self.available

    def encode(self, captions):
        return torch.stack([F.normalize(torch.randn(TEXT_DIM, generator=torch.Generator().manual_seed(
            sum(map(ord, c)))), dim=0) for c in captions])


def test_paper_weights_normalised_by_their_sum():
    w = LossWeights()
    assert (w.a, w.b, w.c, w.d) == (1.0, 0.05, 0.02, 0.001)
    n = w.normalised()
    assert n.a + n.b + n.c + n.d == pytest.approx(1.0)
    assert n.b / n.a == pytest.approx(0.05) and n.d / n.a == pytest.approx(0.001)
    with pytest.raises(ValueError, match="positive"):
        LossWeights(0, 0, 0, 0).normalised()


def test_forward_terms_and_gradients(tiny_cfg, gen):
    model = _model(tiny_cfg)
    obj = AEFObjective(tiny_cfg, text_encoder=FakeEncoder())
    batch = random_batch(tiny_cfg, B=3, T=4, H=H, generator=gen)
    caps = ["wheat parcel in Flanders, Belgium, 2021", "tree cover in Sweden, 2021", "open water in Sweden, 2021"]
    out = obj(model, batch, caps, generator=gen)
    for k in KEYS:
        assert out[k].ndim == 0 and torch.isfinite(out[k])
    w = obj.weights
    assert torch.allclose(out["total"], w.a * out["reconstruction"] + w.b * out["uniformity"]
                          + w.c * out["consistency"] + w.d * out["text"])
    assert float(out["text"].detach()) > 0 and float(out["text_active"]) == 1.0  # not always zero
    assert 0 < float(out["uniformity"].detach()) < 1
    assert {f"rec/{s.name}" for s in tiny_cfg.sources} <= set(out)
    out["total"].backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in obj.text.parameters())
    no_grad = [n for n, p in model.named_parameters() if p.grad is None or p.grad.abs().sum() == 0]
    assert not no_grad, f"no gradient reaches {no_grad}"  # every part of the model is trained


def test_text_off_without_captions_or_extra(tiny_cfg, gen, caplog):
    model = _model(tiny_cfg)
    batch = random_batch(tiny_cfg, B=2, T=3, H=H, generator=gen)
    out = AEFObjective(tiny_cfg, text_encoder=FakeEncoder())(model, batch, None, generator=gen)
    assert float(out["text"].detach()) == 0.0 and float(out["text_active"]) == 0.0
    obj = AEFObjective(tiny_cfg, text_encoder=FakeEncoder(available=False))
    with caplog.at_level(logging.WARNING, logger="aef_lit"):
        for _ in range(3):
            out = obj(model, batch, ["a", "b"], generator=gen)
    assert float(out["text"].detach()) == 0.0
    assert sum("text term off" in r.message for r in caplog.records) == 1  # said once
    out["total"].backward()  # still trains


def test_reproducible_with_a_generator(tiny_cfg):
    model = _model(tiny_cfg)
    obj = AEFObjective(tiny_cfg, text_encoder=FakeEncoder())
    batch = random_batch(tiny_cfg, B=2, T=4, H=H, generator=torch.Generator().manual_seed(3))
    a = obj(model, batch, ["x", "y"], generator=torch.Generator().manual_seed(5))
    b = obj(model, batch, ["x", "y"], generator=torch.Generator().manual_seed(5))
    assert all(torch.equal(a[k], b[k]) for k in KEYS)


def test_runs_under_cpu_autocast(tiny_cfg, gen):
    model = _model(tiny_cfg)
    obj = AEFObjective(tiny_cfg, text_encoder=FakeEncoder())
    batch = random_batch(tiny_cfg, B=2, T=3, H=H, generator=gen)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = obj(model, batch, ["x", "y"], generator=gen)
    assert all(out[k].dtype == torch.float32 and torch.isfinite(out[k]) for k in KEYS)
    out["total"].backward()
