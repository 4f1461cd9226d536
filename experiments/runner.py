"""Run an experiment: STN runs, fixed-loop variants and searches for each method and seed.

    results = run_experiment(registry.get("digits-mlp"), ["stn", "random"], [0], "runs",
                             launcher="debug", smoke=True, overrides=["budget.trials=3"])

Everything is checked before anything is written (methods, seeds, searcher options, run folders
left by a different spec); then one loop submits and polls every unit of work through one
submitit executor: an STN run or a variant is one job (STN runs of all seeds go as one job array
on SLURM), a search is driven from here (experiments.driver). Rerunning the same command reuses
finished runs and resumes the rest.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from . import driver
from .driver import SUMMARY, Search
from .jobs import Call, collect, stn_job, submit, trial_job
from .progress import Progress
from .spec import Experiment, SpecError, apply_overrides, derive_seed, to_dict
from .spec import smoke as smoke_spec
from .store import RunDir, run_path
from .wandb_mirror import MODES

__all__ = [
    "STN_METHODS",
    "WANDB_MODES",
    "resolve",
    "run_experiment",
    "valid_methods",
    "wandb_offline_dirs",
]

STN_METHODS = ("stn", "delta-stn")
WANDB_MODES = MODES


def valid_methods(exp: Experiment) -> tuple[str, ...]:
    """STN methods (with the experiment's extra STN starts), every registered searcher, and
    the experiment's variants."""
    from baselines import SEARCHERS

    stn = STN_METHODS + tuple(m for m in exp.stn_inits if m not in STN_METHODS)
    return stn + tuple(SEARCHERS) + tuple(v for v in exp.variants if v not in SEARCHERS)


def resolve(
    exp: Experiment, *, smoke: bool = False, overrides: Sequence[str] = (), launcher: Any = None
) -> Experiment:
    """The spec that runs: the smoke overrides, then the user's, then the launcher (a name or
    a slurm.executors.Launch)."""
    if smoke:
        exp = smoke_spec(exp)
    exp = apply_overrides(exp, list(overrides))
    if isinstance(launcher, str):
        exp = apply_overrides(exp, [f"launch.launcher={launcher}"])
    elif launcher is not None:
        exp = dataclasses.replace(exp, launch=launcher)
    return exp


class SingleRun:
    """One job: an STN run or a variant, started once the run it needs (if any) is done; with
    the local launcher also a whole search (driver.search_job)."""

    def __init__(self, method: str, seed: int, folder: Path, call: Call, needs: Path | None):
        self.method, self.seed, self.dir, self.call, self.needs = method, seed, folder, call, needs
        self.record: dict[str, Any] | None = RunDir(folder).read_result()  # reused if done
        if call[0] is driver.search_job:  # a finished search is reused from its summary
            summary = _read_json(folder / SUMMARY) or {}
            self.record = (
                {"status": "ok", **summary["best"]}
                if summary.get("best") and summary.get("finished")
                else None
            )
        self.inflight: dict[int, Any] = {}

    def reopen(self) -> None:
        """A run (not a whole search) that failed, e.g. its job died, runs again from its
        checkpoint: its result is set aside as failed.json. Called once every check passed."""
        if self.call[0] is driver.search_job or (self.record or {}).get("status") != "failed":
            return
        RunDir(self.dir).reopen_failed()
        print(f"{self.method} seed{self.seed}: resuming a failed run "
              f"({self.record.get('error') or 'failed'})", file=sys.stderr, flush=True)  # fmt: skip
        self.record = None

    @property
    def ready(self) -> bool:
        waiting = self.needs is not None and not RunDir(self.needs).done
        return self.record is None and not self.inflight and not waiting

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


def _check_stale(folder: Path, then: Any, exp: Experiment, keys: Sequence[tuple[str, ...]]):
    """Refuse to reuse a run folder written with a different spec (e.g. by a --smoke run).
    `then` is the spec recorded there (spec.json's "experiment", search.json's "spec"); budgets
    and launch settings may differ (a search can be extended)."""
    if not isinstance(then, dict):
        return
    now = to_dict(exp)
    changed = [".".join(k) for k in keys if k[0] in then and _get(now, k) != _get(then, k)]
    if changed:
        raise SpecError(
            f"{folder} holds runs of a different spec (changed: {', '.join(changed)}); "
            "pass another --runs-dir or remove that folder"
        )


def _get(d: Any, parts: Sequence[str]) -> Any:
    for part in parts:
        d = d.get(part) if isinstance(d, dict) else None
    return json.loads(json.dumps(d))  # tuples and lists compare equal


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def _recorded(path: Path, key: str) -> Any:
    return (_read_json(path) or {}).get(key)


def _plan(
    exp: Experiment,
    methods: Sequence[str],
    runs: Path,
    objectives: dict[str, Callable],
    wandb: str,
    bar: bool | None,
) -> list:
    """Check everything and build the units of work (SingleRun or Search); writes nothing."""
    from baselines import SEARCHERS

    valid = valid_methods(exp)
    for m in methods:
        if m not in valid:
            raise SpecError(f"unknown method {m!r}; valid: {', '.join(valid)}")
    check_data = getattr(exp.task, "check_data", None)
    if check_data is not None:  # a missing dataset: one line, before any job or folder
        check_data()
    units: list = []
    for m in methods:
        is_stn, is_variant = m in STN_METHODS or m in exp.stn_inits, m in exp.variants
        if m in SEARCHERS and not is_variant:
            driver.check_searcher(exp, m)
        for k in exp.seeds:
            d = run_path(runs, exp.name, m, k)
            if is_stn:
                keys = (("task",), ("stn",), ("stn_inits", m), ("searchers", m))
                _check_stale(d, _recorded(d / "spec.json", "experiment"), exp, keys)
                args = (objectives["stn"], exp, m, derive_seed(k, m), d, wandb)
                units.append(SingleRun(m, k, d, (stn_job, args, {}), None))
            elif is_variant:
                units.append(_variant(exp, m, k, d, methods, objectives["trial"], wandb))
            else:
                keys = (("task",), ("searchers", m))
                _check_stale(d, _recorded(d / SUMMARY, "spec"), exp, keys)
                search = Search(
                    exp,
                    m,
                    k,
                    runs,
                    objective=objectives["trial"],
                    wandb=wandb,
                    launcher=exp.launch.launcher,
                )
                if exp.launch.launcher == "local":  # one process per search, not per trial
                    args = (exp, m, k, runs, objectives["trial"], wandb)
                    units.append(SingleRun(m, k, d, (driver.search_job, args, {}), None))
                    continue
                total = None if driver.finite_plan(m) else exp.budget.trials
                search.progress = Progress(f"{m} seed{k}", total, bar=bar)
                units.append(search)
    return units


def _variant(
    exp: Experiment,
    name: str,
    seed: int,
    d: Path,
    methods: Sequence[str],
    objective: Callable[..., dict],
    wandb: str,
) -> SingleRun:
    v = exp.variants[name]
    _check_stale(d, _recorded(d / "spec.json", "experiment"), exp, (("task",), ("variants", name)))
    needs = d.parent.parent / v.from_method / d.name if v.from_method else None
    if needs is not None and v.from_method not in methods and not RunDir(needs).done:
        raise SpecError(
            f"variant {name!r} needs the finished {v.from_method!r} run of seed {seed}; "
            f"add {v.from_method} to --methods or run it first"
        )
    args = (objective, exp, name, derive_seed(seed, name), None, d)
    kwargs = {"epochs": None, "resume_from": None, "variant": v, "wandb": wandb}
    return SingleRun(name, seed, d, (trial_job, args, kwargs), needs)


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
    """Run (or resume) `methods` x `seeds` of `exp` (default: the spec's); returns
    (method, seed) -> the run's result record or the search's summary.

    `launcher`: a launcher name or a slurm.executors.Launch (default: exp.launch). `wandb` None
    means offline on SLURM (compute nodes rarely reach the internet; `wandb sync` later), off
    elsewhere. `objectives` replaces {"stn": run_stn, "trial": run_trial} (tests). Bad input
    raises SpecError (or another ValueError subclass) before anything is written."""
    from slurm.executors import make_executor

    exp = resolve(exp, smoke=smoke, overrides=overrides, launcher=launcher)
    if seeds is not None:
        exp = apply_overrides(exp, {"seeds": tuple(seeds)})
    if methods is None:
        methods = exp.methods
    else:  # checked as the spec's own list is (empty, repeated); the spec keeps the whole list
        methods = apply_overrides(exp, {"methods": tuple(methods)}).methods
    if wandb is None:
        wandb = "offline" if exp.launch.launcher == "slurm" else "off"
    if wandb not in WANDB_MODES:
        raise SpecError(f"unknown wandb mode {wandb!r}; valid: {', '.join(WANDB_MODES)}")
    _check_runs_dir(Path(runs_dir))
    objectives = {**_default_objectives(), **(objectives or {})}
    units = _plan(exp, methods, Path(runs_dir), objectives, wandb, bar)
    executor = make_executor(exp.launch, Path(runs_dir) / exp.name / ".submitit", name=exp.name)
    for u in units:  # every check passed: from here on the store may change
        if isinstance(u, SingleRun):
            u.reopen()
    singles = sum(isinstance(u, SingleRun) for u in units)
    progress = Progress(f"{exp.name} runs", singles, bar=bar)
    try:
        with _local_threads(exp.launch):
            _drive(units, executor, exp.launch, exp.budget.parallel, progress)
    except KeyboardInterrupt:
        if exp.launch.launcher == "local":  # its jobs would outlive us; SLURM's are re-attached
            for job in (j for u in units for j in u.inflight.values()):
                getattr(job, "cancel", lambda **_: None)(check=False)
        raise
    finally:
        for p in [progress] + [u.progress for u in units if isinstance(u, Search)]:
            p.close()
    return {(u.method, u.seed): _outcome(u) for u in units}


def _check_runs_dir(path: Path) -> None:
    """The run store's folder must be a folder we can write, or creatable in one."""
    existing = path
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise SpecError(f"--runs-dir {path}: {existing} is not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise SpecError(f"--runs-dir {path}: {existing} is not writable")


def _outcome(u: SingleRun | Search) -> dict[str, Any]:
    """A run's result record, or a search's summary (also a search run as one local job)."""
    if isinstance(u, Search):
        return u.summary()
    if u.call[0] is driver.search_job:
        return _read_json(u.dir / SUMMARY) or dict(u.record or {})
    return u.record


def _drive(units: list, executor: Any, launch: Any, parallel: int, progress: Progress) -> None:
    """Submit what may start, tell what finished, until every unit is finished.

    Local jobs share this machine: at most `parallel` run at once in all. On SLURM each search
    keeps `parallel` trials in flight (an independent searcher submits its trials as one array
    that runs `parallel` at a time), and the STN runs that can start go as one job array."""
    cap = parallel if launch.launcher == "local" else math.inf
    while True:
        active = [u for u in units if not u.finished]
        if not active:
            return
        room = cap - sum(len(u.inflight) for u in units)
        ready = [u for u in active if isinstance(u, SingleRun) and u.ready]
        ready = ready[: int(min(max(room, 0), len(ready)))]
        if ready:
            _array_parallelism(executor, launch, launch.array_parallelism)
            for u, job in zip(
                ready, submit(executor, [u.call for u in ready], launch.max_array_size)
            ):
                u.inflight[0] = job
            room -= len(ready)
        for u in (u for u in active if isinstance(u, Search)):
            whole_array = launch.launcher == "slurm" and u.method in driver.INDEPENDENT
            limit = launch.max_array_size if whole_array else parallel
            _array_parallelism(executor, launch, parallel)
            room -= u.fill(executor, int(min(limit, len(u.inflight) + max(room, 0))))
        told = 0
        for u in active:
            n = u.poll()
            if n and isinstance(u, SingleRun):
                progress.update(_run_line(u))
            told += n
        if not told and any(u.inflight for u in units):
            time.sleep(driver.poll_interval(launch.launcher))


@contextlib.contextmanager
def _local_threads(launch: Any) -> Iterator[None]:
    """Local jobs share this machine's cores: give each launch.cpus_per_task threads, as SLURM
    would, instead of torch's default of all cores per process (`parallel` jobs would then
    oversubscribe them). The jobs inherit the variable; a value set by the user is kept."""
    if launch.launcher != "local" or "OMP_NUM_THREADS" in os.environ:
        yield
        return
    os.environ["OMP_NUM_THREADS"] = str(launch.cpus_per_task)
    try:
        yield
    finally:
        os.environ.pop("OMP_NUM_THREADS", None)


def _array_parallelism(executor: Any, launch: Any, n: int) -> None:
    """How many tasks of the next SLURM job array may run at once."""
    if launch.launcher == "slurm":
        executor.update_parameters(slurm_array_parallelism=int(n))


def _run_line(u: SingleRun) -> str:
    rec = u.record or {}
    val = rec.get("val_loss")
    loss = f" val_loss={val:.4g}" if isinstance(val, (int, float)) else ""
    err = f": {rec['error']}" if rec.get("error") else ""
    return f"{u.method} seed{u.seed} {rec.get('status')}{loss}{err}"


def _default_objectives() -> dict[str, Callable[..., dict]]:
    from .objective import run_stn, run_trial

    return {"stn": run_stn, "trial": run_trial}


def wandb_offline_dirs(runs_dir: str | Path, experiment: str) -> list[Path]:
    """Offline W&B runs left under an experiment's run folders (for `wandb sync`)."""
    return sorted((Path(runs_dir) / experiment).glob("**/wandb/offline-run-*"))
