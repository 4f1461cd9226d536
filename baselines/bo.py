"""Bayesian optimisation with a GP and expected improvement (Spearmint-style), see gp.py.

Each ask after the first `n_initial` random trials:
1. observations -> unit cube (`to_unit`; integers at their cell centres); failed, diverged or
   NaN results are imputed as the worst loss seen;
2. kernel hyperparameters fitted to them by MAP (`fit_kernel`);
3. pending trials enter the GP with a constant lie (mean, min or max of the losses seen), so
   parallel asks spread out instead of repeating one point;
4. EI maximised over a scrambled Sobol set plus perturbations of the best point, the best few
   refined with L-BFGS-B inside the cube; the winner is mapped back with `from_unit`
   (integers snap to their cell).
Proposals depend only on the results told and the pending trials, so a replay adopts the
journal's suggestions instead of refitting the GP for every past trial.

Threads: the matrices are small (observations x observations), so intra-op threads only add
synchronisation. Run the process that asks with one thread (e.g. `with
threadpoolctl.threadpool_limits(1):` around the search loop): on a loaded 2-core machine one
ask at 100 observations in 15-D took about 0.5 s single-threaded and 40 s with 2 threads.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from scipy.optimize import minimize
from torch import Tensor

from stn.space import Space

from .base import Searcher, Suggestion, random_params, require_bounded
from .gp import GP, GPError, expected_improvement, fit_kernel

__all__ = ["BayesOpt"]

LIARS = ("mean", "min", "max")


class BayesOpt(Searcher):
    name = "bo"
    replay_adopts = True

    @dataclass(frozen=True)
    class Options(Searcher.Options):
        n_initial: int = 5  # random trials before the GP is used
        candidates: int = 2048  # Sobol points on which EI is evaluated
        refine: int = 5  # best candidates refined by L-BFGS-B
        restarts: int = 3  # L-BFGS-B starts when fitting the kernel
        liar: str = "mean"  # the value pending trials pretend to have

    def __init__(self, space: Space, seed: int, **options: Any) -> None:
        super().__init__(space, seed, **options)
        o = self.options
        for key, low in (("n_initial", 0), ("candidates", 1), ("refine", 1), ("restarts", 1)):
            self._check_int(key, getattr(o, key), low)
        self._check_choice("liar", o.liar, LIARS)
        require_bounded(space)

    def observations(self) -> tuple[Tensor, Tensor, int]:
        """Told trials as unit-cube inputs x (n, d) and losses y (n,), failed ones imputed as
        the worst finite loss; and how many losses were finite."""
        told = [t for t in self.trials.values() if t.status is not None]
        losses = np.array([t.loss for t in told], dtype=np.float64)
        finite = np.isfinite(losses)
        worst = losses[finite].max() if finite.any() else 0.0
        y = torch.from_numpy(np.where(finite, losses, worst))
        return self._unit([t.suggestion.params for t in told]), y, int(finite.sum())

    def _ask(self, trial_id: int) -> Suggestion | None:
        x, y, n_finite = self.observations()
        if trial_id < self.options.n_initial or n_finite < 2:
            return Suggestion(trial_id, random_params(self.space, self.seed, trial_id))
        seed = int(np.random.SeedSequence([self.seed, trial_id]).generate_state(1)[0])
        gen = torch.Generator().manual_seed(seed)
        try:
            u = self._propose(x, y, gen, seed)
        except GPError:
            return Suggestion(trial_id, random_params(self.space, self.seed, trial_id))
        return Suggestion(trial_id, self.space.from_unit(u.tolist()))

    def _unit(self, params: list[dict[str, float]]) -> Tensor:
        rows = [self.space.to_unit(p) for p in params]
        return torch.tensor(rows, dtype=torch.float64).reshape(len(rows), len(self.space))

    def _propose(self, x: Tensor, y: Tensor, gen: torch.Generator, seed: int) -> Tensor:
        """The unit-cube point (d,) maximising EI given observations x (n, d), y (n,)."""
        kernel = fit_kernel(x, y, self.options.restarts, gen)
        xp = self._unit([self.trials[i].suggestion.params for i in self.pending])
        lie = {"mean": y.mean(), "min": y.min(), "max": y.max()}[self.options.liar]
        gp = GP(torch.cat([x, xp]), torch.cat([y, lie.expand(len(xp))]), kernel)
        best = ((y.min() - gp.mu) / gp.sd).item()  # incumbent in standardised units

        def neg_ei(u: Tensor) -> Tensor:  # (k, d) -> (k,)
            mean, var = gp.posterior(u)
            return -expected_improvement((mean - gp.mu) / gp.sd, var / gp.sd**2, best)

        d, o = x.shape[1], self.options
        sobol = torch.quasirandom.SobolEngine(d, scramble=True, seed=seed)
        noise = torch.randn(o.candidates // 8, d, generator=gen, dtype=torch.float64)
        local = x[y.argmin()] + 0.05 * noise  # around the incumbent, where EI often peaks
        cand = torch.cat([sobol.draw(o.candidates, dtype=torch.float64), local.clamp(0, 1)])
        with torch.no_grad():
            scores = neg_ei(cand)
        starts = cand[scores.argsort()[: o.refine]]  # (k, d)
        return _refine(neg_ei, starts)


def _refine(neg_ei: Any, starts: Tensor) -> Tensor:
    """Minimise the summed -EI of k independent points with L-BFGS-B in [0, 1]^d; best point."""
    k, d = starts.shape

    def f(flat: np.ndarray) -> tuple[float, np.ndarray]:
        u = torch.tensor(flat, dtype=torch.float64).reshape(k, d).requires_grad_()
        val = neg_ei(u).sum()
        (g,) = torch.autograd.grad(val, u)
        return val.item(), g.reshape(-1).numpy()

    res = minimize(f, starts.reshape(-1).numpy(), jac=True, method="L-BFGS-B",
                   bounds=[(0.0, 1.0)] * (k * d), options={"maxiter": 100})  # fmt: skip
    u = torch.tensor(res.x, dtype=torch.float64).reshape(k, d).clamp(0, 1)
    with torch.no_grad():
        both = torch.cat([u, starts])
        vals = neg_ei(both)
    vals = torch.where(torch.isfinite(vals), vals, torch.full_like(vals, math.inf))
    return both[vals.argmin()]
