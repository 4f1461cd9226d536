"""`python -m experiments` on a real SLURM cluster (slurm/local_cluster.sh up), end to end.

Every run goes through the CLI in a subprocess, on tmp_path run stores, and is compared with
the same run in-process (`--launcher debug`, which gives the `local` launcher's numbers: both
run the same jobs on the same CPU; one thread everywhere, as `launch.cpus_per_task=1` gives
local jobs). The cluster's node has two CPUs, so everything starts at once when the first test
runs (module fixture, background threads), longest first:

- an STN run stopped by its time limit (checkpointed and requeued by submitit);
- an STN run requeued with `scontrol requeue` after its first checkpoint;
- a random search whose driver is SIGKILLed after its first trial and started again;
- the whole smoke experiment (every method of its definition), which also checks W&B's
  offline default;
- the in-process references, niced.

How long each step takes depends on the machine's load, so every wait polls against one
deadline for the module (tests/slurm/helpers.py), and what is asserted is what must hold
however often a job was requeued: it resumed, repeated nothing, and gave the same result.
"""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from experiments.registry import get
from tests.slurm.helpers import COMMAND_S, Deadline, set_time_limit, time_out_soon

pytestmark = [pytest.mark.slurm, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
EXP = "digits-mlp"
# The sweep runs every method of the definition (its smoke variant keeps them all).
METHODS = get(EXP).methods
SEARCHES = tuple(m for m in METHODS if m not in get(EXP).stn_methods)  # those with a search.json
# Two jobs at once on the 2-CPU node.
SMALL = ("--set", "launch.cpus_per_task=1", "--set", "launch.mem_gb=1")
# STN runs as the experiments define them: they save a checkpoint every epoch (17 steps) and
# their jobs resume from it.
REQUEUED = ("--methods", "stn", "--set", "task.epochs=300")
# The time-limited run: once its first checkpoint is on disk (submitit's USR2 handler is set),
# its limit is lowered so that SLURM's next check (within 30 s) warns it (helpers.time_out_soon).
# The run must outlast that on an idle machine: 1200 epochs of ~0.04-0.06 s (48-72 s); every
# epoch more keeps one of the node's two CPUs longer from the other jobs.
TIMED = ("--methods", "stn", "--set", "task.epochs=1200")
# 10 minutes or less: submitit then takes any USR2 for a time-out, not a preemption (it counts
# these, at most 3, then gives up); a warning 90 s ahead, which time_out_soon needs (>= 75 s).
TIMEOUT_MIN, SIGNAL_DELAY_S = 10, 90
TIME_LIMIT = ("--set", f"launch.timeout_min={TIMEOUT_MIN}",
              "--set", f"launch.signal_delay_s={SIGNAL_DELAY_S}")  # fmt: skip
SEARCH = ("--methods", "random", "--set", "budget.parallel=1")  # one trial at a time
CLOCK = {"wall_s", "elapsed", "seconds", "trial_seconds"}  # wall-clock fields differ per run


# --- processes -----------------------------------------------------------------------------


class Cli:
    """`python -m experiments ARGS` in a subprocess, its output in files next to the stores."""

    def __init__(self, root: Path, name: str, *args: str, deadline: Deadline, nice: int = 0):
        self.out, self.err = root / f"{name}.out", root / f"{name}.err"
        self.deadline = deadline
        path = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p)
        # One thread: what launch.cpus_per_task=1 gives local jobs; the SLURM jobs inherit it.
        env = {**os.environ, "PYTHONPATH": path, "OMP_NUM_THREADS": "1"}
        cmd = [sys.executable, "-m", "experiments", *args]
        with open(self.out, "w") as out, open(self.err, "w") as err:
            self.proc = subprocess.Popen(
                ["nice", "-n", str(nice), *cmd] if nice else cmd,
                cwd=root,
                env=env,
                stdout=out,
                stderr=err,
            )

    def wait(self) -> Cli:
        self.proc.wait(timeout=self.deadline.left())
        return self

    def gone(self) -> str | None:
        """Why it cannot make anything happen any more (it exited), or None while it runs."""
        if self.proc.poll() is None:
            return None
        return f"the command exited {self.proc.returncode}\n{self.stdout}\n{self.stderr[-3000:]}"

    @property
    def stdout(self) -> str:
        return self.out.read_text()

    @property
    def stderr(self) -> str:
        return self.err.read_text()

    def check(self) -> Cli:
        """Wait; fail with its output unless it exited 0."""
        code = self.wait().proc.returncode
        assert code == 0, f"exit {code}\n{self.stdout}\n{self.stderr[-3000:]}"
        return self


