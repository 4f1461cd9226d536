"""Warm worker processes for the `local` launcher: a job costs its work, not a fresh interpreter.

    with WarmPool(workers=2, threads=1, folder="runs/x/.submitit") as pool:
        jobs = submit_calls(pool, [(fn, (a,)), (fn, (b,))], max_array_size=1)
        results = [job.result() for job in jobs]

submitit's local executor starts a new Python per job, and each pays for importing torch
(about 3.5 s of CPU on a small machine: more than a digits trial trains). The pool starts
`workers` processes once (spawned, so they share no state or file descriptors with the driver);
each imports torch, pins its thread count, then runs one job at a time. It speaks the part of
submitit's interface the drivers use (`submit`, `batch`, a job's `done`, `result`, `cancel`,
`job_id`, `paths.stdout`/`stderr`), so a job's function and its records are the same as with
the other launchers.

Failure semantics, what the resume story needs:
- A job that raises: `result()` raises its exception (the drivers record it as failed).
- A worker that dies (killed, out of memory): only its job fails (`WorkerDied`); a fresh worker
  takes its place for the next job. The job's run resumes from its checkpoint when rerun.
- The driver killed: idle workers see their pipe close and exit; a busy worker finishes its job
  (writing its record, holding its run's lock meanwhile), then exits. A rerun waits for the lock
  and reuses the record.
- `cancel()` (Ctrl-C, SIGTERM on the driver) terminates the job's worker.

There is no time limit: on one machine no scheduler takes the job away, so nothing needs the
checkpoint-and-requeue dance (a run is checkpointed all the same and resumes when rerun).
"""

from __future__ import annotations

import contextlib
import itertools
import multiprocessing
import os
import signal
import sys
import time
import traceback
from collections import deque
from collections.abc import Callable, Sequence
from multiprocessing.connection import Connection
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import cloudpickle

__all__ = ["PoolJob", "WarmPool", "WorkerDied", "available_cores", "job_threads", "worker_devices"]

_QUEUED, _RUNNING, _DONE = "queued", "running", "done"


class WorkerDied(RuntimeError):
    """The worker process running a job ended without returning its result."""


def available_cores() -> int:
    """Cores this process may run on (its affinity mask: a container's or taskset's limit)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # no sched_getaffinity (macOS)
        return max(1, os.cpu_count() or 1)


def job_threads(cpus_per_task: int, parallel: int, cores: int | None = None) -> int:
    """Threads of each of `parallel` local jobs sharing `cores`: what the job asked for
    (cpus_per_task) but no more than its share, and at least one. More threads than cores make
    every step slower (a PTB STN step: 20 s with 4 threads on 2 cores, 0.6 s with 1)."""
    cores = available_cores() if cores is None else cores
    return max(1, min(int(cpus_per_task), cores // max(1, int(parallel))))


def worker_devices(slot: int, gpus: int, visible: str | None = None) -> list[str]:
    """The CUDA devices of worker `slot` with `gpus` each: its group of the devices this process
    sees (CUDA_VISIBLE_DEVICES, when set, names them; else 0, 1, ...), wrapping around when
    there are fewer than the workers need."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES") if visible is None else visible
    names = [d.strip() for d in visible.split(",") if d.strip()] if visible else []
    if not names:
        return [str(slot * gpus + g) for g in range(gpus)]
    return [names[(slot * gpus + g) % len(names)] for g in range(gpus)]


def _worker(conn: Connection, threads: int, env: dict[str, str]) -> None:
    """A worker's life: set its threads, import torch once, then run jobs until the pipe closes."""
    for key in [k for k in os.environ if k.startswith(("SLURM_", "SUBMITIT_"))]:
        del os.environ[key]  # a driver inside a SLURM job: its jobs are not that job's tasks
    os.environ.update(env)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the driver, which cancels
    import torch

    torch.set_num_threads(threads)
    while True:
        try:
            message = conn.recv()
        except (EOFError, OSError):  # the driver is gone (or closed the pool)
            return
        if message is None:
            return
        job_id, payload, out, err = message
        ok, value = _run(payload, Path(out), Path(err))
        try:
            conn.send((job_id, ok, value))
        except (BrokenPipeError, OSError):
            return


