# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 12. The von Mises–Fisher bottleneck
#
# AEF's embedding $\mu$ is a unit vector in $\mathbb{R}^{64}$, a point on the sphere
# $S^{63}$. During training the decoders never see $\mu$ itself: they see a *sample*
# $z \sim \mathrm{vMF}(\mu, \kappa)$ from a von Mises–Fisher distribution centred on $\mu$
# with a FIXED concentration $\kappa = 8000$; at inference the embedding is $\mu$
# (`AEF_NOTES.md` §4) {cite}`brown2025alphaearth`. The noise is a variational bottleneck:
# the decoders must reconstruct the frames from any point of a small cap around $\mu$, so
# nearby embeddings are forced to mean similar things. The paper's ablation (§4) found
# lower $\kappa$ (more noise) helps kNN retrieval and few-shot transfer, higher $\kappa$ helps
# large legends; $\kappa = 8000$ on $S^{63}$ was kept.
#
# The unofficial port criticised in §12 had a "vMF" layer that returned $\mu$ unchanged:
# no bottleneck at all. This chapter builds a real sampler (Wood's rejection algorithm
# {cite}`wood1994simulation`), measures it against the exact theory, and makes it safe
# for float32, bf16 autocast and `torch.compile`.

# %% tags=["parameters"]
# Parameters (papermill injects values here). Defaults are sized for a 2-core CPU.
preset = "tiny"  # model preset: "tiny" (CI), "small", "paper"
device = "auto"  # "auto" = XLA if importable, then CUDA, MPS, CPU
seed = 0
data = "auto"  # "auto" = the real samples if present, else the synthetic generator
n_samples = 100_000  # samples for the measured spread on S^63

# %%
# Colab: install the package (and the text extra) from the repository; elsewhere a no-op.
import sys

if "google.colab" in sys.modules:  # pragma: no cover - only on Colab
    import subprocess

    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q",
         "aef-lit[text] @ git+https://github.com/aef-lit/aef-lit"],
        check=True,
    )

# %%
#| default_exp model.vmf
# %% [markdown]
# ## The distribution
#
# On the unit sphere $S^{m-1} \subset \mathbb{R}^m$ the vMF density is
#
# $$ f(x; \mu, \kappa) = C_m(\kappa)\, e^{\kappa\, \mu^\top x},
#    \qquad C_m(\kappa) = \frac{\kappa^{m/2-1}}{(2\pi)^{m/2} I_{m/2-1}(\kappa)}, $$
#
# with $I_\nu$ the modified Bessel function of the first kind. It depends on $x$ only
# through the cosine $w = \mu^\top x$, so a sample splits into two independent parts: the
# cosine $w \in [-1, 1]$, with density proportional to
# $e^{\kappa w} (1 - w^2)^{(m-3)/2}$, and a direction $v$ uniform on the unit sphere
# $S^{m-2}$ of the tangent space at $\mu$:
#
# $$ z = w\,\mu + \sqrt{1 - w^2}\; v . $$
#
# The expected cosine, the *mean resultant length*, is the Bessel ratio
#
# $$ \mathbb{E}[\mu^\top z] = A_m(\kappa) = \frac{I_{m/2}(\kappa)}{I_{m/2-1}(\kappa)}
#    \approx 1 - \frac{m-1}{2\kappa} \quad (\kappa \gg m), $$
#
# so for AEF ($m = 64$, $\kappa = 8000$) a sample sits at cosine $\approx 0.99606$ from
# $\mu$: about $5°$ away, in a random direction. That is the number our tests check
# against. `scipy.special.ive` (the exponentially scaled $I_\nu$) evaluates the ratio
# exactly even at $\kappa = 8000$, where $I_\nu$ itself overflows.

# %%
#| export
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


# %%

for kappa in (10.0, 100.0, 8000.0):
    exact = vmf_mean_resultant_length(kappa, 64)
    print(f"kappa={kappa:>6}: A_64 = {exact:.6f}   1 - 63/(2 kappa) = {1 - 63 / (2 * kappa):.6f}")
assert abs(vmf_mean_resultant_length(8000.0, 64) - (1 - 63 / 16000)) < 1e-5

