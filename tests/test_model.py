"""The AEF model (chapter 14): interface, embedding properties, gradients, static shapes, paper size."""
from __future__ import annotations

import time

import pytest
import torch
import torch.nn.functional as F

from aef_lit.conventions import random_batch
from aef_lit.model import AEF, Encoded, build_model, embed
from aef_lit.model.timecodes import normalise_in_period

T0 = 18_628.0


def _periods(B, spans):
    return torch.tensor([[[T0 + a, T0 + b] for a, b in spans]] * B, dtype=torch.float64)


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return build_model("tiny").eval()


@pytest.fixture(scope="module")
def batch(model):
    return random_batch(model.cfg, B=2, T=4, H=32, W=48, generator=torch.Generator().manual_seed(1))


PERIODS = _periods(2, [(0, 180), (180, 365)])


def _unit(mu):
    return torch.allclose(mu.norm(dim=2), torch.ones(()), atol=1e-5)


def test_build_model_from_preset_and_overrides(model):
    assert isinstance(model, AEF) and model.cfg.name == "tiny"
    m2 = build_model(model.cfg, decoder_hidden=32)
    assert m2.cfg.decoder_hidden == 32 and m2.decoders["s2"].embed.out_features == 32
    counts = model.parameter_counts()
    assert counts["total"] == sum(p.numel() for p in model.parameters()) == sum(
        v for k, v in counts.items() if k != "total")


@pytest.mark.parametrize("H,W", [(32, 48), (48, 16), (16, 16)])
def test_output_shape_and_unit_norm_at_input_resolution(model, H, W):
    b = random_batch(model.cfg, B=1, T=3, H=H, W=W, generator=torch.Generator().manual_seed(2))
    mu = embed(model, b, PERIODS[:1])
    assert mu.shape == (1, 2, 64, H, W)  # full resolution, not L/2
    assert _unit(mu)


def test_tile_size_must_be_a_multiple_of_16(model):
    b = random_batch(model.cfg, B=1, T=2, H=24, W=32)
    with pytest.raises(ValueError, match="multiples of 16"):
        embed(model, b, PERIODS[:1, 0])


def test_encode_returns_aligned_features_times_and_mask(model, batch):
    with torch.no_grad():
        enc = model.encode(batch)
    assert isinstance(enc, Encoded)
    T = sum(batch[s.name].x.shape[1] for s in model.cfg.input_sources)
    assert enc.features.shape == (2, T, model.cfg.d_precision, 16, 24)
    assert enc.t.dtype == torch.float64 and enc.t.shape == (2, T) and enc.mask.shape == (2, T)
    assert torch.equal(enc.t, torch.cat([batch[s.name].t for s in model.cfg.input_sources], 1))


def test_masked_frames_have_no_effect(model, batch):
    ref = embed(model, batch, PERIODS)
    scrambled = {k: v.replace(x=torch.where(v.frame_mask[:, :, None, None, None], v.x, 1e3 * torch.randn_like(v.x)))
                 for k, v in batch.items()}
    assert any(not torch.equal(scrambled[k].x, batch[k].x) for k in batch)
    assert torch.equal(embed(model, scrambled, PERIODS), ref)
    # dropping a real frame (a mask flip, as the student perturbation does) does change it
    dropped = dict(batch)
    m = batch["s2"].frame_mask.clone()
    m[:, 0] = False
    dropped["s2"] = batch["s2"].replace(frame_mask=m)
    assert (embed(model, dropped, PERIODS) - ref).abs().max() > 1e-5


def test_target_only_sources_are_not_inputs(model, batch):
    ref = embed(model, batch, PERIODS)
    other = dict(batch)
    other["dem"] = batch["dem"].replace(x=batch["dem"].x + 50.0)
    assert torch.equal(embed(model, other, PERIODS), ref)


def test_frame_permutation_invariance_and_timestamp_dependence(model, batch):
    ref = embed(model, batch, PERIODS)
    g = torch.Generator().manual_seed(3)
    permuted = {}
    for k, v in batch.items():
        p = torch.randperm(v.x.shape[1], generator=g)
        permuted[k] = v.replace(x=v.x[:, p], t=v.t[:, p], frame_mask=v.frame_mask[:, p], weight=v.weight[:, p],
                                meta=None if v.meta is None else v.meta[:, p])
    assert torch.allclose(embed(model, permuted, PERIODS), ref, atol=2e-5)
    shifted = {k: v.replace(t=v.t + 40.0) for k, v in batch.items()}
    assert (embed(model, shifted, PERIODS) - ref).abs().max() > 1e-4