def run_args(runs: Path, launcher: str, *extra: str) -> tuple[str, ...]:
    return ("run", EXP, "--smoke", "--seeds", "0", "--launcher", launcher, "--runs-dir",
            str(runs), *extra)  # fmt: skip


def wait_for(predicate: Callable[[], Any], what: str, cli: Cli) -> None:
    """Poll until predicate() holds; fail if `cli` exits first, or at the module's deadline."""
    cli.deadline.wait_for(predicate, what, cli.gone)


def submitted(runs: Path) -> set[str]:
    """Job ids (of single jobs and whole arrays) sbatch gave the experiment's executor."""
    folder = runs / EXP / ".submitit"
    names = (p.name for p in folder.glob("*_submission.sh")) if folder.is_dir() else ()
    return {n.split("_")[0] for n in names if n.split("_")[0].isdigit()}


def read_json(path: Path) -> Any:
    return json.loads(path.read_text())


# --- what runs in the background -----------------------------------------------------------


def first_checkpoint(runs: Path, cli: Cli) -> str:
    """The STN run's job id, once its first checkpoint is on disk (the job runs its function,
    so submitit's signal handlers are set)."""
    run = runs / EXP / "stn" / "seed0"
    wait_for(lambda: (run / "checkpoint.pt").exists(), "the first checkpoint", cli)
    return read_json(run / "spec.json")["slurm"]["SLURM_JOB_ID"]


def requeue_after_first_checkpoint(runs: Path, cli: Cli) -> str:
    """`scontrol requeue` the STN run's job once its first checkpoint is on disk; its job id."""
    job = first_checkpoint(runs, cli)
    subprocess.run(["scontrol", "requeue", job], check=True, timeout=COMMAND_S)
    return job


def time_limit_after_first_checkpoint(runs: Path, cli: Cli) -> str:
    """Bring the STN run's time limit on once its first checkpoint is on disk, and set the limit
    back once submitit handled the warning, before SLURM starts the requeued job (cred_expire
    keeps it pending 10 s). Returns the job id."""
    job = first_checkpoint(runs, cli)
    time_out_soon(job, SIGNAL_DELAY_S)
    log = runs / EXP / ".submitit" / f"{job}_0_log.out"
    warned = "this job is timed-out"
    wait_for(lambda: warned in log.read_text(), "the time-limit warning", cli)
    set_time_limit(job, TIMEOUT_MIN)
    return job


@dataclass
class KilledSearch:
    first: Cli  # the driver that was killed
    second: Cli  # the same command, started again
    jobs_at_kill: dict[str, str]  # jobs.json when it died
    submitted_at_kill: set[str]
    done_at_restart: set[str]  # trials with a result.json when the second driver started
    status_mid: Cli  # `status` with no driver alive


def kill_and_restart(root: Path, first: Cli, start: Callable[..., Cli]) -> KilledSearch:
    """SIGKILL the search's driver after its first trial, ask `status`, start it again."""
    runs = root / "search"
    seed_dir = runs / EXP / "random" / "seed0"
    wait_for(lambda: any(seed_dir.glob("trial*/result.json")), "the first trial", first)
    first.proc.kill()
    first.wait()
    jobs, subs = read_json(seed_dir / "jobs.json"), submitted(runs)
    mid = start("status_mid", "status", EXP, "--runs-dir", str(runs)).check()
    done = {p.parent.name for p in seed_dir.glob("trial*/result.json")}
    second = start("search2", *run_args(runs, "slurm", *SEARCH, *SMALL))
    return KilledSearch(first, second.check(), jobs, subs, done, mid)


