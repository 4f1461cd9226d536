"""What every dataset module shares: the error a bad dataset raises, and the split record."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

__all__ = ["DataError", "Splits", "fetch_hint"]


class DataError(ValueError):
    """A dataset is missing or malformed. The message is one line: what is wrong, and how to fix."""


def fetch_hint(name: str, data_dir: str | Path) -> str:
    """The command that fetches dataset `name` into `data_dir`, for error messages."""
    return f"fetch it with: python -m experiments download {name} --data-dir {data_dir}"


@dataclass(frozen=True)
class Splits:
    """A dataset in memory: inputs and integer labels for train, validation and test.

    Batches are index slices of these tensors; there is no DataLoader.
    """

    train_x: torch.Tensor
    train_y: torch.Tensor  # (N,) int64
    val_x: torch.Tensor
    val_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor

    def sizes(self) -> tuple[int, int, int]:
        """Number of examples in (train, validation, test)."""
        return len(self.train_y), len(self.val_y), len(self.test_y)
