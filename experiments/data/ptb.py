"""Word-level Penn Treebank (or any corpus in its layout): token streams and BPTT batches.

    <data_dir>/ptb.train.txt, ptb.valid.txt, ptb.test.txt
        one sentence per line, words separated by spaces; "<eos>" is appended at each line end

The vocabulary is built from the training file in order of first appearance (the real PTB has
10000 words, "<unk>" and "<eos>" included). Batches use a fixed BPTT length; the random-length
BPTT of AWD-LSTM is not used (the STN paper's LSTM experiments train with a fixed one).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from .common import DataError, fetch_hint

__all__ = ["EOS", "FILES", "Corpus", "batchify", "bptt_batches", "load_corpus"]

EOS = "<eos>"
FILES = {"train": "ptb.train.txt", "valid": "ptb.valid.txt", "test": "ptb.test.txt"}


@dataclass(frozen=True)
class Corpus:
    """A tokenised corpus: `vocab[i]` is word i; each split a LongTensor (n_tokens,) of ids."""

    vocab: list[str]
    train: torch.Tensor
    valid: torch.Tensor
    test: torch.Tensor

    @property
    def vocab_size(self) -> int:
        return len(self.vocab)


def _read_lines(path: Path, data_dir: str | Path) -> list[str]:
    if not path.is_file():
        raise DataError(f"PTB file {path} is missing; {fetch_hint('ptb', data_dir)}")
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(
            f"PTB file {path} is not readable UTF-8 text ({e}); {fetch_hint('ptb', data_dir)}"
        ) from None
    if not any(line.strip() for line in lines):
        raise DataError(f"PTB file {path} has no words; {fetch_hint('ptb', data_dir)}")
    return lines


def _encode(lines: list[str], index: dict[str, int], path: Path, grow: bool) -> torch.Tensor:
    """Word ids of every line followed by <eos>; `grow` adds new words to `index` (train only)."""
    ids: list[int] = []
    for lineno, line in enumerate(lines, 1):
        for word in [*line.split(), EOS]:
            i = index.get(word)
            if i is None:
                if not grow:
                    raise DataError(
                        f"PTB file {path} line {lineno}: word {word!r} is not in "
                        "the training vocabulary (every word must occur in the "
                        "training file)"
                    )
                i = index[word] = len(index)
            ids.append(i)
    return torch.tensor(ids, dtype=torch.long)


def load_corpus(data_dir: str | Path) -> Corpus:
    """Read the three files of `data_dir`; any directory holding them works."""
    paths = {split: Path(data_dir) / name for split, name in FILES.items()}
    lines = {split: _read_lines(p, data_dir) for split, p in paths.items()}  # all exist first
    index: dict[str, int] = {}
    train = _encode(lines["train"], index, paths["train"], grow=True)
    valid = _encode(lines["valid"], index, paths["valid"], grow=False)
    test = _encode(lines["test"], index, paths["test"], grow=False)
    return Corpus(list(index), train, valid, test)


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
    if bptt < 1:
        raise ValueError(f"bptt={bptt}: must be at least 1")
    T = source.size(0)
    out = []
    for i in range(0, T - 1, bptt):
        L = min(bptt, T - 1 - i)
        out.append((source[i : i + L], source[i + 1 : i + 1 + L]))
    return out
