"""An estimator's state: to plain data and tensors and back (checkpoints), and pickling.

:class:`EstimatorState` is mixed into the DAS estimators. :meth:`~EstimatorState.to_state`
writes the hyperparameters (every parameter of the constructor), the feature index and its
statistics, the trainer's state, the minibatch buffer and the subclass's own part
(``_extra_state``: the classifier's labels, the regressor's target statistics);
:meth:`~EstimatorState.from_state` validates each before it rebuilds the estimator. Pickles and
deep copies go through the same state.

>>> from streamdas import DASRegressor
>>> model = DASRegressor(seed=1)
>>> model.learn_one({"a": 1.0}, 2.0)
>>> print(*sorted(model.to_state()))
buffer_x buffer_y features linear n_drifts_detected params rehearsal stats trainer y_stats
>>> DASRegressor.from_state(model.to_state()).predict_one({"a": 1.0})
2.0
"""

from __future__ import annotations

import copy
from typing import Any, ClassVar

import numpy as np
import torch

from streamdas import checkpoint
from streamdas.buffer import MinibatchBuffer
from streamdas.encoding import FeatureEncoder
from streamdas.fastpath import NumpyForward
from streamdas.features import FeatureIndex, RunningStandardizer
from streamdas.hyperparameters import param_names
from streamdas.trainer import DASTrainer, check_architecture

__all__ = ["EstimatorState"]


