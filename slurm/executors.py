"""Executors from an experiment's launch settings: `debug` (in-process), `local`, `slurm`.

    launch = Launch(launcher="slurm", partition="gpu", gpus_per_node=1, extra=("account=ml",))
    executor = make_executor(launch, "runs/x/slurm", name="stn-cifar")
    jobs = submit_calls(executor, [(train_one, (cfg, 0)), (train_one, (cfg, 1))],
                        launch.max_array_size)

The cluster is always named: submitit's auto-detection would pick SLURM on any machine where
its commands happen to be installed, including a laptop that only has the client tools.
"""

from __future__ import annotations

import math
import os
import re
import shutil
import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import submitit

__all__ = [
    "LAUNCHERS",
    "Launch",
    "LaunchError",
    "local_threads",
    "make_executor",
    "parse_extra",
    "poll_interval",
    "reattach",
    "slurm_unreachable",
    "submit_calls",
]

LAUNCHERS = ("debug", "local", "slurm")

# sbatch options that Launch sets through its own fields (or submitit sets itself): passing them
# again through `extra` would write the flag twice with different values.
_RESERVED = {
    "partition": "partition",
    "gpus-per-node": "gpus_per_node",
    "cpus-per-task": "cpus_per_task",
    "mem": "mem_gb",
    "time": "timeout_min",
    "signal": "signal_delay_s",
    "array": "array_parallelism",
    "job-name": "make_executor(name=...)",
    "output": "submitit",
    "error": "submitit",
    "open-mode": "submitit",
}
_EXTRA_RE = re.compile(r"^([a-z][a-z0-9_-]*)=(\S.*)$")


class LaunchError(ValueError):
    """A launch setting is invalid; the message names it and what is valid."""


@dataclass(frozen=True)
class Launch:
    """Where and with what resources a job runs. Fields other than `launcher` matter on SLURM;
    `local` (slurm.pool) uses cpus_per_task (threads, capped by the machine's share) and
    gpus_per_node, and has no time limit; `debug` runs in-process and ignores them all."""

    launcher: str = "local"  # debug (in-process) | local (warm worker processes) | slurm
    partition: str | None = None  # SLURM partition; None: the cluster's default partition
    gpus_per_node: int = 0  # GPUs per job (one node per job)
    cpus_per_task: int = 2  # CPU cores per job: data loading workers + the main process
    mem_gb: float = 8  # memory per job (GB); fractions become MB
    timeout_min: int = 60  # time limit per run of the job; a timed-out job is requeued
    array_parallelism: int = 16  # at most this many tasks of one job array run at once
    signal_delay_s: int = 90  # the checkpoint signal (USR2) comes this long before the limit
    max_array_size: int = 1000  # the cluster's MaxArraySize: larger sweeps go as several arrays
    extra: tuple[str, ...] = ()  # free-form sbatch options, e.g. ("account=ml", "qos=high")

    def __post_init__(self) -> None:
        if self.launcher not in LAUNCHERS:
            raise LaunchError(
                f"unknown launcher {self.launcher!r}; valid launchers: {', '.join(LAUNCHERS)}"
            )
        if self.partition is not None and (
            not isinstance(self.partition, str) or not re.fullmatch(r"[\w.,-]+", self.partition)
        ):
            raise LaunchError(
                f"invalid partition {self.partition!r}; valid: None or a partition name"
                " (letters, digits, _ . , -)"
            )
        _check_int("gpus_per_node", self.gpus_per_node, 0)
        _check_int("cpus_per_task", self.cpus_per_task, 1)
        _check_int("timeout_min", self.timeout_min, 1)
        _check_int("array_parallelism", self.array_parallelism, 1)
        _check_int("signal_delay_s", self.signal_delay_s, 0)
        _check_int("max_array_size", self.max_array_size, 1)
        mem = self.mem_gb
        if isinstance(mem, bool) or not isinstance(mem, (int, float)) or not 0 < mem < math.inf:
            raise LaunchError(f"invalid mem_gb={mem!r}; valid: a number of GB > 0")
        if self.signal_delay_s >= 60 * self.timeout_min:
            raise LaunchError(
                f"signal_delay_s={self.signal_delay_s} leaves no run time within timeout_min="
                f"{self.timeout_min}; valid: signal_delay_s < {60 * self.timeout_min}"
            )
        if not isinstance(self.extra, tuple):
            raise LaunchError(f"invalid extra={self.extra!r}; valid: a tuple of 'key=value'")
        parse_extra(self.extra)


