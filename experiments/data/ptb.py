"""Word-level Penn Treebank (or any corpus in its layout): token streams and BPTT batches.

    <data_dir>/ptb.train.txt, ptb.valid.txt, ptb.test.txt
        one sentence per line, words separated by spaces; "<eos>" is appended at each line end

The vocabulary is built over the three files in order of first appearance, as the authors' data
code does (the real PTB has 10000 words, "<unk>" and "<eos>" included, all of them in the
training file); words of the validation or test file that training lacks are counted. Batches
use a fixed BPTT length; the random-length BPTT of AWD-LSTM is not used (the STN paper's LSTM
experiments train with a fixed one).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

from .common import DataError, fetch_hint

__all__ = [
    "EOS",
    "FILES",
    "Corpus",
    "batchify",
    "bptt_batches",
    "bptt_window",
    "check_ptb",
    "load_corpus",
    "n_windows",
    "read_text",
]

EOS = "<eos>"
FILES = {"train": "ptb.train.txt", "valid": "ptb.valid.txt", "test": "ptb.test.txt"}


@dataclass(frozen=True)
class Corpus:
    """A tokenised corpus: `vocab[i]` is word i; each split a LongTensor (n_tokens,) of ids."""

    vocab: list[str]
    train: torch.Tensor
    valid: torch.Tensor
    test: torch.Tensor
    train_vocab: int | None = None  # words of the training file: ids 0 .. train_vocab - 1
    # "valid" | "test" -> {"tokens", "types"} of words the training file lacks
    oov: dict[str, dict[str, int]] = field(default_factory=dict)

    @property
    def vocab_size(self) -> int:
        return len(self.vocab)


def _bad(path: Path, why: str, data_dir: str | Path) -> DataError:
    return DataError(f"PTB file {path} {why}; {fetch_hint('ptb', data_dir)}")


def read_text(path: Path, data_dir: str | Path) -> str:
    """The text of one corpus file; DataError if it is missing, unreadable, binary, not UTF-8
    or holds no word (whitespace only). This is all `check_ptb` reads: no tokenising."""
    if not path.is_file():
        raise _bad(path, "is missing", data_dir)
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise _bad(path, f"is not readable ({e.strerror or e})", data_dir) from None
    if b"\0" in raw:  # text never holds NUL bytes; a binary file almost always does
        raise _bad(path, "is binary, not text", data_dir)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise _bad(path, f"is not UTF-8 text (byte {e.start})", data_dir) from None
    if not text.strip():
        raise _bad(path, "has no words" + (" (whitespace only)" if text else " (empty)"), data_dir)
    return text


def check_ptb(data_dir: str | Path) -> None:
    """Quick check of the three files before any work starts (no vocabulary is built)."""
    for name in FILES.values():
        read_text(Path(data_dir) / name, data_dir)


def _encode(lines: list[str], index: dict[str, int]) -> torch.Tensor:
    """Word ids of every line followed by <eos>; new words are added to `index`."""
    ids: list[int] = []
    for line in lines:
        for word in [*line.split(), EOS]:
            i = index.get(word)
            if i is None:
                i = index[word] = len(index)
            ids.append(i)
    return torch.tensor(ids, dtype=torch.long)


def load_corpus(data_dir: str | Path) -> Corpus:
    """Read the three files of `data_dir`; any directory holding them works.

    As the authors' data code (lstm/data.py), the vocabulary is built over the three files in
    order (train, valid, test), so a validation or test word the training file lacks gets its
    own id (an embedding row that training never updates). `Corpus.oov` counts such words.
    """
    paths = {split: Path(data_dir) / name for split, name in FILES.items()}
    texts = {split: read_text(p, data_dir) for split, p in paths.items()}  # all checked first
    index: dict[str, int] = {}
    ids = {split: _encode(texts[split].splitlines(), index) for split in FILES}
    n_train = int(ids["train"].max()) + 1  # ids are given in order of first appearance
    oov = {
        split: {
            "tokens": int((ids[split] >= n_train).sum()),
            "types": int(torch.unique(ids[split][ids[split] >= n_train]).numel()),
        }
        for split in ("valid", "test")
    }
    return Corpus(list(index), ids["train"], ids["valid"], ids["test"], n_train, oov)


def batchify(data: torch.Tensor, batch_size: int) -> torch.Tensor:
    """Cut a token stream (n,) into `batch_size` parallel streams: (T, B), T = n // B.

    Column b is the b-th contiguous chunk of the stream; the last n % B tokens are dropped.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size={batch_size}: must be at least 1")
    T = len(data) // batch_size
    if T < 2:
        raise ValueError(
            f"a stream of {len(data)} tokens is too short for batch size "
            f"{batch_size} (need at least 2 tokens per column)"
        )
    return data[: T * batch_size].view(batch_size, T).t().contiguous()


def bptt_batches(source: torch.Tensor, bptt: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Consecutive windows of a batchified stream (T, B): inputs x (L, B), targets y (L, B).

    y is x shifted one token ahead; L = bptt except for the last, shorter window. The windows
    are views, so this costs no copy.
    """
    return [bptt_window(source, bptt, i) for i in range(n_windows(source, bptt))]


def n_windows(source: torch.Tensor, bptt: int) -> int:
    """How many windows `bptt_batches` cuts a batchified stream (T, B) into."""
    if bptt < 1:
        raise ValueError(f"bptt={bptt}: must be at least 1")
    return -(-(source.size(0) - 1) // bptt)


def bptt_window(source: torch.Tensor, bptt: int, i: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Window i of `bptt_batches(source, bptt)` alone (views), without cutting the others."""
    start = i * bptt
    L = min(bptt, source.size(0) - 1 - start)
    return source[start : start + L], source[start + 1 : start + 1 + L]
