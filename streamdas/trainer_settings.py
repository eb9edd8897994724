"""Changing a trainer's settings while it learns, and what its state costs in memory.

The functions are also :class:`~streamdas.DASTrainer` methods of the same names; each validates
its values first (a bad one raises ``ValueError`` and changes nothing) and takes effect at the
next step.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any, Protocol

import torch
from torch import Tensor

from streamdas.averaging import ParameterAverages
from streamdas.model import DASNet
from streamdas.regularizers import Regularizer
from streamdas.sizing import RunningAverages, SizingConfig
from streamdas.train_config import TrainConfig

__all__ = ["SettingsHost", "set_average_horizon", "set_hyperparameters", "state_bytes", "with_sizing"]


class SettingsHost(Protocol):
    """What these functions read and change on a trainer (a :class:`~streamdas.DASTrainer`)."""

    net: DASNet
    optimizer: torch.optim.Optimizer
    regularizer: Regularizer
    train_config: TrainConfig
    sizing: SizingConfig
    pruning_averages: RunningAverages
    prediction_averages: ParameterAverages | None


def set_hyperparameters(
    trainer: SettingsHost,
    *,
    alpha: float | None = None,
    lr: float | None = None,
    tau: float | None = None,
    every: int | None = None,
) -> None:
    """Change hyperparameters while learning; each takes effect at the next step.

    ``alpha`` reaches the regularizer (its cached coefficients are rebuilt), ``lr`` every
    optimizer parameter group, ``tau`` and ``every`` the sizing config. Values are
    validated first: a bad one raises ``ValueError`` and changes nothing.

    >>> from streamdas import DASTrainer, NetConfig
    >>> t = DASTrainer(NetConfig(n_inputs=2, hidden_sizes=(4,), n_outputs=2), seed=0)
    >>> t.set_hyperparameters(alpha=1e-3, lr=0.01, tau=2e-3, every=64)
    >>> t.regularizer.alpha, t.optimizer.param_groups[0]["lr"], t.sizing.tau, t.sizing.every
    (0.001, 0.01, 0.002, 64)
    """
    train = trainer.train_config
    if alpha is not None:
        train = replace(train, alpha=float(alpha))
    if lr is not None:
        train = replace(train, lr=float(lr))
    sizing = trainer.sizing
    if tau is not None:
        sizing = replace(sizing, tau=float(tau))
    if every is not None:
        sizing = replace(sizing, every=int(every))
    trainer.train_config, trainer.sizing = train, sizing
    if alpha is not None:
        trainer.regularizer.alpha = train.alpha
    if lr is not None:
        for group in trainer.optimizer.param_groups:
            group["lr"] = train.lr


def set_average_horizon(trainer: SettingsHost, horizon: int) -> None:
    """Predict with parameter averages over ``horizon`` samples from now on (``0``: with the
    live parameters); new averages start at the current parameters. For loading states
    written before the option: an estimator's NumPy forward pass holds the averages
    object, so the estimator builds it after this.

    >>> from streamdas import DASTrainer, NetConfig
    >>> t = DASTrainer(NetConfig(n_inputs=2, hidden_sizes=(4,), n_outputs=2), seed=0)
    >>> t.set_average_horizon(100)
    >>> t.prediction_averages.horizon, t.train_config.average_horizon
    (100.0, 100)
    """
    train = replace(trainer.train_config, average_horizon=horizon)  # validates
    if train.average_horizon == 0:
        trainer.prediction_averages = None
    elif trainer.prediction_averages is None:
        trainer.prediction_averages = ParameterAverages(trainer.net, train.average_horizon)
    else:
        trainer.prediction_averages.horizon = float(train.average_horizon)
    trainer.train_config = train  # part of a CUDA graph's key: the next step recaptures


def with_sizing(trainer: SettingsHost, **changes: Any) -> None:
    """Change sizing settings at run time, e.g. ``with_sizing(grow=False)``."""
    trainer.sizing = replace(trainer.sizing, **changes)


def state_bytes(trainer: SettingsHost) -> int:
    """Bytes of tensor storage held besides the network's parameters: optimizer state,
    pruning averages and prediction averages.

    >>> from streamdas import DASTrainer, NetConfig
    >>> t = DASTrainer(NetConfig(n_inputs=2, hidden_sizes=(4,), n_outputs=2), seed=0)
    >>> t.state_bytes()
    0
    """
    holders: list[dict[Any, Any]] = [trainer.optimizer.state, trainer.pruning_averages.state]
    if trainer.prediction_averages is not None:
        holders.append(trainer.prediction_averages.state)
    return sum(
        v.numel() * v.element_size()
        for h in holders
        for s in h.values()
        for v in s.values()
        if isinstance(v, Tensor)
    )
