"""Preemption-safe jobs: submitit requeues a `ResumableJob` after a timeout or a preemption.

How a run survives being stopped, and what each way of stopping does:

- Time limit or preemption: SLURM sends USR2 `signal_delay_s` before the end; submitit's handler
  calls `ResumableJob.checkpoint()`, which runs the `on_checkpoint` hooks the running function
  registered (a last save), pickles the returned `DelayedSubmission` over the job's submitted
  pickle and requeues the job (at most `max_num_timeout`=3 times after timeouts; preemptions
  are not counted).
- `scontrol requeue ID` (an admin, or a node failure with JobRequeue=1): SLURM kills the job and
  runs it again WITHOUT calling checkpoint(). The job re-runs its submitted pickle as it was.

Either way the same function is called again with the same arguments, so the wrapped function
must itself make that safe: save its complete state at a regular interval (atomically: write
to a temporary file, then rename) and, on start, look for its latest checkpoint and resume from
it. Work since the last save is redone; with a deterministic loop the result is the same as an
uninterrupted run. The training loops do this with `<run>/checkpoint.pt`.
"""

from __future__ import annotations

import contextlib
import sys
import traceback
from collections.abc import Callable, Iterator
from typing import Any, Generic, TypeVar

import submitit
from submitit.helpers import DelayedSubmission

__all__ = ["ResumableJob", "on_checkpoint"]

R = TypeVar("R")

# Save callbacks of the function running in this process, run by checkpoint() (see on_checkpoint).
_HOOKS: list[Callable[[], None]] = []


@contextlib.contextmanager
def on_checkpoint(save: Callable[[], None]) -> Iterator[None]:
    """While the block runs, `save()` is called when submitit checkpoints the job.

    `save` runs inside the USR2 signal handler, that is between two Python bytecodes of the
    loop, so it must only write state that is consistent at any point (e.g. the last state the
    loop marked complete at a step boundary), and quickly: the job ends right after. If it
    raises, the error is printed and the requeue goes ahead with the last periodic checkpoint.
    """
    _HOOKS.append(save)
    try:
        yield
    finally:
        _HOOKS.remove(save)


class ResumableJob(submitit.helpers.Checkpointable, Generic[R]):
    """`fn(*bound, *args, **kwargs)` as a job that submitit requeues after a timeout or preemption.

    Arguments may be bound here (`executor.submit(ResumableJob(fn, cfg))`) or passed at submit
    time (`executor.submit(ResumableJob(fn), cfg)`). `fn` must checkpoint and resume by itself
    (see the module docstring): a requeued job calls it again from the start.
    """

    def __init__(self, fn: Callable[..., R], *bound: Any, **bound_kwargs: Any) -> None:
        if not callable(fn):
            raise TypeError(f"ResumableJob needs a callable, got {type(fn).__name__}")
        self.fn, self.bound, self.bound_kwargs = fn, bound, bound_kwargs

    def __call__(self, *args: Any, **kwargs: Any) -> R:
        return self.fn(*self.bound, *args, **{**self.bound_kwargs, **kwargs})

    def checkpoint(self, *args: Any, **kwargs: Any) -> DelayedSubmission:
        """Called by submitit on USR2: let the running function save, then resubmit the same
        call (the function's own checkpoint file carries the progress, not this object)."""
        for save in list(_HOOKS):
            try:
                save()
            except Exception:  # noqa: BLE001 - the periodic checkpoint still allows a resume
                print("ResumableJob: on_checkpoint hook failed:", file=sys.stderr)
                traceback.print_exc()
        return DelayedSubmission(self, *args, **kwargs)

    def __repr__(self) -> str:
        name = getattr(self.fn, "__qualname__", repr(self.fn))
        return f"ResumableJob({name}, {len(self.bound)} bound args)"
