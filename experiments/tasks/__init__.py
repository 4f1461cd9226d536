"""Tasks: a frozen config per task (`.space()`, `.build(seed, device) -> stn Problem`) and a
registry of them.

    task = TASKS["digits"]()                     # the config with its defaults
    problem = task.build(seed=0, device="cpu")   # data loaded, batches ordered by the seed
    model = problem.build_model(len(problem.space))
"""

from __future__ import annotations

from .cifar10 import AlexNet, Cifar10Task
from .digits import DigitsMLP, DigitsTask
from .ptb import LSTMLM, PTB_HPARAMS, PTBTask

__all__ = [
    "TASKS",
    "AlexNet",
    "Cifar10Task",
    "DigitsMLP",
    "DigitsTask",
    "LSTMLM",
    "PTBTask",
    "PTB_HPARAMS",
]

TASKS: dict[str, type] = {"digits": DigitsTask, "cifar10": Cifar10Task, "ptb": PTBTask}
