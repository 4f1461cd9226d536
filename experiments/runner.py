"""Run an experiment: STN runs, fixed-loop variants and searches for each method and seed.

    exp = resolve(registry.get("digits-mlp"), smoke=True, overrides=["budget.trials=3"])
    results = run_experiment(exp, ["stn", "random"], [0], "runs", launcher="debug")

Everything is checked before anything is written (methods, seeds, searcher options, run folders
left by a different spec); then one loop submits and polls every unit of work through one
submitit executor: STN runs and variants are one job each (all STN seeds as one job array on
SLURM), searches are driven from here (experiments.driver). Rerunning the same command reuses
finished runs and resumes the rest.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from . import driver
from .driver import INDEPENDENT, SUMMARY, Search, check_searcher, collect, guarded
from .progress import Progress
from .spec import Experiment, SpecError, apply_overrides, derive_seed, to_dict
from .spec import smoke as smoke_spec
from .store import RunDir, run_path

__all__ = ["STN_METHODS", "WANDB_MODES", "resolve", "run_experiment", "stn_job", "valid_methods"]

STN_METHODS = ("stn", "delta-stn")
WANDB_MODES = ("off", "offline", "online")


def valid_methods(exp: Experiment) -> tuple[str, ...]:
    """STN methods, every registered searcher, and this experiment's variants."""
    from baselines import SEARCHERS

    stn = STN_METHODS + tuple(m for m in exp.stn_inits if m not in STN_METHODS)
    return stn + tuple(SEARCHERS) + tuple(v for v in exp.variants if v not in SEARCHERS)


def resolve(
    exp: Experiment,
    *,
    smoke: bool = False,
    overrides: Sequence[str] = (),
    launcher: str | None = None,
) -> Experiment:
    """The spec that runs: smoke overrides first, then the user's, then the launcher."""
    if smoke:
        exp = smoke_spec(exp)
    exp = apply_overrides(exp, list(overrides))
    if launcher is not None:
        exp = apply_overrides(exp, [f"launch.launcher={launcher}"])
    return exp


def stn_job(
    objective: Callable[..., dict],
    exp: Experiment,
    method: str,
    seed: int,
    run_dir: Path,
    wandb: str,
) -> dict[str, Any]:
    """The function an STN run's job runs: objective.run_stn, guarded."""
    return guarded(objective, run_dir, None, exp, method, seed, run_dir, wandb=wandb)


class SingleRun:
    """One job: an STN run or a variant, started once the run it needs (if any) is done."""

    def __init__(
        self,
        exp: Experiment,
        method: str,
        seed: int,
        runs_dir: Path,
        call: tuple[Callable[..., Any], tuple],
        needs: Path | None,
    ) -> None:
        self.method, self.seed, self.call, self.needs = method, seed, call, needs
        self.dir = run_path(runs_dir, exp.name, method, seed)
        self.record: dict[str, Any] | None = RunDir(self.dir).read_result()
        self.inflight: dict[int, Any] = {}

    @property
    def ready(self) -> bool:
        return (
            self.record is None
            and not self.inflight
            and (self.needs is None or RunDir(self.needs).done)
        )

    @property
    def finished(self) -> bool:
        return self.record is not None

    def poll(self) -> int:
        job = self.inflight.get(0)
        if job is None or not job.done():
            return 0
        self.record = collect(job, self.dir, None)
        self.inflight.clear()
        return 1


def _check_stale(path: Path, then: Any, exp: Experiment, keys: Sequence[tuple[str, ...]]) -> None:
    """Refuse to reuse a run folder written with a different spec (e.g. a --smoke run);
    `then` is the spec recorded there (spec.json's "experiment", search.json's "spec")."""
    if not isinstance(then, dict):
        return
    now = to_dict(exp)
    changed = [".".join(k) for k in keys if _get(now, k) != _get(then, k)]
    if changed:
        raise SpecError(
            f"{path} holds runs of a different spec (changed: {', '.join(changed)}); "
            "pass another --runs-dir or remove that folder"
        )