@dataclass
class Lab:
    root: Path
    deadline: Deadline
    sweep: Cli
    sweep_ref: Cli
    requeued: Cli
    requeued_ref: Cli
    requeued_job: Future  # -> job id
    timed: Cli
    timed_ref: Cli
    timed_job: Future  # -> job id
    search: Future  # -> KilledSearch


@pytest.fixture(scope="module")
def lab(tmp_path_factory) -> Iterator[Lab]:
    root = tmp_path_factory.mktemp("on_slurm")
    pool = ThreadPoolExecutor(3)
    procs: list[Cli] = []
    deadline = Deadline()

    def start(name: str, *args: str, nice: int = 0) -> Cli:
        cli = Cli(root, name, *args, deadline=deadline, nice=nice)
        procs.append(cli)  # also from the search's thread: killed at the end if still running
        return cli

    def slurm(name: str, *extra: str) -> Cli:
        cli = start(name, *run_args(root / name, "slurm", *extra, *SMALL))
        # SLURM starts jobs in submission order: the longest first.
        wait_for(lambda: submitted(root / name), f"{name}'s first job", cli)
        return cli

    try:
        # The references only need to be done by the end: niced, they leave the CPUs to jobs.
        refs = {n: start(f"{n}_ref", *run_args(root / f"{n}_ref", "debug", *a), nice=10)
                for n, a in (("timed", TIMED), ("requeued", REQUEUED), ("sweep", ()))}  # fmt: skip
        timed = slurm("timed", *TIMED, *TIME_LIMIT)
        timed_job = pool.submit(time_limit_after_first_checkpoint, root / "timed", timed)
        requeued = slurm("requeued", *REQUEUED)
        requeued_job = pool.submit(requeue_after_first_checkpoint, root / "requeued", requeued)
        search = pool.submit(kill_and_restart, root, slurm("search", *SEARCH), start)
        sweep = start("sweep", *run_args(root / "sweep", "slurm", *SMALL))
        yield Lab(root, deadline, sweep, refs["sweep"], requeued, refs["requeued"],
                  requeued_job, timed, refs["timed"], timed_job, search)  # fmt: skip
    finally:
        for cli in procs:  # a failed test leaves nothing running
            if cli.proc.poll() is None:
                cli.proc.kill()
        names = ("timed", "requeued", "search", "sweep")
        jobs = set().union(*(submitted(root / n) for n in names))
        if jobs:
            subprocess.run(["scancel", *sorted(jobs)], capture_output=True, timeout=COMMAND_S)
        pool.shutdown(wait=False, cancel_futures=True)


# --- comparing stores ----------------------------------------------------------------------


def same(a: Any, b: Any, where: str = "") -> None:
    """a == b, numbers to 1e-6, wall-clock fields left out."""
    if isinstance(a, dict) and isinstance(b, dict):
        keys_a, keys_b = set(a) - CLOCK, set(b) - CLOCK
        assert keys_a == keys_b, f"{where}: keys {sorted(keys_a ^ keys_b)} differ"
        for k in sorted(keys_a):
            same(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, list) and isinstance(b, list):
        assert len(a) == len(b), f"{where}: {len(a)} != {len(b)} items"
        for i, (x, y) in enumerate(zip(a, b)):
            same(x, y, f"{where}[{i}]")
    elif isinstance(a, float) and isinstance(b, float) and math.isfinite(a):
        assert abs(a - b) <= 1e-6, f"{where}: {a!r} != {b!r}"
    else:
        assert a == b, f"{where}: {a!r} != {b!r}"


