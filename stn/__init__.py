"""Self-Tuning Networks: hyperparameter-conditioned layers, regularisers and the STN loop."""

from . import augment, regularizers
from .hyper import Hyper, HyperBatch
from .layers import STNLinear
from .loop import STNConfig, STNResult, train
from .space import HParam, Space, SpaceError

__all__ = ["HParam", "Space", "SpaceError", "Hyper", "HyperBatch", "STNLinear"]
__all__ += ["STNConfig", "STNResult", "train"]
