# generated from notebooks/12_vmf.py by tools/nb_export.py: do not edit.
# Edit the notebook, then run `python tools/nb_export.py`.

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from jaxtyping import Float
from torch import Tensor, nn


def vmf_mean_resultant_length(kappa: float, dim: int) -> float:
    """Exact E[mu . z] for z ~ vMF(mu, kappa) on S^(dim-1): I_{dim/2}(k) / I_{dim/2-1}(k).

    Uses the exponentially scaled Bessel function, so it is exact for large kappa too.
    """
    from scipy.special import ive  # scipy only here: tests and notebooks, never the hot path

    if kappa <= 0:
        return 0.0
    return float(ive(dim / 2, kappa) / ive(dim / 2 - 1, kappa))


def _wood_cosine(
    shape: tuple[int, ...], kappa: float, dim: int, n_proposals: int = 16,
    generator: torch.Generator | None = None, device: torch.device | str | None = None,
) -> tuple[Float[Tensor, "..."], Float[Tensor, "..."]]:
    """Wood (1994) rejection sampler for w = mu . z, vectorised with a fixed proposal count.

    Returns (w, sqrt(1 - w^2)) in float32, both computed from eps = 1 - w (stable at high kappa).
    """
    d = float(dim - 1)
    b = d / (2.0 * kappa + math.sqrt(4.0 * kappa**2 + d**2))  # cancellation-free form
    delta = 2.0 * b / (1.0 + b)  # 1 - x0
    log_norm = math.log(delta * (2.0 - delta))  # log(1 - x0^2)
    conc = torch.full((n_proposals, *shape), d / 2.0, device=device)
    g1 = torch._standard_gamma(conc, generator=generator)
    g2 = torch._standard_gamma(conc, generator=generator)
    z = g1 / (g1 + g2)  # Beta(d/2, d/2)
    eps = (2.0 * b * z / (1.0 - (1.0 - b) * z)).clamp(0.0, 2.0)  # 1 - W
    log_u = torch.log(torch.rand(conc.shape, generator=generator, device=device).clamp_min(1e-30))
    lhs = kappa * (delta - eps) + d * (torch.log((delta + eps - delta * eps).clamp_min(1e-30)) - log_norm)
    accepted = lhs >= log_u
    accepted[-1] = True  # fall back on the last proposal (probability ~ 0.32**n_proposals)
    first = accepted.float().argmax(dim=0, keepdim=True)  # index of the first accepted proposal
    eps = torch.gather(eps, 0, first)[0]
    return 1.0 - eps, torch.sqrt(eps * (2.0 - eps))


def sample_vmf(
    mu: Float[Tensor, "... E"], kappa: float, generator: torch.Generator | None = None,
    n_proposals: int = 16,
) -> Float[Tensor, "... E"]:
    """Draw one z ~ vMF(mu, kappa) per vector of `mu` (unit vectors along the last axis).

    Wood's algorithm for the cosine, a uniform tangent direction, and a sign-stable
    Householder reflection e1 -> mu, so gradients flow to `mu`. Computed in float32.
    """
    dtype = mu.dtype
    mu32 = F.normalize(mu.float(), dim=-1)
    m = mu32.shape[-1]
    batch = tuple(mu32.shape[:-1])
    w, r = _wood_cosine(batch, float(kappa), m, n_proposals, generator, mu32.device)
    v = F.normalize(torch.randn((*batch, m - 1), generator=generator, device=mu32.device), dim=-1)
    z0 = torch.cat([w[..., None], r[..., None] * v], dim=-1)  # a sample around e1
    s = torch.where(mu32[..., :1] >= 0, 1.0, -1.0)  # sign that avoids cancellation
    e1 = (torch.arange(m, device=mu32.device) == 0).to(mu32)
    u = e1 + s * mu32  # ||u||^2 = 2 + 2|mu_1| >= 2
    hz = z0 - 2.0 * u * (u * z0).sum(-1, keepdim=True) / (u * u).sum(-1, keepdim=True)
    z = F.normalize(-s * hz, dim=-1)  # H maps e1 to -s mu
    return z.to(dtype)


class VMFBottleneck(nn.Module):
    """z ~ vMF(mu, kappa) in training mode, mu itself in eval mode (AEF §4).

    Args:
        kappa: fixed concentration (8000 in the paper).
        dim: the embedding (channel) axis of the input; 2 for `B P E H W`.
        n_proposals: fixed proposal count of the vectorised rejection step.
    """

    def __init__(self, kappa: float = 8000.0, dim: int = -1, n_proposals: int = 16):
        super().__init__()
        self.kappa = float(kappa)
        self.dim = dim
        self.n_proposals = n_proposals

    def forward(self, mu: Tensor, generator: torch.Generator | None = None) -> Tensor:
        if not self.training:
            return mu
        z = sample_vmf(torch.movedim(mu, self.dim, -1), self.kappa, generator, self.n_proposals)
        return torch.movedim(z, -1, self.dim)

    def extra_repr(self) -> str:
        return f"kappa={self.kappa:g}, dim={self.dim}, n_proposals={self.n_proposals}"
