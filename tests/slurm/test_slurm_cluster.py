"""On a real SLURM cluster (slurm/local_cluster.sh up): submission, arrays, requeue, timeout.

Skipped when no cluster answers; CI sets STN_REQUIRE_SLURM=1 so that a missing one fails.
The jobs here are small Python functions, pickled by value (the job cannot import this test
module), with their own checkpoint files, like the training loops. Every wait polls against
one deadline for the module (tests/slurm/helpers.py): a busy machine only makes them slower.
"""

from __future__ import annotations

import dataclasses
import os
import pickle
import random
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import cloudpickle
import pytest

from slurm import Launch, ResumableJob, make_executor, on_checkpoint, submit_calls
from tests.slurm.helpers import COMMAND_S, Deadline, set_time_limit, time_out_soon

# The time-limit job starts with the first test: its run overlaps the other tests.
pytestmark = [pytest.mark.slurm, pytest.mark.usefixtures("time_limit_job")]
cloudpickle.register_pickle_by_value(sys.modules[__name__])

# One CPU and little memory per job so that two jobs fit the CI machine's node at once.
SMALL = Launch(launcher="slurm", cpus_per_task=1, mem_gb=0.25, timeout_min=5, signal_delay_s=30)


def walk(folder: str, steps: int, step_s: float, slow_first_run_s: float = 0.0) -> dict:
    """A deterministic stand-in for a training loop: a random walk whose complete state (step,
    value, RNG) is saved atomically after every step and reloaded on start.

    `slow_first_run_s` makes steps that slow until SLURM restarts the job (SLURM_RESTART_COUNT),
    so that the first run surely reaches its time limit; the result does not depend on speed.
    """
    run = Path(folder)
    run.mkdir(parents=True, exist_ok=True)
    ckpt = run / "checkpoint.pkl"
    state = {"step": 0, "value": 0.0, "rng": random.Random(0).getstate()}
    if ckpt.exists():
        state = pickle.loads(ckpt.read_bytes())
    restarts = int(os.environ.get("SLURM_RESTART_COUNT", "0"))
    with open(run / "starts.txt", "a") as f:
        f.write(f"{state['step']} {restarts}\n")
    rng = random.Random()
    rng.setstate(state["rng"])
    done = dict(state)  # the last complete state: what the checkpoint hook may save

    def save(s: dict, tmp_name: str = "checkpoint.tmp") -> None:
        tmp = run / tmp_name
        tmp.write_bytes(pickle.dumps(s))
        os.replace(tmp, ckpt)

    def on_signal() -> None:  # runs in submitit's signal handler, maybe in the middle of save()
        save(done, "checkpoint.signal.tmp")
        (run / "signalled").touch()

    with on_checkpoint(on_signal):
        while done["step"] < steps:
            time.sleep(slow_first_run_s if restarts == 0 and slow_first_run_s else step_s)
            value = done["value"] + rng.random()
            done = {"step": done["step"] + 1, "value": value, "rng": rng.getstate()}
            save(done)
    return {"step": done["step"], "value": done["value"], "restarts": restarts}


def timed_square(x: int, log: str, sleep_s: float) -> int:
    start = time.time()
    time.sleep(sleep_s)
    job = os.environ["SLURM_ARRAY_JOB_ID"] if "SLURM_ARRAY_JOB_ID" in os.environ else "single"
    with open(log, "a") as f:
        f.write(f"{job} {x} {start} {time.time()}\n")
    return x * x


@pytest.fixture(scope="module")
def deadline() -> Deadline:
    return Deadline()


@pytest.fixture(scope="module")
def time_limit_job(tmp_path_factory, deadline) -> Iterator[tuple[Any, Path, Path, Future]]:
    """A ResumableJob whose first run can only end by its time limit: (job, run, logs, the
    thread that brings the limit on). The first run would need 40 x 2 s, a requeued one
    40 x 0.05 s. Once its first checkpoint shows that it runs, its limit is lowered so that
    SLURM warns it at the next check (helpers.time_out_soon), and set back once the warning was
    handled (the hook wrote `signalled`), before the requeued job starts (cred_expire=10 s)."""
    tmp = tmp_path_factory.mktemp("time_limit")
    launch = dataclasses.replace(SMALL, timeout_min=5, signal_delay_s=90)
    run = tmp / "run"
    job = make_executor(launch, tmp / "jobs").submit(ResumableJob(walk, str(run), 40, 0.05, 2.0))

    def bring_on_the_limit() -> int:
        deadline.wait_for(lambda: (run / "checkpoint.pkl").exists(), "the first checkpoint")
        minutes = time_out_soon(job.job_id, launch.signal_delay_s)
        ended = lambda: "the job ended unwarned" if job.done() else None  # noqa: E731
        deadline.wait_for(lambda: (run / "signalled").exists(), "the time-limit warning", ended)
        set_time_limit(job.job_id, launch.timeout_min)
        return minutes

    pool = ThreadPoolExecutor(1)
    try:
        yield job, run, tmp / "jobs", pool.submit(bring_on_the_limit)
    finally:  # a failed test leaves nothing running
        subprocess.run(["scancel", job.job_id], capture_output=True, timeout=COMMAND_S)
        pool.shutdown(wait=False, cancel_futures=True)


