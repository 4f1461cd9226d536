"""The search driver: ask -> submit -> wait for any -> tell, resumable from its journal.

One `Search` is one (method, experiment seed) of an experiment, in `<runs>/<exp>/<method>/seed<k>/`:

    search_journal.jsonl   the searcher's asks and tells, appended as they happen
    search.json            the summary, rewritten atomically after every tell
    jobs.json              trial id -> scheduler job id (to re-attach to SLURM jobs on resume)
    trial<id>/             one run folder per trial (spec.json, metrics.jsonl, result.json)

Rerunning an interrupted search rebuilds the searcher by replaying the journal, so it proposes
exactly what it would have; trials asked but not told are picked up again (their result.json if
they finished meanwhile, else the job is re-attached or resubmitted and resumes from its
checkpoint). No trial id is ever asked twice. What a trial's job runs, and how jobs are
submitted and collected: experiments/jobs.py.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from .jobs import Done, adopt_slurm_job, collect, failed_record, finite, submit, trial_job
from .progress import Progress
from .spec import Experiment, SpecError, derive_seed, to_dict
from .store import STATUSES, RunDir, atomic_write_bytes, atomic_write_json, run_path

__all__ = [
    "JOURNAL",
    "SUMMARY",
    "Search",
    "check_searcher",
    "read_journal",
    "run_search",
    "search_job",
]

JOURNAL = "search_journal.jsonl"
SUMMARY = "search.json"
JOBS = "jobs.json"
# Searchers whose proposals do not depend on results: on SLURM their trials go as one job array.
INDEPENDENT = ("fixed", "grid", "random")
_SUMMARY_KEYS = ("val_loss", "test_loss", "val_metric", "test_metric", "epochs", "wall_s", "error")


# --- the search -----------------------------------------------------------------------------


def read_journal(path: str | Path, repair: bool = False) -> list[dict[str, Any]]:
    """A search journal's events, up to a line cut by a crash (the last one); `repair` drops
    that line from the file too, so that the events appended after it stay readable."""
    path = Path(path)
    if not path.exists():
        return []
    events, lines = [], path.read_text().splitlines()
    for line in lines:
        try:
            events.append(json.loads(line))
        except json.JSONDecodeError:
            break
    if repair and len(events) < len(lines):
        atomic_write_bytes(path, "".join(json.dumps(e) + "\n" for e in events).encode())
    return events


class Search:
    """One search: its searcher, journal, in-flight trial jobs and summary."""

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
        self.runs_dir, self.launcher, self.clock = Path(runs_dir), launcher, clock
        self.objective = objective or _default_objective()
        self.dir = run_path(runs_dir, exp.name, method, seed)
        seed_k = derive_seed(seed, method)
        options = _searcher_options(exp, method)
        self.searcher = make_searcher(method, exp.task.space(), seed_k, **options)
        self.progress = progress
        self.records: dict[int, dict[str, Any]] = {}  # told trial id -> its result record
        self.inflight: dict[int, Any] = {}  # trial id -> job (None: asked, not yet submitted)
        self.job_ids: dict[str, str] = {}
        events = read_journal(self.dir / JOURNAL, repair=True)
        replay(self.searcher, events)
        self._journalled = len(self.searcher.events)
        self._elapsed0 = max((e.get("elapsed", 0.0) for e in events), default=0.0)
        self._t0 = clock()
        self._stalled = False  # the searcher proposed nothing with nothing in flight
        for e in events:
            if e.get("event") == "tell":
                rec = RunDir(self.trial_dir(e["id"])).read_result()
                self.records[e["id"]] = rec or {**failed_record("result.json lost", None), **e}
        self.inflight = {i: None for i in self.searcher.pending}
        if (self.dir / JOBS).exists():
            self.job_ids = json.loads((self.dir / JOBS).read_text())

    # --- bookkeeping ---
    def trial_dir(self, trial: int) -> Path:
        return run_path(self.runs_dir, self.exp.name, self.method, self.seed, trial=trial)

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

    def _spent_epochs(self, trial: int, rec: Mapping[str, Any]) -> float:
        """Epochs this trial trained: its record's, less those of the checkpoint it resumed."""
        epochs = float(rec.get("epochs") or 0.0)
        s = self.searcher.trials[trial].suggestion
        if s.resume_from is not None and s.resume_from in self.records:
            epochs -= float(self.records[s.resume_from].get("epochs") or 0.0)
        return max(epochs, 0.0)

    def _may_ask(self) -> bool:
        b, sr = self.exp.budget, self.searcher
        if sr.done or (b.seconds is not None and self.elapsed >= b.seconds):
            return False
        if b.epochs is not None:
            planned = sum(self._planned_epochs(t) for t in self.inflight)
            return sr.spent["epochs"] + planned < b.epochs
        return True

    def _journal(self) -> None:
        new = self.searcher.events[self._journalled :]
        if not new:
            return
        self.dir.mkdir(parents=True, exist_ok=True)
        with open(self.dir / JOURNAL, "a") as f:
            for e in new:
                f.write(json.dumps({**e, "elapsed": round(self.elapsed, 3)}) + "\n")
            f.flush()
            os.fsync(f.fileno())
        self._journalled = len(self.searcher.events)

    # --- the loop's three steps ---
    @property
    def finished(self) -> bool:
        return not self.inflight and (self._stalled or not self._may_ask())

    def fill(self, executor: Any, limit: int) -> int:
        """Ask until `limit` trials are in flight (or the budget/searcher says stop) and submit
        them; returns how many were submitted."""
        while len(self.inflight) < limit and self._may_ask():
            s = self.searcher.ask()
            if s is None:  # with nothing in flight, nothing will ever come: the search ends
                self._stalled = not self.inflight
                break
            self.inflight[s.id] = None
        self._journal()
        new = [t for t, job in self.inflight.items() if job is None]
        calls = []
        for t in new:
            run = RunDir(self.trial_dir(t))
            rec, adopted = run.read_result(), None
            if rec is None:
                adopted = self._adopt(executor, t)
                # a job that ended between the two looks has written its result by now
                rec = run.read_result() if adopted is None else None
            if rec is not None:
                self.inflight[t] = Done(rec)
            elif adopted is not None:
                self.inflight[t] = adopted
            else:
                calls.append((t, self._trial_call(t)))
        if calls:
            max_array = self.exp.launch.max_array_size if self.launcher == "slurm" else 1
            jobs = submit(executor, [c for _, c in calls], max_array)
            for (t, _), job in zip(calls, jobs):
                self.inflight[t] = job
                self.job_ids[str(t)] = str(job.job_id)
            if self.launcher == "slurm":
                atomic_write_json(self.dir / JOBS, self.job_ids)
        return len(calls)

    def _adopt(self, executor: Any, trial: int) -> Any | None:
        if self.launcher != "slurm":
            return None
        return adopt_slurm_job(executor, self.job_ids.get(str(trial)))

    def _trial_call(self, t: int) -> tuple[Callable[..., Any], tuple, dict[str, Any]]:
        s = self.searcher.trials[t].suggestion
        resume = s.resume_from is not None
        seed = derive_seed(self.seed, self.method, t)
        args = (self.objective, self.exp, self.method, seed, dict(s.params), self.trial_dir(t))
        kwargs = {
            "epochs": s.budget,
            "variant": None,
            "wandb": self.wandb,
            "resume_from": self.trial_dir(s.resume_from) if resume else None,
        }
        return trial_job, args, kwargs

    def poll(self) -> int:
        """Tell the searcher about finished trials; returns how many finished. With the debug
        executor a job runs when asked whether it is done, so only the first is checked."""
        told = 0
        for t, job in list(self.inflight.items()):
            if job is None or not job.done():
                continue
            params = self.searcher.trials[t].suggestion.params
            self._tell(t, collect(job, self.trial_dir(t), params))
            told += 1
            if self.launcher == "debug":
                break
        return told

    def _tell(self, t: int, rec: dict[str, Any]) -> None:
        del self.inflight[t]
        self.records[t] = rec
        status = rec.get("status") if rec.get("status") in STATUSES else "failed"
        self.searcher.tell(
            t,
            rec.get("val_loss") if status == "ok" else None,
            status=status,
            epochs=self._spent_epochs(t, rec),
            seconds=float(rec.get("wall_s") or 0.0),
        )
        self._journal()
        self.write_summary()
        if self.progress is not None:
            self.progress.update(_trial_line(t, rec))

    # --- the summary ---
    def summary(self) -> dict[str, Any]:
        trials = []
        for t, trial in sorted(self.searcher.trials.items()):
            s, rec = trial.suggestion, self.records.get(t, {})
            row = {
                "trial": t,
                "params": s.params,
                "budget": s.budget,
                "resume_from": s.resume_from,
                "seed": derive_seed(self.seed, self.method, t),
                "status": rec.get("status", "pending"),
            }
            row.update((k, rec[k]) for k in _SUMMARY_KEYS if k in rec)
            trials.append(row)
        ok = [r for r in trials if r["status"] == "ok" and finite(r.get("val_loss"))]
        best = min(ok, key=lambda r: (r["val_loss"], r["trial"])) if ok else None
        spent = self.searcher.spent
        return {
            "experiment": self.exp.name,
            "method": self.method,
            "seed": self.seed,
            "spec": to_dict(self.exp),
            "finished": self.finished,
            "budget": to_dict(self.exp.budget),
            "spent": {
                "trials": spent["trials"],
                "epochs": spent["epochs"],
                "seconds": round(self.elapsed, 3),
                "trial_seconds": spent["seconds"],
            },
            "searcher": self.searcher.describe(),
            "trials": trials,
            "best": best
            and {
                k: best.get(k)
                for k in ("trial", "params", "val_loss", "test_loss", "val_metric", "test_metric")
            },
        }

    def write_summary(self) -> None:
        atomic_write_json(self.dir / SUMMARY, self.summary())