def _get(d: Any, parts: Sequence[str]) -> Any:
    for part in parts:
        d = d.get(part) if isinstance(d, dict) else None
    return json.loads(json.dumps(d))  # tuples and lists compare equal


def _plan(
    exp: Experiment,
    methods: Sequence[str],
    runs: Path,
    objectives: dict[str, Callable],
    wandb: str,
    bar: bool | None,
) -> list:
    """Check everything and build the units of work; writes nothing."""
    from baselines import SEARCHERS

    valid = valid_methods(exp)
    for m in methods:
        if m not in valid:
            raise SpecError(f"unknown method {m!r}; valid: {', '.join(valid)}")
    units: list = []
    for m in methods:
        if m in SEARCHERS and m not in exp.variants:
            check_searcher(exp, m)
        for k in exp.seeds:
            d = run_path(runs, exp.name, m, k)
            if m in STN_METHODS or m in exp.stn_inits:
                stored = (RunDir(d).read_spec() or {}).get("experiment")
                _check_stale(
                    d, stored, exp, (("task",), ("stn",), ("stn_inits", m), ("searchers", m))
                )
                args = (objectives["stn"], exp, m, derive_seed(k, m), d, wandb)
                units.append(SingleRun(exp, m, k, runs, (stn_job, args), None))
            elif m in exp.variants:
                units.append(_variant(exp, m, k, runs, methods, objectives["trial"], wandb))
            else:
                summary = d / SUMMARY
                stored = json.loads(summary.read_text()) if summary.exists() else {}
                _check_stale(d, stored.get("spec"), exp, (("task",), ("searchers", m)))
                search = Search(
                    exp,
                    m,
                    k,
                    runs,
                    objective=objectives["trial"],
                    wandb=wandb,
                    launcher=exp.launch.launcher,
                )
                total = None if driver.finite_plan(m) else exp.budget.trials
                search.progress = Progress(f"{m} seed{k}", total, bar=bar)
                units.append(search)
    return units


def _variant(
    exp: Experiment,
    name: str,
    seed: int,
    runs: Path,
    methods: Sequence[str],
    objective: Callable[..., dict],
    wandb: str,
) -> SingleRun:
    from .driver import trial_job

    v, d = exp.variants[name], run_path(runs, exp.name, name, seed)
    stored = (RunDir(d).read_spec() or {}).get("experiment")
    _check_stale(d, stored, exp, (("task",), ("variants", name)))
    needs = run_path(runs, exp.name, v.from_method, seed) if v.from_method else None
    if needs is not None and v.from_method not in methods and not RunDir(needs).done:
        raise SpecError(
            f"variant {name!r} needs the finished {v.from_method!r} run of seed {seed}; "
            f"add {v.from_method} to --methods or run it first"
        )
    args = (objective, exp, name, derive_seed(seed, name), None, d, None, None, v, wandb)
    return SingleRun(exp, name, seed, runs, (trial_job, args), needs)


