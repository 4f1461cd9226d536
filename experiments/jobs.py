"""What a job runs (a trial, an STN run: guarded, so a failure is a record, not a crash), and
how jobs are submitted (single jobs or arrays), collected and re-attached after a restart."""

from __future__ import annotations

import math
import subprocess
import time
import traceback
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from .spec import Experiment
from .store import RESULT_KEYS, RunDir

__all__ = [
    "Call",
    "Done",
    "adopt_slurm_job",
    "collect",
    "failed_record",
    "finite",
    "guarded",
    "stn_job",
    "submit",
    "trial_job",
]


def failed_record(
    error: BaseException | str, params: Mapping[str, float] | None, wall_s: float = 0.0
) -> dict[str, Any]:
    """A result record for a trial that raised (or whose job died)."""
    msg = error if isinstance(error, str) else f"{type(error).__name__}: {error}"
    rec: dict[str, Any] = dict.fromkeys(RESULT_KEYS)
    rec.update(status="failed", epochs=0.0, wall_s=wall_s, hparams=dict(params or {}))
    rec["error"] = msg.strip().splitlines()[-1] if msg.strip() else "failed"
    return rec


def _device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def finite(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def guarded(
    fn: Callable[..., dict],
    run_dir: Path,
    params: Mapping[str, float] | None,
    *args: Any,
    **kwargs: Any,
) -> dict[str, Any]:
    """Call fn(*args, device=..., **kwargs); record an exception or a NaN result as "failed"
    in run_dir/result.json instead of raising, so the search goes on."""
    start, run = time.time(), RunDir(run_dir)
    try:
        rec = dict(fn(*args, device=_device(), **kwargs))
    except Exception as e:  # noqa: BLE001 - any training error is recorded, never fatal
        traceback.print_exc()  # into the job's log
        rec = failed_record(e, params, time.time() - start)
        run.write_result(rec)
        return rec
    if rec.get("status", "ok") == "ok" and not finite(rec.get("val_loss")):
        rec = {
            **rec,
            "status": "failed",
            "error": f"non-finite validation loss {rec.get('val_loss')!r}",
        }
        run.write_result({**dict.fromkeys(RESULT_KEYS), **rec})
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
    """The function a trial's job runs: objective.run_trial(..., **options), guarded. Options:
    epochs, resume_from (a run folder), variant, wandb."""
    return guarded(objective, run_dir, params, exp, method, seed, params, run_dir, **options)


class Done:
    """A finished 'job' for a result read from the run store."""

    job_id = None

    def __init__(self, record: dict[str, Any]):
        self.record = record

    def done(self) -> bool:
        return True

    def result(self) -> dict[str, Any]:
        return self.record


Call = tuple[Callable[..., Any], tuple, dict[str, Any]]  # fn, args, kwargs


def submit(executor: Any, calls: list[Call], max_array: int) -> list:
    """Submit each call as a job that SLURM requeues after a timeout or preemption (the call
    finds its checkpoint again); several calls go as job arrays of at most `max_array` tasks."""
    from slurm.executors import submit_calls
    from slurm.jobs import ResumableJob

    return submit_calls(
        executor, [(ResumableJob(f, *a, **kw), ()) for f, a, kw in calls], max_array
    )


def collect(job: Any, run_dir: Path, params: Mapping[str, float] | None) -> dict[str, Any]:
    """The record of a finished job; if the job itself died, record the failure for it."""
    try:
        rec = job.result()
        if not isinstance(rec, Mapping):
            raise TypeError(f"the trial returned {type(rec).__name__}, not a result record")
        return dict(rec)
    except Exception as e:  # noqa: BLE001 - e.g. the job was killed (OOM, node failure)
        rec = RunDir(run_dir).read_result() or failed_record(e, params)
        if not RunDir(run_dir).done:
            RunDir(run_dir).write_result(rec)
        return rec


def adopt_slurm_job(executor: Any, job_id: str | None) -> Any | None:
    """Re-attach to a SLURM job still queued or running from an interrupted sweep.

    Asks the controller (`squeue`), not the accounting database: `sacct` may not list an array
    task that is just starting, and resubmitting it would train one trial twice at once."""
    if not job_id:
        return None
    try:
        out = subprocess.run(["squeue", "-h", "-j", str(job_id), "-o", "%T"],
                             capture_output=True, text=True, timeout=60)  # fmt: skip
    except (OSError, subprocess.TimeoutExpired):
        return None
    if out.returncode != 0 or not out.stdout.split():  # ended (or unknown): not live
        return None
    from submitit.slurm.slurm import SlurmJob

    return SlurmJob(folder=executor.folder, job_id=str(job_id))


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