# %% [markdown]
# ## Wood's algorithm for the cosine
#
# The uniform direction $v$ is easy (normalise a Gaussian vector). The cosine $w$ is the
# hard part. Wood {cite}`wood1994simulation` samples it by rejection from an envelope
# built on a Beta variable. With $d = m - 1$:
#
# $$ b = \frac{d}{2\kappa + \sqrt{4\kappa^2 + d^2}}, \qquad x_0 = \frac{1-b}{1+b},
#    \qquad c = \kappa x_0 + d \log(1 - x_0^2); $$
#
# draw $Z \sim \mathrm{Beta}(d/2, d/2)$, $U \sim \mathcal{U}(0,1)$, propose
# $W = \frac{1 - (1+b) Z}{1 - (1-b) Z}$ and accept when
# $\kappa W + d \log(1 - x_0 W) - c \ge \log U$.
#
# **Stable in float32.** Written as above, the test subtracts numbers near $\kappa = 8000$
# (float32 keeps them to $\approx 5\times10^{-4}$) and $W$ is $1 - 0.004$, so $1 - W^2$
# loses digits. We rewrite everything in the *small* quantities $\varepsilon = 1 - W$ and
# $\delta = 1 - x_0$:
#
# $$ \varepsilon = \frac{2bZ}{1 - (1-b) Z}, \qquad
#    \kappa(\delta - \varepsilon) + d\,\big[\log(\delta + \varepsilon - \delta\varepsilon)
#    - \log(\delta(2 - \delta))\big] \ge \log U, \qquad
#    \sqrt{1 - W^2} = \sqrt{\varepsilon (2 - \varepsilon)}, $$
#
# and $b$ uses the form above (not $(-2\kappa + \sqrt{4\kappa^2 + d^2})/d$, which cancels).
# No quantity near 8000 is ever subtracted from another.
#
# **Static shapes (what we chose and why).** A rejection loop is data-dependent control
# flow: `torch.compile(fullgraph=True)` and XLA cannot trace a `while` over a random
# condition. We draw a FIXED number `n_proposals` of proposals per pixel in one vectorised
# step and keep the first accepted one. Wood's acceptance rate is at least about 0.68 for
# every $(\kappa, m)$ we measured (0.71 at $\kappa=8000$, $m=64$), so with 16 proposals the
# chance that none is accepted is $\approx 0.32^{16} \approx 10^{-8}$ per pixel; then the
# last proposal is used (a draw from the envelope, which at high $\kappa$ is itself very close
# to the target). The Beta draw is $G_1 / (G_1 + G_2)$ for two Gamma$(d/2)$ variables,
# `torch._standard_gamma`, which accepts a `generator=` and compiles.

# %%
#| export
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


# %% [markdown]
# A first check of the cosine alone, before any geometry: its sample mean matches the
# Bessel ratio, at $\kappa = 8000$ on $S^{63}$ and at a small $\kappa$ on $S^2$.

# %%
g = torch.Generator().manual_seed(seed)
for kappa, m in ((8000.0, 64), (5.0, 3)):
    w, _ = _wood_cosine((n_samples,), kappa, m, generator=g)
    se = w.double().std().item() / math.sqrt(n_samples)
    print(f"kappa={kappa}, m={m}: mean w = {w.double().mean():.6f} +- {se:.1e}, "
          f"exact {vmf_mean_resultant_length(kappa, m):.6f}")
    assert abs(w.double().mean().item() - vmf_mean_resultant_length(kappa, m)) < 5 * se

# %% [markdown]
# ## From $e_1$ to $\mu$: a Householder reflection
#
# The cosine and the tangent direction give a sample around the first basis vector $e_1$:
# $z' = (w, \sqrt{1-w^2}\,v)$ with $v$ uniform on $S^{m-2}$. A reflection $H$ that maps $e_1$
# to $\mu$ carries it to a sample around $\mu$ (reflections are orthogonal, so the tangent
# direction stays uniform). This is how the hyperspherical VAE samples, and it is what makes
# the sample *differentiable in* $\mu$: $z = H(\mu)\, z'$ with $z'$ independent of $\mu$, so
# $\partial z / \partial \mu$ exists (the reparameterisation trick for the direction;
# $\kappa$ is fixed, so we need no gradient through the rejection step).
#
# The textbook reflection $H = I - 2uu^\top/\lVert u\rVert^2$, $u = e_1 - \mu$, divides by
# $\lVert u\rVert^2 \to 0$ when $\mu \approx e_1$. As LAPACK does, we pick the sign that
# avoids cancellation: with $s = \operatorname{sign}(\mu_1)$ and $u = e_1 + s\mu$ (so
# $\lVert u\rVert^2 = 2 + 2|\mu_1| \ge 2$), $H$ maps $e_1$ to $-s\mu$, and $z = -s\,H z'$.
# Everything is elementwise or a sum over the channel axis: no matmul, so bf16 autocast
# leaves it alone; we still compute in float32 and cast back to the input's dtype.

