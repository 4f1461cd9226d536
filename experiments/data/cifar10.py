"""CIFAR-10 from torchvision's on-disk format, read by our own code (no md5 check).

    <data_dir>/cifar-10-batches-py/data_batch_1 .. data_batch_5, test_batch
        each a pickled dict: b"data" (n, 3072) uint8, rows are R, G, B planes of 32x32;
        b"labels" a list of n ints in 0..9 (written by Python 2, hence latin1 decoding)

The last `val_frac` of the training batches (in file order) is the validation set, as in the
paper: 40k / 10k / 10k for the real data.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .common import DataError, Splits, fetch_hint

__all__ = [
    "FOLDER",
    "TEST_FILE",
    "TRAIN_FILES",
    "check_cifar10",
    "cifar_folder",
    "load_cifar10",
    "read_batch",
]

FOLDER = "cifar-10-batches-py"
TRAIN_FILES = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_FILE = "test_batch"


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickles plain containers and numpy arrays only: a batch file cannot run code."""

    _reconstruct = np.ndarray.__reduce__(np.zeros(0))[0]  # numpy's array rebuilder, any version
    ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"): _reconstruct,  # written by numpy 1.x
        ("numpy._core.multiarray", "_reconstruct"): _reconstruct,  # written by numpy 2.x
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
    }

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) == ("_codecs", "encode"):  # how Python 3 pickles bytes at protocol 2
            return super().find_class(module, name)
        try:
            return self.ALLOWED[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(f"unexpected object {module}.{name}") from None


def cifar_folder(data_dir: str | Path) -> Path:
    """The batches folder: `data_dir/cifar-10-batches-py`, or `data_dir` itself if it is that."""
    data_dir = Path(data_dir)
    if data_dir.name == FOLDER and not (data_dir / FOLDER).exists():
        return data_dir
    return data_dir / FOLDER


def read_batch(path: Path, data_dir: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """One batch file -> images uint8 (n, 3, 32, 32), labels int64 (n,); DataError if bad."""

    def bad(why: str) -> DataError:
        return DataError(f"CIFAR-10 file {path} {why}; {fetch_hint('cifar10', data_dir)}")

    if not path.is_file():
        raise bad("is missing")
    try:
        with open(path, "rb") as f:
            entry = _ArrayUnpickler(f, encoding="latin1").load()
    except Exception as e:  # any unpickling failure means the file is not a batch
        raise bad(f"is not a CIFAR-10 batch pickle ({type(e).__name__}: {e})") from None
    if not isinstance(entry, dict):
        raise bad(f"holds a {type(entry).__name__}, not a dict")
    # Keys are str when decoded with latin1 from Python 2, bytes if the file came from Python 3.
    entry = {k.decode() if isinstance(k, bytes) else k: v for k, v in entry.items()}
    if "data" not in entry or "labels" not in entry:
        raise bad(f"lacks the keys 'data' and 'labels' (has {sorted(map(str, entry))})")
    data, labels = entry["data"], np.asarray(entry["labels"])
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2:
        raise bad(
            f"has data {getattr(data, 'dtype', type(data).__name__)} "
            f"{getattr(data, 'shape', '')}, expected uint8 (n, 3072)"
        )
    if data.shape[1] != 3072:
        raise bad(f"has data of shape {data.shape}, expected (n, 3072)")
    if not len(data):
        raise bad("holds no images")
    if labels.shape != (len(data),) or labels.dtype.kind not in "iu":
        raise bad(f"has {labels.size} labels of type {labels.dtype} for {len(data)} images")
    if labels.min() < 0 or labels.max() > 9:
        raise bad(f"has labels outside 0..9 ({labels.min()}..{labels.max()})")
    return data.reshape(-1, 3, 32, 32), labels.astype(np.int64)


def check_cifar10(data_dir: str | Path) -> None:
    """Quick check of the six batch files before any work starts: each one unpickles to a dict
    with uint8 images (n, 3072), n > 0, and n labels in 0..9 (what the loader reads; about 0.1 s
    a file). Nothing is kept: holding 180 MB for a later load is worse than reading it again."""
    folder = cifar_folder(data_dir)
    for name in (*TRAIN_FILES, TEST_FILE):
        read_batch(folder / name, data_dir)


def load_cifar10(data_dir: str | Path, val_frac: float = 0.2) -> Splits:
    """Load all six batch files into memory.

    Images are uint8 (N, 3, 32, 32) (tasks normalise on the batch, on the device); labels int64.
    Every file is checked before anything is returned, so a bad dataset fails before training.
    """
    if not 0 < val_frac < 1:
        raise ValueError(f"val_frac={val_frac}: must be in (0, 1)")
    folder = cifar_folder(data_dir)
    parts = [read_batch(folder / name, data_dir) for name in TRAIN_FILES]
    test_x, test_y = read_batch(folder / TEST_FILE, data_dir)
    x = np.concatenate([p[0] for p in parts])
    y = np.concatenate([p[1] for p in parts])
    n_val = round(len(y) * val_frac)
    if n_val < 1 or n_val >= len(y):
        raise DataError(
            f"CIFAR-10 in {folder} has only {len(y)} training images; "
            f"{fetch_hint('cifar10', data_dir)}"
        )
    n_train = len(y) - n_val
    t = torch.from_numpy
    return Splits(
        t(x[:n_train]), t(y[:n_train]), t(x[n_train:]), t(y[n_train:]), t(test_x), t(test_y)
    )