def _trial_line(t: int, rec: Mapping[str, Any]) -> str:
    status = rec.get("status")
    if status == "ok":
        return f"trial{t} ok val_loss={rec.get('val_loss'):.4g} ({rec.get('wall_s') or 0:.1f} s)"
    return f"trial{t} {status}: {rec.get('error', '')}".rstrip(": ")


def _default_objective() -> Callable[..., dict]:
    from .objective import run_trial

    return run_trial


def poll_interval(launcher: str) -> float:
    """Seconds between checks of running jobs (submitit caches SLURM states between sacct calls)."""
    return {"debug": 0.0, "local": 0.2}.get(launcher, 5.0)


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
) -> dict[str, Any]:
    """Drive one search to its end (or resume it) and return its summary (search.json)."""
    search = Search(
        exp,
        method,
        seed,
        runs_dir,
        objective=objective,
        wandb=wandb,
        launcher=launcher,
        progress=progress,
    )
    limit = exp.budget.parallel
    while True:
        search.fill(executor, limit)
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
    small CPU, more than a digits trial trains). Resumes like `run_search`; returns a record
    of the selected trial (status "failed" when no trial finished)."""
    from slurm.executors import Launch, make_executor

    folder = Path(runs_dir) / exp.name / ".submitit"
    executor = make_executor(Launch(launcher="debug"), folder, name=f"{exp.name}-{method}")
    summary = run_search(
        exp, method, seed, runs_dir, executor, launcher="debug", objective=objective, wandb=wandb
    )
    best = summary["best"] or {}
    return {"status": "ok" if best else "failed", **best, "spent": summary["spent"]}


def finite_plan(method: str) -> bool:
    """Whether the searcher ends by itself (fixed, grid, Hyperband's brackets)."""
    from baselines import SEARCHERS

    return SEARCHERS[method].finite_plan


def _searcher_options(exp: Experiment, method: str) -> dict[str, Any]:
    # The searcher enforces the trial and epoch budgets as told; the driver also counts the
    # epochs of trials in flight, and the wall clock (which the searcher cannot see). A finite
    # plan (a grid, Hyperband's brackets) is run whole: budget.trials caps open-ended searches.
    b = exp.budget
    trials = None if finite_plan(method) else b.trials
    return {**exp.searchers.get(method, {}), "budget": {"trials": trials, "epochs": b.epochs}}


def check_searcher(exp: Experiment, method: str) -> None:
    """Build the searcher once to surface bad options or an endless search before anything is
    written."""
    from baselines import make_searcher

    b = exp.budget
    if not finite_plan(method) and b.trials is None and b.epochs is None and b.seconds is None:
        raise SpecError(f"the {method} search has no end: set budget.trials, .epochs or .seconds")
    try:
        make_searcher(method, exp.task.space(), 0, **_searcher_options(exp, method))
    except ValueError as e:
        raise SpecError(f"searchers.{method}: {e}") from None
