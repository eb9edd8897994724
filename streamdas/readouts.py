"""What an estimator can tell about its model: sizes, counts and the trainer, read-only.

:class:`EstimatorReadouts` is mixed into :class:`~streamdas.DASClassifier` and
:class:`~streamdas.DASRegressor`; before the first optimizer step (no trainer yet) each
read-out gives what the model will start from.

>>> from streamdas import DASClassifier
>>> model = DASClassifier(hidden_sizes=(8, 4), batch_size=8, seed=0)
>>> model.layer_sizes, model.n_parameters, model.n_features, model.trainer is None
([8, 4], 0, 0, True)
>>> for i in range(8):
...     model.learn_one({"a": float(i), "b": 1.0}, i % 2)
>>> model.n_samples_learned, model.n_features, list(model.feature_names), model.n_parameters
(8, 2, ['a', 'b'], 158)
"""

from __future__ import annotations

from collections.abc import Collection, Hashable
from typing import Any

from streamdas.buffer import MinibatchBuffer
from streamdas.encoding import FeatureEncoder
from streamdas.trainer import DASTrainer

__all__ = ["EstimatorReadouts"]


class EstimatorReadouts:
    """Read-only properties of a DAS estimator, from its trainer, encoder and buffer."""

    _trainer: DASTrainer | None
    _encoder: FeatureEncoder
    _buffer: MinibatchBuffer
    hidden_sizes: tuple[int, ...]

    @property
    def trainer(self) -> DASTrainer | None:
        """The underlying :class:`~streamdas.DASTrainer` (``None`` until the first sample)."""
        return self._trainer

    @property
    def layer_sizes(self) -> list[int]:
        """Hidden-layer widths now."""
        if self._trainer is None:
            return [int(h) for h in self.hidden_sizes]
        return self._trainer.net.hidden_sizes

    @property
    def n_parameters(self) -> int:
        return 0 if self._trainer is None else self._trainer.net.n_parameters()

    @property
    def model_bytes(self) -> int:
        """Bytes of tensor storage: parameters plus optimizer state and running averages
        (River's memory measure does not see tensors)."""
        if self._trainer is None:
            return 0
        return self._trainer.net.n_bytes() + self._trainer.state_bytes()

    @property
    def size_history(self) -> list[dict[str, Any]]:
        """Per-layer widths after every sizing event, with the sample count."""
        return [] if self._trainer is None else list(self._trainer.size_history)

    @property
    def n_units_grown(self) -> list[int]:
        return [0] * len(self.hidden_sizes) if self._trainer is None else list(self._trainer.n_grown)

    @property
    def n_units_pruned(self) -> list[int]:
        return [0] * len(self.hidden_sizes) if self._trainer is None else list(self._trainer.n_pruned)

    @property
    def n_samples_learned(self) -> int:
        """Samples that went into an optimizer step (buffered ones not yet)."""
        return 0 if self._trainer is None else self._trainer.n_samples

    @property
    def n_sizing_cycles(self) -> int:
        return 0 if self._trainer is None else self._trainer.n_cycles

    @property
    def n_features(self) -> int:
        """Features known (input columns), at most ``max_features``."""
        return len(self._encoder)

    @property
    def feature_names(self) -> Collection[Hashable]:
        """The features known, in input-column order (a read-only view: ``name in`` is cheap)."""
        return self._encoder.names

    @property
    def n_nonfinite_skipped(self) -> int:
        """Minibatches whose loss or gradients were not finite (skipped, nothing changed)."""
        return 0 if self._trainer is None else self._trainer.n_nonfinite

    @property
    def n_samples_buffered(self) -> int:
        """Samples waiting in the ``learn_one`` / ``learn_many(split=True)`` buffer for the
        next optimizer step (they are part of the state a checkpoint saves)."""
        return len(self._buffer)
