"""What a job runs (a trial, an STN run: guarded, so that a failure is a record with its reason,
not a crash), and how jobs are submitted (single jobs or arrays) and collected."""

from __future__ import annotations

import time
import traceback
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from .spec import Experiment
from .store import RESULT_KEYS, RunDir

__all__ = ["Call", "Done", "collect", "failed_record", "guarded", "stn_job", "submit", "trial_job"]

Call = tuple[Callable[..., Any], tuple, dict[str, Any]]  # fn, args, kwargs


def failed_record(
    error: BaseException | str, params: Mapping[str, float] | None, wall_s: float = 0.0
) -> dict[str, Any]:
    """The result record of a run that raised (or whose job died): status "failed", and as its
    reason the error's last line."""
    msg = error if isinstance(error, str) else f"{type(error).__name__}: {error}"
    rec: dict[str, Any] = dict.fromkeys(RESULT_KEYS)
    rec.update(status="failed", epochs=0.0, wall_s=wall_s, hparams=dict(params or {}))
    rec["reason"] = rec["error"] = msg.strip().splitlines()[-1] if msg.strip() else "failed"
    return rec


def _device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def guarded(
    fn: Callable[..., dict],
    run_dir: Path,
    params: Mapping[str, float] | None,
    *args: Any,
    **kwargs: Any,
) -> dict[str, Any]:
    """fn(*args, device=..., **kwargs); an exception becomes a "failed" record in
    run_dir/result.json (with its reason) instead of a crash, so the search goes on."""
    start = time.time()
    try:
        return dict(fn(*args, device=_device(), **kwargs))
    except Exception as e:  # noqa: BLE001 - any training error is recorded, never fatal
        traceback.print_exc()  # into the job's log
        rec = failed_record(e, params, time.time() - start)
        RunDir(run_dir).write_result(rec)
        return rec


def trial_job(
    objective: Callable[..., dict],
    exp: Experiment,
    method: str,
    seed: int,
    params: Mapping[str, float] | None,
    run_dir: Path,
    **options: Any,
) -> dict:
    """The function a trial's job runs: objective.run_trial(..., **options), guarded."""
    return guarded(objective, run_dir, params, exp, method, seed, params, run_dir, **options)


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


class Done:
    """A finished 'job' for a result read from the run store."""

    job_id = None

    def __init__(self, record: dict[str, Any]):
        self.record = record

    def done(self) -> bool:
        return True

    def result(self) -> dict[str, Any]:
        return self.record


def submit(executor: Any, calls: list[Call], max_array: int, parallel: int | None = None) -> list:
    """Submit each call as a job that SLURM requeues after a timeout or preemption (the call
    finds its checkpoint again); several calls go as job arrays of at most `max_array` tasks,
    `parallel` of them running at once on SLURM."""
    from slurm.executors import submit_calls
    from slurm.jobs import ResumableJob

    jobs = [(ResumableJob(f, *a, **kw), ()) for f, a, kw in calls]
    return submit_calls(executor, jobs, max_array, parallel)


def collect(job: Any, run_dir: Path | None, params: Mapping[str, float] | None) -> dict[str, Any]:
    """The record of a finished job. A job that died without writing one (killed for memory, a
    node failure) gets a failed record with the reason, in `run_dir` when it is a run's."""
    try:
        rec = job.result()
        if not isinstance(rec, Mapping):
            raise TypeError(f"the job returned {type(rec).__name__}, not a result record")
        return dict(rec)
    except Exception as e:  # noqa: BLE001 - e.g. the job was killed (OOM, node failure)
        if run_dir is None:
            return failed_record(e, params)
        run = RunDir(run_dir)
        rec = run.read_result()
        if rec is None:
            rec = failed_record(e, params)
            run.write_result(rec)
        return rec
