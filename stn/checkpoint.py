"""Resumable state for both training loops: RNG capture, atomic save, data-position replay.

A loop puts everything a run depends on into one dict (weights, hyperparameters, optimiser and
schedule states, counters, the problem's carried state, the best-so-far record, and the RNG
states from `rng_state()`) and writes it with `save_atomic`. On restart it rebuilds its objects,
loads their states, recreates the data iterators with `skip` (the problem's batch order is a
function of its seed and the epoch), and calls `set_rng_state` last, so that a resumed run
continues bit-identically on CPU.
"""

from __future__ import annotations

import itertools
import os
import random
import tempfile
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import torch

__all__ = ["load", "rng_state", "save_atomic", "seed_everything", "set_rng_state", "skip"]


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (CPU and every GPU): only a run's entry point calls this."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def rng_state() -> dict[str, Any]:
    """The global random states a training step may draw from."""
    state = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"].cpu())
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])


def atomic_write(path: str | Path, write: Callable[[BinaryIO], Any]) -> None:
    """Call `write(file)` on a temporary file of the same folder, fsync, then rename it over
    `path`: a crash leaves either the previous file or the new one, never half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_atomic(obj: Any, path: str | Path) -> None:
    """torch.save, atomically (see `atomic_write`)."""
    atomic_write(path, lambda f: torch.save(obj, f))


def load(path: str | Path | None) -> dict[str, Any] | None:
    """The checkpoint at `path`, or None when there is none (a fresh run)."""
    if path is None or not Path(path).exists():
        return None
    # weights_only=False: the file is this run's own checkpoint, and it holds NumPy's RNG state
    # and the problem's carried state, which may be any picklable object.
    return torch.load(path, map_location="cpu", weights_only=False)


def skip(batches: Iterable[Any], n: int) -> Iterator[Any]:
    """An iterator over `batches` with the first n (already consumed) left out."""
    it = iter(batches)
    if n:
        next(itertools.islice(it, n, n), None)  # advance n items without keeping them
    return it
