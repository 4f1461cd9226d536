"""What the SLURM tests share: one generous deadline for all their waiting, and a time limit that
SLURM reaches when the test wants it to.

Waiting: every wait polls until what it waits for holds, against one deadline per test module,
so a loaded machine makes the tests slower, never red; only a hang (or a real failure) ends a
wait early. Nothing counts timeouts or requeues that only the machine's speed decides.

Time limits: SLURM checks them every 30 s and sends the warning signal (`--signal=USR2@D`, what
`Launch.signal_delay_s` sets) at the first check within D + 30 s of the end. A job submitted
with a short limit is warned somewhere in a 30 s window after it starts, maybe before submitit
has unpickled the job (torch's imports take seconds, more on a busy machine) and installed its
USR2 handler: the signal would then kill it. `time_out_soon` instead lowers a running job's
limit once the job has shown it runs (its first checkpoint is on disk, so the handler is
installed), to an end that the next check warns about and no check reaches first.
"""

from __future__ import annotations

import math
import subprocess
import time
from collections.abc import Callable
from typing import Any

# An hour for a whole module: the SLURM modules take a few minutes on an idle two-core machine.
DEADLINE_S = 3600.0
PERIODIC_S = 30  # SLURM's PERIODIC_TIMEOUT: how often slurmctld checks time limits
MARGIN_S = 15  # between reading a job's run time and SLURM applying its new limit
COMMAND_S = 120  # one scontrol / sacct call (slurmctld answers in well under a second)


class Deadline:
    """The time left for a test module's waiting, shared by all its waits."""

    def __init__(self, seconds: float = DEADLINE_S) -> None:
        self.seconds = seconds
        self.end = time.monotonic() + seconds

    def left(self) -> float:
        return max(self.end - time.monotonic(), 0.0)

    def wait_for(
        self,
        predicate: Callable[[], Any],
        what: str,
        gone: Callable[[], str | None] | None = None,
        poll_s: float = 0.2,
    ) -> None:
        """Poll until predicate() holds. Fail when `gone()` says why it never will (the process
        that should make it hold has exited), or at the deadline."""
        while not predicate():
            why = gone() if gone is not None else None
            if why is not None and not predicate():
                raise AssertionError(f"{what}: {why}")
            assert time.monotonic() < self.end, (
                f"waited {self.seconds:.0f} s (this module's deadline) for {what}"
            )
            time.sleep(poll_s)

    def result(self, job: Any, what: str = "") -> Any:
        """A submitit job's result, waiting for it against the deadline (Job.result() would
        wait forever)."""
        self.wait_for(job.done, what or f"job {job.job_id} to finish", poll_s=1.0)
        return job.result()


def scontrol(*args: str) -> str:
    return subprocess.run(
        ["scontrol", *args], capture_output=True, text=True, check=True, timeout=COMMAND_S
    ).stdout


def job_fields(job_id: str) -> dict[str, str]:
    """`scontrol show job` of one (non-array) job, as its Key=Value fields."""
    out = scontrol("show", "job", "-o", job_id)
    return dict(tok.split("=", 1) for tok in out.split() if "=" in tok)


def seconds(duration: str) -> int:
    """SLURM's [D-][HH:]MM:SS as seconds."""
    days, _, clock = duration.rpartition("-")
    parts = [int(p) for p in clock.split(":")]
    while len(parts) < 3:
        parts.insert(0, 0)
    h, m, s = parts
    return ((int(days or 0) * 24 + h) * 60 + m) * 60 + s


def set_time_limit(job_id: str, minutes: int) -> None:
    scontrol("update", f"JobId={job_id}", f"TimeLimit={minutes}")


def time_out_soon(job_id: str, signal_delay_s: int) -> int:
    """Lower a running job's time limit (whole minutes from its start) so that SLURM's next
    check, within 30 s, sends the warning signal and no check reaches the limit before it;
    returns the limit set. Needs signal_delay_s >= 75: the window that works, end - now in
    (30 + margin, signal_delay_s + 30], must hold a whole minute."""
    assert signal_delay_s - MARGIN_S >= 60, f"signal_delay_s={signal_delay_s}; valid: >= 75"
    elapsed = seconds(job_fields(job_id)["RunTime"])
    minutes = math.ceil((elapsed + PERIODIC_S + MARGIN_S) / 60)
    set_time_limit(job_id, minutes)
    return minutes
