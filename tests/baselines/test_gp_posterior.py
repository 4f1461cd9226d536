"""The GP equals scikit-learn's GaussianProcessRegressor; fitting, stability, EI, BO details."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.stats import norm
from sklearn.gaussian_process import GaussianProcessRegressor
from sklearn.gaussian_process.kernels import ConstantKernel, Matern, WhiteKernel

from baselines import BayesOpt
from baselines.gp import (
    GP,
    PRIOR_SD,
    GPError,
    Kernel,
    _log_prior_means,
    expected_improvement,
    fit_kernel,
    matern52,
    neg_log_posterior,
    robust_cholesky,
    sq_diffs,
)
from stn.space import HParam, Space

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


def test_expected_improvement_closed_form():
    mean = torch.tensor([0.0, 1.0, -1.0], dtype=torch.float64)
    var = torch.tensor([1.0, 4.0, 0.25], dtype=torch.float64)
    sd = var.sqrt().numpy()
    z = (0.0 - mean.numpy()) / sd
    want = sd * (z * norm.cdf(z) + norm.pdf(z))
    assert np.allclose(expected_improvement(mean, var, 0.0).numpy(), want)


SPACE = Space.of(HParam("x", -5.0, 10.0, 0.0), HParam("k", 0, 9, 0, integer=True))
FAST = {"n_initial": 3, "candidates": 256, "refine": 2, "restarts": 1}


def test_pending_trials_are_not_proposed_twice():
    bo = BayesOpt(SPACE, 0, **FAST)
    for _ in range(5):
        s = bo.ask()
        bo.tell(s.id, (s.params["x"] - 2) ** 2 + s.params["k"])
    batch = [bo.ask() for _ in range(3)]  # three in flight: the constant liar spreads them
    # (without the liar all three land within 1e-6 of each other: distinct is not enough)
    units = [SPACE.to_unit(s.params) for s in batch]
    gaps = [max(abs(a - b) for a, b in zip(u, v)) for i, u in enumerate(units) for v in units[:i]]
    assert min(gaps) > 0.05, batch


def test_failures_are_imputed_as_the_worst():
    bo = BayesOpt(SPACE, 0, **FAST)
    told = [(1.0, "ok"), (math.nan, "ok"), (4.0, "ok"), (0.5, "diverged"), (2.0, "failed")]
    for loss, status in told:
        bo.tell(bo.ask().id, loss, status=status)
    x, y, n_finite = bo.observations()
    assert y.tolist() == [1.0, 4.0, 4.0, 4.0, 4.0] and n_finite == 2 and x.shape == (5, 2)
    s = bo.ask()  # the model's first proposal, its integer snapped
    assert s.id == 5 and float(s.params["k"]).is_integer() and bo.best[2] == 1.0


def test_bad_options():
    with pytest.raises(ValueError, match="liar"):
        BayesOpt(SPACE, 0, liar="median")
    with pytest.raises(ValueError, match="n_initial"):
        BayesOpt(SPACE, 0, n_initial=-1)
    with pytest.raises(ValueError, match="half-bounded"):
        BayesOpt(Space.of(HParam("w", 0.0, math.inf, 1.0)), 0)


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
        return -mvn.log_prob(ys) + 0.5 * ((t - _log_prior_means(4)) / PRIOR_SD).pow(2).sum()

    t = theta.clone().requires_grad_()
    ref = reference(t)
    (ref_grad,) = torch.autograd.grad(ref, t)
    value, grad = neg_log_posterior(theta, sq_diffs(x), ys)
    assert value == pytest.approx(ref.item(), rel=1e-10)
    assert torch.allclose(grad, ref_grad, rtol=1e-6, atol=1e-8)
