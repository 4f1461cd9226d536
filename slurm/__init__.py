"""Launching runs: submitit executors (debug / slurm), the warm worker pool of the local launcher,
preemption-safe jobs, and the single-node cluster script (`slurm/local_cluster.sh`) that CI tests
against."""

from .executors import (
    LAUNCHERS,
    Launch,
    LaunchError,
    local_threads,
    make_executor,
    parse_extra,
    poll_interval,
    reattach,
    slurm_unreachable,
    submit_calls,
)
from .jobs import ResumableJob, on_checkpoint
from .pool import WarmPool, WorkerDied

__all__ = [
    "LAUNCHERS",
    "Launch",
    "LaunchError",
    "ResumableJob",
    "WarmPool",
    "WorkerDied",
    "local_threads",
    "make_executor",
    "on_checkpoint",
    "parse_extra",
    "poll_interval",
    "reattach",
    "slurm_unreachable",
    "submit_calls",
]
