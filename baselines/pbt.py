"""Population Based Training (Jaderberg et al., 2017): a population of fixed-loop runs that
periodically copy the weights and hyperparameters of better members and perturb them.

A member's training is a chain of trials, one per generation: generation g trains every member
to min((g + 1) x interval, epochs) epochs (`Suggestion.budget`, cumulative) from the checkpoint
of the trial it continues (`Suggestion.resume_from`), so it goes through the suite's normal
checkpoint mechanism: weights, optimiser (its learning rate included), data position and RNG
come from that checkpoint, the hyperparameters are the trial's own. A generation is proposed
whole once the previous one is told (`ask` returns None in between), so with
`budget.parallel >= population` its members go out together.

When a generation is told, members are ranked by validation loss (failed, diverged and NaN
last; ties to the lower member index). Truncation selection: each of the bottom
`fraction` (and every member whose trial did not finish "ok") copies a member drawn uniformly
from the top `fraction` (exploit: it continues that member's trial) and explores:
- "perturb": every hyperparameter multiplied by 0.8 or 1.2 (drawn per hyperparameter), clipped
  to its range: a 20 % step of a linear hyperparameter, a constant step on a log
  hyperparameter's log axis; an integer moves by at least one (round(v x 1.2) == v would never
  move 1 or 2); a continuous value of exactly 0 stays 0 (use "resample");
- "resample": each hyperparameter redrawn from the prior (uniform, log-uniform, integer
  cells) with probability `resample_probability`, else kept.
The others continue their own last trial with their own hyperparameters. The first generation
draws its hyperparameters from the prior (`start="prior"`, Jaderberg et al.), or starts from
the space's initial values, where STN starts (`start="init"`: member 0 at them, the others
explored from them once). Trials are scored on their own evaluations
(`scores_own_segment`): a member is ranked by how it does now, not by an ancestor's best.

Budgets are epochs, the suite's unit: the fixed loop rounds each trial's cumulative target to
whole steps (round(epochs x steps per epoch)), so a ready interval of k steps is
interval = k / steps_per_epoch and rounding never accumulates over generations. The plan costs
population x epochs epochs; every member ends at `epochs`. If a whole generation fails, the
search ends.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import numpy as np

from stn.space import HParam, Space

from .base import Searcher, Suggestion, Trial, random_params, require_bounded

__all__ = ["PBT", "perturb"]

EXPLORE = ("perturb", "resample")
STARTS = ("prior", "init")
FACTORS = (0.8, 1.2)  # Jaderberg et al.'s perturbation factors


def perturb(p: HParam, value: float, factor: float) -> float:
    """`value` x `factor`, clipped to p's range; an integer moves by at least one step in the
    factor's direction (then clipped)."""
    v = value * factor
    if p.integer:
        v = round(v)
        if v == value:
            v = value + (1 if factor > 1 else -1)
    return float(min(max(v, p.low), p.high))


