"""Random search, TPE and BO on standard test functions, beside Optuna's samplers.

Protocol (the one Optuna's numbers below were taken with): Branin (2-D, minimum 0.397887) and
Hartmann-6 (6-D, minimum -3.32237), 30 evaluations one at a time, seeds 0-9, the median over
seeds of the best value found. Each searcher runs with its defaults (BO: 5 Sobol trials
first; TPE: 10, as Optuna's). Also reported: the share of the model-based trials with a
coordinate exactly on a face of the box (Hartmann-6's and Branin's minima are inside it), and
the seconds each method took.

Optuna (`pip install optuna`, or the `bench` extra) is imported only here and only if
installed: its GPSampler, TPESampler and RandomSampler run in the same process with the same
seeds. Without it, the figures Optuna 5.0.0 gave in this protocol are shown as a reference.

    python -m benchmarks.bench_searchers [--quick]
"""

from __future__ import annotations

import importlib.util
import json
import math
import sys
from collections.abc import Callable
from typing import Any

import numpy as np
from threadpoolctl import threadpool_limits

from baselines import Budget, make_searcher
from benchmarks.common import Clock, fmt, median
from stn.space import HParam, Space

__all__ = ["OPTUNA_REFERENCE", "PROBLEMS", "branin", "hartmann6", "render", "run"]

BRANIN_MIN, HARTMANN6_MIN = 0.397887, -3.32237
_A = np.array([[10, 3, 17, 3.5, 1.7, 8], [0.05, 10, 17, 0.1, 8, 14],
               [3, 3.5, 1.7, 10, 17, 8], [17, 8, 0.05, 10, 0.1, 14]])  # fmt: skip
_P = 1e-4 * np.array([[1312, 1696, 5569, 124, 8283, 5886], [2329, 4135, 8307, 3736, 1004, 9991],
                      [2348, 1451, 3522, 2883, 3047, 6650],
                      [4047, 8828, 8732, 5743, 1091, 381]])  # fmt: skip
_ALPHA = np.array([1.0, 1.2, 3.0, 3.2])


def branin(p: dict[str, float]) -> float:
    x1, x2 = p["x1"], p["x2"]
    b, c, t = 5.1 / (4 * math.pi**2), 5 / math.pi, 1 / (8 * math.pi)
    return (x2 - b * x1**2 + c * x1 - 6) ** 2 + 10 * (1 - t) * math.cos(x1) + 10


def hartmann6(p: dict[str, float]) -> float:
    x = np.array([p[f"x{i}"] for i in range(1, 7)])
    return float(-_ALPHA @ np.exp(-(_A * (x - _P) ** 2).sum(1)))


PROBLEMS = {
    "branin": (Space.of(HParam("x1", -5.0, 10.0, 2.5), HParam("x2", 0.0, 15.0, 7.5)), branin,
               BRANIN_MIN),
    "hartmann6": (Space.of(*(HParam(f"x{i}", 0.0, 1.0, 0.5) for i in range(1, 7))), hartmann6,
                  HARTMANN6_MIN),
}  # fmt: skip
OURS = ("random", "tpe", "bo")
OPTUNA = {"optuna-random": "RandomSampler", "optuna-tpe": "TPESampler", "optuna-gp": "GPSampler"}
# Optuna 5.0.0, this protocol, measured on the 2-core test machine: median best of seeds 0-9
OPTUNA_REFERENCE = {
    "version": "5.0.0",
    "branin": {"optuna-random": 1.6071, "optuna-tpe": 0.5152, "optuna-gp": 0.4103},
    "hartmann6": {"optuna-random": -1.1505, "optuna-tpe": -2.7371, "optuna-gp": -3.2053},
}
Run = tuple[float, list[bool]]  # best value; per model-based trial, whether it touched a face


def _on_face(space: Space, params: dict[str, float]) -> bool:
    return any(u in (0.0, 1.0) for u in space.to_unit(params))


