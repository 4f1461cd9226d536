"""ptb-schedule-init: the figure of output-dropout schedules of STNs started at 0.05, 0.3, 0.5,
0.7 and 0.9 (the paper: they converge to a similar schedule, low early and rising later).

The Table 1 setting (ptb-output-dropout's task: output dropout tuned, the rest off); one STN
method per initial value, named stn-init<percent> (`Experiment.stn_inits`; no dots, which
would break dotted `--set` keys). The figure is the
"hparams.output_dropout" trajectories of their metrics.jsonl against epochs. No numbers.
"""

from __future__ import annotations

from experiments.spec import Budget, Experiment
from slurm.executors import Launch

from .ptb_lstm import SMOKE_PTB, STN_LSTM
from .ptb_output_dropout import TASK

INITS = (0.05, 0.3, 0.5, 0.7, 0.9)
STN_INITS = {
    f"stn-init{round(100 * p):02d}": {"output_dropout": p} for p in INITS
}  # stn-init05..90

EXPERIMENT = Experiment(
    name="ptb-schedule-init",
    reproduces="Figure: output-dropout schedules from five initial values",
    task=TASK,
    stn=STN_LSTM,
    methods=tuple(STN_INITS),
    seeds=(0,),
    budget=Budget(trials=1),
    stn_inits=STN_INITS,
    launch=Launch(gpus_per_node=1, cpus_per_task=4, mem_gb=16, timeout_min=240),
    smoke=SMOKE_PTB,
)
