"""Small synthetic datasets written in the exact on-disk formats of the real ones.

Tests and smoke experiments run the real loaders on these files. The CIFAR-10 pickles are
written as Python 2 wrote the originals (keys and strings as Python 2 `str`), so torchvision's
reader and the `encoding="bytes"` recipe of the CIFAR page load them as they load the real files.
The images are learnable: each class has its own mean picture, plus noise.
"""

from __future__ import annotations

import pickle
import struct
from pathlib import Path

import numpy as np

from .cifar10 import FOLDER, TEST_FILE, TRAIN_FILES
from .ptb import FILES

__all__ = ["write_cifar10", "write_ptb"]

CLASSES = (
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
)  # batches.meta label_names


class _Py2Pickler(pickle._Pickler):
    """Pickles `bytes` as Python 2 `str` and numpy's rebuilder under its numpy 1.x name."""

    dispatch = dict(pickle._Pickler.dispatch)

    def save_bytes(self, obj: bytes) -> None:
        n = len(obj)
        if n < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([n]) + obj)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", n) + obj)
        self.memoize(obj)

    dispatch[bytes] = save_bytes

    def save_global(self, obj, name=None) -> None:
        if getattr(obj, "__name__", None) == "_reconstruct":  # numpy 2 says numpy._core
            self.write(pickle.GLOBAL + b"numpy.core.multiarray\n_reconstruct\n")
            self.memoize(obj)
        else:
            super().save_global(obj, name)


def _dump_py2(obj: object, path: Path) -> None:
    with open(path, "wb") as f:
        _Py2Pickler(f, protocol=2).dump(obj)


def _images(rng: np.random.Generator, means: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """(n, 3072) uint8: the class mean picture plus Gaussian noise, clipped to 0..255."""
    noise = rng.normal(0.0, 40.0, size=(len(labels), 3072))
    return np.clip(means[labels] + noise, 0, 255).astype(np.uint8)


def write_cifar10(
    data_dir: str | Path, n_train: int = 500, n_test: int = 100, seed: int = 0
) -> Path:
    """Write `data_dir/cifar-10-batches-py/` with `n_train` images over the five training
    batches and `n_test` in the test batch. Returns `data_dir` (what `load_cifar10` takes)."""
    if n_train < 5 or n_test < 1:
        raise ValueError(f"n_train={n_train}, n_test={n_test}: need n_train >= 5, n_test >= 1")
    rng = np.random.default_rng(seed)
    folder = Path(data_dir) / FOLDER
    folder.mkdir(parents=True, exist_ok=True)
    means = rng.uniform(40, 215, size=(10, 3072))
    sizes = [len(c) for c in np.array_split(np.arange(n_train), len(TRAIN_FILES))]
    for i, (name, n) in enumerate([*zip(TRAIN_FILES, sizes), (TEST_FILE, n_test)]):
        labels = rng.integers(0, 10, size=n)
        batch_label = (
            f"training batch {i + 1} of 5" if name != TEST_FILE else "testing batch 1 of 1"
        )
        _dump_py2(
            {
                b"batch_label": batch_label.encode(),
                b"labels": [int(v) for v in labels],
                b"data": _images(rng, means, labels),
                b"filenames": [f"synthetic_{name}_{j}.png".encode() for j in range(n)],
            },
            folder / name,
        )
    _dump_py2(
        {
            b"label_names": [c.encode() for c in CLASSES],
            b"num_cases_per_batch": 10000,
            b"num_vis": 3072,
        },
        folder / "batches.meta",
    )
    return Path(data_dir)


def write_ptb(
    data_dir: str | Path,
    n_lines: int = 200,
    vocab: int = 100,
    seed: int = 0,
    n_eval_lines: int | None = None,
) -> Path:
    """Write ptb.{train,valid,test}.txt with `vocab - 1` distinct words, so that the loaded
    vocabulary (with "<eos>") has exactly `vocab` words, as the real PTB has 10000.

    Lines look like the real ones (" w1 w2 ... \\n"); word frequencies follow Zipf's law, and
    every word occurs in the training file. Valid and test get `n_eval_lines` lines each
    (default n_lines // 10, at least 1). Returns `data_dir`.
    """
    n_words = vocab - 1
    if n_words < 2:
        raise ValueError(f"vocab={vocab}: must be at least 3")
    rng = np.random.default_rng(seed)
    words = np.array(["<unk>", "N", *(f"w{i}" for i in range(n_words - 2))])
    p = 1.0 / np.arange(1, n_words + 1)
    p /= p.sum()

    def lines(n: int, cover: bool) -> list[str]:
        lengths = rng.integers(4, 25, size=n)
        ids = rng.choice(n_words, size=lengths.sum(), p=p)
        if cover:  # put every word somewhere, so valid/test never hold unknown words
            if len(ids) < n_words:
                raise ValueError(
                    f"n_lines={n_lines} lines hold {len(ids)} words, too few "
                    f"for a vocabulary of {vocab}: raise n_lines"
                )
            ids[rng.permutation(len(ids))[:n_words]] = np.arange(n_words)
        parts = np.split(words[ids], np.cumsum(lengths)[:-1])
        return [" " + " ".join(part) + " \n" for part in parts]

    n_eval = max(1, n_lines // 10) if n_eval_lines is None else n_eval_lines
    data_dir = Path(data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    for split, n in (("train", n_lines), ("valid", n_eval), ("test", n_eval)):
        (data_dir / FILES[split]).write_text("".join(lines(n, split == "train")))
    return data_dir