def ours(method: str, space: Space, f: Callable, seed: int, evals: int) -> Run:
    """The best value our searcher `method` finds in `evals` sequential evaluations."""
    s = make_searcher(method, space, seed, budget=Budget(trials=evals))
    first = getattr(s.options, "n_initial", evals)  # trials before the model
    faces = []
    while not s.done:
        a = s.ask()
        s.tell(a.id, f(a.params))
        if a.id >= first:
            faces.append(_on_face(space, a.params))
    return s.best[2], faces


def optuna_run(method: str, space: Space, f: Callable, seed: int, evals: int) -> Run:
    """The same with one of Optuna's samplers (their defaults; 10 startup trials for GP, TPE)."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    sampler = getattr(optuna.samplers, OPTUNA[method])(seed=seed)
    study = optuna.create_study(sampler=sampler)
    faces = []

    def objective(trial: Any) -> float:
        p = {h.name: trial.suggest_float(h.name, h.low, h.high) for h in space}
        if trial.number >= 10 and method != "optuna-random":
            faces.append(_on_face(space, p))
        return f(p)

    study.optimize(objective, n_trials=evals)
    return study.best_value, faces


def run(quick: bool = False) -> dict[str, Any]:
    seeds, evals = (3, 15) if quick else (10, 30)
    have_optuna = importlib.util.find_spec("optuna") is not None
    methods = OURS + (tuple(OPTUNA) if have_optuna else ())
    out: dict[str, Any] = {"seeds": seeds, "evaluations": evals, "functions": {}}
    if have_optuna:
        import optuna

        out["optuna"] = optuna.__version__
    with threadpool_limits(limits=1):  # small matrices: threads only spin (see baselines/bo.py)
        for name, (space, f, fmin) in PROBLEMS.items():
            row: dict[str, Any] = {"minimum": fmin}
            for method in methods:
                go = optuna_run if method in OPTUNA else ours
                with Clock() as c:
                    runs = [go(method, space, f, k, evals) for k in range(seeds)]
                faces = [x for _, fs in runs for x in fs]
                row[method] = {"median_best": median([b for b, _ in runs]),
                               "best": [b for b, _ in runs], "seconds": round(c.wall, 2),
                               "face_share": float(np.mean(faces)) if faces else None}  # fmt: skip
            out["functions"][name] = row
    return out


def render(r: dict[str, Any]) -> list[str]:
    """Median best per method and function, Optuna's beside ours (measured or the reference);
    the share of model-based trials on a face of the box."""
    names = list(r["functions"])
    measured = "optuna" in r
    cols = [*OURS, *OPTUNA]
    head = " | ".join(f"{n}: median best | {n}: on a face" for n in names)
    lines = [f"| method | {head} |", "|---|" + "---|" * (2 * len(names))]
    for m in cols:
        cells = []
        for n in names:
            got = r["functions"][n].get(m)
            if got is not None:
                cells += [fmt(got["median_best"], 4), fmt(got["face_share"], 2)]
            elif m in OPTUNA and n in OPTUNA_REFERENCE:  # not installed: the reference figure
                cells += [fmt(OPTUNA_REFERENCE[n][m], 4) + "*", "-"]
            else:
                cells += ["-", "-"]
        lines.append(f"| {m} | " + " | ".join(cells) + " |")
    mins = ", ".join(f"{n} {fmt(r['functions'][n]['minimum'], 6)}" for n in names)
    src = (f"Optuna {r['optuna']} measured in the same run" if measured else
           f"*: Optuna {OPTUNA_REFERENCE['version']} in this protocol on the 2-core test machine "
           "(Optuna is not installed here: `pip install optuna` to measure it)")  # fmt: skip
    lines += ["", f"Seeds 0-{r['seeds'] - 1}, {r['evaluations']} evaluations one at a time, "
              f"median of the best value found (minima: {mins}); 'on a face': the share of "
              f"model-based trials with a coordinate exactly on a bound. {src}."]  # fmt: skip
    return lines


if __name__ == "__main__":
    print(json.dumps(run(quick="--quick" in sys.argv[1:]), indent=2))
