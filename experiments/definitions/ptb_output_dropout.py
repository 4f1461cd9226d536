"""ptb-output-dropout: Table 1, PTB perplexity when tuning output dropout only.

The PTB LSTM with every regulariser off except output dropout (our reading of the setting: the
other six hyperparameters are fixed at 0). Rows (methods; each a fixed-loop Variant except STN;
"68" stands for p = 0.68, without a dot, which would break dotted `--set` keys):
    fixed-68     p = 0.68 fixed (the best value of a grid search)
    noise-68     p = 0.68 + Gaussian noise, std 0.05, drawn per minibatch
    sinusoid-68  p = 0.68 + 0.1 sin(2 pi step / 1200), step counted in minibatches
    stn            STN tuning output dropout from 0.05
    stn-schedule   retrained from scratch following the STN's logged schedule (same seed)
    stn-final      the STN's final value, fixed (0.78 in the paper)
The paper's numbers: experiments/paper_numbers.json. A `grid` over output dropout (10 points) is
available with --methods grid.
"""

from __future__ import annotations

from experiments.spec import Budget, Experiment, Variant
from experiments.tasks import PTBTask
from slurm.executors import Launch

from .ptb_lstm import SMOKE_PTB, STN_LSTM

EPOCHS = 300
P = {"output_dropout": 0.68}

TASK = PTBTask(tune=("output_dropout",), epochs=EPOCHS)  # the others: `fixed` defaults to 0

EXPERIMENT = Experiment(
    name="ptb-output-dropout",
    reproduces="Table 1",
    task=TASK,
    stn=STN_LSTM,
    methods=("stn", "fixed-68", "noise-68", "sinusoid-68", "stn-schedule", "stn-final"),
    seeds=(0, 1, 2),
    budget=Budget(trials=10, epochs=10 * EPOCHS, seconds=48 * 3600, parallel=4),
    searchers={"grid": {"params": ("output_dropout",), "points": 10}},
    variants={
        "fixed-68": Variant(values=P),
        "noise-68": Variant(values=P, noise_std={"output_dropout": 0.05}),
        "sinusoid-68": Variant(values=P, sinusoid={"output_dropout": (0.1, 1200.0)}),
        "stn-schedule": Variant(from_method="stn", use="schedule"),
        "stn-final": Variant(from_method="stn", use="final"),
    },
    launch=Launch(gpus_per_node=1, cpus_per_task=4, mem_gb=16, timeout_min=240),
    smoke={**SMOKE_PTB, "budget.trials": 2, "searchers.grid.points": 2},
)
