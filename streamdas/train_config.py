"""How the network learns: optimizer, loss, regularizer and step-path settings.

:class:`TrainConfig` is the trainer's hyperparameter record (a frozen dataclass, stored in
checkpoints by field name); :func:`preload_optimizer` pays torch's one-time optimizer costs
where an estimator is built rather than inside the stream.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from streamdas.regularizers import Regularizer, make_regularizer

__all__ = ["TrainConfig", "preload_optimizer"]


@dataclass(frozen=True)
class TrainConfig:
    """How the network learns.

    Parameters
    ----------
    optimizer
        ``"adam"`` (the paper's), ``"adamw"`` or ``"sgd"``.
    lr
        Learning rate.
    momentum
        SGD momentum.
    weight_decay
        Optimizer weight decay (0 by default: the regularizer does the shrinking).
    regularizer
        ``"weighted_l1"`` (the paper's), ``"l21"``, ``"l1"`` or ``"none"``.
    alpha
        Regularization strength, added once per step to the batch-mean loss (paper: 2e-5).
    f
        Weight function of weighted L1 (``"identity"``: f(j) = j, as in the paper).
    loss
        ``"cross_entropy"`` (classification) or ``"mse"`` (regression).
    numpy_backprop
        Compute the loss and gradients of CPU MLPs in NumPy (:mod:`streamdas.backprop`) instead
        of autograd: the same numbers (to float32 rounding), faster on the small minibatches
        of a stream. Networks it does not cover use autograd either way.
    sync_free
        Autograd steps without a host round trip: the loss, the penalty gradient and the
        non-finite flag stay on the device, a non-finite batch is skipped on the device
        (the optimizer is told through ``found_inf``, as ``torch.amp.GradScaler`` does) and
        the counters and the last loss are read lazily, at sizing cycles or when asked
        (:mod:`streamdas.counters`). ``None`` (default): on for CUDA, off
        elsewhere (the CPU keeps synchronising steps). The NumPy path, where it applies, comes first
        either way. Needs an optimizer that accepts ``found_inf`` (Adam and AdamW, fused); SGD
        keeps the synchronising step.
    cuda_graphs
        With ``sync_free`` on CUDA, replay the whole step as a captured CUDA graph between
        sizing cycles, recaptured after every grow or prune (:mod:`streamdas.cudagraph`).
        Dropout draws different (equally distributed) masks than eager steps.
    average_horizon
        Predict with running averages of the parameters over about this many samples
        (Polyak averaging, :mod:`streamdas.averaging`); ``0`` (default, the paper's) predicts
        with the live parameters. Learning and sizing always use the live ones.
    """

    optimizer: str = "adam"
    lr: float = 1e-3
    momentum: float = 0.9
    weight_decay: float = 0.0
    regularizer: str = "weighted_l1"
    alpha: float = 2e-5
    f: str = "identity"
    loss: str = "cross_entropy"
    numpy_backprop: bool = True
    sync_free: bool | None = None
    cuda_graphs: bool = True
    average_horizon: int = 0

    def __post_init__(self) -> None:
        if self.optimizer not in ("adam", "adamw", "sgd"):
            raise ValueError(f"unknown optimizer {self.optimizer!r}")
        if self.loss not in ("cross_entropy", "mse"):
            raise ValueError(f"unknown loss {self.loss!r}")
        if not self.lr > 0:
            raise ValueError("lr must be > 0")
        if not self.alpha >= 0:
            raise ValueError(f"alpha must be >= 0, got {self.alpha}")
        if type(self.average_horizon) is not int or self.average_horizon < 0:
            raise ValueError(f"average_horizon must be an int >= 0, got {self.average_horizon!r}")

    def make_regularizer(self) -> Regularizer:
        kwargs = {"f": self.f} if self.regularizer == "weighted_l1" else {}
        return make_regularizer(self.regularizer, self.alpha, **kwargs)

    def make_optimizer(self, params: Any) -> torch.optim.Optimizer:
        if self.optimizer == "sgd":
            return torch.optim.SGD(params, lr=self.lr, momentum=self.momentum, weight_decay=self.weight_decay)
        cls = torch.optim.Adam if self.optimizer == "adam" else torch.optim.AdamW
        # fused: one kernel for all tensors, faster than foreach on the CPU for small nets.
        return cls(params, lr=self.lr, weight_decay=self.weight_decay, fused=True)


_PRELOADED: set[str] = set()


def preload_optimizer(train: TrainConfig) -> None:
    """Pay torch's one-time optimizer costs now, once per process and optimizer kind.

    Building the first ``torch.optim`` optimizer of a process imports ``torch._dynamo`` (a
    large import: docs/benchmarks.md, "Start-up spike"), and its first step has first-call
    costs of its own. The estimators call this when they are constructed, so those costs are paid
    where the model is built and not inside the stream, on the sample whose optimizer step
    comes first (``python -m benchmarks.startup`` measures both).

    >>> preload_optimizer(TrainConfig())
    >>> import sys; "torch._dynamo" in sys.modules
    True
    """
    if train.optimizer in _PRELOADED:
        return
    p = nn.Parameter(torch.zeros(2))
    optimizer = train.make_optimizer([p])
    p.grad = torch.ones(2)
    optimizer.step()
    _PRELOADED.add(train.optimizer)
