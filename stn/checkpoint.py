"""Resumable state for both training loops: one checkpoint format, RNG capture, atomic save,
data-position replay.

A loop puts everything a run depends on into one dict (`FORMAT`: "format", "loop", "config",
"model", "optimizers", "plateau", "divergence", "counters", "wall_s", "problem", "best", "rng",
and STN's "hyper") and writes it with `save_atomic`. On restart it rebuilds its objects, loads
their states, recreates the data iterators with `skip` (the problem's batch order is a function
of its seed and the epoch), and calls `set_rng_state` last, so that a resumed run continues
bit-identically on CPU. A checkpoint that cannot be used (cut, damaged, another loop's or
version's) is named, set aside as `<name>.corrupt`, and the run starts from scratch.
"""

from __future__ import annotations

import itertools
import os
import random
import sys
import tempfile
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import torch

from .config import ConfigError

__all__ = [
    "FORMAT",
    "check_settings",
    "load",
    "rng_state",
    "save_atomic",
    "seed_everything",
    "set_rng_state",
    "skip",
]

FORMAT = 2  # 1: STN's first format; the fixed loop's had none


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


def load(path: str | Path | None, loop: str | None = None) -> dict[str, Any] | None:
    """The checkpoint at `path`, or None for a fresh start: there is none, or it cannot be used
    (unreadable, or not written by `loop` in this FORMAT); that one is named on stderr and set
    aside as `<name>.corrupt`, so that the run starts from scratch instead of failing."""
    if path is None or not Path(path).exists():
        return None
    path = Path(path)
    try:
        # weights_only=False: the file is a run's own checkpoint, and it holds NumPy's RNG state
        # and the problem's carried state, which may be any picklable object.
        state = torch.load(path, map_location="cpu", weights_only=False)
        why = None if isinstance(state, dict) else f"a {type(state).__name__}, not a checkpoint"
    except Exception as e:  # noqa: BLE001 - cut or damaged: EOFError, RuntimeError, OSError, ...
        state, why = None, f"{type(e).__name__}: {str(e).strip().splitlines()[0] if str(e) else ''}"
    if (
        why is None
        and loop is not None
        and (state.get("format"), state.get("loop"))
        != (
            FORMAT,
            loop,
        )
    ):
        why = f"format {state.get('format')} of loop {state.get('loop')}, not {FORMAT} of {loop}"
    if why is None:
        return state
    target, k = path.with_name(path.name + ".corrupt"), 0
    while target.exists():
        k += 1
        target = path.with_name(f"{path.name}.corrupt{k}")
    os.replace(path, target)
    print(f"warning: {path} is unusable ({why}); set aside as {target.name}, starting from "
          "scratch", file=sys.stderr, flush=True)  # fmt: skip
    return None


def check_settings(saved: dict[str, Any], now: dict[str, Any], resumable: tuple[str, ...]):
    """Refuse to resume from a checkpoint whose config differs from this run's in a setting
    other than those a resumed run may change (its budget, device): ConfigError naming them."""
    changed = [k for k, v in now.items() if k not in resumable and saved.get(k) != v]
    if changed:
        raise ConfigError(
            f"checkpoint was written with other settings: {', '.join(changed)}; "
            "use the same config or another checkpoint_path"
        )


def skip(batches: Iterable[Any], n: int) -> Iterator[Any]:
    """An iterator over `batches` with the first n (already consumed) left out."""
    it = iter(batches)
    if n:
        next(itertools.islice(it, n, n), None)  # advance n items without keeping them
    return it
