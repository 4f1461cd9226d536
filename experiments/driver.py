"""The search driver: ask -> submit -> wait for any -> tell, resumable from its journal.

One `Search` is one (method, experiment seed) of an experiment, in `<runs>/<exp>/<method>/seed<k>/`
(its records and their formats: experiments/store.py). Its driver holds the folder's lock for
as long as it drives, so a journal has one writer. Rerunning an interrupted search rebuilds
the searcher by replaying the journal, so it proposes exactly what it would have; trials asked
but not told are picked up again (their result.json if they finished meanwhile, else the job is
re-attached or resubmitted and resumes from its checkpoint). No trial id is asked twice.

What the searcher needs of the driver it declares as class attributes (baselines.Searcher):
`resumes_from_parent` (trials continue an earlier trial's checkpoint, which is kept),
`scores_own_segment` (such a trial's result is its own evaluations' best, not its parent's),
`independent_trials` (on SLURM its trials may go out as one job array), `asks_in_generations`
(on SLURM each generation goes out as one job array), `finite_plan`.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from .jobs import Done, collect, submit, trial_job
from .progress import Progress
from .spec import Experiment, SpecError, derive_seed, to_dict
from .store import STATUSES, TRIAL_KEYS, Place, SearchDir, finite, spent, summarise, trial_row

__all__ = ["Search", "check_searcher", "run_search", "search_job", "searcher_class"]


class Search:
    """One search: its searcher, journal, in-flight trial jobs and summary. The caller holds
    the search folder's lock (experiments.store.lock) while it lives."""

    def __init__(
        self,
        exp: Experiment,
        method: str,
        seed: int,
        runs_dir: str | Path,
        *,
        objective: Callable[..., dict] | None = None,
        wandb: str = "off",
        launcher: str = "local",
        progress: Progress | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        from baselines import make_searcher, replay

        self.exp, self.method, self.seed, self.wandb = exp, method, seed, wandb
        self.launcher, self.clock, self.progress = launcher, clock, progress
        self.objective = objective or _default_objective()
        self.place = Place(exp.name, method, seed)
        self.dir = SearchDir(self.place.path(runs_dir))
        options = searcher_options(exp, method)
        self.searcher = make_searcher(
            method, exp.task.space(), derive_seed(seed, method), **options
        )
        lost = self.dir.read_summary(writer=True) is None  # a damaged one is set aside
        events = self.dir.read_journal(writer=True)
        replay(self.searcher, events)
        self._journalled = len(self.searcher.events)
        self._elapsed0 = max((e.get("elapsed", 0.0) for e in events), default=0.0)
        self._t0 = clock()
        self._stalled = False  # the searcher proposed nothing with nothing in flight
        self.records: dict[int, dict[str, Any]] = {}  # told trial id -> its result record
        self.failures = 0  # failed trials in a row (budget.failures ends the search)
        for e in (e for e in events if e.get("event") == "tell"):
            t = int(e["id"])
            self.records[t] = self.dir.trial(t).read_result(writer=True) or _as_told(e)
            self.failures = self.failures + 1 if e.get("status") == "failed" else 0
        self.inflight: dict[int, Any] = {i: None for i in self.searcher.pending}  # None: asked
        self.job_ids = self.dir.read_jobs()
        if lost and events:  # rebuilt from the journal now, not at the next tell (if any)
            self.write_summary()
        self._release_checkpoints()  # those an interrupted session had not deleted yet

    # --- bookkeeping ---
    @property
    def elapsed(self) -> float:
        """Wall-clock seconds of the search, summed over the sessions that drove it."""
        return self._elapsed0 + (self.clock() - self._t0)

    def _planned_epochs(self, trial: int) -> float:
        s = self.searcher.trials[trial].suggestion
        default = float(getattr(self.exp.task, "epochs", 0) or 0)
        total = float(s.budget) if s.budget is not None else default
        if s.resume_from is not None:
            prev = self.searcher.trials[s.resume_from].suggestion.budget
            total -= float(prev) if prev is not None else default
        return max(total, 0.0)

    def stop_reason(self) -> str | None:
        """Why no more trials are asked: None while the search may go on."""
        b, sr = self.exp.budget, self.searcher
        if b.failures is not None and self.failures >= b.failures:
            return f"{b.failures} failed trials in a row (budget.failures)"
        if sr.done:
            return "budget spent" if sr.budget.exhausted(sr.spent) else "plan complete"
        if b.seconds is not None and self.elapsed >= b.seconds:
            return "budget.seconds spent"
        if b.epochs is not None:
            planned = sum(self._planned_epochs(t) for t in self.inflight)
            if sr.spent["epochs"] + planned >= b.epochs:
                return "budget.epochs spent"
        return "the searcher proposes nothing more" if self._stalled else None

    def _journal(self) -> None:
        new = self.searcher.events[self._journalled :]
        if new:
            elapsed = round(self.elapsed, 3)
            self.dir.append_journal({**e, "elapsed": elapsed, **self._copy(e)} for e in new)
            self._journalled = len(self.searcher.events)

    def _copy(self, event: Mapping[str, Any]) -> dict[str, Any]:
        """A tell's journal line keeps what search.json needs of the trial's result record."""
        if event.get("event") != "tell":
            return {}
        rec = self.records[event["id"]]
        return {"record": {k: rec[k] for k in ("status", *TRIAL_KEYS) if k in rec}}

    # --- the loop's three steps ---
    @property
    def finished(self) -> bool:
        return not self.inflight and self.stop_reason() is not None

    def fill(self, executor: Any, limit: int) -> int:
        """Ask until `limit` trials are in flight (or the budget/searcher says stop) and submit
        them; returns how many were submitted."""
        from slurm.executors import reattach

        while len(self.inflight) < limit and self.stop_reason() is None:
            s = self.searcher.ask()
            if s is None:  # with nothing in flight, nothing will ever come: the search ends
                self._stalled = not self.inflight
                break
            self.inflight[s.id] = None
        self._journal()
        calls = []
        for t in [t for t, job in self.inflight.items() if job is None]:
            run = self.dir.trial(t)
            rec = run.read_result(writer=True)
            live = reattach(executor, self.job_ids.get(str(t))) if rec is None else None
            rec = run.read_result() if rec is None and live is None else rec  # ended meanwhile
            if rec is not None:
                self.inflight[t] = Done(rec)
            elif live is not None:
                self.inflight[t] = live
            else:
                calls.append((t, self._trial_call(t)))
        if calls:
            max_array = self.exp.launch.max_array_size if self.launcher == "slurm" else 1
            jobs = submit(executor, [c for _, c in calls], max_array, self.exp.budget.parallel)
            for (t, _), job in zip(calls, jobs):
                self.inflight[t] = job
                self.job_ids[str(t)] = str(job.job_id)
            if self.launcher == "slurm":
                self.dir.write_jobs(self.job_ids)
        return len(calls)

    def _trial_call(self, t: int) -> tuple[Callable[..., Any], tuple, dict[str, Any]]:
        s = self.searcher.trials[t].suggestion
        seed = derive_seed(self.seed, self.method, t)
        args = (self.objective, self.exp, self.method, seed, dict(s.params), self.dir.trial(t).path)
        parent = None if s.resume_from is None else self.dir.trial(s.resume_from).path
        cls = type(self.searcher)
        kwargs = {"epochs": s.budget, "resume_from": parent, "wandb": self.wandb,
                  "keep_checkpoint": cls.resumes_from_parent,
                  "own_best": cls.scores_own_segment}  # fmt: skip
        return trial_job, args, kwargs

    def poll(self) -> int:
        """Tell the searcher about finished trials; returns how many finished. With the debug
        executor a job runs when asked whether it is done, so only the first is checked."""
        told = 0
        for t, job in list(self.inflight.items()):
            if job is None or not job.done():
                continue
            params = self.searcher.trials[t].suggestion.params
            self._tell(t, collect(job, self.dir.trial(t).path, params))
            told += 1
            if self.launcher == "debug":
                break
        return told

    def _tell(self, t: int, rec: dict[str, Any]) -> None:
        del self.inflight[t]
        self.records[t] = rec
        status = rec.get("status") if rec.get("status") in STATUSES else "failed"
        self.failures = self.failures + 1 if status == "failed" else 0
        parent = self.records.get(self.searcher.trials[t].suggestion.resume_from)
        own = spent(rec, parent)
        ok = status == "ok" and finite(rec.get("val_loss"))
        self.searcher.tell(t, rec["val_loss"] if ok else None, status=status,
                           epochs=own["epochs"], seconds=own["seconds"])  # fmt: skip
        self._journal()
        self.write_summary()
        self._release_checkpoints()
        if self.progress is not None:
            self.progress.update(_trial_line(t, rec))

    def _release_checkpoints(self) -> None:
        """Delete the checkpoints of told trials that no pending or later trial will continue
        (the searcher says which it still needs; None keeps them all)."""
        needed = self.searcher.checkpoints_needed()
        if needed is None:
            return
        for t in self.records.keys() - needed:
            self.dir.trial(t).checkpoint_file.unlink(missing_ok=True)

    # --- the summary ---
    def summary(self) -> dict[str, Any]:
        rows = []
        for t, trial in sorted(self.searcher.trials.items()):
            s = trial.suggestion
            asked = {"params": s.params, "budget": s.budget, "resume_from": s.resume_from,
                     "seed": derive_seed(self.seed, self.method, t)}  # fmt: skip
            rows.append(trial_row(t, asked, self.records.get(t), self.records.get(s.resume_from)))
        reason = self.stop_reason() if not self.inflight else None
        header = {"experiment": self.exp.name, "method": self.method, "seed": self.seed,
                  "spec": to_dict(self.exp), "space": _space(self.exp),
                  "finished": reason is not None, "stop_reason": reason,
                  "budget": to_dict(self.exp.budget), "searcher": self.searcher.describe(),
                  "spent": {"seconds": round(self.elapsed, 3)}}  # fmt: skip
        return summarise(header, rows)

    def write_summary(self) -> None:
        self.dir.write_summary(self.summary())


def _space(exp: Experiment) -> list[dict[str, Any]]:
    return [dataclasses.asdict(p) for p in exp.task.space()]


def _as_told(tell: Mapping[str, Any]) -> dict[str, Any]:
    """A told trial's record as its journal line kept it (for when its result.json is lost):
    what the searcher was told, and the copy of the record that newer journals hold."""
    own = {"epochs": tell.get("epochs", 0.0), "seconds": tell.get("seconds", 0.0)}
    return {"status": tell.get("status"), "val_loss": tell.get("val_loss"), "spent": own,
            **(tell.get("record") or {})}  # fmt: skip


def _trial_line(t: int, rec: Mapping[str, Any]) -> str:
    status = rec.get("status")
    if status == "ok":
        val = rec.get("val_loss")
        val = f"{val:.4g}" if finite(val) else "n/a"  # n/a: no evaluation (nothing to train)
        return f"trial{t} ok val_loss={val} ({rec.get('wall_s') or 0:.1f} s)"
    why = rec.get("reason") or rec.get("error") or ""
    return f"trial{t} {status}: {why}".rstrip(": ")


def _default_objective() -> Callable[..., dict]:
    from .objective import run_trial

    return run_trial


def run_search(
    exp: Experiment,
    method: str,
    seed: int,
    runs_dir: str | Path,
    executor: Any,
    *,
    launcher: str = "debug",
    objective: Callable[..., dict] | None = None,
    wandb: str = "off",
    progress: Progress | None = None,
    wait: bool = False,
) -> dict[str, Any]:
    """Drive one search to its end (or resume it) and return its summary. It holds the search's
    lock: held by another process, it waits for it (`wait`) or raises store.Busy."""
    from slurm.executors import poll_interval

    from .store import lock

    def waiting(busy: Any) -> None:
        print(f"waiting: {busy}", flush=True)

    with lock(Place(exp.name, method, seed).path(runs_dir), wait=wait, on_wait=waiting):
        search = Search(exp, method, seed, runs_dir, objective=objective, wandb=wandb,
                        launcher=launcher, progress=progress)  # fmt: skip
        while True:
            search.fill(executor, exp.budget.parallel)
            if search.finished:
                break
            if not search.poll():
                time.sleep(poll_interval(launcher))
        search.write_summary()
        return search.summary()


def search_job(
    exp: Experiment,
    method: str,
    seed: int,
    runs_dir: str | Path,
    objective: Callable[..., dict] | None = None,
    wandb: str = "off",
) -> dict[str, Any]:
    """A whole search as one job (the local launcher): its trials run one after another in this
    process, so a trial costs its training, not a fresh Python importing torch (seconds on a
    small CPU, more than a digits trial trains). Resumes like `run_search`, and waits for an
    earlier job of the same search (one whose driver was killed) to end first; returns the
    summary."""
    from slurm.executors import Launch, make_executor

    executor = make_executor(Launch(launcher="debug"), Path(runs_dir) / exp.name / ".submitit",
                             name=f"{exp.name}-{method}")  # fmt: skip
    return run_search(exp, method, seed, runs_dir, executor, launcher="debug",
                      objective=objective, wandb=wandb, wait=True)  # fmt: skip


def searcher_class(method: str) -> Any:
    from baselines import SEARCHERS

    return SEARCHERS[method]


def searcher_options(exp: Experiment, method: str) -> dict[str, Any]:
    # The searcher enforces the trial and epoch budgets as told; the driver also counts the
    # epochs of trials in flight, the wall clock (which the searcher cannot see) and failures in
    # a row. A finite plan (a grid, Hyperband's brackets) is run whole: budget.trials caps
    # open-ended searches.
    b = exp.budget
    trials = None if searcher_class(method).finite_plan else b.trials
    return {**exp.searchers.get(method, {}), "budget": {"trials": trials, "epochs": b.epochs}}


def check_searcher(exp: Experiment, method: str) -> None:
    """Build the searcher once to surface bad options or an endless search before anything is
    written."""
    from baselines import make_searcher

    b = exp.budget
    if not searcher_class(method).finite_plan and b.trials is None and b.epochs is None \
            and b.seconds is None:  # fmt: skip
        raise SpecError(f"the {method} search has no end: set budget.trials, .epochs or .seconds")
    try:
        make_searcher(method, exp.task.space(), 0, **searcher_options(exp, method))
    except ValueError as e:
        raise SpecError(f"searchers.{method}: {e}") from None
