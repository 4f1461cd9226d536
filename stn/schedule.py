"""The authors' stopping rules, shared by the STN loop and the fixed-hyperparameter loop.

Fed one validation loss per evaluation, `Plateau`:
- multiplies the learning rate of the given optimisers by `factor` when the loss is worse than
  the best loss seen before the last `window` evaluations (the non-monotone criterion of the
  authors' code; CNN: x0.1, window 60; LSTM: x0.25, window 5);
- stops after `patience` evaluations without a new best (CNN: 75; LSTM: 20);
- stops once the learning rate falls below `min_lr` (CNN: 1e-5; LSTM: 3e-4).
Every rule is off by default (factor 1, window 0, patience 0, min_lr 0).

The history the window looks back on is, as in the authors' code (cnn/hypertrain.py and
lstm/train.py: `len(best_val_loss) > nonmono and val_loss > min(best_val_loss[:-nonmono])`),
every loss of the run, never cleared: once a decay has fired, the next evaluation that is still
worse than that old minimum decays again, so the rate falls fast and the run ends by `min_lr`
or patience soon after its first plateau. `reset=True` clears the history after each decay
instead, so that the next decay needs `window` more evaluations (a gentler schedule, not the
one the paper's numbers were produced with).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

from torch.optim import Optimizer

__all__ = ["Plateau"]


class Plateau:
    def __init__(
        self,
        factor: float = 1.0,
        window: int = 0,
        patience: int = 0,
        min_lr: float = 0.0,
        reset: bool = False,
    ):
        if not 0.0 < factor <= 1.0:
            raise ValueError(f"plateau factor must be in (0, 1], got {factor}")
        if window < 0 or patience < 0 or min_lr < 0:
            raise ValueError(
                f"window, patience and min_lr must be >= 0, got {window}, {patience}, {min_lr}"
            )
        self.factor, self.window, self.patience, self.min_lr = factor, window, patience, min_lr
        self.reset = reset
        self.history: list[float] = []  # losses of the run (since the last decay if `reset`)
        self.best = math.inf  # best loss of the whole run
        self.bad = 0  # evaluations since the last new best
        self.decays = 0
        self.reason: str | None = None  # why `step` asked to stop

    def step(self, loss: float, optimizers: Iterable[Optimizer] = ()) -> bool:
        """Record one validation loss, decay the optimisers' LR if due; True means stop."""
        if loss < self.best:
            self.best, self.bad = loss, 0
        else:
            self.bad += 1
        past = self.history[: -self.window] if self.window else []
        self.history.append(loss)
        optimizers = list(optimizers)
        if self.factor < 1.0 and self.window and past and loss > min(past):
            for opt in optimizers:
                for group in opt.param_groups:
                    group["lr"] *= self.factor
            self.decays += 1
            if self.reset:
                self.history = []
        lr = min((g["lr"] for o in optimizers for g in o.param_groups), default=math.inf)
        if self.patience and self.bad >= self.patience:
            self.reason = f"no improvement in {self.bad} evaluations"
        elif lr < self.min_lr:
            self.reason = f"learning rate {lr:g} below min_lr {self.min_lr:g}"
        return self.reason is not None

    def state_dict(self) -> dict[str, Any]:
        return {
            "history": list(self.history),
            "best": self.best,
            "bad": self.bad,
            "decays": self.decays,
            "reason": self.reason,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.history = list(state["history"])
        self.best, self.bad = state["best"], state["bad"]
        self.decays, self.reason = state["decays"], state["reason"]
