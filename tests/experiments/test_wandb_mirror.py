"""The W&B mirror: real offline run files, and W&B trouble never failing or stalling a run."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from analysis.wandb_source import read_records  # the .wandb file decoder
from experiments import wandb_mirror
from experiments.wandb_mirror import Mirror, run_id_for


@pytest.fixture(autouse=True)
def isolated_wandb(tmp_path, monkeypatch):
    """No key, no netrc, W&B's own folders under tmp_path, and a fresh per-process failure memo."""
    for var in ("WANDB_API_KEY", "WANDB_IDENTITY_TOKEN_FILE", "WANDB_MODE", "WANDB_RUN_ID"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))
    for var in ("WANDB_CONFIG_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR"):
        monkeypatch.setenv(var, str(tmp_path / "wandb-home" / var.lower()))
    monkeypatch.setattr(wandb_mirror, "_FAILED", {})


def kwargs(tmp_path: Path, **over) -> dict:
    return dict(
        project="digits-mlp",
        group="stn/seed0",
        job_type="stn",
        name="stn-seed0",
        run_id=run_id_for("digits-mlp", "stn", 0),
        config={"task": {"epochs": 3, "data_dir": tmp_path}},
        tags=["test"],
        dir=tmp_path / "run",
        **over,
    )


def key(item) -> str:
    """A history or summary item's key: `key`, or `nested_key` parts joined by "/"."""
    return item.key or "/".join(item.nested_key)


def wait_for_exit_record(path: Path, timeout: float = 20.0) -> list:
    """wandb's service may still be flushing the file when finish() returns (at the latest it
    flushes when the process exits): wait until the run's closing record is on disk."""
    deadline = time.monotonic() + timeout
    while True:
        records = list(read_records(path))
        if any(r.WhichOneof("record_type") == "exit" for r in records):
            return records
        assert time.monotonic() < deadline, f"{path} has no exit record after {timeout} s"
        time.sleep(0.1)


def test_offline_run_files_hold_rows_on_our_step_axis_and_summary(tmp_path, caplog):
    m = Mirror("offline", **kwargs(tmp_path))
    assert m.active
    for step, loss in [(0, 2.0), (50, 1.0), (100, 1.5)]:
        m.log({"val_loss": loss, "lr": 0.1, "test_loss": loss + 1}, step=step)
    m.summary(best_val_loss=1.0, test_loss=2.0, skipped=None)
    m.finish()
    m.finish()  # twice is harmless
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]

    files = list((tmp_path / "run" / "wandb").glob("offline-run-*/run-*.wandb"))
    assert [f.name for f in files] == [f"run-{run_id_for('digits-mlp', 'stn', 0)}.wandb"]
    history, summary = [], {}
    for r in wait_for_exit_record(files[0]):
        kind = r.WhichOneof("record_type")
        if kind == "history":
            history.append({key(i): json.loads(i.value_json) for i in r.history.item})
        elif kind == "run":
            config = {key(i): json.loads(i.value_json) for i in r.run.config.update}
        elif kind == "summary":
            summary.update({key(i): json.loads(i.value_json) for i in r.summary.update})
    assert config["task"] == {"epochs": 3, "data_dir": str(tmp_path)}
    assert [h["step"] for h in history] == [0, 50, 100]
    assert [h["val_loss"] for h in history] == [2.0, 1.0, 1.5]
    assert summary["best_val_loss"] == 1.0 and summary["test_loss"] == 2.0
    assert summary["val_loss"] == {"min": 1.0}  # best, not last
    assert "skipped" not in summary


CHILD = """
import os, sys
from experiments.wandb_mirror import Mirror
m = Mirror("offline", project="p", group="g", job_type="stn", name="child", run_id="child",
           config={}, tags=[], dir=sys.argv[1])
m.log({"val_loss": 0.5}, step=1)
service = os.environ["WANDB_SERVICE"].split("-")[1]  # the pid that started the service
m.finish()
print(os.getpid(), service)
"""


def test_a_child_process_writes_through_its_own_wandb_service(tmp_path):
    """A CLI run started from a process with a W&B service (a notebook, this test process)
    inherits WANDB_SERVICE, and so do its SLURM jobs: their records must not wait on the
    parent's service (a SLURM job's init through it hung until W&B's timeout)."""
    parent = Mirror("offline", **kwargs(tmp_path))
    assert parent.active
    try:
        root = Path(__file__).resolve().parents[2]
        env = {**os.environ, "PYTHONPATH": str(root)}
        assert "WANDB_SERVICE" in env  # the parent's service, which the child inherits
        out = subprocess.run(
            [sys.executable, "-c", CHILD, str(tmp_path / "child")],
            env=env,
            check=True,
            timeout=120,
            capture_output=True,
            text=True,
        ).stdout
        child, service = out.split()
        assert service == child  # its own service, not the parent's
        (file,) = (tmp_path / "child" / "wandb").glob("offline-run-*/run-child.wandb")
        wait_for_exit_record(file, timeout=5)
    finally:
        parent.finish()


