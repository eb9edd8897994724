"""Two experts' predictions mixed by their recent log loss (exponential weights).

The network and the neighbour vote (:mod:`streamdas.neighbours`) are each best on different
streams, and on one stream at different times: the vote on small moving regions, the network
on smooth or high-dimensional concepts and whenever the recent samples are too few to vote
well. :class:`ExpertMix` predicts with ``w_net * p_net + w_memory * p_memory``, where each
weight is proportional to ``exp`` of minus the expert's log loss over the recent samples
(Hedge with a forgetting factor: each sample's loss counts ``(1 - forgetting) ** age``), so the
mix follows whichever expert has been right lately and switches within about
``1 / forgetting`` samples when the other becomes better.

>>> import numpy as np
>>> mix = ExpertMix(forgetting=0.05)
>>> mix.weights
(0.5, 0.5)
>>> mix.update(np.array([0.9, 0.8]), np.array([0.2, 0.4]))  # the first was more right, twice
>>> [round(w, 3) for w in mix.weights]
[0.893, 0.107]
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from streamdas import checkpoint

__all__ = ["FLOOR", "ExpertMix"]

#: Probabilities below this count as it in the log loss, so that one confident mistake does
#: not silence an expert for good.
FLOOR = 1e-3


class ExpertMix:
    """Exponential weights of two experts by their recent log loss.

    Parameters
    ----------
    forgetting
        Fraction of the accumulated log loss forgotten per sample, in (0, 1].
    """

    def __init__(self, forgetting: float) -> None:
        self.forgetting = float(forgetting)
        self.log_weights = (0.0, 0.0)
        self.weights = (0.5, 0.5)  # normalized exp of log_weights (Python floats: read per prediction)
        self._ages = np.ones(1)  # per-sample loss weights for the last batch size, oldest first

    def update(self, first: np.ndarray, second: np.ndarray) -> None:
        """Take a batch of samples in order: the probability the first and the second expert
        gave each sample's true class."""
        n = len(first)
        if len(self._ages) != n + 1:
            self._ages = (1.0 - self.forgetting) ** np.arange(n, -1, -1.0)
        ages = self._ages
        decay, recent = float(ages[0]), ages[1:]
        a = self.log_weights[0] * decay + float(recent @ np.log(np.maximum(first, FLOOR)))
        b = self.log_weights[1] * decay + float(recent @ np.log(np.maximum(second, FLOOR)))
        self._set(a, b)

    def _set(self, a: float, b: float) -> None:
        self.log_weights = (a, b)
        w = 1.0 / (1.0 + math.exp(min(b - a, 700.0)))
        self.weights = (w, 1.0 - w)

    def state(self) -> list[float]:
        """The two log weights."""
        return list(self.log_weights)

    def load(self, state: Any) -> None:
        """Set the log weights from :meth:`state`; ``ValueError`` unless they are two finite
        numbers."""
        checkpoint.require(
            isinstance(state, list) and len(state) == 2 and all(type(v) is float for v in state),
            "mix weights are not two numbers",
        )
        checkpoint.require(all(math.isfinite(v) for v in state), "mix weights are not finite")
        self._set(state[0], state[1])
