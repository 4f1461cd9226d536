"""The experiments of the suite, one short module each, named after what it reproduces.

    digits_mlp          CPU reproduction of Table 2's comparison (scikit-learn digits, an MLP)
    cifar10_alexnet     Table 2, CIFAR-10 columns (AlexNet, 15 hyperparameters)
    ptb_lstm            Table 2, PTB columns (2-layer LSTM, 7 hyperparameters)
    ptb_output_dropout  Table 1 (output dropout only: fixed, noisy, periodic, STN, its schedule)
    ptb_schedule_init   the figure of output-dropout schedules from five initial values

The paper's numbers are in experiments/paper_numbers.json, read by `analysis.tables.paper_numbers`.
"""

from __future__ import annotations

from . import cifar10_alexnet, digits_mlp, ptb_lstm, ptb_output_dropout, ptb_schedule_init

__all__ = ["ALL"]

ALL = (
    digits_mlp.EXPERIMENT,
    cifar10_alexnet.EXPERIMENT,
    ptb_lstm.EXPERIMENT,
    ptb_output_dropout.EXPERIMENT,
    ptb_schedule_init.EXPERIMENT,
)