def _starts(run: Path) -> list[tuple[int, int]]:
    return [tuple(map(int, line.split())) for line in (run / "starts.txt").read_text().splitlines()]


def assert_resumed(starts: list[tuple[int, int]], steps: int) -> None:
    """The job ran more than once, each run after the first going on from the checkpoint of
    the one before (not from step 0, never behind it), with SLURM counting the restarts."""
    assert len(starts) >= 2 and starts[0] == (0, 0), starts
    for restarts, ((before, _), (at, counted)) in enumerate(zip(starts, starts[1:]), 1):
        assert counted == restarts and 0 < at < steps and at >= before, starts


def test_function_returns_its_value(tmp_path, deadline):
    ex = make_executor(SMALL, tmp_path / "jobs", name="stn-test")
    job = ex.submit(divmod, 17, 5)
    assert deadline.result(job) == (3, 2)
    # submitit reads states through sacct: accounting works.
    state = lambda: job.get_info(mode="force").get("State")  # noqa: E731
    deadline.wait_for(lambda: state() == "COMPLETED", "sacct to say COMPLETED")


def test_job_arrays_respect_size_and_parallelism(tmp_path, deadline):
    ex = make_executor(dataclasses.replace(SMALL, array_parallelism=1), tmp_path)
    log = tmp_path / "tasks.log"
    calls = [(timed_square, (x, str(log), 1.0)) for x in range(5)]
    jobs = submit_calls(ex, calls, max_array_size=3)
    assert [deadline.result(j) for j in jobs] == [x * x for x in range(5)]
    # Two arrays (3 + 2 tasks: submitit does not split, we do), each running one task at a time.
    arrays: dict[str, list[tuple[float, float]]] = {}
    for line in log.read_text().splitlines():
        array, _, start, end = line.split()
        arrays.setdefault(array, []).append((float(start), float(end)))
    assert sorted(len(v) for v in arrays.values()) == [2, 3]
    for spans in arrays.values():
        spans.sort()
        assert all(a_end <= b_start for (_, a_end), (b_start, _) in zip(spans, spans[1:]))


def test_scontrol_requeue_resumes_from_the_jobs_own_checkpoint(tmp_path, deadline):
    reference = walk(str(tmp_path / "reference"), steps=20, step_s=0.0)
    run = tmp_path / "run"
    ex = make_executor(SMALL, tmp_path / "jobs")
    # 1 s steps until the restart (SIGTERM is ignored for KillWait=5 s), then 0.05 s steps.
    job = ex.submit(ResumableJob(walk, str(run), 20, 0.05, 1.0))
    deadline.wait_for(lambda: (run / "checkpoint.pkl").exists(), "the first checkpoint")
    # Kills the job and runs it again, without submitit's checkpoint call.
    subprocess.run(["scontrol", "requeue", job.job_id], check=True, timeout=COMMAND_S)
    result = deadline.result(job)
    assert {k: result[k] for k in ("step", "value")} == {k: reference[k] for k in ("step", "value")}
    assert_resumed(_starts(run), 20)
    assert not (run / "signalled").exists()


def test_time_limit_checkpoints_requeues_and_finishes(tmp_path, time_limit_job, deadline):
    job, run, jobs_folder, limit = time_limit_job
    reference = walk(str(tmp_path / "reference"), steps=40, step_s=0.0)
    result = deadline.result(job)
    limit.result(timeout=deadline.left())  # the limit was lowered, and set back after the warning
    assert {k: result[k] for k in ("step", "value")} == {k: reference[k] for k in ("step", "value")}
    assert (run / "signalled").exists()  # submitit called ResumableJob.checkpoint
    assert_resumed(_starts(run), 40)
    assert "timed-out" in "".join(p.read_text() for p in jobs_folder.glob("*_log.err"))
