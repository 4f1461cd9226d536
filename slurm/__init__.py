"""Launching runs through submitit: executors (debug / local / slurm), preemption-safe jobs, and
the single-node cluster script (`slurm/local_cluster.sh`) that CI tests against."""

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

__all__ = [
    "LAUNCHERS",
    "Launch",
    "LaunchError",
    "ResumableJob",
    "local_threads",
    "make_executor",
    "on_checkpoint",
    "parse_extra",
    "poll_interval",
    "reattach",
    "slurm_unreachable",
    "submit_calls",
]
