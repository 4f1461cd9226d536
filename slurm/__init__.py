"""Launching runs through submitit: executors (debug / local / slurm), preemption-safe jobs, and
the single-node cluster script (`slurm/local_cluster.sh`) that CI tests against."""

from .executors import LAUNCHERS, Launch, LaunchError, make_executor, parse_extra, submit_array

__all__ = ["LAUNCHERS", "Launch", "LaunchError", "make_executor", "parse_extra", "submit_array"]
