"""Launching runs through submitit: executors (debug / local / slurm), preemption-safe jobs, and
the single-node cluster script (`slurm/local_cluster.sh`) that CI tests against."""

from .executors import (
    LAUNCHERS,
    Launch,
    LaunchError,
    make_executor,
    parse_extra,
    slurm_unreachable,
    submit_array,
    submit_calls,
)
from .jobs import ResumableJob, on_checkpoint

__all__ = [
    "LAUNCHERS",
    "Launch",
    "LaunchError",
    "ResumableJob",
    "make_executor",
    "on_checkpoint",
    "parse_extra",
    "slurm_unreachable",
    "submit_array",
    "submit_calls",
]
