"""digits-mlp: Table 2's comparison on CPU (not in the paper): every method on real data.

An MLP (64 -> 128 -> 128 -> 10) on scikit-learn's 8x8 digits (1077 / 360 / 360 images), tuning
input dropout, two hidden-layer dropouts, weight decay and input noise. Metric: accuracy; the
comparison is on validation / test cross-entropy, as in the paper's CIFAR-10 columns.

Budget rationale (measured on the 2-core test machine, one thread per process): one digits epoch
(17 steps of 64) takes about 0.07 s in the fixed loop, 0.13 s with STN and 0.9 s with the
linearised Delta-STN. A run is 20 epochs. Each search gets 180 epochs (9 full trials): fixed 1
trial, grid 3 x 3 = 9, random 9, BO 9, TPE 9, Hyperband (R = 20, eta = 3: 22 trials, 153
epochs). The seven methods before TPE, one seed, in-process (`--launcher debug`), took ~38 s of
CPU. The `local` launcher adds a fresh process per trial, ~3.5 s of CPU importing torch: ~51
per seed, ~180 s. Three seeds: ~11 CPU-minutes, about 6-8 minutes on two cores, ~10 with polling.
"""

from __future__ import annotations

from experiments.spec import Budget, Experiment
from experiments.tasks import DigitsTask
from slurm.executors import Launch
from stn.loop import STNConfig

EPOCHS = 20

EXPERIMENT = Experiment(
    name="digits-mlp",
    reproduces="Table 2's comparison on CPU (digits MLP; not in the paper)",
    task=DigitsTask(hidden=128, layers=2, epochs=EPOCHS),
    # Adam 1e-2 on the hyperparameters (the paper's 3e-3 barely moves them in 20 short epochs)
    stn=STNConfig(warmup_epochs=1, hyper_lr=1e-2, scale_lr=1e-2, sigma_init=0.5),
    methods=("stn", "delta-stn", "fixed", "grid", "random", "bo", "tpe", "hyperband", "pbt"),
    seeds=(0, 1, 2),
    budget=Budget(trials=None, epochs=9 * EPOCHS, seconds=None, parallel=2),
    searchers={
        "grid": {"params": ("dropout1", "weight_decay"), "points": 3},
        "bo": {"n_initial": 3},
        "tpe": {"n_initial": 3},
        "hyperband": {"R": EPOCHS, "eta": 3},
        "pbt": {"population": 9, "epochs": EPOCHS, "interval": 2},
    },
    launch=Launch(launcher="local", cpus_per_task=1, mem_gb=2, timeout_min=30),
    smoke={
        "task.epochs": 1,
        "task.hidden": 16,
        "stn.warmup_epochs": 0,
        "seeds": (0,),
        "budget.epochs": 3,
        "searchers.grid.points": 2,
        "searchers.bo.n_initial": 2,
        "searchers.tpe.n_initial": 2,
        "searchers.hyperband.R": 3,
        "searchers.pbt.population": 2,
        "searchers.pbt.epochs": 1,
        "searchers.pbt.interval": 0.5,
    },
)