def _run(payload: bytes, out: Path, err: Path) -> tuple[bool, bytes]:
    """Run one pickled call with stdout/stderr (the file descriptors, so that C extensions'
    output goes there too) in the job's log files; (True, result) or (False, error)."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    with open(out, "a") as fo, open(err, "a") as fe:
        os.dup2(fo.fileno(), 1)
        os.dup2(fe.fileno(), 2)
        try:
            fn, args, kwargs = cloudpickle.loads(payload)
            result = fn(*args, **kwargs)
            return True, _dumps(result)
        except BaseException as e:  # noqa: BLE001 - every failure goes back to the driver
            traceback.print_exc()
            return False, _dumps(e, fallback=RuntimeError(f"{type(e).__name__}: {e}"))
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])


def _dumps(value: Any, fallback: Any = None) -> bytes:
    try:
        return cloudpickle.dumps(value)
    except Exception as e:  # noqa: BLE001 - an unpicklable result or exception
        return cloudpickle.dumps(fallback or RuntimeError(f"unpicklable job result: {e}"))


class _Worker:
    def __init__(self, ctx: Any, threads: int, env: dict[str, str]) -> None:
        self.conn, child = ctx.Pipe()
        self.process = ctx.Process(target=_worker, args=(child, threads, env), daemon=True)
        self.process.start()
        child.close()  # ours is the only other end: the worker sees EOF when we go
        self.job: PoolJob | None = None

    def stop(self, kill: bool = False) -> None:
        if kill and self.process.is_alive():
            self.process.terminate()
        with contextlib.suppress(OSError):
            self.conn.close()


class PoolJob:
    """A job of a WarmPool (submitit.Job's interface, as much of it as the drivers use)."""

    def __init__(self, pool: WarmPool, job_id: str, payload: bytes) -> None:
        self._pool, self.job_id, self._payload = pool, job_id, payload
        self.state, self._ok, self._value = _QUEUED, False, b""
        self.paths = SimpleNamespace(stdout=pool.folder / f"{job_id}_log.out",
                                     stderr=pool.folder / f"{job_id}_log.err")  # fmt: skip

    def done(self) -> bool:
        if self.state != _DONE:
            self._pool.pump()
        return self.state == _DONE

    def result(self) -> Any:
        while not self.done():
            self._pool.wait(0.05)
        value = cloudpickle.loads(self._value)
        if not self._ok:
            raise value
        return value

    def cancel(self, check: bool = True) -> None:
        self._pool.cancel(self)

    def _finish(self, ok: bool, value: bytes) -> None:
        self.state, self._ok, self._value, self._payload = _DONE, ok, value, b""

    def __repr__(self) -> str:
        return f"PoolJob({self.job_id}, {self.state})"


class WarmPool:
    """`workers` warm processes running submitted calls, each with `threads` torch threads;
    job logs (`<job_id>_log.out`/`.err`) in `folder`. `gpus_per_worker` > 0 gives worker i its
    own CUDA devices (CUDA_VISIBLE_DEVICES), as submitit's local executor gives each job."""

    cluster = "local"

    def __init__(self, folder: str | Path, workers: int, threads: int = 1,
                 gpus_per_worker: int = 0) -> None:  # fmt: skip
        if workers < 1 or threads < 1:
            raise ValueError(f"WarmPool: workers={workers}, threads={threads}; valid: >= 1 each")
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.threads, self.gpus = int(threads), int(gpus_per_worker)
        self._ctx = multiprocessing.get_context("spawn")
        self._slots: list[_Worker | None] = [None] * int(workers)
        self._queue: deque[PoolJob] = deque()
        self._ids = itertools.count()
        self._prefix = f"pool{os.getpid()}"
        self.started = 0  # worker processes started, replacements included

    # --- submitit's executor interface ---
    def submit(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> PoolJob:
        job = PoolJob(self, f"{self._prefix}_{next(self._ids)}",
                      cloudpickle.dumps((fn, args, kwargs)))  # fmt: skip
        self._queue.append(job)
        self.pump()
        return job

    def batch(self) -> contextlib.AbstractContextManager[None]:
        return contextlib.nullcontext()

    def update_parameters(self, **_: Any) -> None:
        """Nothing to set: a pool's resources are fixed when it starts."""

    # --- running ---
    def pump(self) -> None:
        """Collect finished jobs, replace dead workers' jobs by failures, start queued jobs."""
        for i, w in enumerate(self._slots):
            if w is None or w.job is None:
                continue
            if w.conn.poll():
                try:
                    _, ok, value = w.conn.recv()
                except (EOFError, OSError):
                    self._lost(i)
                    continue
                w.job._finish(ok, value)
                w.job = None
            elif not w.process.is_alive() and not w.conn.poll():
                self._lost(i)
        for i in range(len(self._slots)):
            if not self._queue:
                break
            w = self._slots[i]
            if w is not None and w.job is not None:
                continue
            if w is None or not w.process.is_alive():
                w = self._slots[i] = self._start(i)
            job = self._queue.popleft()
            job.state, w.job = _RUNNING, job
            try:
                w.conn.send((job.job_id, job._payload, str(job.paths.stdout),
                             str(job.paths.stderr)))  # fmt: skip
            except (BrokenPipeError, OSError):
                self._lost(i)

    def wait(self, seconds: float) -> None:
        """Sleep until a busy worker has something to say, or `seconds` pass."""
        conns = [w.conn for w in self._slots if w is not None and w.job is not None]
        if conns:
            multiprocessing.connection.wait(conns, timeout=seconds)
        else:
            time.sleep(seconds)

    def _start(self, slot: int) -> _Worker:
        env = {"OMP_NUM_THREADS": str(self.threads), "MKL_NUM_THREADS": str(self.threads)}
        if self.gpus:  # slot i: the i-th group of this process's visible devices
            env["CUDA_VISIBLE_DEVICES"] = ",".join(worker_devices(slot, self.gpus))
        self.started += 1
        return _Worker(self._ctx, self.threads, env)

    def _lost(self, slot: int) -> None:
        w = self._slots[slot]
        assert w is not None and w.job is not None
        w.process.join(timeout=5)
        code = w.process.exitcode
        how = f"signal {-code}" if code is not None and code < 0 else f"exit code {code}"
        err = WorkerDied(f"the local worker running job {w.job.job_id} died ({how})")
        w.job._finish(False, cloudpickle.dumps(err))
        w.job = None
        w.stop()
        self._slots[slot] = None

    def cancel(self, job: PoolJob) -> None:
        if job.state == _QUEUED:
            self._queue.remove(job)
        for i, w in enumerate(self._slots):
            if w is not None and w.job is job:
                w.stop(kill=True)
                w.process.join(timeout=10)
                self._slots[i] = None
        if job.state != _DONE:
            job._finish(False, cloudpickle.dumps(WorkerDied(f"job {job.job_id} was cancelled")))

    def shutdown(self) -> None:
        """Stop the workers: idle ones at once; those still running a job are terminated."""
        for job in list(self._queue):
            self.cancel(job)
        for w in (w for w in self._slots if w is not None):
            if w.job is None:
                with contextlib.suppress(OSError):
                    w.conn.send(None)
            w.stop(kill=w.job is not None)
        for w in (w for w in self._slots if w is not None):
            w.process.join(timeout=10)
            if w.process.is_alive():
                w.process.kill()
        self._slots = [None] * len(self._slots)

    def __enter__(self) -> WarmPool:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.shutdown()

    def pids(self) -> Sequence[int]:
        """The live workers' process ids (tests kill one)."""
        return [w.process.pid for w in self._slots if w is not None and w.process.pid]
