"""Self-Tuning Networks: hyperparameter-conditioned layers, regularisers and the STN loop."""

from . import augment, regularizers
from .hyper import Hyper, HyperBatch
from .layers import STNConv2d, STNEmbedding, STNLinear
from .loop import STNConfig, STNResult, train
from .lstm import STNLSTM
from .space import HParam, Space, SpaceError

__all__ = ["HParam", "Space", "SpaceError", "Hyper", "HyperBatch", "STNLinear"]
__all__ += ["STNConfig", "STNResult", "train"]
__all__ += ["STNConv2d", "STNEmbedding", "STNLSTM"]
