"""The GP equals scikit-learn's GaussianProcessRegressor; fitting, priors, stability, (log) EI,
output warping."""

from __future__ import annotations

import math

import mpmath
import numpy as np
import pytest
import torch
from scipy.stats import norm
from sklearn.gaussian_process import GaussianProcessRegressor
from sklearn.gaussian_process.kernels import ConstantKernel, Matern, WhiteKernel

from baselines.gp import (
    GP,
    GPError,
    Kernel,
    expected_improvement,
    fit_kernel,
    log_expected_improvement,
    log_prior,
    matern52,
    neg_log_posterior,
    robust_cholesky,
    sq_diffs,
    warp_outputs,
)

LS, SIGNAL, NOISE = [0.3, 0.7, 1.5], 1.7, 0.05


def data(n=25, d=3, seed=0):
    g = np.random.default_rng(seed)
    x, xs = g.random((n, d)), g.random((40, d))
    y = np.sin(6 * x[:, 0]) + x[:, 1] ** 2 + 0.1 * g.standard_normal(n) + 3.0
    return x, y, xs


def test_matern52_equals_sklearn():
    x, _, xs = data()
    ours = matern52(
        torch.tensor(xs), torch.tensor(x), torch.tensor(LS, dtype=torch.float64)
    ).numpy()
    assert np.allclose(ours, Matern(length_scale=LS, nu=2.5)(xs, x), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("with_noise", [True, False])
def test_posterior_equals_sklearn(with_noise):
    x, y, xs = data()
    matern = ConstantKernel(SIGNAL, "fixed") * Matern(LS, "fixed", nu=2.5)
    if with_noise:  # the noise is part of the kernel: sklearn's variance includes it
        ref = GaussianProcessRegressor(matern + WhiteKernel(NOISE, "fixed"), alpha=0.0)
    else:  # the noise as alpha: sklearn's variance is that of the latent f
        ref = GaussianProcessRegressor(matern, alpha=NOISE)
    ref.set_params(optimizer=None, normalize_y=True).fit(x, y)
    mean_ref, sd_ref = ref.predict(xs, return_std=True)
    gp = GP(
        torch.tensor(x),
        torch.tensor(y),
        Kernel(torch.tensor(LS, dtype=torch.float64), SIGNAL, NOISE),
    )
    mean, var = gp.posterior(torch.tensor(xs), noise=with_noise)
    assert np.allclose(mean.numpy(), mean_ref, rtol=1e-9, atol=1e-12)
    assert np.allclose(var.numpy(), sd_ref**2, rtol=1e-9, atol=1e-12)


def test_duplicates_without_noise_get_jitter():
    x = torch.rand(6, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    x = torch.cat([x, x])  # singular kernel matrix without noise
    gp = GP(x, torch.arange(12.0).double(), Kernel(torch.tensor([0.5, 0.5]), 1.0, 0.0))
    mean, var = gp.posterior(torch.rand(5, 2, dtype=torch.float64))
    assert torch.isfinite(mean).all() and (var > 0).all()
    with pytest.raises(GPError, match="jitter"):
        robust_cholesky(-torch.eye(3, dtype=torch.float64))


def test_fit_finds_the_relevant_input():
    g = torch.Generator().manual_seed(1)
    x = torch.rand(40, 3, generator=g, dtype=torch.float64)
    y = torch.sin(8 * x[:, 0])  # only the first input matters
    k = fit_kernel(x, y, restarts=3, generator=g)
    assert k.lengthscale[0] < 0.5 < k.lengthscale[1:].min()
    assert k.noise < 1e-2  # noiseless data


def test_length_scales_stay_bounded():
    """An input the data say little about keeps a length scale of at most sqrt(d): the GP
    never switches it off (the old prior let such inputs reach 2-6 on Hartmann-6, bound 100)."""
    g = torch.Generator().manual_seed(2)
    x = torch.rand(20, 6, generator=g, dtype=torch.float64)
    y = torch.sin(5 * x[:, 0]) + 0.01 * x[:, 1:].sum(1)  # inputs 1-5 barely matter
    k = fit_kernel(x, y, restarts=3, generator=g)
    means, sds, bounds = log_prior(6)
    assert k.lengthscale.max().item() <= math.sqrt(6) * (1 + 1e-9)
    assert [b[1] for b in bounds[:6]] == pytest.approx([math.log(math.sqrt(6))] * 6)
    assert k.lengthscale[0] < k.lengthscale[1:].min()
    assert means[0].exp().item() == pytest.approx(0.25 * math.sqrt(6)) and sds[0] == 1.0


def test_expected_improvement_closed_form():
    mean = torch.tensor([0.0, 1.0, -1.0], dtype=torch.float64)
    var = torch.tensor([1.0, 4.0, 0.25], dtype=torch.float64)
    sd = var.sqrt().numpy()
    z = (0.0 - mean.numpy()) / sd
    want = sd * (z * norm.cdf(z) + norm.pdf(z))
    assert np.allclose(expected_improvement(mean, var, 0.0).numpy(), want)


def test_log_expected_improvement_is_accurate_far_from_the_incumbent():
    z = torch.tensor([3.0, 0.5, -0.9, -1.1, -5.0, -20.0, -40.0, -1e7], dtype=torch.float64)
    var = torch.full_like(z, 4.0)
    got = log_expected_improvement(-2 * z, var, 0.0)  # sd 2: z = (0 - mean) / 2
    assert torch.isfinite(got).all()
    mpmath.mp.dps = 50  # the closed form in 50-digit arithmetic (mpmath comes with torch)
    for zi, gi in zip(z.tolist(), got.tolist()):
        h = mpmath.npdf(zi) + zi * mpmath.ncdf(zi)
        assert gi == pytest.approx(float(mpmath.log(2 * h)), rel=1e-9, abs=1e-9), zi
    ei = expected_improvement(-2 * z[:5], var[:5], 0.0)  # where EI does not underflow
    assert torch.allclose(got[:5].exp(), ei, rtol=1e-10)
    zs = torch.tensor([-30.0, -3.0], dtype=torch.float64, requires_grad=True)
    (grad,) = torch.autograd.grad(log_expected_improvement(zs, torch.ones(2), 0.0).sum(), zs)
    assert (grad < 0).all() and torch.isfinite(grad).all()  # a slope where EI itself is 0


def test_warping_compresses_a_heavy_upper_tail_only():
    g = np.random.default_rng(0)
    good = 0.1 + 0.02 * g.standard_normal(18)
    heavy = torch.tensor(np.concatenate([good, [2.3, 2.3]]))  # two diverged trials
    ys, lam = warp_outputs(heavy)
    plain = (heavy - heavy.mean()) / heavy.std(correction=0)
    assert lam < 0.5 and torch.equal(ys.argsort(), plain.argsort())  # monotone
    spread = lambda v: (v[:18].max() - v[:18].min()).item()  # noqa: E731
    assert spread(ys) > 2 * spread(plain)  # the good trials told apart
    assert ys.mean().abs() < 1e-12 and (ys.std(correction=0) - 1).abs() < 1e-12
    gauss = torch.tensor(g.standard_normal(30))
    ys, lam = warp_outputs(gauss)
    assert lam > 0.7 and torch.corrcoef(torch.stack([ys, gauss]))[0, 1] > 0.99
    # a heavy lower tail (a few very good trials, as on Hartmann-6) is left alone
    low = torch.tensor(np.concatenate([-0.1 * g.random(18), [-3.0, -2.5]]))
    ys, lam = warp_outputs(low)
    assert lam == 1.0 and torch.allclose(ys, (low - low.mean()) / low.std(correction=0))


def test_analytic_gradient_matches_autograd():
    g = torch.Generator().manual_seed(3)
    x = torch.rand(30, 4, generator=g, dtype=torch.float64)
    ys = torch.randn(30, generator=g, dtype=torch.float64)
    theta = torch.randn(6, generator=g, dtype=torch.float64) * 0.5

    def reference(t):  # the same objective written out, differentiated by autograd
        ls, signal, noise = t[:4].exp(), t[4].exp(), t[5].exp()
        d2 = ((x[:, None] - x[None]) / ls).pow(2).sum(-1)
        r = d2.clamp_min(1e-36).sqrt()
        K = signal * (1 + 5**0.5 * r + 5 / 3 * d2) * torch.exp(-(5**0.5) * r)
        K = K + noise * torch.eye(30, dtype=torch.float64)
        mvn = torch.distributions.MultivariateNormal(torch.zeros(30, dtype=torch.float64), K)
        means, sds, _ = log_prior(4)
        return -mvn.log_prob(ys) + 0.5 * ((t - means) / sds).pow(2).sum()

    t = theta.clone().requires_grad_()
    ref = reference(t)
    (ref_grad,) = torch.autograd.grad(ref, t)
    value, grad = neg_log_posterior(theta, sq_diffs(x), ys)
    assert value == pytest.approx(ref.item(), rel=1e-10)
    assert torch.allclose(grad, ref_grad, rtol=1e-6, atol=1e-8)
