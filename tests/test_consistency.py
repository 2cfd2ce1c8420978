"""Teacher/student consistency (chapter 17): perturbation masks, periods, loss, gradients."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from aef_lit.conventions import LANDSAT, S1, S2, SourceSpec, random_batch
from aef_lit.model import build_model
from aef_lit.objective.consistency import (
    PerturbationConfig,
    consistency_loss,
    period_inside,
    perturb,
    sensor_kind,
    student_embedding,
    support,
)


def _big_batch(cfg, gen, B=400, T=8):
    return random_batch(cfg, B=B, T=T, H=2, generator=gen, n_padded=0)


def test_sensor_kinds_keyed_on_names():
    assert sensor_kind(LANDSAT) == "landsat" and sensor_kind(S1) == "s1" and sensor_kind(S2) == "s2"
    assert sensor_kind(SourceSpec("landsat8_toa", ("a",))) == "landsat"
    assert sensor_kind(SourceSpec("radar", ("vv",), "sar")) == "s1"
    assert sensor_kind(SourceSpec("planet", ("r",))) == "s2"  # unknown optical -> like S2
    p = PerturbationConfig()
    assert p.rates(S2) == (0.0, 0.5) and p.rates(S1) == (0.3, 0.3) and p.rates(LANDSAT) == (0.3, 0.3)


def test_only_masks_change(tiny_cfg, gen):
    batch = random_batch(tiny_cfg, B=4, T=6, generator=gen)
    pert = perturb(batch, tiny_cfg, generator=gen)
    for name, sb in batch.items():
        st = pert.student[name]
        assert st.x is sb.x and st.t is sb.t and st.weight is sb.weight  # values untouched
        assert st.frame_mask.shape == sb.frame_mask.shape
        assert not (st.frame_mask & ~sb.frame_mask).any()  # never adds a frame


def test_drop_rates_follow_the_paper(tiny_cfg, gen):
    batch = _big_batch(tiny_cfg, gen)
    pcfg = PerturbationConfig(mode_probs=(1.0, 0.0, 0.0))  # mode (a) only
    pert = perturb(batch, tiny_cfg, pcfg, generator=gen)
    assert not pert.dropped_source["s2"].any()  # S2 never dropped whole
    for name in ("landsat", "s1"):
        assert abs(float(pert.dropped_source[name].float().mean()) - 0.3) < 0.07
    kept = {n: pert.student[n].frame_mask.float().mean() for n in ("s2", "s1", "landsat")}
    assert abs(float(kept["s2"]) - 0.5) < 0.05
    assert abs(float(kept["s1"]) - 0.7 * 0.7) < 0.06


def test_six_month_modes_keep_only_one_side(tiny_cfg, gen):
    batch = random_batch(tiny_cfg, B=200, T=12, H=2, generator=gen, n_padded=0, span_days=730.0)
    for mode in (1, 2):
        probs = [0.0, 0.0, 0.0]
        probs[mode] = 1.0
        pert = perturb(batch, tiny_cfg, PerturbationConfig(mode_probs=tuple(probs)), generator=gen)
        lo, hi = support(batch, list(tiny_cfg.input_sources))
        for s in tiny_cfg.input_sources:
            st = pert.student[s.name]
            if mode == 1:  # last six months dropped
                assert not (st.frame_mask & (st.t > (hi - 182.625)[:, None] + 1e-9)).any()
            else:
                assert not (st.frame_mask & (st.t < (lo + 182.625)[:, None] - 1e-9)).any()
        length = pert.period[:, 1] - pert.period[:, 0]
        assert (length > 4).all()
        if mode == 1:
            assert (pert.period[:, 1] <= hi - 182.625 + 1e-6).all()
        else:
            assert (pert.period[:, 0] >= lo + 182.625 - 1e-6).all()


def test_short_support_drops_half(tiny_cfg, gen):
    batch = random_batch(tiny_cfg, B=50, T=8, H=2, generator=gen, n_padded=0, span_days=150.0)
    pert = perturb(batch, tiny_cfg, PerturbationConfig(mode_probs=(0.0, 1.0, 0.0)), generator=gen)
    kept = sum(pert.student[s.name].frame_mask.sum(1) for s in tiny_cfg.input_sources)
    assert (kept > 0).all()


def test_never_drops_every_frame_of_a_row(tiny_cfg, gen):
    batch = random_batch(tiny_cfg, B=300, T=2, H=2, generator=gen, n_padded=0)
    harsh = PerturbationConfig(drop_source_landsat=1.0, drop_source_s1=1.0, drop_frame_s2=1.0,
                               mode_probs=(1.0, 0.0, 0.0))
    pert = perturb(batch, tiny_cfg, harsh, generator=gen)
    kept = sum(pert.student[s.name].frame_mask.sum(1) for s in tiny_cfg.input_sources)
    assert (kept == 1).all()  # exactly one frame restored per row, no more


def test_period_inside_window(gen):
    lo = torch.tensor([0.0, 10.0, 5.0], dtype=torch.float64)
    hi = torch.tensor([100.0, 12.0, 5.0], dtype=torch.float64)
    p = period_inside(lo, hi, gen)
    assert ((p[:, 1] - p[:, 0]) > 4).all()
    assert p[0, 0] >= 0 and p[0, 1] <= 100
    assert torch.allclose(p[1:].mean(-1), torch.tensor([11.0, 5.0], dtype=torch.float64))  # centred when short


def test_consistency_loss_values_and_stop_gradient(gen):
    mu = F.normalize(torch.randn(2, 64, 3, 3, generator=gen), dim=1)
    assert float(consistency_loss(mu, mu)) == pytest.approx(0.0, abs=1e-6)
    assert float(consistency_loss(mu, -mu)) == pytest.approx(2.0, abs=1e-6)
    t = mu.clone().requires_grad_(True)
    s = F.normalize(torch.randn(2, 64, 3, 3, generator=gen), dim=1).requires_grad_(True)
    consistency_loss(t, s, stop_gradient=True).backward()
    assert t.grad is None and s.grad.abs().sum() > 0
    t.grad = s.grad = None
    consistency_loss(t, s, stop_gradient=False).backward()
    assert t.grad.abs().sum() > 0


def _noised(batch, student, which, gen):
    """The student's input with the frames in `which[name]` (B T) overwritten by huge noise."""
    out = dict(student)
    for name, sel in which.items():
        st = student[name]
        noise = 1e3 * torch.randn(st.x.shape, generator=gen)
        out[name] = st.replace(x=torch.where(sel[..., None, None, None], noise, st.x))
    return out


