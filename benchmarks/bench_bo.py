"""The cost of one ask: BO (GP fit + EI search) and TPE with 100 observations in 15 dimensions.

The searchers run single-threaded (threadpoolctl, scoped): their matrices are at most a few
hundred rows, and on a loaded machine OpenMP/OpenBLAS threads only spin. The BO ask time with
the default threads is reported too. How well the searchers search is `bench_searchers`.

    python -m benchmarks.bench_bo [--quick]
"""

from __future__ import annotations

import json
import sys
from typing import Any

import numpy as np
import torch
from threadpoolctl import threadpool_limits

from baselines import make_searcher
from benchmarks.common import Clock, fmt, median
from stn.space import HParam, Space

__all__ = ["ask_seconds", "render", "run"]


def ask_seconds(
    method: str = "bo", n_obs: int = 100, dim: int = 15, repeats: int = 3, cpu: bool = False
) -> float:
    """Median seconds (wall, or this process's CPU with `cpu`) of the first model-based ask
    after n_obs random observations."""
    space = Space.of(*(HParam(f"x{i}", 0.0, 1.0, 0.5) for i in range(dim)))
    times = []
    for seed in range(repeats):
        s = make_searcher(method, space, seed, n_initial=n_obs)
        for _ in range(n_obs):
            a = s.ask()
            u = np.array(list(a.params.values()))
            s.tell(a.id, float(((u - 0.3) ** 2).sum() + 0.1 * np.sin(10 * u).sum()))
        with Clock() as c:
            s.ask()
        times.append(c.cpu if cpu else c.wall)
    return median(times)


def run(quick: bool = False) -> dict[str, Any]:
    repeats = 1 if quick else 3
    with threadpool_limits(limits=1):
        out = {"ask_seconds_100obs_15d": ask_seconds("bo", repeats=repeats),
               "ask_cpu_seconds_100obs_15d": ask_seconds("bo", repeats=repeats, cpu=True),
               "tpe_ask_seconds_100obs_15d": ask_seconds("tpe", repeats=repeats)}  # fmt: skip
    out["ask_seconds_100obs_15d_default_threads"] = ask_seconds("bo", repeats=1)
    out["torch_threads_default"] = torch.get_num_threads()
    out["target_ask_seconds"] = 1.0
    return out


def render(r: dict[str, Any]) -> list[str]:
    """The ask times, one line."""
    bo, tpe = r["ask_seconds_100obs_15d"], r.get("tpe_ask_seconds_100obs_15d")
    threads, cpu = r["ask_seconds_100obs_15d_default_threads"], r.get("ask_cpu_seconds_100obs_15d")
    return [f"One ask with 100 observations in 15 dimensions: BO {fmt(bo)} s (one thread, "
            f"{fmt(cpu)} s of CPU; {fmt(threads)} s with the default threads), target < "
            f"{fmt(r['target_ask_seconds'])} s; TPE {fmt(tpe)} s."]  # fmt: skip


if __name__ == "__main__":
    print(json.dumps(run(quick="--quick" in sys.argv[1:]), indent=2))
