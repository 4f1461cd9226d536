"""The demo's cost: `make demo`'s sweep on warm workers against a fresh interpreter per job.

Both runs are the demo's own sweep (`digits-mlp`, every method and seed, the local launcher,
`budget.parallel` jobs at once), from an empty run store, one after the other in this process:
- `fresh`: submitit's LocalExecutor, one new Python per job (what the local launcher did
  before slurm/pool.py), each job with the same thread count as a pool worker;
- `pool`: the local launcher as it is, `budget.parallel` warm workers (slurm.pool.WarmPool).

Measured: wall clock, CPU (this process and its children), the processes started, and the
share of the CPU spent starting them (processes x the CPU of one `import torch` plus the
suite's modules, measured here in fresh interpreters). Both must select the same results.
Quick mode runs the smoke variant (one seed, tiny runs): start-up dominates it.

    python -m benchmarks.bench_demo [--quick]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.common import fmt

__all__ = ["import_cpu_s", "render", "run"]

EXPERIMENT = "digits-mlp"
TARGET_S = 120.0  # the target for `make demo` after install, on 2 cores
ROOT = Path(__file__).resolve().parent.parent
_IMPORTS = "import torch, experiments.objective, experiments.tasks, baselines, slurm"


def _cpu() -> float:
    own, kids = (
        resource.getrusage(resource.RUSAGE_SELF),
        resource.getrusage(resource.RUSAGE_CHILDREN),
    )
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def import_cpu_s(repeats: int = 3) -> float:
    """CPU seconds a fresh interpreter spends importing torch and the suite (the median)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    times = []
    for _ in range(repeats):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        subprocess.run([sys.executable, "-c", _IMPORTS], check=True, env=env, cwd=ROOT)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        times.append(after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime)
    return statistics.median(times)


def _sweep(mode: str, quick: bool, runs: Path, methods: Any = None) -> dict[str, Any]:
    """One demo sweep with the given local executor; its cost and its selected results."""
    import submitit

    from experiments.registry import get
    from experiments.runner import run_experiment
    from slurm.executors import local_threads, make_executor

    exp = get(EXPERIMENT)
    folder, parallel = runs / EXPERIMENT / ".submitit", exp.budget.parallel
    threads = local_threads(exp.launch, parallel)
    env_before = os.environ.get("OMP_NUM_THREADS")
    if mode == "fresh":  # what the local launcher was: submitit, one interpreter per job ...
        executor = submitit.AutoExecutor(folder=folder, cluster="local")
        executor.update_parameters(timeout_min=exp.launch.timeout_min)
        os.environ["OMP_NUM_THREADS"] = str(threads)  # ... with the threads a worker gets
    else:
        executor = make_executor(exp.launch, folder, name=exp.name, parallel=parallel)
    cpu0, t0 = _cpu(), time.perf_counter()
    try:
        with contextlib.ExitStack() as stack:
            if mode == "pool":
                stack.enter_context(executor)
            out = run_experiment(exp, methods, runs_dir=runs, launcher="local", smoke=quick,
                                 bar=False, executor=executor)  # fmt: skip
    finally:
        if env_before is None:
            os.environ.pop("OMP_NUM_THREADS", None)
        else:
            os.environ["OMP_NUM_THREADS"] = env_before
    wall, cpu = time.perf_counter() - t0, _cpu() - cpu0
    if mode == "fresh":  # submitit's local jobs: one log per job and process
        started = len(list(folder.glob("[0-9]*_log.out")))
    else:
        started = executor.started
    from experiments.store import verdict

    chosen = {f"{m}/{k}": verdict(o).get("val_loss") for (m, k), o in sorted(out.items())}
    return {"wall_s": wall, "cpu_s": cpu, "processes": started, "threads": threads,
            "units": len(out), "val_loss": chosen}  # fmt: skip


def run(quick: bool = False, methods: Any = None) -> dict[str, Any]:
    """Both sweeps from empty stores (`methods`: a subset of the demo's), the start-up cost of
    one process, and the ratios."""
    per_import = import_cpu_s()
    out: dict[str, Any] = {"import_cpu_s": per_import, "quick": quick, "target_s": TARGET_S,
                           "methods": list(methods) if methods else None}  # fmt: skip
    for mode in ("fresh", "pool"):
        with tempfile.TemporaryDirectory() as tmp:
            r = _sweep(mode, quick, Path(tmp), methods)
        r["startup_share"] = min(1.0, r["processes"] * per_import / max(r["cpu_s"], 1e-9))
        out[mode] = r
    out["same_results"] = out["fresh"]["val_loss"] == out["pool"]["val_loss"]
    out["wall_ratio"] = out["fresh"]["wall_s"] / out["pool"]["wall_s"]
    out["cpu_ratio"] = out["fresh"]["cpu_s"] / out["pool"]["cpu_s"]
    judged = not quick and methods is None  # the target is the whole demo's
    out["within_target"] = out["pool"]["wall_s"] <= TARGET_S if judged else None
    return out


def render(r: dict[str, Any]) -> list[str]:
    """Markdown table: each way of running the demo's sweep."""
    f = fmt
    what = "smoke sweep" if r.get("quick") else "demo sweep"
    lines = [
        f"One interpreter start (import torch and the suite): {f(r['import_cpu_s'])} CPU s.",
        "",
        f"| {what}, local launcher | wall s | CPU s | processes | start-up share of CPU |",
        "|---|---|---|---|---|",
    ]
    for mode, label in (("fresh", "a fresh interpreter per job (before)"),
                        ("pool", "warm workers (slurm/pool.py)")):  # fmt: skip
        m = r[mode]
        lines.append(f"| {label} | {f(m['wall_s'])} | {f(m['cpu_s'])} | {m['processes']} | "
                     f"{m['startup_share']:.0%} |")  # fmt: skip
    met = r.get("within_target")
    target = (
        ""
        if met is None
        else (f"; target <= {f(r['target_s'])} s wall: {'met' if met else 'NOT met'}")
    )
    same = "yes" if r["same_results"] else "NO"
    lines += ["", f"Before / after: wall {r['wall_ratio']:.2f}x, CPU {r['cpu_ratio']:.2f}x; "
              f"same selected results: {same}{target}."]  # fmt: skip
    return lines


def main(argv: list[str]) -> None:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.bench_demo")
    ap.add_argument("--quick", action="store_true", help="the smoke sweep instead of the demo")
    args = ap.parse_args(argv)
    print(json.dumps(run(args.quick), indent=2))


if __name__ == "__main__":
    main(sys.argv[1:])
