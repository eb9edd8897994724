"""A linear path beside the network of :class:`~streamdas.DASRegressor`.

A linear model on the standardized inputs learns the standardized target by plain SGD on the
squared error (as River's ``LinearRegression`` does), while the network learns the same target
on its own. Each prediction blends the two, weighted by ``exp(-sharpness * excess)`` where
``excess`` is how much a path's recent squared error (an exponential average over about
``horizon`` training samples, each measured before it is learned) exceeds the smaller of the two,
relative to it. A linear concept is then fit from the first samples on, while the network
sizes itself for the rest and takes over once it predicts better.

>>> import numpy as np
>>> path = LinearPath(lr=0.05)
>>> rng = np.random.default_rng(0)
>>> for _ in range(500):
...     z = rng.normal(size=(1, 2)).astype(np.float32)
...     path.learn(z, 2.0 * z[:, 0] - z[:, 1], np.zeros(1))  # the network: always 0
>>> np.round(path.weights, 2).tolist(), path.linear_share > 0.99
([2.0, -1.0], True)
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from streamdas import checkpoint

__all__ = ["LinearPath"]


class LinearPath:
    """Online linear regression on standardized inputs and target, and its blend with the
    network's output.

    Parameters
    ----------
    lr
        SGD step size (the gradient of the squared error is ``2 * (prediction - target)``); a
        step whose gain along the batch's inputs would exceed 1 is scaled down to 1 (as
        normalized LMS does), so the path converges whatever the number of features.
    horizon
        Samples over which the recent squared error of each path is averaged.
    sharpness
        How strongly the blend favours the path with the smaller recent error.
    """

    def __init__(self, lr: float, horizon: int = 30, sharpness: float = 3.0) -> None:
        self.lr, self.horizon, self.sharpness = float(lr), int(horizon), float(sharpness)
        self.weights = np.zeros(0)
        self.bias = 0.0
        #: recent mean squared error of the linear path and of the network
        self.errors = [0.0, 0.0]
        self.n_updates = 0
        self.linear_share = 0.5

    def _grow(self, n: int) -> None:
        if n > len(self.weights):
            self.weights = np.concatenate([self.weights, np.zeros(n - len(self.weights))])

    def predict(self, z: np.ndarray) -> np.ndarray:
        """Linear outputs (standardized target units) of rows ``z`` (or of one row)."""
        self._grow(z.shape[-1])
        return z @ self.weights[: z.shape[-1]] + self.bias

    def _share(self) -> float:
        """The weight of the linear path in the blend, from the recent errors."""
        e_lin, e_net = self.errors
        best = min(e_lin, e_net)
        if best <= 0.0:
            return 0.5 if e_lin == e_net else float(e_lin < e_net)
        w_lin = math.exp(-self.sharpness * (e_lin - best) / best)
        w_net = math.exp(-self.sharpness * (e_net - best) / best)
        return w_lin / (w_lin + w_net)

    def blend(self, z: np.ndarray, net: np.ndarray) -> np.ndarray:
        """The prediction of rows (or one row) ``z``, given the network's outputs ``net``."""
        share = self.linear_share
        lin = np.atleast_1d(self.predict(z))
        return share * lin + (1.0 - share) * net.reshape(lin.shape)

    def learn(self, z: np.ndarray, y: np.ndarray, net: np.ndarray) -> None:
        """Score both paths on a batch (rows ``z``, standardized targets ``y``, the network's
        outputs ``net`` before its step), then take one SGD step on it."""
        z64 = z.astype(np.float64)
        y = np.asarray(y, dtype=np.float64).reshape(-1)
        n = len(y)
        residual = y - self.predict(z64)
        miss = y - np.asarray(net, dtype=np.float64).reshape(-1)
        self.n_updates += 1
        rate = max(1.0 / self.horizon, 1.0 / self.n_updates)
        self.errors[0] += rate * (float(residual @ residual) / n - self.errors[0])
        self.errors[1] += rate * (float(miss @ miss) / n - self.errors[1])
        self.linear_share = self._share()
        step = 2.0 * self.lr / n
        scale = step * float(np.einsum("ij,ij->", z64, z64))  # the step's gain along z
        if scale > 1.0:  # normalized as in NLMS: SGD on many features would diverge
            step /= scale
        self.weights[: z.shape[1]] += step * (residual @ z64)
        self.bias += step * float(residual.sum())

    # ------------------------------------------------------------------ state
    def state(self) -> dict[str, Any]:
        """Plain data: weights, bias, recent errors and the number of updates."""
        return {
            "weights": self.weights.tolist(),
            "bias": self.bias,
            "errors": list(self.errors),
            "n_updates": self.n_updates,
        }

    @classmethod
    def from_state(cls, state: Any, lr: float, n_features: int) -> LinearPath:
        """Rebuild from :meth:`state`; ``ValueError`` unless every number is finite, the errors
        are not negative and there are at most ``n_features`` weights."""
        require = checkpoint.require
        require(
            isinstance(state, dict) and set(state) == {"weights", "bias", "errors", "n_updates"},
            "linear path state is not {weights, bias, errors, n_updates}",
        )
        weights, errors = state["weights"], state["errors"]
        require(isinstance(weights, list) and len(weights) <= n_features, "linear path weights do not fit")
        require(isinstance(errors, list) and len(errors) == 2, "linear path errors are not two numbers")
        numbers = [*weights, state["bias"], *errors]
        require(
            all(type(v) in (int, float) and math.isfinite(v) for v in numbers),
            "linear path values are not finite numbers",
        )
        require(min(errors) >= 0, "linear path errors are negative")
        n = state["n_updates"]
        require(type(n) is int and n >= 0, "linear path n_updates is not a count")
        path = cls(lr)
        path.weights = np.asarray(weights, dtype=np.float64)
        path.bias, path.errors, path.n_updates = float(state["bias"]), [float(e) for e in errors], n
        path.linear_share = path._share()
        return path
