"""ptb-lstm: Table 2, PTB columns (validation / test perplexity after tuning).

The 2-layer 650-unit tied LSTM with its 7 hyperparameters (experiments.tasks.ptb): SGD lr 30,
gradient clip 0.25, batch 40, BPTT 70, the authors' rules (LR /4 on a 5-evaluation non-monotone
window over the whole history, stop after 20 evaluations without improvement or when the LR is
below 3e-4; the 8000-epoch cap does not bind) for every method; test perplexity at batch 1.
STN as the authors' `train.py --tune_all`: Adam 1e-2 on the hyperparameters, perturbation scale
fixed at 1.0, about one epoch of warm-up, the layers conditioned on the hyperparameters' values
(their sigmoid / softplus transforms), AR/TAR mapped by softplus and in the hyper steps' loss.
Delta-STN (not in the paper's PTB experiments; Bae & Grosse's code has no LSTM): the same
task and STN settings with Delta-STN's preset (STNConfig.delta_stn: RMSprop 1e-2, 5:1 cycle).
docs/fidelity.md: every setting.

Baseline budgets (ours): each search gets at most 27 trials, 8100 epochs in all and 96 GPU-hours
of trial time, whichever ends first; a 3 x 3 x 3 grid over output, input and hidden dropout.
The paper's numbers: experiments/paper_numbers.json.
"""

from __future__ import annotations

from experiments.spec import Budget, Experiment
from experiments.tasks import PTBTask
from slurm.executors import Launch
from stn.loop import STNConfig

CAP, TRIALS, EPOCHS = 8000, 27, 300  # run cap (the authors' --epochs); trials; budget unit

# STN settings of the LSTM experiments (also used by ptb-output-dropout and ptb-schedule-init),
# the authors' lstm/train.py: no perturbation in the hyper steps, sigma 1 fixed, 331 warm-up
# steps (their count of PTB's 332 windows an epoch, so epoch 0's evaluation comes after it)
STN_LSTM = STNConfig(warmup_steps=331, hyper_lr=1e-2, tune_scales=False, sigma_init=1.0)

# the smoke sizes of every PTB experiment: a tiny LSTM (pass task.data_dir), and on the real
# corpus (930k tokens: 23k windows of 4 x 10) 20 training windows an epoch and evaluations of
# 5 windows, so that a run is seconds whatever the corpus
SMOKE_PTB = {
    "task.emb": 16,
    "task.hidden": 16,
    "task.batch": 4,
    "task.bptt": 10,
    "task.eval_batch": 2,
    "task.epochs": 1,
    "task.epoch_steps": 20,
    "task.eval_batches": 5,
    "stn.warmup_steps": 0,
    "seeds": (0,),
    "launch.gpus_per_node": 0,
}

EXPERIMENT = Experiment(
    name="ptb-lstm",
    reproduces="Table 2, PTB columns",
    task=PTBTask(epochs=CAP, hnet_input="value"),
    stn=STN_LSTM,
    methods=("stn", "delta-stn", "grid", "random", "bo", "tpe"),
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
