"""The run store: one folder per run, records written so a crash never leaves half a file.

    <runs-dir>/<experiment>/<method>/seed<k>/[trial<id>/]
        spec.json      resolved spec, hyperparameters, seed, git commit + dirty flag, host, SLURM
        metrics.jsonl  one JSON object per logged step or epoch
        result.json    written last, atomically (see RESULT_KEYS)
        checkpoint.pt  latest resumable state
        failed.json    an earlier attempt's failed result, set aside when the run resumed
    <runs-dir>/<experiment>/<method>/seed<k>/search.json   a search's summary

Analysis reads only these files, so keep old keys readable when adding new ones.
"""

from __future__ import annotations

import json
import math
import os
import socket
import subprocess
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from baselines.base import STATUSES  # one list: the searchers are told these
from stn.checkpoint import atomic_write

__all__ = [
    "RESULT_KEYS",
    "STATUSES",
    "RunDir",
    "atomic_write",
    "atomic_write_bytes",
    "atomic_write_json",
    "git_info",
    "host_info",
    "run_path",
]

RESULT_KEYS = (
    "status",
    "val_loss",
    "test_loss",
    "val_metric",
    "test_metric",
    "metric_name",
    "epochs",
    "wall_s",
    "hparams",
)


def run_path(
    runs_dir: str | Path, experiment: str, method: str, seed: int, trial: int | None = None
) -> Path:
    p = Path(runs_dir) / experiment / method / f"seed{seed}"
    return p / f"trial{trial}" if trial is not None else p


def _jsonable(obj: Any) -> Any:
    """NaN and inf become null (JSON has neither); tuples become lists."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, Mapping):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    return obj


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write to a temporary file in the same folder, fsync, then rename over `path`."""
    atomic_write(path, lambda f: f.write(data))


def atomic_write_json(path: str | Path, obj: Any) -> None:
    text = json.dumps(_jsonable(obj), indent=2, sort_keys=True, allow_nan=False)
    atomic_write_bytes(path, (text + "\n").encode())


def git_info(cwd: str | Path | None = None) -> dict[str, Any]:
    """The commit of the code that runs, and whether the tree had uncommitted changes."""
    cwd = cwd or Path(__file__).resolve().parent
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=10
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout
        return {"commit": commit or None, "dirty": bool(dirty.strip()) if commit else None}
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}


def host_info() -> dict[str, Any]:
    env = os.environ
    slurm = {
        k: env[k]
        for k in (
            "SLURM_JOB_ID",
            "SLURM_ARRAY_JOB_ID",
            "SLURM_ARRAY_TASK_ID",
            "SLURM_RESTART_COUNT",
            "SLURM_JOB_PARTITION",
        )
        if k in env
    }
    return {"host": socket.gethostname(), "slurm": slurm}


class RunDir:
    """One run's folder and its records."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    spec_file = property(lambda self: self.path / "spec.json")
    metrics_file = property(lambda self: self.path / "metrics.jsonl")
    result_file = property(lambda self: self.path / "result.json")
    checkpoint_file = property(lambda self: self.path / "checkpoint.pt")

    def write_spec(self, spec: Mapping[str, Any]) -> None:
        """Record the resolved spec with the code's commit and the host (SLURM ids included)."""
        atomic_write_json(self.spec_file, {**spec, "git": git_info(), **host_info()})

    def read_spec(self) -> dict[str, Any] | None:
        return _read_json(self.spec_file)

    def log(self, row: Mapping[str, Any]) -> None:
        """Append one metrics row (a crash can at worst cut the last line, which readers skip)."""
        self.path.mkdir(parents=True, exist_ok=True)
        with open(self.metrics_file, "a") as f:
            f.write(json.dumps(_jsonable(row), sort_keys=True) + "\n")

    def truncate_metrics(self, keep_step: int | float, key: str = "step") -> None:
        """On resume: drop rows logged after the checkpoint, so none is duplicated."""
        rows = [r for r in self.metrics() if r.get(key, -math.inf) <= keep_step]
        atomic_write_bytes(
            self.metrics_file, "".join(json.dumps(r, sort_keys=True) + "\n" for r in rows).encode()
        )

    def metrics(self) -> Iterator[dict[str, Any]]:
        if not self.metrics_file.exists():
            return
        with open(self.metrics_file) as f:
            for line in f:
                try:
                    yield json.loads(line)
                except json.JSONDecodeError:  # a line cut by a crash
                    continue

    def write_result(self, result: Mapping[str, Any]) -> None:
        missing = [k for k in RESULT_KEYS if k not in result]
        if missing:
            raise ValueError(f"result is missing keys: {', '.join(missing)}")
        if result["status"] not in STATUSES:
            raise ValueError(f"unknown status {result['status']!r}; valid: {STATUSES}")
        atomic_write_json(self.result_file, result)

    def read_result(self) -> dict[str, Any] | None:
        return _read_json(self.result_file)

    @property
    def done(self) -> bool:
        return self.result_file.exists()

    failed_file = property(lambda self: self.path / "failed.json")

    def reopen_failed(self) -> dict[str, Any] | None:
        """Set a failed result aside (as failed.json) so that the run resumes from its
        checkpoint; returns that record, or None when the run did not fail."""
        rec = self.read_result()
        if rec is None or rec.get("status") != "failed":
            return None
        os.replace(self.result_file, self.failed_file)
        return rec


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return None