def run_folders(runs: Path) -> list[Path]:
    """The store's run folders (STN runs and trials), relative to the experiment's folder."""
    exp = runs / EXP
    return sorted(p.parent.relative_to(exp) for p in exp.glob("*/seed*/**/spec.json"))


def metrics(folder: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]


def job_id(spec: dict[str, Any]) -> str:
    slurm = spec["slurm"]
    if "SLURM_ARRAY_JOB_ID" in slurm:
        return f"{slurm['SLURM_ARRAY_JOB_ID']}_{slurm['SLURM_ARRAY_TASK_ID']}"
    return slurm["SLURM_JOB_ID"]


def sacct_states(jobs: set[str]) -> dict[str, str]:
    out = subprocess.run(
        ["sacct", "-X", "-n", "-P", "-o", "JobID,State", "-j", ",".join(sorted(jobs))],
        capture_output=True, text=True, check=True, timeout=COMMAND_S,
    ).stdout  # fmt: skip
    return dict(line.split("|")[:2] for line in out.splitlines() if line.strip())


def assert_completed(jobs: set[str], deadline: Deadline) -> None:
    """SLURM's accounting says COMPLETED for every job (slurmdbd may lag behind the result
    files the driver reads); a state that cannot change to COMPLETED fails at once."""
    states: dict[str, str] = {}

    def completed() -> bool:
        states.update(sacct_states(jobs))
        return all(states.get(j) == "COMPLETED" for j in jobs)

    def ended_otherwise() -> str | None:
        final = {j: s for j, s in states.items() if s in ("FAILED", "CANCELLED", "TIMEOUT")}
        return f"jobs ended {final}" if final else None

    deadline.wait_for(completed, "sacct to say COMPLETED", ended_otherwise, poll_s=1.0)


def selection(search: dict[str, Any]) -> dict[str, Any]:
    """What a search chose: its trials' settings and results, and the best one."""
    keys = ("trial", "params", "budget", "resume_from", "seed", "status", "val_loss", "test_loss")
    return {"trials": [{k: t.get(k) for k in keys} for t in search["trials"]],
            "best": search["best"]}  # fmt: skip


def epochs_logged(log: Path) -> list[float]:
    """The epochs of the evaluation lines a job printed, over all its runs, in order."""
    return [float(e) for e in re.findall(r"\] epoch (\S+) val_loss", log.read_text())]


def status_line(cli: Cli, method: str) -> str:
    lines = [ln for ln in cli.stdout.splitlines() if ln.split()[:2] == [method, "0"]]
    assert len(lines) == 1, cli.stdout
    return lines[0]


# --- the tests -----------------------------------------------------------------------------


def test_every_method_through_slurm_matches_the_in_process_run(lab):
    sweep, ref = lab.root / "sweep", lab.root / "sweep_ref"
    lab.sweep.check()
    lab.sweep_ref.check()
    folders = run_folders(sweep)
    assert folders == run_folders(ref)
    assert {f.parts[0] for f in folders} == set(METHODS)  # pbt included: it trains trials
    jobs = set()
    for rel in folders:
        got, want = sweep / EXP / rel, ref / EXP / rel
        same(read_json(got / "result.json"), read_json(want / "result.json"), f"{rel} result")
        same(metrics(got), metrics(want), f"{rel} metrics")
        jobs.add(job_id(read_json(got / "spec.json")))
        if rel.name.startswith("trial"):  # the driver recorded the job it submitted
            recorded = read_json(got.parent / "jobs.json")[rel.name.removeprefix("trial")]
            assert recorded == job_id(read_json(got / "spec.json"))
    assert_completed(jobs, lab.deadline)
    for method in SEARCHES:
        got, want = (r / EXP / method / "seed0" / "search.json" for r in (sweep, ref))
        same(selection(read_json(got)), selection(read_json(want)), f"{method} search")
    table = lab.sweep.stdout
    for method in METHODS:  # the CLI's results table: one ok row per method
        assert re.search(rf"^{re.escape(method)}\s+0\s+ok\s", table, re.M), table