def run_experiment(
    exp: Experiment,
    methods: Sequence[str] | None = None,
    seeds: Sequence[int] | None = None,
    runs_dir: str | Path = "runs",
    launcher: Any = None,
    wandb: str | None = None,
    smoke: bool = False,
    *,
    overrides: Sequence[str] = (),
    objectives: dict[str, Callable] | None = None,
    bar: bool | None = None,
) -> dict[tuple[str, int], dict[str, Any]]:
    """Run (or resume) `methods` x `seeds` of `exp`; returns (method, seed) -> the run's record
    or the search's summary. `launcher` is a launcher name or a slurm.executors.Launch;
    `wandb` None means offline on SLURM (compute nodes rarely reach the internet), else off.
    Raises SpecError (nothing written) for bad input."""
    from slurm.executors import Launch, make_executor

    if isinstance(launcher, Launch):
        exp, launcher = dataclasses.replace(exp, launch=launcher), None
    exp = resolve(exp, smoke=smoke, overrides=overrides, launcher=launcher)
    if seeds is not None:
        exp = apply_overrides(exp, {"seeds": tuple(seeds)})
    methods = tuple(methods) if methods is not None else exp.methods
    if not methods:
        raise SpecError("the method list is empty")
    if wandb is None:
        wandb = "offline" if exp.launch.launcher == "slurm" else "off"
    if wandb not in WANDB_MODES:
        raise SpecError(f"unknown wandb mode {wandb!r}; valid: {', '.join(WANDB_MODES)}")
    runs = Path(runs_dir)
    objectives = {**_default_objectives(), **(objectives or {})}
    units = _plan(exp, methods, runs, objectives, wandb, bar)
    launch = exp.launch
    executor = make_executor(launch, runs / exp.name / ".submitit", name=exp.name)
    singles = [u for u in units if isinstance(u, SingleRun)]
    progress = Progress(f"{exp.name} runs", len(singles), bar=bar) if singles else None
    try:
        _drive(units, executor, launch, exp.budget.parallel, progress)
    except KeyboardInterrupt:
        if launch.launcher != "slurm":  # local jobs would outlive us; SLURM ones are re-attached
            for u in units:
                for job in u.inflight.values():
                    getattr(job, "cancel", lambda **_: None)(check=False)
        raise
    finally:
        for u in units:
            if isinstance(u, Search):
                u.progress.close()
        if progress is not None:
            progress.close()
    return {
        (u.method, u.seed): (u.record if isinstance(u, SingleRun) else u.summary()) for u in units
    }


def _drive(
    units: list, executor: Any, launch: Any, parallel: int, progress: Progress | None
) -> None:
    """Submit what may start, tell what finished, until every unit is finished.

    Local jobs share this machine: at most `parallel` run at once in all. On SLURM each search
    keeps `parallel` trials in flight (independent searchers: whole arrays, the array's own
    parallelism limiting them), and STN runs of all seeds go as one job array."""
    local = launch.launcher == "local"
    cap = parallel if local else math.inf
    while True:
        active = [u for u in units if not u.finished]
        if not active:
            return
        room = cap - sum(len(u.inflight) for u in units)
        ready = [u for u in active if isinstance(u, SingleRun) and u.ready]
        ready = ready[: int(min(max(room, 0), len(ready)))]
        if ready:
            _array_parallelism(executor, launch, launch.array_parallelism)
            jobs = driver.submit(executor, [u.call for u in ready], launch.max_array_size)
            for u, job in zip(ready, jobs):
                u.inflight[0] = job
            room -= len(ready)
        for u in active:
            if isinstance(u, Search):
                limit = parallel
                if launch.launcher == "slurm" and u.method in INDEPENDENT:
                    limit = launch.max_array_size
                limit = int(min(limit, len(u.inflight) + max(room, 0)))
                _array_parallelism(executor, launch, parallel)
                room -= u.fill(executor, limit)
        told = 0
        for u in active:
            n = u.poll()
            if n and isinstance(u, SingleRun) and progress is not None:
                progress.update(_run_line(u))
            told += n
        if not told and any(u.inflight for u in units):
            time.sleep(driver.poll_interval(launch.launcher))


def _array_parallelism(executor: Any, launch: Any, n: int) -> None:
    """Set how many tasks of the next SLURM job array may run at once."""
    if launch.launcher == "slurm":
        executor.update_parameters(slurm_array_parallelism=int(n))


def _run_line(u: SingleRun) -> str:
    rec = u.record or {}
    val = rec.get("val_loss")
    loss = f" val_loss={val:.4g}" if isinstance(val, (int, float)) else ""
    err = f": {rec['error']}" if rec.get("error") else ""
    return f"{u.method} seed{u.seed} {rec.get('status')}{loss}{err}"


def _default_objectives() -> dict[str, Callable[..., dict]]:
    try:
        from .objective import run_stn, run_trial
    except ImportError:  # TODO(framework): drop once experiments.objective lands
        return {}
    return {"stn": run_stn, "trial": run_trial}


def wandb_offline_dirs(runs_dir: str | Path, experiment: str) -> list[Path]:
    """Offline W&B runs left under an experiment's run folders (for `wandb sync`)."""
    return sorted((Path(runs_dir) / experiment).glob("**/wandb/offline-run-*"))
