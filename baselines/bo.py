"""Bayesian optimisation with a GP and expected improvement (Spearmint-style), see gp.py.

The first `n_initial` trials are scrambled Sobol points (`sobol_design`). The model is used
once their results are in: until then an ask returns None while they run (as Ax's generation
strategies wait for the initial design's data); a model fitted to two results and a pending
guess proposed poor points. Then, at each ask:
1. observations -> unit cube (`to_unit`; integers at their cell centres); failed, diverged or
   NaN results are imputed as the worst loss seen; the losses warped by a fitted power
   transform and standardised (`warp_outputs`: heavy upper tails compressed);
2. kernel hyperparameters fitted to them by MAP (`fit_kernel`);
3. pending trials enter the GP by the kriging believer (Ginsbourger et al. 2010): each is told
   the model's own mean there, without refitting the kernel. Its variance collapses, so the
   next proposal moves away from it by as much as the model's length scales say, and the
   incumbent and the rest of the surface are left as the data put them (a constant "lie" of
   the mean, min or max of the losses moves them; `liar` keeps those as options);
4. log EI (Ament et al. 2023) maximised over a scrambled Sobol set plus points scattered
   around the incumbent, the best few refined with L-BFGS-B inside the cube;
5. a winner on a face of the cube that the model's mean does not fall towards (drawn there by
   the variance, which is largest far from the data) is told a pessimistic virtual value and
   step 4 repeated (`unsupported_faces`); the winner is mapped back with `from_unit`
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
from .design import sobol_design, waiting_for_design
from .gp import GP, GPError, fit_kernel, log_expected_improvement, standardise_outputs, warp_outputs

__all__ = ["BayesOpt", "unsupported_faces"]

LIARS = ("believer", "mean", "min", "max")


class BayesOpt(Searcher):
    name = "bo"
    replay_adopts = True

    @dataclass(frozen=True)
    class Options(Searcher.Options):
        n_initial: int = 5  # initial design; the GP is used once their results are in
        candidates: int = 2048  # Sobol points on which EI is evaluated
        refine: int = 5  # best candidates refined by L-BFGS-B
        restarts: int = 3  # L-BFGS-B starts when fitting the kernel
        liar: str = "believer"  # pending trials: the model's mean there, or a constant
        warp: bool = True  # fit a power transform to the losses (Yeo-Johnson)
        face_rounds: int = 3  # re-proposals away from faces the data do not point to

    def __init__(self, space: Space, seed: int, **options: Any) -> None:
        super().__init__(space, seed, **options)
        o = self.options
        lows = {"n_initial": 0, "candidates": 1, "refine": 1, "restarts": 1, "face_rounds": 0}
        for key, low in lows.items():
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
        n = self.options.n_initial
        if trial_id < n:
            return Suggestion(trial_id, sobol_design(self.space, self.seed, n, trial_id))
        if waiting_for_design(self.trials.values(), n):
            return None
        x, y, n_finite = self.observations()
        if n_finite < 2:
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

    def model(self, x: Tensor, y: Tensor, gen: torch.Generator | None = None) -> GP:
        """The GP of observations x (n, d), y (n,), warped and standardised, with the pending
        trials told their believed (or lied) values; its outputs are in those units."""
        ys = warp_outputs(y)[0] if self.options.warp else standardise_outputs(y)[0]
        kernel = fit_kernel(x, ys, self.options.restarts, gen)
        gp = GP(x, ys, kernel, standardise=False)
        if not self.pending:
            return gp
        xp = self._unit([self.trials[i].suggestion.params for i in self.pending])
        liar = self.options.liar
        if liar == "believer":
            lie = gp.posterior(xp)[0]
        else:
            lie = {"mean": ys.mean(), "min": ys.min(), "max": ys.max()}[liar].expand(len(xp))
        return gp.with_observations(xp, lie)

    def _propose(self, x: Tensor, y: Tensor, gen: torch.Generator, seed: int) -> Tensor:
        """The unit-cube point (d,) maximising EI given observations x (n, d), y (n,); a point
        on a face the model's mean does not fall towards is told a pessimistic virtual value
        (its mean + 1 sd) and the search repeated, at most `face_rounds` times."""
        gp = self.model(x, y, gen)
        best = gp.ys.min().item()  # the incumbent, believed values included
        d, o = x.shape[1], self.options
        sobol = torch.quasirandom.SobolEngine(d, scramble=True, seed=seed)
        noise = torch.randn(o.candidates // 8, d, generator=gen, dtype=torch.float64)
        local = _reflect(gp.x[gp.ys.argmin()] + 0.05 * noise)  # EI often peaks near the best
        cand = torch.cat([sobol.draw(o.candidates, dtype=torch.float64), local])
        for _ in range(o.face_rounds):
            u = _maximise_ei(gp, best, cand, o.refine)
            if not unsupported_faces(gp, u):
                return u
            with torch.no_grad():
                mean, var = gp.posterior(u[None])
            gp = gp.with_observations(u[None], mean + var.sqrt())
        return _maximise_ei(gp, best, cand, o.refine)


def unsupported_faces(gp: GP, u: Tensor, step: float = 0.01) -> list[int]:
    """The coordinates of u (d,) that sit on a face of the cube although the data do not point
    there: the GP's mean at u is not both below its prior mean (the average loss) and below
    the mean `step` inside. Far from the data the mean returns to the average and the variance
    is largest, so such a proposal is there for its variance only.

    EI over-explores the faces: far from the data the variance is largest, and the faces and
    corners are farthest (Siivola et al. 2018, who tell the GP, by virtual derivative signs,
    that the function rises towards the faces). Here the same is told by a virtual value at
    the proposal, only where the data do not slope towards that face."""
    faces = [j for j in range(len(u)) if u[j] in (0.0, 1.0)]
    if not faces:
        return []
    inside = u.repeat(len(faces), 1)  # (f, d): each face coordinate moved inwards
    for row, j in enumerate(faces):
        inside[row, j] = step if u[j] == 0.0 else 1.0 - step
    with torch.no_grad():
        mean = gp.posterior(torch.cat([u[None], inside]))[0]
    if not mean[0] < gp.mu:
        return faces
    return [j for row, j in enumerate(faces) if not mean[0] < mean[row + 1]]


def _maximise_ei(gp: GP, best: float, cand: Tensor, refine: int) -> Tensor:
    """The best of the `refine` top candidates (k, d) after L-BFGS-B on log EI below `best`."""

    def neg_log_ei(u: Tensor) -> Tensor:  # (k, d) -> (k,)
        return -log_expected_improvement(*gp.posterior(u), best)

    with torch.no_grad():
        scores = neg_log_ei(cand)
    return _refine(neg_log_ei, cand[scores.argsort()[:refine]])


def _reflect(u: Tensor) -> Tensor:
    """Fold points back into [0, 1] at the faces (clamping would put them on the faces)."""
    u = u.remainder(2.0)
    return torch.where(u > 1.0, 2.0 - u, u)


def _refine(loss: Any, starts: Tensor) -> Tensor:
    """Minimise the summed loss of k independent points with L-BFGS-B in [0, 1]^d; best point."""
    k, d = starts.shape

    def f(flat: np.ndarray) -> tuple[float, np.ndarray]:
        u = torch.tensor(flat, dtype=torch.float64).reshape(k, d).requires_grad_()
        val = loss(u).sum()
        (g,) = torch.autograd.grad(val, u)
        return val.item(), g.reshape(-1).numpy()

    res = minimize(f, starts.reshape(-1).numpy(), jac=True, method="L-BFGS-B",
                   bounds=[(0.0, 1.0)] * (k * d), options={"maxiter": 100})  # fmt: skip
    u = torch.tensor(res.x, dtype=torch.float64).reshape(k, d).clamp(0, 1)
    with torch.no_grad():
        both = torch.cat([u, starts])
        vals = loss(both)
    vals = torch.where(torch.isfinite(vals), vals, torch.full_like(vals, math.inf))
    return both[vals.argmin()]
