"""A run store written by real smoke runs: digits-mlp, STN, random search and the fixed
baseline, two seeds, mirrored to offline W&B files. Written once per session (about 30-60 s on
a loaded 2-core machine); tests that change it work on a copy (`store_copy`)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class SmokeStore:
    runs: Path  # <runs>/<experiment>/<method>/seed<k>/[trial<id>/]
    experiment: str = "digits-mlp"
    methods: tuple[str, ...] = ("stn", "random", "fixed")
    seeds: tuple[int, ...] = (0, 1)

    def cli(self) -> list[str]:
        return [sys.executable, "-m", "experiments", "run", self.experiment, "--smoke",
                "--runs-dir", str(self.runs), "--launcher", "debug",
                "--methods", ",".join(self.methods), "--seeds", ",".join(map(str, self.seeds)),
                "--set", "budget.trials=2", "--wandb", "offline"]  # fmt: skip


def wandb_env(home: Path) -> dict[str, str]:
    """The environment of a run whose W&B mirror is offline and touches nothing outside `home`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
    env.update(NETRC=str(home / "no-netrc"), PYTHONPATH=str(ROOT))
    for var in ("WANDB_CONFIG_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR"):
        env[var] = str(home / var.lower())
    return env


@pytest.fixture(scope="session")
def smoke(tmp_path_factory) -> SmokeStore:
    """The store of `python -m experiments run digits-mlp --smoke ...`; do not modify it."""
    base = tmp_path_factory.mktemp("analysis-store")
    store = SmokeStore(base / "runs")
    done = subprocess.run(store.cli(), cwd=base, env=wandb_env(base / "wandb-home"),
                          capture_output=True, text=True, timeout=900)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    return store


@pytest.fixture
def store_copy(smoke, tmp_path) -> SmokeStore:
    """A copy of the smoke store that a test may damage."""
    return SmokeStore(Path(shutil.copytree(smoke.runs, tmp_path / "runs")))


@pytest.fixture(scope="session")
def report(smoke, tmp_path_factory) -> Path:
    """The report of the smoke store, written by `python -m analysis report`'s main."""
    from analysis.report import main

    out = tmp_path_factory.mktemp("report")
    assert main(["report", smoke.experiment, "--runs-dir", str(smoke.runs), "--out", str(out)]) == 0
    return out
