"""The plateau rule against a transcription of the authors' loop (cnn/hypertrain.py)."""

from __future__ import annotations

import random

import pytest
import torch

from stn.schedule import Plateau


def authors_rule(losses, lr, factor, window, patience, min_lr):
    """The authors' end-of-epoch bookkeeping, line by line: returns (lr after each
    evaluation, index of the evaluation that stopped the run or None)."""
    best_val_loss, stored_loss, patience_elapsed, lrs = [], float("inf"), 0, []
    for i, val_loss in enumerate(losses):
        if len(best_val_loss) > window and val_loss > min(best_val_loss[:-window]):
            lr *= factor
        best_val_loss.append(val_loss)
        if val_loss < stored_loss:
            stored_loss, patience_elapsed = val_loss, 0
        else:
            patience_elapsed += 1
        lrs.append(lr)
        if lr < min_lr or patience_elapsed >= patience:  # the break / the while condition
            return lrs, i
    return lrs, None


def ours(losses, lr, factor, window, patience, min_lr, reset=False):
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=lr)
    kw = {"reset": True} if reset else {}  # the default is the authors' rule
    plateau, lrs = Plateau(factor, window, patience, min_lr, **kw), []
    for i, loss in enumerate(losses):
        stop = plateau.step(loss, [opt])
        lrs.append(opt.param_groups[0]["lr"])
        if stop:
            return lrs, i
    return lrs, None


@pytest.mark.parametrize("seed", range(20))
def test_plateau_is_the_authors_rule(seed):
    rng = random.Random(seed)
    # a validation curve that improves, then wanders: decays, patience and min_lr all fire
    losses = [2.0 / (1 + i) + rng.uniform(0, 0.3) + max(0, i - 30) * 0.01 for i in range(200)]
    args = (0.01, 0.1, rng.choice([2, 5, 10]), rng.choice([15, 75]), 1e-5)
    assert ours(losses, *args) == authors_rule(losses, *args)


def test_after_a_decay_the_authors_rule_can_decay_at_every_evaluation():
    losses = [3.0, 2.0, 2.5, 2.6, 2.7, 2.8, 2.9]  # every one after 2.0 is worse than it
    lrs, _ = ours(losses, 1.0, 0.5, 2, 100, 0.0)
    assert lrs == [1.0, 1.0, 1.0, 1.0, 0.5, 0.25, 0.125]  # 2.7, 2.8, 2.9 each decay
    lrs, _ = ours(losses, 1.0, 0.5, 2, 100, 0.0, reset=True)
    assert lrs == [1.0, 1.0, 1.0, 1.0, 0.5, 0.5, 0.5]  # the history starts afresh: 2 more


def test_the_rule_survives_a_checkpoint():
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
    a = Plateau(0.5, 2, 10, 0.01)
    for v in (3.0, 2.0, 2.5, 2.6, 2.7):
        a.step(v, [opt])
    b = Plateau(0.5, 2, 10, 0.01)
    b.load_state_dict(a.state_dict())
    opt_b = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=opt.param_groups[0]["lr"])
    for v in (2.8, 1.0, 1.5):
        assert a.step(v, [opt]) == b.step(v, [opt_b])
    assert a.state_dict() == b.state_dict()
