"""scikit-learn's 8x8 digits (1797 images, shipped with it): the CPU reproduction's data."""

from __future__ import annotations

import numpy as np
import torch

from .common import Splits

__all__ = ["load_digits"]


def load_digits(seed: int, val_frac: float = 0.2, test_frac: float = 0.2) -> Splits:
    """Stratified train / validation / test split of the digits, fixed by `seed`.

    Inputs are float32 (N, 64) scaled to [0, 1] (pixels are 0..16); labels int64 (N,).
    The same seed always gives the same split, on any machine.
    """
    if not (0 < val_frac < 1 and 0 < test_frac < 1 and val_frac + test_frac < 1):
        raise ValueError(
            f"val_frac={val_frac} and test_frac={test_frac}: each must be in (0, 1) "
            "and their sum below 1"
        )
    from sklearn.datasets import load_digits as sk_digits  # slow import: only when used
    from sklearn.model_selection import train_test_split

    x, y = sk_digits(return_X_y=True)
    x = (x / 16.0).astype(np.float32)
    y = y.astype(np.int64)
    # Test first, then validation out of the rest, each stratified by class.
    rest_x, test_x, rest_y, test_y = train_test_split(
        x, y, test_size=test_frac, stratify=y, random_state=seed
    )
    train_x, val_x, train_y, val_y = train_test_split(
        rest_x, rest_y, test_size=val_frac / (1 - test_frac), stratify=rest_y, random_state=seed
    )
    t = torch.from_numpy
    return Splits(t(train_x), t(train_y), t(val_x), t(val_y), t(test_x), t(test_y))
