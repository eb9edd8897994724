"""streamdas: Dynamic Auto-Sizing neural networks for drifting data streams.

>>> from streamdas import DASClassifier
>>> DASClassifier().layer_sizes
[64, 64]
"""

from streamdas.checkpoint import CheckpointError, load_estimator, save_estimator
from streamdas.estimators import DASClassifier, DASRegressor
from streamdas.features import LimitError
from streamdas.model import DASNet, NetConfig
from streamdas.regularizers import L1, GroupL21, NoRegularizer, WeightedL1
from streamdas.sizing import SizingConfig
from streamdas.trainer import DASTrainer, TrainConfig

__all__ = [
    "L1",
    "CheckpointError",
    "DASClassifier",
    "DASNet",
    "DASRegressor",
    "DASTrainer",
    "GroupL21",
    "LimitError",
    "NetConfig",
    "NoRegularizer",
    "SizingConfig",
    "TrainConfig",
    "WeightedL1",
    "load_estimator",
    "save_estimator",
]
__version__ = "0.1.0"