def test_slurm_runs_mirror_to_wandb_offline_and_print_the_sync_command(lab):
    sweep, out = lab.root / "sweep", lab.sweep.check().stdout
    folders = run_folders(sweep)
    m = re.search(r"^(\d+) W&B runs were logged offline; upload them with:\n\s+(wandb sync .*)$",
                  out, re.M)  # fmt: skip
    assert m, out
    assert int(m[1]) == len(folders)  # one offline run per run folder
    for rel in folders:
        (offline,) = (sweep / EXP / rel / "wandb").glob("offline-run-*")
        # W&B's service process may still be flushing after the job's own process has ended
        written = lambda: any(f.stat().st_size > 0 for f in offline.glob("run-*.wandb"))  # noqa: B023, E731
        try:
            lab.deadline.wait_for(written, f"W&B records in {offline}", poll_s=0.5)
        except AssertionError as e:
            log = (offline / "logs" / "debug.log").read_text().splitlines()[-5:]
            raise AssertionError(f"{e}; its debug.log ends:\n" + "\n".join(log)) from None
    # The printed command finds exactly those folders.
    finder = re.fullmatch(r"wandb sync \$\((find .*)\)", m[2])
    assert finder, m[2]
    found = subprocess.run(["bash", "-c", finder[1]], capture_output=True, text=True, check=True)
    assert len(found.stdout.split()) == len(folders)
    # Elsewhere W&B is off by default: nothing mirrored, no sync hint.
    assert "wandb sync" not in lab.sweep_ref.check().stdout
    assert not list((lab.root / "sweep_ref").glob("**/wandb"))


def stn_run(name: str, cli: Cli, ref: Cli, job: Future) -> tuple[Path, Path, str, Path]:
    """An STN run done on SLURM: its folder, its reference's, its job id and its job's logs."""
    cli.check()
    ref.check()
    runs, ref_runs = cli.out.parent / name, ref.out.parent / f"{name}_ref"
    job_id = job.result(timeout=cli.deadline.left())
    run, ref_run = (r / EXP / "stn" / "seed0" for r in (runs, ref_runs))
    return run, ref_run, job_id, runs / EXP / ".submitit" / f"{job_id}_0_log"


def same_run(run: Path, ref: Path) -> None:
    """The same result and metrics rows as the uninterrupted run: no row twice, none lost."""
    same(read_json(run / "result.json"), read_json(ref / "result.json"), "result")
    rows = metrics(run)
    assert [r["row"] for r in rows] == list(range(len(rows)))
    same(rows, metrics(ref), "metrics")


def job_runs(log: Path) -> list[str]:
    """The submitit log of each time the job ran."""
    return log.with_suffix(".out").read_text().split("Starting with JobEnvironment")[1:]


def assert_resumed(run: Path, job: str, log: Path, runs: list[str], epochs: int) -> None:
    """The job ran more than once, the last run finished, SLURM counted every restart, and no
    run started over: epoch 1 was evaluated once (the runs after the first went on from a
    checkpoint, taken every epoch before the epoch is evaluated), up to the last epoch."""
    assert len(runs) >= 2 and "Job completed successfully" in runs[-1], runs
    spec = read_json(run / "spec.json")["slurm"]
    assert spec["SLURM_JOB_ID"] == job and spec["SLURM_RESTART_COUNT"] == str(len(runs) - 1)
    logged = epochs_logged(log.with_suffix(".err"))
    assert logged.count(1.0) == 1 and logged[-1] == epochs, logged