def test_dropped_frames_are_not_attended(tiny_cfg, gen):
    torch.manual_seed(0)
    model = build_model(tiny_cfg).eval()
    batch = random_batch(tiny_cfg, B=3, T=6, H=16, generator=gen)
    pert = perturb(batch, tiny_cfg, PerturbationConfig(mode_probs=(1.0, 0.0, 0.0)), generator=gen)
    names = [s.name for s in tiny_cfg.input_sources]
    dropped = {n: batch[n].frame_mask & ~pert.student[n].frame_mask for n in names}
    kept = {n: pert.student[n].frame_mask for n in names}
    assert any(d.any() for d in dropped.values())  # the perturbation dropped something
    with torch.no_grad():
        mu_s = student_embedding(model, pert)
        poked = _noised(batch, pert.student, dropped, gen)
        mu_dropped = student_embedding(model, type(pert)(poked, pert.period, pert.mode, pert.dropped_source))
        poked = _noised(batch, pert.student, kept, gen)  # control: the same noise on kept frames
        mu_kept = student_embedding(model, type(pert)(poked, pert.period, pert.mode, pert.dropped_source))
    assert torch.equal(mu_s, mu_dropped)  # bit-identical
    assert (mu_s - mu_kept).abs().max() > 1e-3  # the check can fail


def test_consistency_gradient_reaches_the_model_only_through_the_student(tiny_cfg, gen):
    torch.manual_seed(0)
    model = build_model(tiny_cfg).eval()
    batch = random_batch(tiny_cfg, B=2, T=4, H=16, generator=gen)
    pert = perturb(batch, tiny_cfg, generator=gen)
    mu_t = model.summarise(model.encode(batch), pert.period[:, None])[:, 0]
    mu_s = student_embedding(model, pert)
    params = list(model.encoder.parameters())
    grads = {}
    for sg in (True, False):
        loss = consistency_loss(mu_t, mu_s, stop_gradient=sg)
        assert torch.isfinite(loss) and 0 <= float(loss.detach()) <= 2
        g = torch.autograd.grad(loss, params, retain_graph=True, allow_unused=True)
        grads[sg] = torch.cat([(x if x is not None else torch.zeros_like(p)).flatten() for x, p in zip(g, params)])
    only_student = torch.autograd.grad(1.0 - (mu_t.detach() * mu_s).sum(1).mean(), params, retain_graph=True)
    assert torch.allclose(grads[True], torch.cat([x.flatten() for x in only_student]), atol=1e-7)
    assert grads[True].abs().sum() > 0
    assert (grads[False] - grads[True]).abs().max() > 1e-7  # the teacher side is real, and blocked
