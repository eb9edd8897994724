"""Shared pieces of the paper experiments: batch-mode DAS training with a per-epoch size record.

>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> X = rng.normal(size=(256, 4)).astype("float32"); y = (X[:, 0] > 0).astype("int64")
>>> run = train_batch(X, y, X, y, BatchSpec(hidden_sizes=(8,), epochs=2), task="classification")
>>> len(run.sizes), 0.0 <= run.score <= 1.0
(2, True)
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch

from streamdas.model import NetConfig
from streamdas.sizing import SizingConfig
from streamdas.trainer import DASTrainer, TrainConfig

__all__ = ["BatchRun", "BatchSpec", "mean_2sd", "save_json", "train_batch"]


@dataclass(frozen=True)
class BatchSpec:
    """One batch-mode training run (Algorithm 1 per epoch, then optional static fine-tuning).

    The defaults are the paper's (growth 20% / at least 20 units, tau 1e-3, Adam, lr 1e-3,
    weighted L1 with alpha 2e-5), except where an experiment says otherwise.
    """

    hidden_sizes: tuple[int, ...] = (100, 100)
    epochs: int = 20
    fine_tune_epochs: int = 0
    batch_size: int = 128
    lr: float = 1e-3
    regularizer: str = "weighted_l1"
    alpha: float = 2e-5
    tau: float = 1e-3
    growth_percentage: float = 0.2
    min_growth: int = 20
    grow: bool = True
    prune: bool = True
    cnn: bool = False
    input_hw: tuple[int, int] | None = None
    seed: int = 0


@dataclass
class BatchRun:
    """Result of :func:`train_batch`: sizes after each epoch's pruning, final score, counts."""

    spec: BatchSpec
    sizes: list[list[int]]
    score: float
    n_parameters: int
    final_sizes: list[int]
    epoch_scores: list[float] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "spec": asdict(self.spec),
            "sizes": self.sizes,
            "score": self.score,
            "n_parameters": self.n_parameters,
            "final_sizes": self.final_sizes,
            "epoch_scores": self.epoch_scores,
        }


def _paper_prune_test() -> dict[str, Any]:
    """Ask for the paper's instantaneous pruning test (all |w| < tau *now*), where the core
    offers an alternative (``prune_horizon``, a running-average test); nothing otherwise."""
    names = {f.name for f in fields(SizingConfig)}
    return {"prune_horizon": 0} if "prune_horizon" in names else {}


def _score(trainer: DASTrainer, X: torch.Tensor, y: torch.Tensor, task: str) -> float:
    out = trainer.predict(X)
    if task == "classification":
        return float((out.argmax(1) == y).float().mean())
    return float((out.squeeze(1) - y).abs().mean())  # MAE (in target units)


def train_batch(
    X: np.ndarray,
    y: np.ndarray,
    X_test: np.ndarray,
    y_test: np.ndarray,
    spec: BatchSpec,
    task: str = "classification",
    y_scale: float = 1.0,
    score_every_epoch: bool = False,
) -> BatchRun:
    """Train a DAS network in batch mode; ``sizes[e]`` are the widths after epoch ``e``'s pruning.

    For regression, ``y`` should be standardised; the reported MAE is multiplied by ``y_scale``.
    The score is accuracy (classification) or MAE (regression) on the test set.
    """
    torch.manual_seed(spec.seed)
    n_out = int(y.max()) + 1 if task == "classification" else 1
    if spec.cnn:
        assert spec.input_hw is not None
        cfg = NetConfig.paper_cnn(X.shape[1], spec.input_hw, n_out, spec.hidden_sizes)
    else:
        cfg = NetConfig(n_inputs=X.shape[1], hidden_sizes=spec.hidden_sizes, n_outputs=n_out)
    trainer = DASTrainer(
        cfg,
        TrainConfig(
            lr=spec.lr,
            regularizer=spec.regularizer,
            alpha=spec.alpha,
            loss="cross_entropy" if task == "classification" else "mse",
        ),
        SizingConfig(
            tau=spec.tau,
            growth_percentage=spec.growth_percentage,
            min_growth=spec.min_growth,
            grow=spec.grow,
            prune=spec.prune,
            **_paper_prune_test(),
        ),
        seed=spec.seed,
    )
    Xt = torch.as_tensor(X, dtype=torch.float32)
    yt = torch.as_tensor(y, dtype=torch.long if task == "classification" else torch.float32)
    if task == "regression":
        yt = yt.view(-1, 1)
    Xv = torch.as_tensor(X_test, dtype=torch.float32)
    yv = torch.as_tensor(y_test, dtype=torch.long if task == "classification" else torch.float32)
    sizes: list[list[int]] = []
    scores: list[float] = []
    for _ in range(spec.epochs):
        trainer.fit(Xt, yt, epochs=1, batch_size=spec.batch_size)
        sizes.append(list(trainer.net.hidden_sizes))
        if score_every_epoch:
            scores.append(_score(trainer, Xv, yv, task) * y_scale)
    if spec.fine_tune_epochs:
        trainer.fine_tune = True
        trainer.fit(Xt, yt, epochs=spec.fine_tune_epochs, batch_size=spec.batch_size)
    score = _score(trainer, Xv, yv, task) * (y_scale if task == "regression" else 1.0)
    return BatchRun(spec, sizes, score, trainer.net.n_parameters(), list(trainer.net.hidden_sizes), scores)


def mean_2sd(values: list[float]) -> tuple[float, float]:
    """Mean and two sample standard deviations (the paper's "mean ± 2SD").

    >>> mean_2sd([1.0, 2.0, 3.0])
    (2.0, 2.0)
    """
    a = np.asarray(values, dtype=float)
    return float(a.mean()), float(2 * a.std(ddof=1)) if len(a) > 1 else 0.0


def save_json(path: Path, data: Any) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, default=str))
    return path
