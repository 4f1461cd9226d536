"""Self-Tuning Networks: hyperparameter-conditioned layers, regularisers and the STN loop."""

from . import augment, regularizers
from .hyper import Hyper, HyperBatch
from .layers import STNLinear
from .space import HParam, Space, SpaceError

__all__ = ["HParam", "Space", "SpaceError", "Hyper", "HyperBatch", "STNLinear"]
