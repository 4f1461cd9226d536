"""Self-Tuning Networks: hyperparameter-conditioned layers, regularisers and the STN loop."""

from . import augment, regularizers
from .hyper import Hyper, HyperBatch
from .layers import STNConv2d, STNEmbedding, STNLinear
from .loop import STNConfig, STNResult, train
from .lstm import STNLSTM
from .space import HParam, Space, SpaceError

__all__ = [
    "HParam", "Space", "SpaceError",  # the search-space vocabulary
    "Hyper", "HyperBatch",  # hyperparameters in a network
    "STNLinear", "STNConv2d", "STNEmbedding", "STNLSTM",  # STN layers
    "augment", "regularizers",  # per-example regularisers (modules)
    "STNConfig", "STNResult", "train",  # the STN / Delta-STN loop
]  # fmt: skip
