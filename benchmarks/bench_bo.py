"""Bayesian optimisation vs random search on standard test functions, and the cost of one ask.

- Branin (2-D, minimum 0.397887) and Hartmann-6 (6-D, minimum -3.32237): the median over 10
  seeds of the best value after 30 evaluations, BO (5 random points first) vs random search.
- The seconds one BO `ask` takes with 100 observations in 15 dimensions (target: under 1 s).

The searchers run single-threaded (threadpoolctl, scoped): their matrices are at most a few
hundred rows, and on a loaded machine OpenMP/OpenBLAS threads only spin. The ask time with the
default threads is reported too.

    python -m benchmarks.bench_bo [--quick]
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from threadpoolctl import threadpool_limits

from baselines import Budget, make_searcher
from benchmarks.common import Clock, fmt, median
from stn.space import HParam, Space

__all__ = ["branin", "hartmann6", "render", "run"]

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


def best_after(method: str, space: Space, f: Callable, seed: int, evals: int, **opts) -> float:
    s = make_searcher(method, space, seed, budget=Budget(trials=evals), **opts)
    while not s.done:
        a = s.ask()
        s.tell(a.id, f(a.params))
    return s.best[2]


def ask_seconds(n_obs: int = 100, dim: int = 15, repeats: int = 3) -> float:
    """Median seconds of the first model-based ask after n_obs random observations."""
    space = Space.of(*(HParam(f"x{i}", 0.0, 1.0, 0.5) for i in range(dim)))
    times = []
    for seed in range(repeats):
        bo = make_searcher("bo", space, seed, n_initial=n_obs)
        for _ in range(n_obs):
            a = bo.ask()
            u = np.array(list(a.params.values()))
            bo.tell(a.id, float(((u - 0.3) ** 2).sum() + 0.1 * np.sin(10 * u).sum()))
        with Clock() as c:
            bo.ask()
        times.append(c.wall)
    return median(times)


def run(quick: bool = False) -> dict:
    seeds, evals = (3, 15) if quick else (10, 30)
    out: dict = {"seeds": seeds, "evaluations": evals, "bo_n_initial": 5, "functions": {}}
    with threadpool_limits(limits=1):
        for name, (space, f, fmin) in PROBLEMS.items():
            row = {"minimum": fmin}
            for method, opts in (("random", {}), ("bo", {"n_initial": 5})):
                with Clock() as c:
                    best = [best_after(method, space, f, k, evals, **opts) for k in range(seeds)]
                row[method] = {"median_best": median(best), "best": best,
                               "seconds": round(c.wall, 2)}  # fmt: skip
            out["functions"][name] = row
        out["ask_seconds_100obs_15d"] = ask_seconds(repeats=1 if quick else 3)
    out["ask_seconds_100obs_15d_default_threads"] = ask_seconds(repeats=1)
    out["torch_threads_default"] = torch.get_num_threads()
    out["target_ask_seconds"] = 1.0
    return out


def render(r: dict[str, Any]) -> list[str]:
    """A Markdown table of both searchers' median best per function; the ask time."""
    lines = ["| function | minimum | random: median best | BO: median best |", "|---|---|---|---|"]
    for name, f in r["functions"].items():
        lines.append(f"| {name} | {fmt(f['minimum'])} | {fmt(f['random']['median_best'])} | "
                     f"{fmt(f['bo']['median_best'])} |")  # fmt: skip
    ask = r["ask_seconds_100obs_15d"]
    lines += ["", f"{r['seeds']} seeds, {r['evaluations']} evaluations. One BO ask with 100 "
              f"observations in 15 dimensions: {fmt(ask)} s (one thread; "
              f"{fmt(r['ask_seconds_100obs_15d_default_threads'])} s with the default threads); "
              f"target < {fmt(r['target_ask_seconds'])} s."]  # fmt: skip
    return lines


if __name__ == "__main__":
    print(json.dumps(run(quick="--quick" in sys.argv[1:]), indent=2))
