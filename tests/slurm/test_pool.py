"""The local launcher's warm worker pool: jobs reuse their worker processes, get their share of
the cores as threads, fail alone when their worker dies, and can be cancelled."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from slurm import submit_calls
from slurm.executors import Launch, local_threads
from slurm.pool import WarmPool, WorkerDied, job_threads, worker_devices


def whoami(tag: str) -> tuple[str, int, int, str | None]:
    import torch

    print(f"job {tag} says hello")
    return tag, os.getpid(), torch.get_num_threads(), os.environ.get("OMP_NUM_THREADS")


def fails(message: str) -> None:
    raise ValueError(message)


def waits_for(path: str) -> str:
    """Runs until `path` exists (the test decides when the job may end)."""
    while not os.path.exists(path):
        time.sleep(0.05)
    return "released"


def until(predicate, what: str, timeout: float = 300.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def test_jobs_reuse_warm_workers_with_their_threads_and_logs(tmp_path):
    with WarmPool(tmp_path, workers=2, threads=2) as pool:  # torch's default differs by machine
        calls = [(whoami, (f"t{i}",)) for i in range(6)]
        jobs = submit_calls(pool, calls, max_array_size=1)
        results = [job.result() for job in jobs]
        assert [r[0] for r in results] == [f"t{i}" for i in range(6)]
        pids = {r[1] for r in results}
        assert len(pids) <= 2 and os.getpid() not in pids  # six jobs, two processes
        assert pool.started == len(pids)
        assert {(r[2], r[3]) for r in results} == {(2, "2")}
        assert "job t3 says hello" in Path(jobs[3].paths.stdout).read_text()


def test_a_job_error_is_raised_by_result_and_the_worker_goes_on(tmp_path):
    with WarmPool(tmp_path, workers=1) as pool:
        bad = pool.submit(fails, "no good")
        good = pool.submit(whoami, "after")
        with pytest.raises(ValueError, match="no good"):
            bad.result()
        assert good.result()[0] == "after" and pool.started == 1
        assert "ValueError: no good" in Path(bad.paths.stderr).read_text()


def test_a_killed_worker_fails_only_its_job_and_is_replaced(tmp_path):
    release = tmp_path / "release"
    with WarmPool(tmp_path, workers=2) as pool:
        doomed = pool.submit(waits_for, str(release))
        other = pool.submit(waits_for, str(release))
        until(lambda: len(pool.pids()) == 2, "two workers")
        pids = pool.pids()
        until(lambda: Path(doomed.paths.stderr).exists(), "the first job to start")
        os.kill(pids[0], signal.SIGKILL)
        with pytest.raises(WorkerDied, match=r"died \(signal 9\)"):
            doomed.result()
        assert not other.done()  # the other worker's job runs on
        release.touch()
        assert other.result() == "released"
        assert pool.submit(whoami, "next").result()[1] not in pids  # a fresh worker ...
        assert pool.started == 3  # ... in the dead one's place


def test_cancel_stops_a_running_job_and_drops_a_queued_one(tmp_path):
    with WarmPool(tmp_path, workers=1) as pool:
        running = pool.submit(waits_for, str(tmp_path / "never"))
        queued = pool.submit(whoami, "queued")
        until(lambda: Path(running.paths.stderr).exists(), "the job to start")
        (pid,) = pool.pids()
        running.cancel(check=False)
        queued.cancel(check=False)
        for job in (running, queued):
            with pytest.raises(WorkerDied, match="cancelled"):
                job.result()
        until(lambda: not _alive(pid), "the cancelled job's worker to end")
        assert pool.submit(whoami, "later").result()[0] == "later"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as f:  # a zombie is not alive
        return f.read().split()[2] != "Z"


@pytest.mark.parametrize(
    ("cpus", "parallel", "cores", "want"),
    [(4, 2, 2, 1), (4, 1, 2, 2), (1, 2, 16, 1), (4, 2, 16, 4), (2, 8, 2, 1), (8, 3, 16, 5)],
)
def test_each_job_gets_its_share_of_the_cores(cpus, parallel, cores, want):
    assert job_threads(cpus, parallel, cores) == want


def test_a_thread_count_the_user_set_is_kept(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert local_threads(Launch(cpus_per_task=1), parallel=8) == 3
    monkeypatch.delenv("OMP_NUM_THREADS")
    assert local_threads(Launch(cpus_per_task=1), parallel=8) == 1


def test_workers_split_the_devices_this_process_sees():
    assert [worker_devices(i, 1, "") for i in range(2)] == [["0"], ["1"]]
    assert [worker_devices(i, 2, "4,5,6,7") for i in range(2)] == [["4", "5"], ["6", "7"]]
    assert worker_devices(1, 1, "3") == ["3"]  # fewer devices than workers: shared
