"""Hyperband (Li et al., JMLR 2018): successive halving over brackets of random configurations.

With R the most epochs one configuration gets and eta the halving rate:
  s_max = the largest s with eta**s <= R       (integers: a float log undercounts at exact powers,
                                                 int(log(243) / log(3)) == 4 but 3**5 == 243)
  bracket s = s_max..0:  n = ceil((s_max + 1) / (s + 1) * eta**s) configurations, r = R / eta**s
  rung i = 0..s:         n_i = floor(n / eta**i) trials of r_i = r * eta**i epochs each,
                         the best floor(n_i / eta) go on to rung i + 1.
Budgets stay exact fractions (R = 100, eta = 3 gives r = 100/81) until handed out as floats.
Rungs run one at a time: `ask` returns None while a rung waits for its results.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from typing import Any

from stn.space import Space

from .base import Searcher, Suggestion, Trial, random_params, require_bounded

__all__ = ["Bracket", "Hyperband", "hyperband_plan", "max_bracket"]

ORDERS = ("descending", "ascending")


@dataclass(frozen=True)
class Bracket:
    s: int
    n: int  # configurations started
    r: Fraction  # epochs of each in the first rung
    rungs: tuple[tuple[int, Fraction], ...]  # (n_i trials, r_i epochs) for i = 0..s


def max_bracket(R: int, eta: int) -> int:
    """The largest s with eta**s <= R, in integer arithmetic."""
    s = 0
    while eta ** (s + 1) <= R:
        s += 1
    return s


def hyperband_plan(R: int, eta: int) -> list[Bracket]:
    """The brackets s = s_max..0 of Li et al. (2018), Algorithm 1."""
    s_max = max_bracket(R, eta)
    out = []
    for s in range(s_max, -1, -1):
        n = -(-(s_max + 1) * eta**s // (s + 1))  # ceil of an exact ratio
        r = Fraction(R, eta**s)
        rungs = tuple((n // eta**i, r * eta**i) for i in range(s + 1))
        out.append(Bracket(s, n, r, rungs))
    return out


class Hyperband(Searcher):
    name = "hyperband"
    finite_plan = True
    resumes_from_parent = True  # promotions continue their parent's checkpoint (option resume)

    @dataclass(frozen=True)
    class Options(Searcher.Options):
        R: int = 81  # most epochs (or the experiment's budget unit) one configuration gets
        eta: int = 3  # keep the best 1/eta of each rung
        order: str = "descending"  # brackets s_max..0 (the paper) or "ascending" 0..s_max
        resume: bool = True  # promoted trials continue their checkpoint; False: retrain
        rounds: int = 1  # passes over all brackets

    def __init__(self, space: Space, seed: int, **options: Any) -> None:
        super().__init__(space, seed, **options)
        o = self.options
        for key, low in (("R", 1), ("eta", 2), ("rounds", 1)):
            self._check_int(key, getattr(o, key), low)
        self._check_choice("order", o.order, ORDERS)
        require_bounded(space)
        self.brackets = hyperband_plan(o.R, o.eta)
        if o.order == "ascending":
            self.brackets.reverse()
        self._queue = [b for _ in range(o.rounds) for b in self.brackets]  # brackets to run
        self._rung = 0  # index of the current rung in self._queue[0]
        self._members: list[int | None] = []  # the rung's parent trial ids (None: a new config)
        self._rung_ids: list[int] = []  # trials asked in the current rung
        self._start_bracket()

    def plan(self) -> list[dict[str, Any]]:
        """The bracket table in run order, with the epochs each bracket costs."""
        rows = []
        for b in self.brackets:
            prev, epochs = Fraction(0), Fraction(0)
            for n_i, r_i in b.rungs:
                epochs += n_i * (r_i - prev if self.options.resume else r_i)
                prev = r_i
            rungs = [{"n": n_i, "r": float(r_i), "r_exact": str(r_i)} for n_i, r_i in b.rungs]
            row = {"s": b.s, "n": b.n, "r": float(b.r), "r_exact": str(b.r), "rungs": rungs}
            rows.append({**row, "epochs": float(epochs)})
        return rows

    def _start_bracket(self) -> None:
        self._rung, self._rung_ids = 0, []
        self._members = [None] * self._queue[0].n if self._queue else []

    def _ask(self, trial_id: int) -> Suggestion | None:
        if not self._queue or len(self._rung_ids) == len(self._members):
            return None  # finished, or the rung waits for its results
        parent = self._members[len(self._rung_ids)]
        r_i = float(self._queue[0].rungs[self._rung][1])
        if parent is None:
            s = Suggestion(trial_id, random_params(self.space, self.seed, trial_id), r_i)
        else:
            resume = parent if self.options.resume else None
            s = Suggestion(trial_id, dict(self.trials[parent].suggestion.params), r_i, resume)
        self._rung_ids.append(trial_id)
        return s

    def _tell(self, trial: Trial) -> None:
        # promote once the whole rung is asked and told; ties go to the earlier trial
        if len(self._rung_ids) < len(self._members):
            return
        if any(self.trials[i].status is None for i in self._rung_ids):
            return
        ranked = sorted(self._rung_ids, key=lambda i: (self.trials[i].loss, i))
        bracket = self._queue[0]
        if self._rung < bracket.s:
            self._rung += 1
            self._members = ranked[: bracket.rungs[self._rung][0]]
            self._rung_ids = []
        else:
            self._queue.pop(0)
            self._start_bracket()

    def _finished(self) -> bool:
        return not self._queue

    def _describe(self) -> dict[str, Any]:
        return {"plan": self.plan(), "s_max": max_bracket(self.options.R, self.options.eta)}