def test_scontrol_requeued_stn_run_resumes_from_its_checkpoint(lab):
    run, ref, job, log = stn_run("requeued", lab.requeued, lab.requeued_ref, lab.requeued_job)
    same_run(run, ref)
    runs = job_runs(log)
    # Killed by the requeue without submitit's checkpoint call; run again and finished.
    assert "Calling checkpoint method" not in runs[0]
    assert_resumed(run, job, log, runs, 300)
    assert_completed({job}, lab.deadline)


def test_time_limit_checkpoints_requeues_and_finishes(lab):
    run, ref, job, log = stn_run("timed", lab.timed, lab.timed_ref, lab.timed_job)
    same_run(run, ref)
    runs = job_runs(log)
    # SLURM's warning before the limit: submitit called ResumableJob.checkpoint and requeued,
    # each time the limit came (once, unless a run was too slow for the limit set back).
    assert f"Requeued job {job} (2 remaining timeouts)" in runs[0]
    for ended in runs[:-1]:
        assert "this job is timed-out" in ended and "Calling checkpoint method" in ended
        assert f"Requeued job {job} (" in ended
    assert_resumed(run, job, log, runs, 1200)
    assert_completed({job}, lab.deadline)


def test_killed_search_driver_continues_without_duplicates(lab):
    k = lab.search.result(timeout=lab.deadline.left())
    assert k.first.proc.returncode == -9
    seed_dir = lab.root / "search" / EXP / "random" / "seed0"
    trials = sorted(p.name for p in seed_dir.iterdir() if p.is_dir())
    assert trials == ["trial0", "trial1", "trial2"]
    events = [json.loads(line) for line in (seed_dir / "search_journal.jsonl").open()]
    for kind in ("ask", "tell"):
        assert sorted(e["id"] for e in events if e["event"] == kind) == [0, 1, 2], events
    # Re-attached to the jobs still queued or running: none submitted again.
    assert submitted(lab.root / "search") == k.submitted_at_kill
    assert read_json(seed_dir / "jobs.json") == k.jobs_at_kill
    assert len(k.done_at_restart) < 3, "every trial had finished: nothing to re-attach to"
    for t in trials:
        spec = read_json(seed_dir / t / "spec.json")
        assert job_id(spec) == k.jobs_at_kill[t.removeprefix("trial")]
        assert "SLURM_RESTART_COUNT" not in spec["slurm"]
    search = read_json(seed_dir / "search.json")
    assert search["finished"]
    lab.sweep.check()  # the same search, run straight through
    straight = read_json(lab.root / "sweep" / EXP / "random" / "seed0" / "search.json")
    same(selection(search), selection(straight), "search")


def test_status_shows_trials_best_and_slurm_jobs(lab):
    k = lab.search.result(timeout=lab.deadline.left())
    seed_dir = lab.root / "search" / EXP / "random" / "seed0"
    search, jobs = read_json(seed_dir / "search.json"), read_json(seed_dir / "jobs.json")
    # With the driver dead: the finished trial(s), the rest running or queued, the best so far.
    line = status_line(k.status_mid, "random")
    m = re.search(r"(\d+)(?:/\d+)? done, (\d+) running, (\d+) failed", line)
    assert m and int(m[1]) >= 1 and int(m[1]) + int(m[2]) == 3 and m[3] == "0", line
    best_mid = float(line.split()[-2])
    vals = [t["val_loss"] for t in search["trials"]]
    assert any(abs(best_mid - v) < 5e-5 for v in vals) and best_mid >= min(vals) - 5e-5
    assert set(line.split()[-1].split(",")) <= set(jobs.values())
    # At the end: all done, the best trial, every trial's job.
    end = Cli(lab.root, "status_end", "status", EXP, "--runs-dir", str(lab.root / "search"),
              deadline=lab.deadline)  # fmt: skip
    line = status_line(end.check(), "random")
    assert re.search(r"\b3(/3)? done, 0 running, 0 failed, finished", line), line
    assert line.split()[-2] == f"{search['best']['val_loss']:.4f}"
    assert line.split()[-1] == ",".join(sorted(jobs.values()))