def test_period_dependence_and_empty_periods(model, batch):
    ref = embed(model, batch, PERIODS)
    assert (ref[:, 0] - ref[:, 1]).norm(dim=1).min() > 1e-4
    outside = _periods(2, [(-400, -200), (500, 700), (37.5, 38.0)])  # before, after, between frames
    mu = embed(model, batch, outside)
    assert torch.isfinite(mu).all() and _unit(mu)
    one = embed(model, batch, PERIODS[:, 1])  # B 2 -> B E H W
    assert one.shape == (2, 64, 32, 48)
    assert torch.allclose(one, ref[:, 1], atol=2e-5)


def test_embed_restores_mode_and_checks_periods(model, batch):
    model.train()
    try:
        embed(model, batch, PERIODS)
        assert model.training
    finally:
        model.eval()
    with pytest.raises(TypeError, match="float64"):
        embed(model, batch, PERIODS.float())
    with pytest.raises(ValueError, match="periods"):
        embed(model, batch, PERIODS[..., :1])


def test_sample_is_vmf_in_training_and_identity_in_eval(model, batch):
    mu = embed(model, batch, PERIODS)
    assert model.sample(mu) is mu
    model.train()
    try:
        z = model.sample(mu, generator=torch.Generator().manual_seed(4))
    finally:
        model.eval()
    cos = (z * mu).sum(2)
    assert _unit(z) and (cos < 1 - 1e-4).all() and abs(cos.mean().item() - (1 - 63 / 16000)) < 2e-4


def test_decode_every_source(model, batch):
    z = F.normalize(torch.randn(3, 64, 16, 32), dim=1)
    u = torch.tensor([0.0, 0.5, 0.99])
    for spec in model.cfg.target_sources:
        meta = torch.zeros(3, len(spec.metadata)) if spec.metadata else None
        assert model.decode(spec.name, z, u, meta).shape == (3, spec.decoded_channels, 16, 32)


def _step_loss(model, batch, periods, generator=None):
    enc = model.encode(batch)
    z = model.sample(model.summarise(enc, periods), generator=generator)
    loss = 0.0
    for k, spec in enumerate(model.cfg.target_sources):
        sb = batch[spec.name]
        p = k % periods.shape[1]
        y = model.decode(spec.name, z[:, p], normalise_in_period(sb.t[:, 0], periods[:, p]),
                         sb.meta[:, 0] if sb.meta is not None else None)
        loss = loss + (F.cross_entropy(y, sb.x[:, 0, 0].long()) if spec.categorical else (y - sb.x[:, 0]).abs().mean())
    return loss


def test_every_parameter_receives_a_gradient():
    torch.manual_seed(5)
    model = build_model("tiny").train()
    g = torch.Generator().manual_seed(6)
    b = random_batch(model.cfg, B=2, T=3, generator=g)
    _step_loss(model, b, _periods(2, [(0, 120), (100, 300), (250, 365)]), generator=g).backward()
    dead = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not dead, dead
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())


@pytest.mark.slow  # 30-40 s on the CI machine; tests/test_encoder.py::test_compile_fullgraph keeps compile in CI
def test_compiles_as_one_graph(model, batch, no_shape_checks):
    """No graph break (data-dependent Python) in forward nor in the vMF sample (dynamo only;
    the inductor build is the slow test below)."""
    torch._dynamo.reset()

    def forward_and_sample(m, b, p):
        mu = m(b, p)
        return mu, m.sample(mu)

    fn = torch.compile(forward_and_sample, fullgraph=True, backend="eager")
    model.train()
    try:
        with torch.no_grad():
            mu, z = fn(model, batch, PERIODS)
            ref = model(batch, PERIODS)
    finally:
        model.eval()
    assert torch.allclose(mu, ref, atol=1e-5)
    assert _unit(z) and ((z * mu).sum(2) < 1 - 1e-4).all()


@pytest.mark.slow
def test_compiles_with_inductor(model, batch, no_shape_checks):
    torch._dynamo.reset()
    compiled = torch.compile(model, fullgraph=True)
    with torch.no_grad():
        out = compiled(batch, PERIODS)
    assert torch.allclose(out, embed(model, batch, PERIODS), atol=1e-4)


@pytest.mark.slow
def test_paper_preset_builds_and_runs_on_cpu():
    torch.manual_seed(0)
    model = build_model("paper").eval()
    n = model.parameter_counts()["total"]
    print(f"paper preset: {n / 1e6:.1f} M parameters")
    assert 300e6 < n < 700e6  # the paper's kept model has about 480 M (§2)
    b = random_batch(model.cfg, B=1, T=3, H=128, W=128, generator=torch.Generator().manual_seed(0))
    start = time.perf_counter()
    mu = embed(model, b, _periods(1, [(0, 365)])[:, 0])
    print(f"paper forward, B=1, 3 frames per input source, 128x128: {time.perf_counter() - start:.1f} s")
    assert mu.shape == (1, 64, 128, 128) and _unit(mu[:, None])