class EstimatorState:
    """``to_state`` / ``from_state`` and pickling of a DAS estimator."""

    _trainer: DASTrainer | None
    _encoder: FeatureEncoder
    _buffer: MinibatchBuffer
    _detector: Any
    n_drifts_detected: int
    drift_detector: Any

    _EXTRA_KEYS: ClassVar[tuple[str, ...]] = ()
    #: Keys a state may lack (files written before they existed).
    _OPTIONAL_KEYS: ClassVar[tuple[str, ...]] = ()
    #: Parameters a state written before they existed takes, where the default would change
    #: what its model does (otherwise an absent parameter takes its default).
    _ABSENT_PARAMS: ClassVar[dict[str, Any]] = {}

    def _extra_state(self) -> dict[str, Any]:
        return {}

    def _load_extra_state(self, state: dict[str, Any]) -> None:
        pass

    def _plain_params(self) -> dict[str, Any]:
        params = {k: getattr(self, k) for k in param_names(type(self))}
        params["hidden_sizes"] = [int(h) for h in params["hidden_sizes"]]
        params["drift_detector"] = checkpoint.detector_to_state(self.drift_detector)
        return params

    def to_state(self) -> dict[str, Any]:
        """Everything, as plain data and tensors (``torch.load(weights_only=True)``-safe).

        :meth:`from_state` rebuilds the estimator; :func:`streamdas.save_estimator` writes it to
        a file. Raises ``ValueError`` if a feature name, label or drift detector cannot be stored.

        >>> from streamdas import DASClassifier
        >>> model = DASClassifier(seed=1)
        >>> model.learn_one({"a": 1.0}, "x")
        >>> DASClassifier.from_state(model.to_state()).classes
        ['x']
        """
        for name in self._encoder.names:
            if not isinstance(name, (str, int)):
                raise ValueError(f"feature name {name!r} cannot be checkpointed (str or int only)")
        return {
            "params": self._plain_params(),
            "features": list(self._encoder.names),
            "stats": self._encoder.stats.state(),
            "trainer": None if self._trainer is None else self._trainer.state_dict(),
            "buffer_x": [torch.from_numpy(v.copy()) for v in self._buffer.rows],
            "buffer_y": [y.item() if isinstance(y, np.generic) else y for y in self._buffer.targets],
            "n_drifts_detected": self.n_drifts_detected,
            **self._extra_state(),
        }

    @classmethod
    def from_state(cls, state: dict[str, Any], limits: checkpoint.Limits | None = None) -> Any:
        """Rebuild an estimator from :meth:`to_state`'s data, validating every field: parameters
        in their ranges (:func:`streamdas.checkpoint.estimator_params`), the network it holds or
        would build at its first step within ``limits``
        (:func:`streamdas.trainer.check_architecture`), every tensor and statistic.

        Raises ``ValueError`` (or another ordinary exception) when the state does not fit;
        :func:`streamdas.load_estimator` turns every such failure into a
        :class:`~streamdas.CheckpointError`.
        """
        require = checkpoint.require
        require(isinstance(state, dict), "estimator state is not a dict")
        keys = {
            "params",
            "features",
            "stats",
            "trainer",
            "buffer_x",
            "buffer_y",
            "n_drifts_detected",
            *cls._EXTRA_KEYS,
        }
        require(
            keys <= set(state) <= keys | set(cls._OPTIONAL_KEYS),
            f"estimator state has keys {sorted(map(str, state))}, expected {sorted(keys)}",
        )
        params = state["params"]
        require(isinstance(params, dict), "params are not a dict")
        expected = set(param_names(cls))
        # a subset: parameters added since the file was written take their defaults
        require(set(params) <= expected, f"params have keys {sorted(map(str, params))}")
        params = {**cls._ABSENT_PARAMS, **params}
        rules = checkpoint.estimator_params(limits)
        params = {
            k: (
                v
                if k == "drift_detector"
                else rules[k].check(v, f"parameter {k!r}")
                if k in rules
                else checkpoint.plain(v, f"parameter {k!r}")
            )
            for k, v in params.items()
        }
        if "hidden_sizes" in params:
            params["hidden_sizes"] = tuple(params["hidden_sizes"])
        params["drift_detector"] = checkpoint.detector_from_state(params.get("drift_detector"))
        est: Any = cls(**params)
        features = checkpoint.plain(state["features"], "features")
        require(
            isinstance(features, list)
            and all(type(f) in (str, int) for f in features)
            and len(set(features)) == len(features),
            "features are not distinct str/int names",
        )
        # The kept rows are saved with the model: at their widest they must fit the largest file.
        cap = (limits or checkpoint.DEFAULT_LIMITS).max_bytes // 4
        width = max(est.max_features or len(features), 1)
        require(
            est._kept_rows * width <= cap,
            f"{est._kept_rows} kept rows (rehearsal window, neighbour memory) of up to {width} "
            f"features exceed the {cap} float32 values the largest checkpoint holds",
        )
        stats = RunningStandardizer.from_state(state["stats"], clip=est.clip_sd)
        require(len(stats.count) == len(features), "feature statistics do not match the feature index")
        est._encoder = FeatureEncoder(
            est.max_features, est.clip_sd, est.standardize, FeatureIndex(list(features)), stats
        )
        n_features = len(features)
        if state["trainer"] is not None:
            est._trainer = DASTrainer.from_state_dict(state["trainer"], device=est.device, limits=limits)
            if est._trainer.train_config.average_horizon != est.average_horizon:
                est._trainer.set_average_horizon(est.average_horizon)  # older files: start now
            est._fwd = NumpyForward(est._trainer.net, est._trainer.prediction_averages)
            require(est._trainer.net.n_inputs == n_features, "network inputs do not match the feature index")
        buf_x, buf_y = state["buffer_x"], state["buffer_y"]
        require(
            isinstance(buf_x, list)
            and isinstance(buf_y, list)
            and len(buf_x) == len(buf_y)
            and len(buf_x) < est.batch_size,
            "the sample buffer does not fit batch_size",
        )
        for t in buf_x:  # NaN: a missing feature; nothing infinite
            checkpoint.check_tensor(t, "a buffered sample", dtype=torch.float32, finite=False)
            require(
                t.dim() == 1 and t.numel() <= n_features and not bool(torch.isinf(t).any()),
                "a buffered sample is not a float32 row of finite values or NaN",
            )
        est._buffer = MinibatchBuffer(
            [t.numpy().copy() for t in buf_x], list(checkpoint.plain(buf_y, "buffered labels"))
        )
        n_drifts = state["n_drifts_detected"]
        require(type(n_drifts) is int and n_drifts >= 0, "n_drifts_detected is not a count")
        est.n_drifts_detected = n_drifts
        est._load_extra_state(state)
        require(est.max_features is None or n_features <= est.max_features, "more features than max_features")
        if est._trainer is None:  # the network its first step builds must fit the limits too
            check_architecture(
                est._net_config(n_features, max(est._n_outputs(), 1)),
                est._sizing_config(),
                limits,
            )
        return est

    def __getstate__(self) -> dict[str, Any]:
        # Tensors travel as NumPy arrays: torch's pickling embeds storage addresses, which
        # would make two pickles of the same model differ.
        state = {k: v for k, v in self.__dict__.items() if not k.startswith("_")}
        state["__streamdas__"] = _map_arrays(self.to_state(), lambda t: t.numpy(), torch.Tensor)
        state["__detector__"] = self._detector
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        state = dict(state)
        inner = _map_arrays(state.pop("__streamdas__"), torch.from_numpy, np.ndarray)
        detector = state.pop("__detector__")
        restored = type(self).from_state(inner)
        self.__dict__.update(restored.__dict__)
        self.__dict__.update({k: v for k, v in state.items() if k != "drift_detector"})
        self._detector = detector

    def __deepcopy__(self, memo: dict[int, Any]) -> Any:
        new = type(self).__new__(type(self))
        new.__setstate__(copy.deepcopy(self.__getstate__(), memo))
        return new


def _map_arrays(obj: Any, fn: Any, kind: type) -> Any:
    """Apply ``fn`` to every ``kind`` instance inside nested dicts and lists."""
    if isinstance(obj, kind):
        return fn(obj)
    if isinstance(obj, dict):
        return {k: _map_arrays(v, fn, kind) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_map_arrays(v, fn, kind) for v in obj)
    return obj
