"""Run an experiment: STN runs, fixed-loop variants and searches for each method and seed.

    results = run_experiment(registry.get("digits-mlp"), ["stn", "random"], [0], "runs",
                             launcher="debug", smoke=True, overrides=["budget.trials=3"])

First every check that can run before work starts (`plan`: methods, seeds, settings in their
section, searcher options, data files, the runs folder, run folders left by another spec,
searches another process drives); it writes nothing. Then one loop drives every unit of work
through one submitit executor. A unit is one (method, seed):
- `JobUnit`: one job that writes its own record: an STN run or a variant (result.json), or with
  the local launcher a whole search (search.json; experiments.driver.search_job);
- `Search` (experiments.driver): a search driven from here, one job per trial.
Rerunning the same command reuses finished runs and resumes the rest. Each run and search folder
is locked by the one process writing it (experiments.store.lock): a job finding its run locked
(by a job of an earlier driver that was killed, or of a second identical command) waits for it
and reuses its result; a search another process drives is refused in one line.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from . import driver
from .driver import Search
from .jobs import Call, collect, stn_job, submit, trial_job
from .progress import Progress
from .spec import Experiment, SpecError, apply_overrides, derive_seed, to_dict
from .spec import smoke as smoke_spec
from .store import Busy, Place, RunDir, SearchDir, describe_holder, holder, lock, unit_done, verdict
from .wandb_mirror import MODES

__all__ = ["WANDB_MODES", "plan", "resolve", "run_experiment", "valid_methods",
           "wandb_offline_dirs"]  # fmt: skip

WANDB_MODES = MODES


def valid_methods(exp: Experiment) -> tuple[str, ...]:
    """STN methods (with the experiment's extra STN starts), every registered searcher, and
    the experiment's variants."""
    from baselines import SEARCHERS

    return exp.stn_methods + tuple(SEARCHERS) + tuple(v for v in exp.variants if v not in SEARCHERS)


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


class JobUnit:
    """One (method, seed) that runs as one job writing its own record: an STN run or a variant,
    started once the run it needs (if any) is done; or a whole search (kind "search")."""

    def __init__(self, place: Place, kind: str, folder: Path, call: Call, needs: Path | None,
                 budget: dict[str, Any] | None = None):  # fmt: skip
        self.place, self.kind, self.dir, self.call, self.needs = place, kind, folder, call, needs
        self.method, self.seed = place.method, place.seed
        self.record = _final(folder, kind, budget)  # reused when final
        self.inflight: dict[int, Any] = {}
        failed = RunDir(folder).read_result() if kind == "run" and self.record is None else None
        self.retrying = failed if failed is not None and failed["status"] == "failed" else None

    @property
    def ready(self) -> bool:
        waiting = self.needs is not None and not unit_done(self.needs)
        return self.record is None and not self.inflight and not waiting

    @property
    def finished(self) -> bool:
        return self.record is not None

    def poll(self) -> int:
        job = self.inflight.get(0)
        if job is None or not job.done():
            return 0
        run_dir = self.dir if self.kind == "run" else None  # a search writes no result.json
        self.record = collect(job, run_dir, None)
        self.inflight.clear()
        return 1

    def outcome(self) -> dict[str, Any]:
        if self.kind == "search":  # its summary (search.json), or why the job failed
            return SearchDir(self.dir).read_summary() or dict(self.record or {})
        return dict(self.record or {})


def _final(folder: Path, kind: str, budget: dict[str, Any] | None) -> dict[str, Any] | None:
    """A unit's record if its work is done: the summary of a search finished with this budget
    (a larger one extends it), or a run's result (a failed run is not: it resumes)."""
    if kind == "search":
        s = SearchDir(folder).read_summary()
        final = s is not None and s.get("finished") and not _differs(_get(budget, ()), s["budget"])
        return s if final else None
    rec = RunDir(folder).read_result()
    return None if rec is None or rec["status"] == "failed" else rec


# --- the checks ---------------------------------------------------------------------------------


def _check_stale(folder: Path, then: Any, exp: Experiment, keys: Sequence[tuple[str, ...]]):
    """Refuse to reuse a run folder written with a different spec (e.g. by a --smoke run).
    `then` is the spec recorded there (spec.json's "experiment", search.json's "spec"); budgets
    and launch settings may differ (a search can be extended)."""
    if not isinstance(then, dict):
        return
    now = to_dict(exp)
    changed = [".".join(k) for k in keys if k[0] in then and _differs(_get(now, k), _get(then, k))]
    if changed:
        raise SpecError(
            f"{folder} holds runs of a different spec (changed: {', '.join(changed)}); "
            "pass another --runs-dir or remove that folder"
        )


def _differs(now: Any, then: Any) -> bool:
    """A setting recorded with another value. Settings present on one side only are not a
    difference: they were added to or removed from the code since (their defaults ran)."""
    if isinstance(now, dict) and isinstance(then, dict):
        return any(_differs(now[k], then[k]) for k in now.keys() & then.keys())
    return now != then


def _get(d: Any, parts: Sequence[str]) -> Any:
    for part in parts:
        d = d.get(part) if isinstance(d, dict) else None
    return json.loads(json.dumps(d))  # tuples and lists compare equal


def _check_runs_dir(path: Path) -> None:
    """The run store's folder must be a folder, or creatable in one, where a file can be made
    (os.access says yes to root everywhere, /proc and /sys included: try it)."""
    existing = path
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise SpecError(f"--runs-dir {path}: {existing} is not a folder")
    try:
        fd, probe = tempfile.mkstemp(dir=existing, prefix=".stn-write-test-")
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise SpecError(f"--runs-dir {path}: cannot write in {existing} ({e.strerror})") from None


def plan(exp: Experiment, methods: Sequence[str], runs: Path, objectives: dict[str, Callable],
         wandb: str) -> list[JobUnit | Place]:  # fmt: skip
    """Check everything and list the units of work: a JobUnit, or the Place of a search to drive
    from here. Writes nothing; raises SpecError (one line) at the first problem."""
    from baselines import SEARCHERS

    from .objective import check_stn_settings

    valid = valid_methods(exp)
    for m in methods:
        if m not in valid:
            raise SpecError(f"unknown method {m!r}; valid: {', '.join(valid)}")
    _check_runs_dir(runs)
    if any(m in exp.stn_methods for m in methods):
        check_stn_settings(exp)
    check_data = getattr(exp.task, "check_data", None)
    if check_data is not None:  # a missing or malformed dataset: one line, before any job
        check_data()
    units: list[JobUnit | Place] = []
    for m in methods:
        is_search = m in SEARCHERS and m not in exp.variants
        if is_search:
            driver.check_searcher(exp, m)
        for k in exp.seeds:
            place = Place(exp.name, m, k)
            d = place.path(runs)
            if m in exp.stn_methods:
                keys = (("task",), ("stn",), ("stn_inits", m), ("searchers", m))
                _check_stale(d, (RunDir(d).read_spec() or {}).get("experiment"), exp, keys)
                args = (objectives["stn"], exp, m, derive_seed(k, m), d, wandb)
                units.append(JobUnit(place, "run", d, (stn_job, args, {}), None))
            elif not is_search:
                units.append(_variant(exp, place, d, methods, objectives["trial"], wandb))
            else:
                keys = (("task",), ("searchers", m))
                _check_stale(d, (SearchDir(d).read_summary() or {}).get("spec"), exp, keys)
                if exp.launch.launcher == "local":  # one process per search, not per trial
                    args = (exp, m, k, runs, objectives["trial"], wandb)
                    call = (driver.search_job, args, {})
                    units.append(JobUnit(place, "search", d, call, None, to_dict(exp.budget)))
                elif (who := holder(d)) is not None:
                    raise Busy(d, who)
                else:
                    units.append(place)
    return units


def _variant(exp: Experiment, place: Place, d: Path, methods: Sequence[str],
             objective: Callable[..., dict], wandb: str) -> JobUnit:  # fmt: skip
    from .store import sibling

    name, seed = place.method, place.seed
    v = exp.variants[name]
    then = (RunDir(d).read_spec() or {}).get("experiment")
    _check_stale(d, then, exp, (("task",), ("variants", name)))
    needs = sibling(d, v.from_method) if v.from_method else None
    if needs is not None and v.from_method not in methods and not unit_done(needs):
        raise SpecError(
            f"variant {name!r} needs the finished {v.from_method!r} run of seed {seed}; "
            f"add {v.from_method} to --methods or run it first"
        )
    args = (objective, exp, name, derive_seed(seed, name), None, d)
    kwargs = {"variant": v, "wandb": wandb, "retry_failed": True}
    return JobUnit(place, "run", d, (trial_job, args, kwargs), needs)


# --- the sweep ----------------------------------------------------------------------------------


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
    executor: Any = None,
) -> dict[tuple[str, int], dict[str, Any]]:
    """Run (or resume) `methods` x `seeds` of `exp` (default: the spec's); returns
    (method, seed) -> the run's result record or the search's summary.

    `launcher`: a launcher name or a slurm.executors.Launch (default: exp.launch). `wandb` None
    means offline on SLURM (compute nodes rarely reach the internet; `wandb sync` later), off
    elsewhere. `objectives` replaces {"stn": run_stn, "trial": run_trial} (tests); `executor`
    the launch's executor (benchmarks compare two for one launcher). Bad input
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
    objectives = {**_default_objectives(), **(objectives or {})}
    runs = Path(runs_dir)
    planned = plan(exp, methods, runs, objectives, wandb)
    singles = sum(isinstance(u, JobUnit) for u in planned)
    progress = Progress(f"{exp.name} runs", singles, bar=bar)
    for u in (u for u in planned if isinstance(u, JobUnit)):
        if u.retrying is not None:
            why = u.retrying.get("reason") or u.retrying.get("error") or "failed"
            print(f"{u.place.name}: resuming a failed run ({why})", file=sys.stderr, flush=True)
        if u.record is None and (who := holder(u.dir)) is not None:
            print(f"{u.place.name}: in use by {describe_holder(who)}; waiting for it",
                  file=sys.stderr, flush=True)  # fmt: skip
    with contextlib.ExitStack() as stack:  # every check passed: from here on the store changes
        if executor is None:
            executor = make_executor(exp.launch, runs / exp.name / ".submitit", name=exp.name,
                                     parallel=exp.budget.parallel)  # fmt: skip
            if isinstance(executor, contextlib.AbstractContextManager):  # local: its workers
                stack.enter_context(executor)  # end with the sweep
        units = [u if isinstance(u, JobUnit) else _search(stack, exp, u, runs, objectives["trial"],
                                                          wandb, bar) for u in planned]  # fmt: skip
        try:
            with _sigterm_interrupts():
                _drive(units, executor, exp.launch, exp.budget.parallel, progress)
        except KeyboardInterrupt:
            if exp.launch.launcher == "local":  # its jobs would outlive us; SLURM's are re-attached
                for job in (j for u in units for j in u.inflight.values()):
                    getattr(job, "cancel", lambda **_: None)(check=False)
            raise
        finally:
            for p in [progress] + [u.progress for u in units if isinstance(u, Search)]:
                p.close()
    return {(u.method, u.seed): u.outcome() if isinstance(u, JobUnit) else u.summary()
            for u in units}  # fmt: skip


def _search(stack: contextlib.ExitStack, exp: Experiment, place: Place, runs: Path,
            objective: Callable[..., dict], wandb: str, bar: bool | None) -> Search:  # fmt: skip
    """A search driven from here, its lock held until the sweep ends."""
    stack.enter_context(lock(place.path(runs), wait=False))
    total = None if driver.searcher_class(place.method).finite_plan else exp.budget.trials
    progress = Progress(place.name, total, bar=bar)
    return Search(exp, place.method, place.seed, runs, objective=objective, wandb=wandb,
                  launcher=exp.launch.launcher, progress=progress)  # fmt: skip


@contextlib.contextmanager
def _sigterm_interrupts() -> Iterator[None]:
    """SIGTERM (`kill`, a scheduler) stops the sweep as Ctrl-C does: local jobs are cancelled
    instead of outliving their driver. (A SIGKILLed driver's jobs run on, holding their runs'
    locks; a rerun waits for them and reuses their results.)"""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    before = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, before)


def _drive(units: list, executor: Any, launch: Any, parallel: int, progress: Progress) -> None:
    """Submit what may start, tell what finished, until every unit is finished.

    Local jobs share this machine: at most `parallel` run at once in all. On SLURM each search
    keeps `parallel` trials in flight (a searcher with independent trials submits them as one
    array that runs `parallel` at a time; one asking in generations, each generation as one
    such array), and the runs that can start go as one job array."""
    from slurm.executors import poll_interval

    cap = parallel if launch.launcher == "local" else math.inf
    while True:
        active = [u for u in units if not u.finished]
        if not active:
            return
        room = cap - sum(len(u.inflight) for u in units)
        ready = [u for u in active if isinstance(u, JobUnit) and u.ready]
        ready = ready[: int(min(max(room, 0), len(ready)))]
        if ready:
            calls = [u.call for u in ready]
            jobs = submit(executor, calls, launch.max_array_size, launch.array_parallelism)
            for u, job in zip(ready, jobs):
                u.inflight[0] = job
            room -= len(ready)
        for u in (u for u in active if isinstance(u, Search)):
            sr = u.searcher
            whole = launch.launcher == "slurm" and (sr.independent_trials or sr.asks_in_generations)
            limit = launch.max_array_size if whole else parallel
            room -= u.fill(executor, int(min(limit, len(u.inflight) + max(room, 0))))
        told = 0
        for u in active:
            n = u.poll()
            if n and isinstance(u, JobUnit):
                progress.update(_run_line(u))
            told += n
        if not told and any(u.inflight for u in units):
            time.sleep(poll_interval(launch.launcher))


def _run_line(u: JobUnit) -> str:
    """'<method> seed<k> <status>[ val_loss=...][: reason]' of a finished unit."""
    rec = verdict(u.outcome())
    val = rec.get("val_loss")
    loss = f" val_loss={val:.4g}" if isinstance(val, (int, float)) else ""
    why = rec["reason"] if rec.get("status") != "ok" else None
    return f"{u.place.name} {rec.get('status')}{loss}" + (f": {why}" if why else "")


def _default_objectives() -> dict[str, Callable[..., dict]]:
    from .objective import run_stn, run_trial

    return {"stn": run_stn, "trial": run_trial}


def wandb_offline_dirs(runs_dir: str | Path, experiment: str) -> list[Path]:
    """Offline W&B runs left under an experiment's run folders (for `wandb sync`)."""
    return sorted((Path(runs_dir) / experiment).glob("**/wandb/offline-run-*"))
