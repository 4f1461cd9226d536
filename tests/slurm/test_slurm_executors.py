"""make_executor / submit_calls / ResumableJob without a cluster, and the golden sbatch script."""

from __future__ import annotations

import dataclasses
import os
import sys
from pathlib import Path

import pytest
import submitit
from submitit.helpers import DelayedSubmission

from slurm import (
    Launch,
    LaunchError,
    ResumableJob,
    WarmPool,
    WorkerDied,
    local_threads,
    make_executor,
    on_checkpoint,
    submit_calls,
)

GOLDEN = Path(__file__).parent / "golden" / "gpu_launch.sbatch"


@pytest.fixture
def fake_srun(tmp_path, monkeypatch):
    """SLURM's commands on PATH (never run): the SLURM executor refuses to build without srun."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for cmd in ("srun", "sbatch"):
        (bin_dir / cmd).write_text("#!/bin/sh\nexit 1\n")
        (bin_dir / cmd).chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")


def test_debug_and_local_executors(tmp_path):
    ex = make_executor(Launch(launcher="debug"), tmp_path / "d", name="x")
    assert type(ex._executor) is submitit.DebugExecutor
    assert ex.submit(pow, 2, 5).result() == 32

    launch = Launch(launcher="local", cpus_per_task=3, gpus_per_node=1)
    with make_executor(launch, tmp_path / "l", parallel=1) as pool:  # the warm worker pool
        assert isinstance(pool, WarmPool) and pool.gpus == 1
        assert pool.threads == local_threads(launch, 1) and pool.submit(pow, 2, 5).result() == 32


def test_slurm_executor_parameters(tmp_path, fake_srun):
    launch = Launch(
        launcher="slurm", partition="gpu", gpus_per_node=2, cpus_per_task=10, mem_gb=2.5,
        timeout_min=30, array_parallelism=4, signal_delay_s=120,
        extra=("qos=high", "--constraint=a100"),
    )  # fmt: skip
    ex = make_executor(launch, tmp_path, name="run")
    assert type(ex._executor) is submitit.SlurmExecutor
    assert ex._executor.parameters == {
        "job_name": "run", "partition": "gpu", "gpus_per_node": 2, "cpus_per_task": 10,
        "mem": "2560MB", "time": 30, "array_parallelism": 4, "signal_delay_s": 120,
        "additional_parameters": {"qos": "high", "constraint": "a100"},
    }  # fmt: skip
    # No partition and no GPU: the cluster's defaults, no `--gpus-per-node=0`.
    params = make_executor(Launch(launcher="slurm"), tmp_path)._executor.parameters
    assert "partition" not in params and "gpus_per_node" not in params


def test_slurm_without_commands_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(
        LaunchError, match="srun is not on PATH.*valid launchers here: debug, local"
    ):
        make_executor(Launch(launcher="slurm"), tmp_path)


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("launcher", "cloud", "unknown launcher 'cloud'; valid launchers: debug, local, slurm"),
        ("gpus_per_node", -1, r"invalid gpus_per_node=-1; valid: an integer >= 0"),
        ("cpus_per_task", 0, r"invalid cpus_per_task=0; valid: an integer >= 1"),
        ("timeout_min", 1.5, r"invalid timeout_min=1.5; valid: an integer >= 1"),
        ("mem_gb", -2, r"invalid mem_gb=-2; valid: a number of GB > 0"),
        ("array_parallelism", True, r"invalid array_parallelism=True"),
        ("signal_delay_s", 3600, r"signal_delay_s=3600 leaves no run time.*< 3600"),
        ("partition", "a b", r"invalid partition 'a b'; valid: None or a partition name"),
        ("extra", ("account",), r"malformed extra sbatch option 'account'; valid: 'key=value'"),
        ("extra", ("Account=x",), r"malformed extra .*lowercase sbatch long option"),
        ("extra", ("time=5",), r"'time' is set by timeout_min; valid extra options are any"),
        ("extra", ("qos=a", "qos=b"), r"'qos' given twice"),
        ("extra", "account=ml", r"invalid extra='account=ml'; valid: a tuple of 'key=value'"),
    ],
)
def test_invalid_settings_list_what_is_valid(field, value, message):
    with pytest.raises(LaunchError, match=message):
        dataclasses.replace(Launch(), **{field: value})


def test_make_executor_needs_a_launch(tmp_path):
    with pytest.raises(LaunchError, match="needs a Launch, got dict"):
        make_executor({"launcher": "local"}, tmp_path)


def test_submit_calls_splits_at_max_array_size(tmp_path):
    ex = make_executor(Launch(launcher="debug"), tmp_path)
    batches: list[int] = []
    process = ex._internal_process_submissions
    ex._internal_process_submissions = lambda subs: batches.append(len(subs)) or process(subs)
    jobs = submit_calls(ex, [(pow, (2, k)) for k in range(7)], max_array_size=3)
    assert batches == [3, 3, 1]
    assert [j.result() for j in jobs] == [2**k for k in range(7)]
    with pytest.raises(LaunchError, match="max_array_size=0"):
        submit_calls(ex, [(pow, (2, 1))], max_array_size=0)


def test_submit_calls_mixes_functions_and_hides_a_drivers_slurm_variables(tmp_path, monkeypatch):
    ex = make_executor(Launch(launcher="debug"), tmp_path / "debug")
    batches: list[int] = []
    process = ex._internal_process_submissions
    ex._internal_process_submissions = lambda subs: batches.append(len(subs)) or process(subs)
    jobs = submit_calls(ex, [(pow, (2, 3)), (divmod, (7, 2)), (abs, (-1,))], max_array_size=2)
    assert batches == [2, 1] and [j.result() for j in jobs] == [8, (3, 1), 1]
    # a driver running inside a SLURM job: its tasks must not see the job's own variables
    monkeypatch.setenv("SLURM_CPUS_PER_TASK", "7")
    with make_executor(Launch(launcher="local"), tmp_path / "local") as local:
        (job,) = submit_calls(local, [(os.environ.get, ("SLURM_CPUS_PER_TASK", "unset"))], 1)
        assert job.result() == "unset" and os.environ["SLURM_CPUS_PER_TASK"] == "7"
        # a worker started later, outside submit_calls (a replacement), is just as clean
        with pytest.raises(WorkerDied):
            local.submit(os._exit, 1).result()
        assert local.submit(_slurm_cpus).result() == "unset" and local.started == 2


def _slurm_cpus() -> str:
    """SLURM_CPUS_PER_TASK as the process running this sees it (os.environ.get itself would be
    pickled with the submitting process's environment)."""
    return os.environ.get("SLURM_CPUS_PER_TASK", "unset")


def _hook_raises() -> None:
    raise RuntimeError("disk full")


def test_resumable_job_binds_args_and_checkpoints_itself(tmp_path, capsys):
    job = ResumableJob(divmod, 17)
    assert job(5) == (3, 2)
    assert make_executor(Launch(launcher="debug"), tmp_path).submit(job, 5).result() == (3, 2)
    saved: list[int] = []
    with on_checkpoint(lambda: saved.append(1)), on_checkpoint(_hook_raises):
        resubmission = job.checkpoint(5)
    # The failing hook is reported, the other one ran, and the same call is resubmitted.
    assert saved == [1] and "disk full" in capsys.readouterr().err
    assert isinstance(resubmission, DelayedSubmission)
    assert resubmission.function is job and resubmission.args == (5,)
    job.checkpoint(5)
    assert saved == [1]  # hooks are unregistered when their block ends
    with pytest.raises(TypeError, match="needs a callable"):
        ResumableJob(3)


def _normalise(text: str, folder: Path) -> str:
    return text.replace(str(folder), "<FOLDER>").replace(sys.executable, "<PYTHON>")


def test_gpu_launch_sbatch_matches_golden(tmp_path, fake_srun):
    launch = Launch(
        launcher="slurm", partition="gpu", gpus_per_node=1, cpus_per_task=8, mem_gb=32,
        timeout_min=240, signal_delay_s=120, extra=("account=ml",),
    )  # fmt: skip
    ex = make_executor(launch, tmp_path / "jobs", name="stn-cifar10")
    slurm_ex = ex._executor
    text = _normalise(
        slurm_ex._make_submission_file_text(slurm_ex._submitit_command_str, "u"), ex.folder
    )
    if os.environ.get("STN_UPDATE_GOLDEN") == "1":
        GOLDEN.parent.mkdir(exist_ok=True)
        GOLDEN.write_text(text)
    assert text == GOLDEN.read_text(), "sbatch script changed (STN_UPDATE_GOLDEN=1 rewrites it)"
