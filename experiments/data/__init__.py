"""Datasets as tensors in memory (no DataLoader: batches are index slices).

- `load_digits(seed)`: scikit-learn's 8x8 digits, a split fixed by the seed (no download).
- `load_cifar10(data_dir)`: torchvision's CIFAR-10 batch files; validation = last 20% of train.
- `load_corpus(data_dir)`: ptb.{train,valid,test}.txt; `batchify` and `bptt_batches`.
- `download(name, data_dir)`: fetch "cifar10" or "ptb" and check it loads.
- `synthetic.write_cifar10`, `synthetic.write_ptb`: small files in the real formats.

A missing or malformed dataset raises `DataError` with one line naming the file and the
command that fetches it; `check_data(name, data_dir)` checks every file's structure quickly,
before any work starts.
"""

from .cifar10 import load_cifar10
from .common import DataError, Splits
from .digits import load_digits
from .download import DATASETS, check_data, check_present, download
from .ptb import Corpus, batchify, bptt_batches, load_corpus

__all__ = [
    "DATASETS",
    "Corpus",
    "DataError",
    "Splits",
    "batchify",
    "bptt_batches",
    "check_data",
    "check_present",
    "download",
    "load_cifar10",
    "load_corpus",
    "load_digits",
]
