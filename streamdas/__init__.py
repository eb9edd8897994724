"""streamdas: Dynamic Auto-Sizing neural networks for drifting data streams.

The public names below are imported on first use (PEP 562), so that ``import streamdas`` and
the ``streamdas`` command's ``--version`` and ``--help`` load neither torch nor River.

>>> from streamdas import DASClassifier
>>> DASClassifier().layer_sizes
[64, 64]
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
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

# Each public name and the module that defines it.
_EXPORTS = {
    "CheckpointError": "checkpoint",
    "load_estimator": "checkpoint",
    "save_estimator": "checkpoint",
    "DASClassifier": "estimators",
    "DASRegressor": "estimators",
    "LimitError": "features",
    "DASNet": "model",
    "NetConfig": "model",
    "L1": "regularizers",
    "GroupL21": "regularizers",
    "NoRegularizer": "regularizers",
    "WeightedL1": "regularizers",
    "SizingConfig": "sizing",
    "DASTrainer": "trainer",
    "TrainConfig": "trainer",
}

#: The submodules ``streamdas.NAME`` imports on first use (a fixed table: no other name is
#: turned into an import).
_SUBMODULES = frozenset(
    {
        "activations",
        "adam",
        "arguments",
        "averaging",
        "backprop",
        "buffer",
        "checkpoint",
        "cli",
        "counters",
        "cudagraph",
        "encoding",
        "engines",
        "estimator_state",
        "estimators",
        "fastpath",
        "features",
        "hyperparameters",
        "labels",
        "linear_path",
        "memory",
        "metrics",
        "metrics_server",
        "mixing",
        "mixture",
        "model",
        "neighbours",
        "params",
        "readouts",
        "regularizers",
        "rehearsal",
        "sizing",
        "threads",
        "train_config",
        "trainer",
        "trainer_settings",
        "trainer_state",
        "warmup",
    }
)


def __getattr__(name: str) -> Any:
    """A public name, or a submodule (``streamdas.threads``), imported when first asked for."""
    if name in _EXPORTS:
        value = getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
        globals()[name] = value
        return value
    if name in _SUBMODULES:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