# %%
#| export
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


# %% [markdown]
# Check: samples are unit vectors, their mean cosine to $\mu$ is $A_{64}(8000)$ within
# sampling error for *random* $\mu$ (including one with $\mu_1 < 0$ and one equal to $e_1$,
# the cancellation case), and the directions are spread around $\mu$, not biased towards
# a coordinate: the mean of $z - (\mu^\top z)\mu$ is near zero.

# %%
kappa, E = 8000.0, 64
g = torch.Generator().manual_seed(seed)
mus = F.normalize(torch.randn(6, E, generator=g), dim=-1)
mus[0] = F.one_hot(torch.tensor(0), E).float()  # mu = e1 exactly
mus[1] = -mus[0]  # mu = -e1
n = n_samples // len(mus)
z = sample_vmf(mus[:, None, :].expand(-1, n, -1), kappa, generator=g)
cos = (z * mus[:, None, :]).sum(-1).double()
exact = vmf_mean_resultant_length(kappa, E)
se = cos.std().item() / math.sqrt(cos.numel())
print(f"norm error {(z.norm(dim=-1) - 1).abs().max():.1e}; mean cosine {cos.mean():.6f} "
      f"(exact {exact:.6f}, s.e. {se:.1e}); per mu: {cos.mean(1).numpy().round(5)}")
assert (z.norm(dim=-1) - 1).abs().max() < 1e-5
assert abs(cos.mean().item() - exact) < 5 * se
tangent = z - cos[..., None].float() * mus[:, None, :]
assert tangent.mean(1).norm(dim=-1).max() < 5 * math.sqrt((1 - exact**2) / n)

# %% [markdown]
# ## Building intuition on $S^2$
#
# In three dimensions we can look at the samples. Each panel shows 1,500 samples of
# $\mathrm{vMF}(\mu, \kappa)$ around the north pole, seen from above: $\kappa = 1$ covers
# the sphere (near-uniform), $\kappa = 10$ is a broad cap, $\kappa = 100$ a tight one. The
# rule of thumb $1 - \mathbb{E}[w] \approx (m-1)/(2\kappa)$ says the cap *shrinks with*
# $\kappa$ but *grows with the dimension*: on $S^{63}$, $\kappa = 8000$ is as spread (in
# cosine) as $\kappa \approx 250$ on $S^2$.

# %%
import matplotlib.pyplot as plt
import numpy as np

g = torch.Generator().manual_seed(seed)
north = torch.tensor([0.0, 0.0, 1.0])
fig, axes = plt.subplots(1, 3, figsize=(11, 3.8), subplot_kw={"projection": "3d"})
for ax, kappa in zip(axes, (1.0, 10.0, 100.0)):
    pts = sample_vmf(north.expand(1500, 3), kappa, generator=g).numpy()
    u_, v_ = np.mgrid[0:2 * np.pi:30j, 0:np.pi:15j]
    ax.plot_wireframe(np.cos(u_) * np.sin(v_), np.sin(u_) * np.sin(v_), np.cos(v_), color="0.85", lw=0.4)
    ax.scatter(*pts.T, s=2, c=pts[:, 2], cmap="viridis", vmin=-1, vmax=1)
    ax.set_title(f"$\\kappa$ = {kappa:g}: mean cos {pts[:, 2].mean():.3f}\n"
                 f"(exact $A_3$ = {vmf_mean_resultant_length(kappa, 3):.3f})")
    ax.view_init(elev=35, azim=30)
    ax.set_box_aspect((1, 1, 1))
    ax.set_axis_off()
plt.tight_layout()
plt.show()

# %% [markdown]
# ## The measured spread at $\kappa = 8000$ on $S^{63}$
#
# The histogram of $\mu^\top z$ against the exact density of the cosine,
# $p(w) \propto e^{\kappa w}(1-w^2)^{(m-3)/2}$ (normalised numerically, in log space), and
# the same samples as an angle. A decoder in training sees the embedding jittered by
# $\approx 5°$ in a random direction of the 63-dimensional tangent space; the angle is
# almost never below $3°$: in high dimension there is very little volume near the centre of
# the cap, so "close to $\mu$" means "on a thin shell around it".

