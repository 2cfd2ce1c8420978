"""vMF bottleneck (chapter 12): Wood's sampler against the exact theory, stability, gradients."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from aef_lit.model.vmf import VMFBottleneck, sample_vmf, vmf_mean_resultant_length

KAPPA, E = 8000.0, 64


def _check_mean_cosine(sampler, kappa: float, dim: int, n: int = 40_000, seed: int = 0):
    """Sample mean of mu . z must match A_dim(kappa) within 5 standard errors."""
    g = torch.Generator().manual_seed(seed)
    mu = F.normalize(torch.randn(8, dim, generator=g), dim=-1)
    z = sampler(mu[:, None].expand(-1, n // 8, -1), kappa, generator=g)
    cos = (z.double() * mu[:, None].double()).sum(-1).flatten()
    exact = vmf_mean_resultant_length(kappa, dim)
    se = max(cos.std().item(), 1e-12) / math.sqrt(cos.numel())
    assert abs(cos.mean().item() - exact) < 5 * se, (cos.mean().item(), exact, se)
    return z


def test_exact_mean_resultant_length():
    assert vmf_mean_resultant_length(KAPPA, E) == pytest.approx(1 - 63 / (2 * KAPPA), abs=1e-5)
    # on S^2 the ratio has a closed form: coth(k) - 1/k
    for k in (0.5, 3.0, 40.0):
        assert vmf_mean_resultant_length(k, 3) == pytest.approx(1 / math.tanh(k) - 1 / k, rel=1e-10)
    assert vmf_mean_resultant_length(0.0, E) == 0.0


@pytest.mark.parametrize("kappa,dim", [(KAPPA, 64), (50.0, 64), (1.0, 64), (10.0, 3), (0.5, 3)])
def test_sample_mean_cosine_matches_theory(kappa, dim):
    z = _check_mean_cosine(sample_vmf, kappa, dim)
    assert ((z.norm(dim=-1) - 1).abs() < 1e-5).all()


def test_identity_vmf_defect_is_caught():
    """§12: the port's "vMF" returned mu unchanged; the mean-cosine check must reject it."""
    identity = lambda mu, kappa, generator=None: mu  # noqa: E731
    with pytest.raises(AssertionError):
        _check_mean_cosine(identity, KAPPA, E)


def test_float32_is_stable_at_high_kappa_and_at_the_poles():
    mu = torch.zeros(4, E)
    mu[0, 0], mu[1, 0], mu[2, 5] = 1.0, -1.0, 1.0  # e1 (cancellation case), -e1, e6
    mu[3] = F.normalize(torch.ones(E), dim=0)
    g = torch.Generator().manual_seed(1)
    for kappa in (KAPPA, 1e5, 1e7):
        z = sample_vmf(mu[:, None].expand(-1, 5000, -1), kappa, generator=g)
        assert torch.isfinite(z).all()
        cos = (z * mu[:, None]).sum(-1)
        assert ((z.norm(dim=-1) - 1).abs() < 1e-5).all()
        assert (cos > 1 - 100 / kappa - 1e-6).all() and (cos <= 1 + 1e-6).all()


def test_bf16_autocast_has_no_nan():
    g = torch.Generator().manual_seed(2)
    mu = F.normalize(torch.randn(2, 3, E, 4, 4, generator=g), dim=2)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        z = VMFBottleneck(KAPPA, dim=2).train()(mu, generator=g)
        zb = VMFBottleneck(KAPPA, dim=2).train()(mu.bfloat16(), generator=g)
    assert torch.isfinite(z).all() and torch.isfinite(zb).all()
    assert z.dtype == torch.float32 and zb.dtype == torch.bfloat16
    assert ((zb.float().norm(dim=2) - 1).abs() < 1e-2).all()


def test_gradient_flows_to_mu():
    g = torch.Generator().manual_seed(3)
    mu = F.normalize(torch.randn(16, E, generator=g), dim=-1)
    mu[0] = F.one_hot(torch.tensor(0), E).float()  # the Householder edge case
    mu.requires_grad_()
    target = torch.randn(16, E, generator=g)
    (sample_vmf(mu, KAPPA, generator=g) * target).sum().backward()
    assert torch.isfinite(mu.grad).all()
    assert (mu.grad.norm(dim=-1) > 0).all()
    # the sample follows mu to first order: d(z . target)/d mu ~ target projected on mu's tangent
    tangent = target - (target * mu.detach()).sum(-1, keepdim=True) * mu.detach()
    cos = F.cosine_similarity(mu.grad, tangent, dim=-1)
    assert (cos > 0.9).all()


def test_bottleneck_samples_in_training_and_is_identity_in_eval():
    g = torch.Generator().manual_seed(4)
    mu = F.normalize(torch.randn(2, 2, E, 8, 6, generator=g), dim=2)
    b = VMFBottleneck(KAPPA, dim=2)
    assert not list(b.parameters())
    z = b.train()(mu, generator=g)
    cos = (z * mu).sum(2)
    assert z.shape == mu.shape
    assert (cos < 1 - 1e-4).all() and (cos > 0.98).all(), "every pixel moves, a little"
    assert b.eval()(mu) is mu


def test_generator_makes_samples_repeatable_and_directions_isotropic():
    mu = F.normalize(torch.randn(E, generator=torch.Generator().manual_seed(5)), dim=0).expand(20_000, E)
    a = sample_vmf(mu, KAPPA, generator=torch.Generator().manual_seed(7))
    b = sample_vmf(mu, KAPPA, generator=torch.Generator().manual_seed(7))
    assert torch.equal(a, b)
    tangent = a - (a @ mu[0])[:, None] * mu[0]
    # the tangent component averages to ~0: no preferred direction (e.g. towards e1)
    assert tangent.mean(0).norm() < 5 * math.sqrt(2 * 63 / (2 * KAPPA) / 20_000)
