"""ptb-lstm: Table 2, PTB columns (validation / test perplexity after tuning).

The 2-layer 650-unit tied LSTM with its 7 hyperparameters (experiments.tasks.ptb): SGD lr 30,
gradient clip 0.25, batch 40, BPTT 70, the authors' rules (LR /4 on a 5-evaluation non-monotone
window, stop after 20 evaluations without improvement or when the LR is below 3e-4) for every
method; STN: Adam 1e-2 on the hyperparameters, perturbation scale fixed at 1.0, about one epoch
of warm-up.

Baseline budgets (ours): each search gets at most 27 trials of at most 300 epochs (8100 epochs)
and at most 96 GPU-hours of trial time; a 3 x 3 x 3 grid over output, input and hidden dropout.
The paper's numbers: experiments/paper_numbers.json.
"""

from __future__ import annotations

from experiments.spec import Budget, Experiment
from experiments.tasks import PTBTask
from slurm.executors import Launch
from stn.loop import STNConfig

EPOCHS, TRIALS = 300, 27

# STN settings of the LSTM experiments (also used by ptb-output-dropout and ptb-schedule-init)
# anchored: the layers see the hyperparameters relative to their initial values (stn.Hyper); with
# the raw unconstrained values (about -3 for rates of 0.05) STN diverges at lr 30.
STN_LSTM = STNConfig(
    warmup_epochs=1, hyper_lr=1e-2, tune_scales=False, sigma_init=1.0, anchored=True
)

# the smoke sizes of every PTB experiment: a tiny LSTM on a tiny corpus (pass task.data_dir)
SMOKE_PTB = {
    "task.emb": 16,
    "task.hidden": 16,
    "task.batch": 4,
    "task.bptt": 10,
    "task.eval_batch": 2,
    "task.epochs": 1,
    "stn.warmup_epochs": 0,
    "seeds": (0,),
    "launch.gpus_per_node": 0,
}

EXPERIMENT = Experiment(
    name="ptb-lstm",
    reproduces="Table 2, PTB columns",
    task=PTBTask(epochs=EPOCHS),
    stn=STN_LSTM,
    methods=("stn", "grid", "random", "bo", "tpe"),
    seeds=(0, 1, 2),
    budget=Budget(trials=TRIALS, epochs=TRIALS * EPOCHS, seconds=96 * 3600, parallel=4),
    searchers={
        "grid": {"params": ("output_dropout", "input_dropout", "hidden_dropout"), "points": 3},
        "bo": {"n_initial": 5},
        "hyperband": {"R": EPOCHS, "eta": 3},
    },
    launch=Launch(gpus_per_node=1, cpus_per_task=4, mem_gb=16, timeout_min=240),
    smoke={
        **SMOKE_PTB,
        "budget.trials": 2,
        "budget.epochs": 2,
        "budget.seconds": None,
        "searchers.grid.points": 2,
        "searchers.bo.n_initial": 1,
        "searchers.hyperband.R": 3,
    },
)
