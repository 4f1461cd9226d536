"""ptb-output-dropout: Table 1, PTB perplexity when tuning output dropout only.

The PTB LSTM tuning output dropout only; the other regularisers stay at the authors' defaults
(input, hidden, embedding dropout and DropConnect 0.05, AR/TAR 0: lstm/train.py and
train_basic.py run with `--dropouto=... --tune_dropouto` and nothing else). The STN's layers
see the raw logit of the rate (their default `--drop_transform none`). Rows (methods; each a
fixed-loop Variant except STN; "68" stands for p = 0.68, without a dot, which would break dotted
`--set` keys):
    fixed-68     p = 0.68 fixed (the best value of a grid search)
    noise-68     p = 0.68 + Gaussian noise, std 0.05, drawn per minibatch
    sinusoid-68  p = 0.68 + 0.1 sin(2 pi step / P): the paper says a period of 1200 minibatches;
                 the authors' train_basic.py advances the phase by 2 pi / 1200 and multiplies it
                 by 2 pi again, so the period it ran is P = 1200 / (2 pi) ~ 191 minibatches
                 (reproduced; --set variants.sinusoid-68.sinusoid... for the stated one)
    stn            STN tuning output dropout from 0.05
    delta-stn      Delta-STN tuning it (ours, not in the paper: Delta-STN's preset on this task)
    stn-schedule   retrained from scratch following the STN's schedule (same seed), per epoch
                   as the authors' train_basic.py (the values the STN had at each epoch's end)
    stn-final      the STN's final value, fixed (0.78 in the paper)
    pbt            Population Based Training over output dropout (ours, not in the paper: the
                   black-box way to a schedule): 10 members, each trained to 300 epochs (the
                   budget unit of the PTB searches), ready every 10 epochs (a fractional
                   interval of k / 331 epochs is one of k steps), the bottom quarter copying
                   the top quarter and perturbing it x0.8 / x1.2: 3000 epochs, the budget of
                   the searches (budget.epochs)
    pbt-schedule   retrained from scratch following the schedule of PBT's selected trial
The paper's numbers: experiments/paper_numbers.json. A `grid` over output dropout (10 points) is
available with --methods grid.
"""

from __future__ import annotations

import math

from experiments.spec import Budget, Experiment, Variant
from experiments.tasks import PTBTask
from slurm.executors import Launch

from .ptb_lstm import CAP, EPOCHS, SMOKE_PTB, STN_LSTM

P = {"output_dropout": 0.68}
PERIOD = 1200 / (2 * math.pi)  # the period the authors' code ran (see above)

# the others at the authors' defaults (PTBTask's `fixed` default); raw hypernetwork input
TASK = PTBTask(tune=("output_dropout",), epochs=CAP)

EXPERIMENT = Experiment(
    name="ptb-output-dropout",
    reproduces="Table 1",
    task=TASK,
    stn=STN_LSTM,
    methods=(
        "stn",
        "delta-stn",
        "fixed-68",
        "noise-68",
        "sinusoid-68",
        "stn-schedule",
        "stn-final",
        "pbt",
        "pbt-schedule",
    ),
    seeds=(0, 1, 2),
    budget=Budget(trials=10, epochs=10 * EPOCHS, seconds=48 * 3600, parallel=4),
    searchers={
        "grid": {"params": ("output_dropout",), "points": 10},
        "pbt": {"population": 10, "epochs": EPOCHS, "interval": 10},
    },
    variants={
        "fixed-68": Variant(values=P),
        "noise-68": Variant(values=P, noise_std={"output_dropout": 0.05}),
        "sinusoid-68": Variant(values=P, sinusoid={"output_dropout": (0.1, PERIOD)}),
        "stn-schedule": Variant(from_method="stn", use="schedule", every="epoch"),
        "stn-final": Variant(from_method="stn", use="final"),
        "pbt-schedule": Variant(from_method="pbt", use="schedule"),
    },
    launch=Launch(gpus_per_node=1, cpus_per_task=4, mem_gb=16, timeout_min=240),
    smoke={
        **SMOKE_PTB,
        "budget.trials": 2,
        "searchers.grid.points": 2,
        "searchers.pbt.population": 2,
        "searchers.pbt.epochs": 1,
        "searchers.pbt.interval": 0.5,
    },
)
