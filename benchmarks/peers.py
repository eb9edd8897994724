"""Peer learners of the accuracy benchmark that River 0.26 does not ship as such.

- :class:`KNNADWIN`: k nearest neighbours over a sliding window that ADWIN shortens on drift
  (scikit-multiflow's ``KNNADWINClassifier``, which River dropped; River's own ``KNNClassifier``
  has no drift reaction), vectorised with NumPy so it runs at River-like speed.
- :class:`ScaledMLPClassifier` / :class:`MLPRegressor`: a static per-sample torch MLP (one Adam
  step per sample) behind River's running ``StandardScaler`` (the regressor also standardizes its
  target with running statistics, as ``DASRegressor`` does).
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import numpy as np
import torch
from river import base, drift, preprocessing, stats

from benchmarks.common import TorchMLP, selu_mlp

__all__ = ["KNNADWIN", "MLPRegressor", "ScaledMLPClassifier"]


class KNNADWIN(base.Classifier):
    """kNN classifier on a sliding window that ADWIN cuts back when the error rate drifts.

    Before a sample joins the window it is predicted; ADWIN watches that 0/1 error, and when it
    detects a change the window keeps only its newest ``ADWIN.width`` samples. Majority vote of
    the ``n_neighbors`` nearest samples (Euclidean; put a ``StandardScaler`` in front).

    >>> m = KNNADWIN(n_neighbors=1)
    >>> for i in range(10):
    ...     m.learn_one({"a": float(i % 2)}, i % 2)
    >>> m.predict_one({"a": 0.9})
    1
    """

    def __init__(self, n_neighbors: int = 5, window_size: int = 1000) -> None:
        self.n_neighbors = n_neighbors
        self.window_size = window_size
        self._keys: list[Any] | None = None
        self._X: np.ndarray | None = None
        self._y: list[Any] = []
        self._adwin = drift.ADWIN()

    def _vec(self, x: dict) -> np.ndarray:
        if self._keys is None:
            self._keys = list(x)
        return np.array([x.get(k, 0.0) for k in self._keys], dtype=np.float64)

    def _votes(self, v: np.ndarray) -> Counter:
        n = len(self._y)
        if n == 0 or self._X is None:
            return Counter()
        d = ((self._X[:n] - v) ** 2).sum(axis=1)
        k = min(self.n_neighbors, n)
        idx = np.argpartition(d, k - 1)[:k] if k < n else np.arange(n)
        return Counter(self._y[i] for i in idx)

    def predict_proba_one(self, x: dict) -> dict[Any, float]:
        votes = self._votes(self._vec(x))
        total = sum(votes.values())
        return {c: v / total for c, v in votes.items()} if total else {}

    def predict_one(self, x: dict, **kwargs: Any) -> Any:
        votes = self._votes(self._vec(x))
        return votes.most_common(1)[0][0] if votes else None

    def learn_one(self, x: dict, y: Any) -> None:
        v = self._vec(x)
        if self._X is None:
            self._X = np.empty((self.window_size, len(v)))
        n = len(self._y)
        if n >= self.n_neighbors:
            votes = self._votes(v)
            self._adwin.update(0 if votes.most_common(1)[0][0] == y else 1)
            if self._adwin.drift_detected and self._adwin.width < n:
                keep = int(self._adwin.width)
                self._X[:keep] = self._X[n - keep : n]
                self._y = self._y[n - keep :]
                n = keep
        if n == self.window_size:
            self._X[:-1] = self._X[1:]
            self._y.pop(0)
            n -= 1
        self._X[n] = v
        self._y.append(y)


class ScaledMLPClassifier:
    """River ``StandardScaler`` then a static per-sample torch MLP (:class:`TorchMLP`).

    >>> m = ScaledMLPClassifier(n_classes=2, seed=0)
    >>> for i in range(50):
    ...     m.learn_one({"a": 10.0 * (i % 2)}, i % 2)
    >>> m.predict_one({"a": 10.0})
    1
    """

    def __init__(
        self, n_classes: int, hidden_sizes: tuple[int, ...] = (64, 64), lr: float = 1e-3, seed: int = 42
    ) -> None:
        self.n_classes, self.hidden_sizes, self.lr, self.seed = n_classes, hidden_sizes, lr, seed
        self.scaler = preprocessing.StandardScaler()
        self.mlp: TorchMLP | None = None

    def predict_one(self, x: dict) -> Any:
        if self.mlp is None:
            return None
        return self.mlp.predict_one(self.scaler.transform_one(x))

    def learn_one(self, x: dict, y: Any) -> None:
        self.scaler.learn_one(x)
        z = self.scaler.transform_one(x)
        if self.mlp is None:
            self.mlp = TorchMLP(len(z), self.hidden_sizes, self.n_classes, lr=self.lr, seed=self.seed)
        self.mlp.learn_one(z, y)


class MLPRegressor:
    """Static per-sample torch MLP regressor (SELU, Adam, MSE) on running-standardized inputs
    and target; predicts the running target mean before its first step.

    >>> m = MLPRegressor(seed=0)
    >>> for i in range(300):
    ...     m.learn_one({"a": float(i % 3)}, 100.0 + 10.0 * (i % 3))
    >>> abs(m.predict_one({"a": 2.0}) - 120.0) < 3
    True
    """

    def __init__(self, hidden_sizes: tuple[int, ...] = (64, 64), lr: float = 1e-3, seed: int = 42) -> None:
        self.hidden_sizes, self.lr, self.seed = hidden_sizes, lr, seed
        self.scaler = preprocessing.StandardScaler()
        self.y_var = stats.Var()
        self.keys: list[Any] | None = None
        self.net: torch.nn.Sequential | None = None
        self.opt: torch.optim.Optimizer | None = None

    def _x(self, x: dict) -> torch.Tensor:
        z = self.scaler.transform_one(x)
        assert self.keys is not None
        return torch.tensor([[z.get(k, 0.0) for k in self.keys]], dtype=torch.float32)

    def _y_scale(self) -> tuple[float, float]:
        sd = self.y_var.get() ** 0.5
        return self.y_var.mean.get(), sd if sd > 0 else 1.0

    def predict_one(self, x: dict) -> float:
        mean, sd = self._y_scale()
        if self.net is None:
            return mean
        with torch.no_grad():
            return mean + sd * float(self.net(self._x(x))[0, 0])

    def learn_one(self, x: dict, y: float) -> None:
        self.scaler.learn_one(x)
        self.y_var.update(float(y))
        if self.net is None:
            self.keys = list(x)
            self.net = selu_mlp(len(self.keys), self.hidden_sizes, 1, self.seed)
            self.opt = torch.optim.Adam(self.net.parameters(), lr=self.lr)
        assert self.opt is not None
        mean, sd = self._y_scale()
        target = torch.tensor([[(float(y) - mean) / sd]], dtype=torch.float32)
        self.opt.zero_grad(set_to_none=True)
        torch.nn.functional.mse_loss(self.net(self._x(x)), target).backward()
        self.opt.step()