KILLED = """
import os, signal, sys, time
from experiments.wandb_mirror import Mirror
m = Mirror("offline", project="p", group="g", job_type="stn", name="c", run_id="c", config={},
           tags=[], dir=sys.argv[1])
m.log({"val_loss": 0.5}, step=1)
for pid in filter(str.isdigit, os.listdir("/proc")):  # W&B's service: a child of ours
    try:
        ppid = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[1]
    except OSError:
        continue
    if ppid == str(os.getpid()):
        os.kill(int(pid), signal.SIGTERM)
time.sleep(1)
m.log({"val_loss": 0.4}, step=2)
m.finish()
print("trained on")
"""


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc")
def test_a_killed_wandb_service_gives_one_warning_and_no_traceback(tmp_path):
    """At a SLURM time limit every process of the job gets SIGTERM, W&B's service first."""
    root = Path(__file__).resolve().parents[2]
    env = {k: v for k, v in os.environ.items() if k != "WANDB_SERVICE"}
    env["PYTHONPATH"] = str(root)
    cmd = [sys.executable, "-c", KILLED, str(tmp_path / "run")]
    done = subprocess.run(cmd, timeout=120, env=env, capture_output=True, text=True)
    assert done.returncode == 0 and done.stdout == "trained on\n", done.stderr
    lines = done.stderr.splitlines()
    assert len(lines) == 1 and "W&B mirror (offline) off for this process: log failed" in lines[0]


def test_online_without_key_warns_once_and_returns_at_once(tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("WANDB_BASE_URL", "http://127.0.0.1:9")
    t0 = time.monotonic()
    mirrors = [Mirror("online", **kwargs(tmp_path)) for _ in range(3)]
    for m in mirrors:
        m.log({"val_loss": 1.0}, step=1)
        m.summary(best_val_loss=1.0)
        m.finish()
    assert time.monotonic() - t0 < 3
    assert not any(m.active for m in mirrors)
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "API key" in warnings[0].getMessage()
    assert not (tmp_path / "run").exists()


def test_online_unreachable_server_is_bounded_and_warns_once(tmp_path, monkeypatch, caplog):
    """With a key but no server, init gives up after init_timeout; later mirrors skip at once."""
    monkeypatch.setenv("WANDB_BASE_URL", "http://127.0.0.1:9")  # nothing listens on port 9
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    t0 = time.monotonic()
    first = Mirror("online", **kwargs(tmp_path), init_timeout=2)
    second = Mirror("online", **kwargs(tmp_path), init_timeout=2)
    first.log({"val_loss": 1.0}, step=1)
    first.finish()
    assert time.monotonic() - t0 < 20  # wandb's default would wait 90 s
    assert not first.active and not second.active
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "online" in warnings[0].getMessage()


def test_a_wandb_error_mid_run_turns_the_mirror_off(tmp_path, monkeypatch, caplog):
    calls = []

    class BrokenRun:
        def define_metric(self, *a, **k):
            pass

        def log(self, row):
            calls.append(row)
            raise OSError("disk full")

    monkeypatch.setattr(Mirror, "_init", lambda self, **kw: BrokenRun())
    m = Mirror("offline", **kwargs(tmp_path))
    m.log({"val_loss": 1.0}, step=1)
    m.log({"val_loss": 1.0}, step=2)
    m.summary(best=1.0)
    m.finish()
    assert len(calls) == 1 and not m.active
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "disk full" in warnings[0].getMessage()


def test_mode_off_imports_nothing_and_writes_nothing(tmp_path):
    code = (
        "import sys\n"
        "from experiments.wandb_mirror import Mirror\n"
        f"m = Mirror('off', project='p', group='g', job_type='j', name='n', run_id='r',"
        f" config={{}}, tags=[], dir={str(tmp_path / 'run')!r})\n"
        "m.log({'val_loss': 1.0}, step=1); m.summary(best=1.0); m.finish()\n"
        "assert 'wandb' not in sys.modules, 'wandb was imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
    assert list(tmp_path.iterdir()) == []


def test_unknown_mode_lists_valid_ones(tmp_path):
    with pytest.raises(ValueError, match="unknown W&B mode 'on'; valid: off, offline, online"):
        Mirror("on", **kwargs(tmp_path))


def test_run_id_is_deterministic_and_distinct():
    ids = {run_id_for("e", m, s, t) for m in ("stn", "random") for s in (0, 1) for t in (None, 0)}
    assert len(ids) == 8
    # pinned: another key format would start new W&B runs instead of resuming existing ones
    assert run_id_for("e", "stn", 0, 3) == "9cefbc82449db9fc"
    assert all(len(i) == 16 and i.isalnum() for i in ids)