def _check_int(name: str, value: Any, low: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise LaunchError(f"invalid {name}={value!r}; valid: an integer >= {low}")


def parse_extra(extra: Sequence[str]) -> dict[str, str]:
    """`("account=ml", "qos=high")` -> `{"account": "ml", "qos": "high"}` for sbatch.

    Keys are sbatch long options without the dashes (`_` and `-` are the same to sbatch).
    """
    out: dict[str, str] = {}
    for item in extra:
        m = _EXTRA_RE.match(item.strip().removeprefix("--")) if isinstance(item, str) else None
        if m is None:
            raise LaunchError(
                f"malformed extra sbatch option {item!r}; valid: 'key=value' with a lowercase"
                " sbatch long option as key, e.g. 'account=ml', 'qos=high', 'constraint=a100'"
            )
        key, value = m.group(1).replace("_", "-"), m.group(2).strip()
        if key in _RESERVED:
            raise LaunchError(
                f"extra sbatch option {key!r} is set by {_RESERVED[key]}; valid extra options"
                f" are any sbatch option except {', '.join(sorted(_RESERVED))}"
            )
        if key in out:
            raise LaunchError(f"extra sbatch option {key!r} given twice; valid: each key once")
        out[key] = value
    return out


def make_executor(
    launch: Launch, folder: str | Path, *, name: str = "stn", parallel: int = 1
) -> Any:
    """The executor of `launch.launcher`, its logs (and pickles) under `folder`.

    `debug` and `slurm`: submitit's `AutoExecutor` (`executor._executor` is a DebugExecutor or
    SlurmExecutor). `local`: a `slurm.pool.WarmPool` of `parallel` warm workers with
    `local_threads(launch, parallel)` threads each; it is a context manager that stops its
    workers on exit (call `shutdown()` otherwise).
    """
    if not isinstance(launch, Launch):
        raise LaunchError(f"make_executor needs a Launch, got {type(launch).__name__}")
    if launch.launcher == "local":
        from .pool import WarmPool

        threads = local_threads(launch, parallel)
        return WarmPool(folder, parallel, threads, gpus_per_worker=launch.gpus_per_node)
    if launch.launcher == "slurm" and shutil.which("srun") is None:
        raise LaunchError(
            "launcher 'slurm' needs SLURM's commands (srun is not on PATH); valid launchers"
            f" here: {', '.join(x for x in LAUNCHERS if x != 'slurm')}"
        )
    executor = submitit.AutoExecutor(folder=Path(folder), cluster=launch.launcher)
    params: dict[str, Any] = {"name": name, "timeout_min": launch.timeout_min}
    if launch.gpus_per_node > 0:
        # Asking for 0 GPUs is left out: clusters without GPU gres reject `--gpus-per-node=0`.
        params["gpus_per_node"] = launch.gpus_per_node
    if launch.launcher == "slurm":
        params.update(
            cpus_per_task=launch.cpus_per_task,
            mem_gb=launch.mem_gb,
            slurm_partition=launch.partition,  # None is dropped by submitit
            slurm_array_parallelism=launch.array_parallelism,
            slurm_signal_delay_s=launch.signal_delay_s,
            slurm_additional_parameters=parse_extra(launch.extra),
        )
    executor.update_parameters(**params)
    return executor


def submit_calls(
    executor: submitit.Executor,
    calls: Sequence[tuple[Callable[..., Any], Sequence[Any]]],
    max_array_size: int,
    array_parallelism: int | None = None,
) -> list[submitit.Job]:
    """Submit `fn(*args)` for each (fn, args) as job arrays of at most `max_array_size` tasks
    each (submitit sends one array per batch and does not split; SLURM refuses arrays over
    MaxArraySize); a lone call goes as a single job. Returns the jobs in the order of `calls`.

    Each array has its own parallelism limit (`array_parallelism`, on SLURM: at most that many
    of its tasks run at once; None keeps the executor's), so with several chunks up to
    chunks x array_parallelism tasks may run at once. submitit's local executor has no such
    limit: it starts every task at once (the experiments' local launcher, slurm.pool.WarmPool,
    runs as many as it has workers)."""
    _check_int("max_array_size", max_array_size, 1)
    if array_parallelism is not None and getattr(executor, "cluster", None) == "slurm":
        executor.update_parameters(slurm_array_parallelism=int(array_parallelism))
    jobs: list[submitit.Job] = []
    for start in range(0, len(calls), max_array_size):
        chunk = calls[start : start + max_array_size]
        # clean_env: submitted from inside a job (a driver job), the tasks must not inherit
        # that job's SLURM_* variables (its GPUs, CPUs, task ids).
        with submitit.helpers.clean_env():
            if len(chunk) == 1:  # not an array of one
                jobs.append(executor.submit(chunk[0][0], *chunk[0][1]))
                continue
            with executor.batch():
                chunk_jobs = [executor.submit(fn, *args) for fn, args in chunk]
        jobs.extend(chunk_jobs)
    return jobs


def poll_interval(launcher: str) -> float:
    """Seconds between checks of running jobs (submitit caches SLURM states between sacct calls)."""
    return {"debug": 0.0, "local": 0.2}.get(launcher, 5.0)


def local_threads(launch: Launch, parallel: int) -> int:
    """Threads of each local job when `parallel` share this machine: OMP_NUM_THREADS when the
    user set it, else min(cpus_per_task, cores // parallel), at least one (slurm.pool)."""
    from .pool import job_threads

    given = os.environ.get("OMP_NUM_THREADS", "")
    if given.isdigit() and int(given) > 0:
        return int(given)
    return job_threads(launch.cpus_per_task, parallel)


def reattach(executor: submitit.Executor, job_id: str | None) -> submitit.Job | None:
    """The SLURM job `job_id` if it is still queued or running (an interrupted sweep's), to wait
    for instead of submitting its work again; None when it has ended or is unknown.

    Asks the controller (`squeue`), not the accounting database: `sacct` may not list an array
    task that is just starting, and resubmitting it would run the same work twice at once."""
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


def slurm_unreachable(timeout_s: float = 10.0) -> str | None:
    """Why SLURM cannot run jobs from this host, or None when a node takes jobs and `sacct`
    (which submitit reads job states with) answers. Used to skip or fail cluster tests."""
    hint = "start one with: sudo slurm/local_cluster.sh up"
    for cmd in ("sinfo", "sbatch", "srun", "sacct", "scontrol"):
        if shutil.which(cmd) is None:
            return f"no SLURM cluster: {cmd} is not installed ({hint})"
    # `scontrol ping` fails at once when slurmctld is down, where sinfo retries for ~10 s.
    probes = (["scontrol", "ping"], ["sinfo", "-h", "-o", "%T"], ["sacct", "-n", "-X", "-j", "1"])
    for cmd in probes:
        try:
            out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s)
        except subprocess.TimeoutExpired:
            return f"no SLURM cluster: {cmd[0]} did not answer within {timeout_s:g} s ({hint})"
        if out.returncode != 0:
            lines = (out.stderr + out.stdout).strip().splitlines()  # ping reports on stdout
            err = lines[0] if lines else f"exit status {out.returncode}"
            return f"no SLURM cluster: {' '.join(cmd[:2])} failed: {err} ({hint})"
        if cmd[0] == "sinfo":
            states = set(out.stdout.split())
            # A trailing `*` means the node does not respond; drained/down nodes take no jobs.
            if not states & {"idle", "mixed", "allocated", "completing"}:
                return f"no SLURM node takes jobs (states: {sorted(states) or 'none'}; {hint})"
    return None