# %%
kappa, m = 8000.0, 64
g = torch.Generator().manual_seed(seed)
mu = F.normalize(torch.randn(m, generator=g), dim=0)
z = sample_vmf(mu.expand(n_samples, m), kappa, generator=g)
w = (z @ mu).double().numpy()
angle = np.degrees(np.arccos(np.clip(w, -1, 1)))
grid = np.linspace(w.min(), 1.0 - 1e-9, 400)
logp = kappa * (grid - 1) + (m - 3) / 2 * np.log1p(-grid**2)
p = np.exp(logp - logp.max())
p /= np.trapezoid(p, grid) if hasattr(np, "trapezoid") else np.trapz(p, grid)
exact = vmf_mean_resultant_length(kappa, m)

fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, 3.6))
a1.hist(w, bins=80, density=True, alpha=0.6, label=f"{n_samples:,} samples")
a1.plot(grid, p, "k", lw=1.2, label=r"$\propto e^{\kappa w}(1-w^2)^{(m-3)/2}$")
a1.axvline(exact, color="C3", ls="--", label=f"$A_{{64}}(\\kappa)$ = {exact:.5f}")
a1.axvline(w.mean(), color="C2", ls=":", label=f"sample mean = {w.mean():.5f}")
a1.set_xlabel(r"cosine $\mu^\top z$")
a1.legend(fontsize=8)
a1.set_title(r"$\kappa = 8000$ on $S^{63}$: the cosine")
a2.hist(angle, bins=80, density=True, alpha=0.6, color="C1")
a2.axvline(np.degrees(np.arccos(exact)), color="C3", ls="--", label="angle of $A_{64}$")
a2.set_xlabel("angle between z and $\\mu$ (degrees)")
a2.legend(fontsize=8)
a2.set_title(f"median angle {np.median(angle):.2f}°, 1st-99th pct "
             f"{np.percentile(angle, 1):.2f}°-{np.percentile(angle, 99):.2f}°")
plt.tight_layout()
plt.show()
assert abs(w.mean() - exact) < 5 * w.std() / math.sqrt(n_samples)

# %% [markdown]
# ## The bottleneck module
#
# In the model, $\mu$ lives in a `B P E H W` tensor: the embedding is the channel axis 2,
# not the last one. `VMFBottleneck` moves the configured channel axis last, samples, and
# moves it back. It samples only in training mode; in `eval()` it is the identity, as the
# paper uses $\mu$ at inference (§4). It has no parameters: $\kappa$ is fixed.

# %%
#| export
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


# %% [markdown]
# Check the module on an embedding map of the model's layout: training mode moves every
# pixel's vector (the port's identity "vMF" would fail this), eval mode returns $\mu$
# exactly, the result stays on the sphere, gradients reach $\mu$, and bf16 autocast (the
# accelerator setting of chapter 1) produces no NaN.

# %%
g = torch.Generator().manual_seed(seed)
bottleneck = VMFBottleneck(8000.0, dim=2)
mu = F.normalize(torch.randn(2, 3, 64, 8, 8, generator=g), dim=2).requires_grad_()
z = bottleneck(mu, generator=g)
cos = (z * mu).sum(2)
print(bottleneck, "| mean cos", f"{cos.mean().item():.5f}", "| min cos", f"{cos.min().item():.5f}")
assert z.shape == mu.shape and (cos < 1 - 1e-4).all(), "every pixel must move"
assert ((z.norm(dim=2) - 1).abs() < 1e-5).all()
z.sum().backward()
assert mu.grad is not None and torch.isfinite(mu.grad).all() and mu.grad.abs().sum() > 0
assert bottleneck.eval()(mu) is mu
with torch.autocast("cpu", dtype=torch.bfloat16):
    zb = VMFBottleneck(8000.0, dim=2).train()(mu.detach().bfloat16(), generator=g)
assert torch.isfinite(zb).all()

# %% [markdown]
# **Cost.** Per pixel the sampler draws $2 \times$ `n_proposals` Gamma variates and $m - 1$
# normals; it has no parameters and no matmul, so on the `paper` preset it is a small
# fraction of a training step. Chapter 14 puts it between the summariser and the decoders.
