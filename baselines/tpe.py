"""The tree-structured Parzen estimator (Bergstra et al. 2011), with Optuna 5's defaults.

After `n_initial` trials of a scrambled Sobol design (`sobol_design`; Optuna's
n_startup_trials draws them at random), whose results the model waits for as BO does, each ask:
1. splits the trials told into "good" (the best ceil(gamma n) finite losses, at most
   `max_good`) and "bad" (the rest, failures and, with `liar`, the pending trials: a pending
   trial counts as bad, so parallel asks are pushed away from each other, Optuna's
   `constant_liar`);
2. builds two Parzen estimators in the unit cube (log scales are uniform there, an integer
   k is the cell around its centre): a mixture with one truncated Gaussian per trial, centred
   on it, plus a prior component (centre of the cube, width 1, weight `prior_weight`). A
   kernel's width is the larger gap to its neighbours in each dimension (the cube's faces are
   neighbours only when fewer than two trials sit in the group), clipped to
   [1 / min(100, kernels + 1), 1] (Bergstra's "magic clip"). Trial weights are 1, ramping
   down linearly for all but the newest 25 when there are more;
3. draws `candidates` points from the good estimator l and returns the one maximising
   l(x) / g(x), a monotone transform of expected improvement under the TPE model.
`multivariate` (Optuna's default for one objective) draws a whole point from one kernel and
scores the product over dimensions; without it each dimension is drawn and chosen on its own,
as in the original paper. Integers are scored by their cell's probability mass.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.special import log_ndtr, logsumexp, ndtr, ndtri

from stn.space import Space

from .base import Searcher, Suggestion, Trial, random_params, require_bounded
from .design import sobol_design, waiting_for_design

__all__ = ["TPE", "ParzenEstimator"]

RECENT = 25  # trials that keep full weight; older ones ramp down (Optuna's default_weights)
_LOG_SQRT_2PI = 0.5 * math.log(2 * math.pi)


class TPE(Searcher):
    name = "tpe"

    @dataclass(frozen=True)
    class Options(Searcher.Options):
        n_initial: int = 10  # initial design; the model is used once their results are in
        candidates: int = 24  # points drawn from the good estimator and scored
        gamma: float = 0.1  # the share of trials that are "good"
        max_good: int = 25  # and at most this many
        prior_weight: float = 1.0  # of the uniform-ish prior kernel, against 1 per trial
        multivariate: bool = True  # joint kernels (Optuna's default) or one per dimension
        liar: bool = True  # pending trials count as bad

    def __init__(self, space: Space, seed: int, **options: Any) -> None:
        super().__init__(space, seed, **options)
        o = self.options
        for key, low in (("n_initial", 0), ("candidates", 1), ("max_good", 1)):
            self._check_int(key, getattr(o, key), low)
        self._check_number("gamma", o.gamma, 0, 1, low_ok=False)
        self._check_number("prior_weight", o.prior_weight, 0, math.inf, low_ok=False)
        require_bounded(space)
        # cells per dimension in the unit cube: 0 for continuous, else the number of integers
        self.cells = np.array([int(p.high - p.low) + 1 if p.integer else 0 for p in space])

    def _ask(self, trial_id: int) -> Suggestion | None:
        o = self.options
        if trial_id < o.n_initial:
            u = sobol_design(self.space, self.seed, o.n_initial, trial_id)
            return Suggestion(trial_id, u)
        if waiting_for_design(self.trials.values(), o.n_initial):
            return None
        models = self.estimators()
        if models is None:  # nothing finite told yet
            return Suggestion(trial_id, random_params(self.space, self.seed, trial_id))
        good, bad = models
        rng = np.random.default_rng([self.seed, trial_id])
        cand = good.sample(rng, o.candidates, o.multivariate)  # (m, d)
        score = good.log_pdf(cand, o.multivariate) - bad.log_pdf(cand, o.multivariate)
        if o.multivariate:
            u = cand[np.argmax(score)]
        else:  # each dimension on its own: (m, d) scores
            u = cand[np.argmax(score, axis=0), np.arange(cand.shape[1])]
        return Suggestion(trial_id, self.space.from_unit(u.tolist()))

    def estimators(self) -> tuple[ParzenEstimator, ParzenEstimator] | None:
        """The good and bad estimators (l, g) of the trials told, and of the pending ones with
        `liar`; None while no finite loss has been told."""
        o = self.options
        told = [t for t in self.trials.values() if t.status is not None]
        ranked = sorted(told, key=lambda t: (t.loss, t.suggestion.id))  # failures (inf) last
        n_good = min(math.ceil(o.gamma * len(told)), o.max_good)
        n_good = min(n_good, sum(math.isfinite(t.loss) for t in told))
        if n_good == 0:
            return None
        pending = [self.trials[i] for i in self.pending] if o.liar else []
        good = ParzenEstimator(self._unit(ranked[:n_good]), self.cells, o.prior_weight)
        bad = ParzenEstimator(self._unit(ranked[n_good:] + pending), self.cells, o.prior_weight)
        return good, bad

    def _unit(self, trials: list[Trial]) -> np.ndarray:
        """Trials' points in the unit cube (n, d), oldest first (the weights' order)."""
        trials = sorted(trials, key=lambda t: t.suggestion.id)
        rows = [self.space.to_unit(t.suggestion.params) for t in trials]
        return np.array(rows, dtype=np.float64).reshape(len(rows), len(self.space))


def trial_weights(n: int) -> np.ndarray:
    """Weights of n trials, oldest first: 1 for the newest `RECENT`, a linear ramp before."""
    if n <= RECENT:
        return np.ones(n)
    return np.concatenate([np.linspace(1.0 / n, 1.0, num=n - RECENT), np.ones(RECENT)])


def bandwidths(mus: np.ndarray) -> np.ndarray:
    """Kernel widths (n, d) for centres mus (n, d) in [0, 1]: the larger gap to a neighbour,
    the faces counting as neighbours only for fewer than two centres; clipped (magic clip)."""
    n, _ = mus.shape
    order = np.argsort(mus, axis=0)
    s = np.take_along_axis(mus, order, axis=0)
    ends = np.concatenate([np.zeros_like(s[:1]), s, np.ones_like(s[:1])])  # (n + 2, d)
    gaps = np.diff(ends, axis=0)  # (n + 1, d)
    sig = np.maximum(gaps[:-1], gaps[1:])
    if n >= 2:  # the outermost kernels look inwards only (Optuna: consider_endpoints=False)
        sig[0], sig[-1] = s[1] - s[0], s[-1] - s[-2]
    out = np.empty_like(sig)
    np.put_along_axis(out, order, sig, axis=0)
    return np.clip(out, 1.0 / min(100.0, n + 2.0), 1.0)  # n + 1 kernels with the prior


def _log_mass(z0: np.ndarray, z1: np.ndarray) -> np.ndarray:
    """log(Phi(z1) - Phi(z0)) for z0 < z1, accurate in either tail."""
    flip = z0 > 0  # both in the upper tail: use the mirror image
    a, b = np.where(flip, -z1, z0), np.where(flip, -z0, z1)
    lb, t = log_ndtr(b), np.minimum(log_ndtr(a) - log_ndtr(b), 0.0)
    with np.errstate(divide="ignore"):  # a == b: mass 0, log -inf
        return lb + np.where(t > -math.log(2), np.log(-np.expm1(t)), np.log1p(-np.exp(t)))


class ParzenEstimator:
    """A mixture of truncated Gaussians in [0, 1]^d: one kernel per point (rows of x, oldest
    first) and a prior kernel at the centre with width 1. `cells[j] > 0` makes dimension j
    discrete with that many equal cells, scored by probability mass."""

    def __init__(self, x: np.ndarray, cells: np.ndarray, prior_weight: float) -> None:
        self.cells = cells
        d = len(cells)
        prior = np.full((1, d), 0.5)
        if len(x):
            self.mus = np.concatenate([x, prior])
            self.sigmas = np.concatenate([bandwidths(x), np.ones((1, d))])
            w = np.append(trial_weights(len(x)), prior_weight)
        else:
            self.mus, self.sigmas, w = prior, np.ones((1, d)), np.ones(1)
        self.weights = w / w.sum()  # (k,)

    def sample(self, rng: np.random.Generator, m: int, joint: bool) -> np.ndarray:
        """m points (m, d): a kernel per point (joint) or per point and dimension."""
        k, d = self.mus.shape
        comp = rng.choice(k, size=m if joint else (m, d), p=self.weights)
        cols = np.arange(d)
        mu, sd = (self.mus[comp], self.sigmas[comp]) if joint else (
            self.mus[comp, cols], self.sigmas[comp, cols])  # fmt: skip
        lo, hi = ndtr(-mu / sd), ndtr((1.0 - mu) / sd)  # the centres are in the cube: lo <= 0.5
        u = rng.random((m, d))
        return np.clip(mu + sd * ndtri(lo + u * (hi - lo)), 0.0, 1.0)

    def log_pdf(self, x: np.ndarray, joint: bool) -> np.ndarray:
        """Log density of points x (m, d): (m,) for the joint mixture, (m, d) per dimension."""
        mu, sd = self.mus[None], self.sigmas[None]  # (1, k, d)
        xs = x[:, None, :]  # (m, 1, d)
        norm = _log_mass(-mu / sd, (1.0 - mu) / sd)  # truncation to the cube
        z = (xs - mu) / sd
        dens = -0.5 * z * z - _LOG_SQRT_2PI - np.log(sd)
        disc = self.cells > 0
        if disc.any():  # an integer's cell: its mass, over the cell's width (a density again)
            n = np.where(disc, self.cells, 1)
            left = np.minimum(np.floor(xs * n), n - 1) / n
            mass = _log_mass((left - mu) / sd, (left + 1.0 / n - mu) / sd) + np.log(n)
            dens = np.where(disc, mass, dens)
        per_dim = dens - norm  # (m, k, d)
        logw = np.log(self.weights)
        if joint:
            return logsumexp(per_dim.sum(-1) + logw, axis=1)
        return logsumexp(per_dim + logw[None, :, None], axis=1)