class PBT(Searcher):
    name = "pbt"
    finite_plan = True
    resumes_from_parent = True  # members continue their own or an exploited member's checkpoint
    scores_own_segment = True  # rank members by their latest interval, not an ancestor's best
    asks_in_generations = True  # on SLURM a generation goes out as one job array

    @dataclass(frozen=True)
    class Options(Searcher.Options):
        population: int = 8  # members trained side by side
        epochs: float = 20.0  # each member trains to this many epochs (one run's length)
        interval: float = 2.0  # ready interval: epochs between exploit/explore steps
        fraction: float = 0.25  # truncation: the bottom fraction copies the top fraction
        explore: str = "perturb"  # "perturb" (x0.8 / x1.2) | "resample" (from the prior)
        resample_probability: float = 0.25  # "resample": chance each hyperparameter is redrawn
        start: str = "prior"  # first generation: "prior" (random) | "init" (the space's init)

    def __init__(self, space: Space, seed: int, **options: Any) -> None:
        super().__init__(space, seed, **options)
        o = self.options
        self._check_int("population", o.population, 2)
        self._check_number("epochs", o.epochs, 0, math.inf, low_ok=False)
        self._check_number("interval", o.interval, 0, math.inf, low_ok=False)
        self._check_number("fraction", o.fraction, 0, 0.5, low_ok=False)
        self._check_choice("explore", o.explore, EXPLORE)
        self._check_number("resample_probability", o.resample_probability, 0, 1)
        self._check_choice("start", o.start, STARTS)
        require_bounded(space)
        self.ends = _ends(o.epochs, o.interval)  # cumulative epochs of each generation
        self.cut = max(1, int(o.population * o.fraction))  # members in the top / bottom
        # members[m]: member m's trials, one per generation asked so far
        self.members: list[list[int]] = [[] for _ in range(o.population)]
        # what each member does in the current generation: (its last trial, the top trials it
        # copies one of instead, if any); gen 0: nothing to continue (params from `start`)
        self._plan: list[tuple[int | None, list[int]]] = [(None, [])] * o.population
        self._gen, self._asked, self._halted = 0, 0, False

    # --- ask / tell ---
    def _ask(self, trial_id: int) -> Suggestion | None:
        if self._finished() or self._asked == self.options.population:
            return None  # done, or the generation waits for its results
        m = self._asked
        own, top = self._plan[m]
        rng = np.random.default_rng([self.seed, trial_id])
        if own is None:  # the first generation
            params, parent = self._first(m, trial_id, rng), None
        elif not top:  # keeps its own weights and hyperparameters
            params, parent = dict(self.trials[own].suggestion.params), own
        else:  # exploit a top member, then explore from its hyperparameters
            parent = top[int(rng.integers(len(top)))]
            params = self._explore(self.trials[parent].suggestion.params, rng)
        self._asked += 1
        self.members[m].append(trial_id)
        return Suggestion(trial_id, params, float(self.ends[self._gen]), parent)

    def _tell(self, trial: Trial) -> None:
        if self._asked < self.options.population:
            return
        current = [trials[-1] for trials in self.members]
        if any(self.trials[t].status is None for t in current):
            return
        self._gen, self._asked = self._gen + 1, 0
        if self._gen < len(self.ends):
            self._plan = self._select(current)

    def _select(self, current: list[int]) -> list[tuple[int | None, list[int]]]:
        """Truncation selection over the generation just told: who continues, who copies."""
        loss = [self.trials[t].loss for t in current]
        ranked = sorted(range(len(current)), key=lambda m: (loss[m], m))
        ok = [m for m in ranked if math.isfinite(loss[m])]
        if not ok:  # nothing left to copy: the search ends
            self._halted = True
            return []
        top = [current[m] for m in ok[: self.cut]]
        bottom = set(ranked[-self.cut :]) | {m for m in ranked if not math.isfinite(loss[m])}
        return [(t, top if m in bottom else []) for m, t in enumerate(current)]

    def _first(self, member: int, trial_id: int, rng: np.random.Generator) -> dict[str, float]:
        if self.options.start == "prior":
            return random_params(self.space, self.seed, trial_id)
        init = self.space.init()
        return init if member == 0 else self._explore(init, rng)

    def _explore(self, params: dict[str, float], rng: np.random.Generator) -> dict[str, float]:
        out = {}
        for p in self.space:
            v = params[p.name]
            if self.options.explore == "perturb":
                out[p.name] = perturb(p, v, FACTORS[int(rng.integers(2))])
            else:
                redraw, u = rng.random() < self.options.resample_probability, rng.random()
                out[p.name] = p.from_unit(u) if redraw else v
        return out

    def _finished(self) -> bool:
        return self._halted or self._gen >= len(self.ends)

    def checkpoints_needed(self) -> set[int]:
        """Each member's latest checkpoint, the top trials that members not yet asked in this
        generation will copy (their owners may have moved on already), and the parents of
        trials still pending; none once the plan is done. On PTB a checkpoint is ~50 MB and a
        plan hundreds of trials: the rest are deleted as generations finish."""
        pending = {self.trials[t].suggestion.resume_from for t in self.pending}
        if self._finished():
            return pending - {None}
        latest = {trials[-1] for trials in self.members if trials}
        copied = {t for _, top in self._plan[self._asked :] for t in top}
        return (latest | copied | pending) - {None}

    def _describe(self) -> dict[str, Any]:
        plan = {
            "generations": len(self.ends),
            "ends": [float(e) for e in self.ends],
            "epochs": self.options.population * float(self.ends[-1]),
            "cut": self.cut,
        }
        return {"plan": plan, "members": [list(t) for t in self.members]}


def _ends(epochs: float, interval: float) -> list[Fraction]:
    """min((g + 1) x interval, epochs) for g = 0, 1, ...: exact decimals, so 0.1 x 3 is 0.3."""
    total, step = Fraction(str(epochs)), Fraction(str(interval))
    n = math.ceil(total / step)
    return [min(step * (g + 1), total) for g in range(n)]
