"""River estimators: :class:`DASClassifier` and :class:`DASRegressor`.

Both learn **one minibatch at a time**: ``learn_one`` buffers samples and takes one optimizer
step per ``batch_size`` samples; ``learn_many`` takes one step on the batch it is given, or, with
``split=True``, feeds the rows through the same buffer as ``learn_one`` (one step per
``batch_size`` rows, in order, the remainder kept for the next call), so the model after N
samples does not depend on how they were batched -- the Kafka service learns this way. Every
``grow_every`` samples the network prunes, then grows (see :class:`streamdas.DASTrainer`).
Features are River dicts: new ones add zero-weight input columns, missing ones are imputed with
their running mean, order never matters. Inputs are standardized with running statistics
(``standardize=True``), so the SELU network works on raw streams.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import numpy as np
import pandas as pd
import torch
from river import base

from streamdas import checkpoint
from streamdas.buffer import MinibatchBuffer
from streamdas.encoding import FeatureEncoder
from streamdas.estimator_state import EstimatorState
from streamdas.fastpath import NumpyForward
from streamdas.features import RunningStandardizer, check_target
from streamdas.hyperparameters import Live, arguments, check_bound, config_args
from streamdas.labels import LabelIndex
from streamdas.linear_path import LinearPath
from streamdas.memory import deep_size
from streamdas.mixing import ExpertMix
from streamdas.mixture import label_frequencies, mixed_label, mixed_proba, score_and_keep, softmax
from streamdas.model import NetConfig
from streamdas.neighbours import NeighbourMemory
from streamdas.readouts import EstimatorReadouts
from streamdas.rehearsal import RehearsalWindow
from streamdas.sizing import SizingConfig
from streamdas.trainer import DASTrainer, TrainConfig, preload_optimizer

__all__ = ["DASClassifier", "DASRegressor"]


class _DASEstimator(EstimatorReadouts, EstimatorState):
    """Shared machinery of the two estimators (not a River estimator by itself)."""

    _loss: ClassVar[str] = "cross_entropy"
    #: Positive-integer bounds among the hyperparameters (name: whether ``None`` is allowed).
    _BOUNDS: ClassVar[dict[str, bool]] = {"max_features": True}
    #: Integer hyperparameters with their least value.
    _COUNTS: ClassVar[dict[str, int]] = {"batch_warmup": 0, "rehearsal": 0, "rehearsal_window": 1}
    #: Configuration fields named otherwise than the hyperparameter they take.
    _RENAMES: ClassVar[dict[str, str]] = {"every": "grow_every"}
    alpha = Live("alpha")
    lr = Live("lr")
    tau = Live("tau")
    grow_every = Live("every")
    hidden_sizes: tuple[int, ...]
    batch_size: int
    batch_warmup: int
    activation: str
    standardize: bool
    clip_sd: float | None
    average_horizon: int
    drift_detector: base.DriftDetector | None
    device: str
    seed: int | None
    max_features: int | None
    rehearsal: int
    rehearsal_window: int

    def __init__(self, **params: Any) -> None:
        """Take the hyperparameters a subclass's ``__init__`` declares (their defaults are the
        subclass's own) and validate them."""
        for name, none in self._BOUNDS.items():
            check_bound(name, params[name], none)
        for name, value in params.items():
            setattr(self, name, value)
        for name in self._BOUNDS:
            value = getattr(self, name)
            setattr(self, name, None if value is None else int(value))
        if int(self.batch_size) < 1:
            raise ValueError("batch_size must be >= 1")
        for name, lo in self._COUNTS.items():
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < lo:
                raise ValueError(f"{name} must be an integer >= {lo}, got {value!r}")
        # Validate the configs now, so a bad argument fails at construction; and pay torch's
        # one-time optimizer costs here rather than on the first step inside the stream.
        preload_optimizer(self._train_config())
        self._sizing_config()
        self._net_config(1, 1)
        self._reset()

    # ------------------------------------------------------------------ configs
    def _train_config(self) -> TrainConfig:
        return TrainConfig(**config_args(TrainConfig, self, self._RENAMES), loss=self._loss)

    def _sizing_config(self) -> SizingConfig:
        return SizingConfig(**config_args(SizingConfig, self, self._RENAMES))

    def _net_config(self, n_inputs: int, n_outputs: int) -> NetConfig:
        args = config_args(NetConfig, self, self._RENAMES)
        args["hidden_sizes"] = tuple(self.hidden_sizes)
        return NetConfig(n_inputs=n_inputs, n_outputs=n_outputs, **args)

    def _reset(self) -> None:
        self._encoder = FeatureEncoder(self.max_features, self.clip_sd, self.standardize)
        self._trainer: DASTrainer | None = None
        self._fwd: NumpyForward | None = None
        self._buffer = MinibatchBuffer()
        self._detector = None if self.drift_detector is None else self.drift_detector.clone()
        self.n_drifts_detected = 0
        self._rehearsal = (
            RehearsalWindow(self.rehearsal_window, self.rehearsal, self.seed) if self.rehearsal else None
        )

    # ------------------------------------------------------------------ model
    def _n_outputs(self) -> int:
        raise NotImplementedError

    def _build(self) -> DASTrainer:
        if self._trainer is None:
            config = self._net_config(len(self._encoder), max(self._n_outputs(), 1))
            self._trainer = DASTrainer(
                config, self._train_config(), self._sizing_config(), seed=self.seed, device=self.device
            )
            self._fwd = NumpyForward(self._trainer.net, self._trainer.prediction_averages)
        return self._trainer

    @property
    def _raw_memory_usage(self) -> int:
        """Bytes held, tensor storage included (River's walk sees only Python objects and NumPy
        arrays; see :mod:`streamdas.memory`)."""
        return deep_size(self)

    @property
    def _mutable_attributes(self) -> set[str]:
        """What River's ``mutate`` may change while learning; each takes effect at the next step."""
        return {"alpha", "lr", "tau", "grow_every", "fine_tune"}

    @property
    def fine_tune(self) -> bool:
        """Static fine-tuning: regularization, growth and pruning off. Settable at run time."""
        return bool(self._trainer and self._trainer.fine_tune)

    @fine_tune.setter
    def fine_tune(self, value: bool) -> None:
        self._build().fine_tune = bool(value)

    # ------------------------------------------------------------------ introspection
    # ------------------------------------------------------------------ features
    @property
    def _stats(self) -> RunningStandardizer:
        """The input statistics (of the feature encoder)."""
        return self._encoder.stats

    def _add_inputs(self, n: int) -> None:
        """New features became input columns: the network (if built) grows as many."""
        if self._trainer is not None:
            self._trainer.add_inputs(n)

    def _learn_vector(self, x: dict[base.typing.FeatureName, Any]) -> np.ndarray:
        """Validated raw row of ``x``; new features grow the encoder and the network."""
        return self._encoder.learn_row(x, self._add_inputs)

    def _predict_input(self, x: dict[base.typing.FeatureName, Any]) -> np.ndarray:
        """Standardized row of ``x`` for prediction (nothing changes)."""
        return self._encoder.predict_row(x)

    # ------------------------------------------------------------------ learning
    def _encode_targets(self, ys: list[Any]) -> list[Any]:
        raise NotImplementedError

    def _check_targets(self, ys: list[Any]) -> None:
        raise NotImplementedError

    def _step(self, raw: np.ndarray, targets: list[Any]) -> None:
        trainer = self._build()
        z = torch.from_numpy(self._encoder.standardize_batch(raw))
        y = self._target_tensor(targets)
        self._before_step(z, y)
        if self._detector is None:  # nothing reads the loss: a sync-free step stays so
            self._train(trainer, z, y)
            return
        skipped = trainer.n_nonfinite
        self._train(trainer, z, y)
        loss = trainer.last_loss
        if trainer.n_nonfinite == skipped and loss is not None and math.isfinite(loss):
            self._detector.update(loss)
            if self._detector.drift_detected:
                self.n_drifts_detected += 1
                if trainer.sizing_active:  # fine-tuning: detected and counted, never resized
                    trainer.cycle()

    def _train(self, trainer: DASTrainer, z: torch.Tensor, y: torch.Tensor) -> None:
        """One step on the batch, and on its rehearsed samples where ``rehearsal`` is on; those
        count neither as samples learned nor toward the averages' horizons."""
        if self._rehearsal is None:
            trainer.step(z, y)
        else:
            trainer.step(*self._rehearsal.extend(z, y), n_samples=len(z))

    def _before_step(self, z: torch.Tensor, y: torch.Tensor) -> None:
        """Called with each batch's network inputs and targets before its optimizer step."""

    def _next_batch(self) -> int:
        """Buffered samples the next step takes: ``batch_size``; under ``batch_warmup``, 1,
        doubling every ``batch_warmup`` samples learned, up to it (a function of the samples
        learned alone, so the model after N samples still does not depend on how they arrived)."""
        if not self.batch_warmup:
            return self.batch_size
        doublings = self.n_samples_learned // self.batch_warmup
        return self.batch_size if doublings >= 20 else min(self.batch_size, 1 << doublings)

    def _flush(self) -> None:
        self._step(*self._buffer.take(len(self._encoder)))

    def _known_target(self, y: Any) -> bool:
        """Whether ``y`` is valid and already encoded (learn_one then skips both steps)."""
        return False

    def learn_one(self, x: dict[base.typing.FeatureName, Any], y: Any) -> None:
        known = self._known_target(y)
        if not known:
            self._check_targets([y])
        vec = self._learn_vector(x)
        if not known:
            self._encode_targets([y])
        self._buffer.add(vec, y)
        if len(self._buffer) >= self._next_batch():
            self._flush()

    def learn_many(self, X: pd.DataFrame, y: pd.Series, *, split: bool = False) -> None:
        """Learn from the rows of ``X`` (features) and ``y`` (targets).

        Parameters
        ----------
        X
            One row per sample, one numeric column per feature (NaN = missing).
        y
            One target per row.
        split
            ``False`` (the default, as River's minibatch estimators do): **one** optimizer step
            on the whole batch, whatever its size. ``True``: the rows join ``learn_one``'s
            buffer in order and one step is taken per ``batch_size`` rows; the remainder
            waits for the next call (:attr:`n_samples_buffered`, saved in checkpoints). The
            result is then exactly that of calling ``learn_one`` row by row, so the model
            after N samples does not depend on how they were batched (new feature names are
            added when the batch arrives, new classes row by row, as ``learn_one`` does).

        Nothing changes when a row or target is invalid: every row is checked first.

        Examples
        --------
        >>> import pandas as pd
        >>> X = pd.DataFrame({"a": [0.1 * i for i in range(40)], "b": [1.0] * 40})
        >>> y = pd.Series([i % 2 for i in range(40)])
        >>> one = DASClassifier(batch_size=16, batch_warmup=0, seed=1)
        >>> split = DASClassifier(batch_size=16, batch_warmup=0, seed=1)
        >>> one.learn_many(X, y); split.learn_many(X, y, split=True)
        >>> one.n_samples_learned, split.n_samples_learned, split.n_samples_buffered
        (40, 32, 8)
        """
        if len(X) != len(y):
            raise ValueError(f"X has {len(X)} rows but y has {len(y)}")
        if len(X) == 0:
            return
        ys = list(y)
        self._check_targets(ys)
        raw = self._encoder.learn_frame(X, self._add_inputs)  # validates every column first
        if not split:
            self._encode_targets(ys)
            self._step(raw, ys)
            return
        for row, target in zip(raw, ys, strict=True):
            self._encode_targets([target])  # a new class appears between the same steps
            self._buffer.add(row, target)
            if len(self._buffer) >= self._next_batch():
                self._flush()

    @torch.no_grad()
    def _outputs_many(self, X: pd.DataFrame) -> np.ndarray:
        assert self._trainer is not None
        z = torch.from_numpy(self._encoder.predict_frame(X))
        return self._trainer.predict(z).cpu().numpy()

    # ------------------------------------------------------------------ state
    def _target_tensor(self, targets: list[Any]) -> torch.Tensor:
        raise NotImplementedError

    @property
    def _kept_rows(self) -> int:
        """Recent input rows the estimator keeps (its rehearsal window), each as wide as the
        features: bounded when a checkpoint is loaded."""
        return self.rehearsal_window if self.rehearsal else 0

    def _rehearsal_state(self) -> dict[str, Any]:
        """The rehearsal window's state under ``rehearsal``, only where it is on (so states
        without it keep their keys)."""
        return {} if self._rehearsal is None else {"rehearsal": self._rehearsal.state()}

    def _load_rehearsal(self, state: dict[str, Any], target_dtype: Any) -> None:
        saved = state.get("rehearsal")  # absent with rehearsal on: an empty window (a snapshot)
        checkpoint.require(saved is None or self._rehearsal is not None, "rehearsal state without rehearsal")
        if saved is not None:
            self._rehearsal = RehearsalWindow.from_state(
                saved, self.rehearsal_window, self.rehearsal, len(self._encoder), target_dtype
            )

    def _unit_test_skips(self) -> set[str]:
        # Like River's gradient-descent linear models: learn_many takes ONE optimizer step on
        # the batch it is given, while learn_one takes one step per `batch_size` buffered
        # samples, so the two are deliberately not equivalent.
        return {"check_learn_many_matches_learn_one"}


@checkpoint.checkpointable
class DASClassifier(_DASEstimator, base.MiniBatchClassifier):
    """A Dynamic Auto-Sizing neural network classifier for streams.

    An MLP (ReLU by default; the paper's SELU is ``activation="selu"``) whose hidden layers grow
    and shrink while it learns: weighted L1 gives unit ``j``
    of each hidden layer an L1 strength ``alpha * j`` on its incoming weights and bias; every
    ``grow_every`` samples, units whose incoming parameters are all below ``tau`` are pruned and
    ``max(ceil(n * growth_percentage), min_growth)`` new units (weights scaled by ``tau``) are
    grown. Classes may appear at any time (the output layer grows); labels may be any hashable.
    The network is built at the first optimizer step; before it, the probabilities are the
    frequencies of the labels seen so far and the prediction the most frequent one (as
    :class:`DASRegressor` predicts their mean), and predicting never changes what the model
    learns.

    The defaults are tuned for prequential accuracy on drifting streams at River's per-sample
    speed: ReLU, a (64, 64) start, one Adam step per 16 samples at ``lr = tau = 1e-2``,
    ``alpha = 3e-5``, predictions with weights averaged over 130 samples (``average_horizon``),
    mixed with a vote of the 5 nearest of the last 512 samples (``memory``). Table 7c of
    docs/benchmarks.md (``python -m benchmarks --only accuracy``) gives the accuracy after each
    of these changes on eight drifting streams, three seeds, beside the peers.
    :class:`DASRegressor` keeps its own defaults.

    Parameters
    ----------
    hidden_sizes
        Initial hidden widths.
    batch_size
        Samples per optimizer step in ``learn_one`` and ``learn_many(split=True)`` (1
        allowed); ``learn_many`` without ``split`` takes one step on whatever it is given.
    batch_warmup
        Under ``learn_one`` and ``learn_many(split=True)``, the first steps' batches start at
        one sample and double every ``batch_warmup`` samples learned, up to ``batch_size``: a
        fresh model takes more steps on its first samples, which short streams (Phishing,
        ImageSegments) reward, at the cost of those extra steps (docs/benchmarks.md, "Batch
        warm-up"). ``0``: every batch is ``batch_size``. Not in the paper. The classifier's
        default is ``64``, the regressor's ``0``.
    grow_every
        Samples between two sizing cycles (prune, then grow).
    alpha
        Weighted-L1 strength, added once per step to the batch-mean loss (the same meaning at
        any batch size; see :mod:`streamdas.trainer`).
    lr
        Learning rate.
    optimizer
        ``"adam"``, ``"adamw"`` or ``"sgd"``.
    regularizer
        ``"weighted_l1"``, ``"l21"``, ``"l1"`` or ``"none"``.
    tau
        Pruning threshold and scale of grown weights.
    growth_percentage
        Growth as a fraction of the layer's width.
    min_growth
        Minimum units grown per layer and cycle.
    min_units
        Width floor of every hidden layer.
    max_units
        Width ceiling of every hidden layer (``None``: none). The default bounds the memory of
        a long-running learner should pruning ever stall.
    grow
        Growth on/off (off and ``prune=False``: a static network).
    prune
        Pruning on/off.
    prune_horizon
        Samples over which the pruning test averages each weight (0: the paper's
        instantaneous test); see :class:`streamdas.SizingConfig`.
    grow_init
        How grown units start: ``"tau"`` (the paper's: weights times ``tau``) or
        ``"silent"`` (full-scale incoming, zero outgoing weights); see
        :class:`streamdas.SizingConfig`.
    activation
        Hidden activation (f(0) must be 0): ``"selu"``, ``"relu"``, ``"tanh"``, ...
    standardize
        Standardize inputs with running means and variances.
    clip_sd
        Bounded influence of extreme inputs, from a feature's first value on: standardized
        inputs are clipped to ``[-clip_sd, clip_sd]``; once a feature has 30 values each value
        enters the running statistics clipped to ``mean +- clip_sd * sd``, and before that its
        statistics are those of its first values, each clipped to ``mean +- clip_sd * sd`` of
        the others less the smallest and the largest (from the 12th value on; see
        :class:`streamdas.features.RunningStandardizer`). So one value like ``1e30``, even
        among a new model's first, cannot ruin the standardization for good, and any
        float32 input gives valid probabilities. ``None``: unbounded, every value counts in
        full (and inputs near float32's limit may overflow).
    average_horizon
        Predict with running averages of the weights over about this many samples (Polyak
        averaging, :mod:`streamdas.averaging`): learning keeps the high learning rate that
        follows drift, predictions lose its jitter. ``0`` predicts with the live weights, as
        the paper does. Not in the paper (docs/benchmarks.md, table 7c).
    drift_detector
        Optional River drift detector fed with the minibatch loss; when it fires, a sizing
        cycle runs at once (never while ``fine_tune`` is on; off by default). Checkpoints
        accept River's real-valued detectors (:data:`streamdas.checkpoint.DRIFT_DETECTORS`).
    device
        ``"cpu"`` or ``"cuda"``.
    seed
        Random seed.
    max_classes
        Most labels the model may learn (each adds an output unit, and a probability to every
        prediction); ``None``: no bound. Learning a sample whose new label would go past it
        raises :class:`streamdas.LimitError` and changes nothing.
    max_label_length
        Most characters in a new label (``len(str(label))``); a longer one raises
        :class:`streamdas.LimitError` and changes nothing.
    max_features
        Most features the model may learn (each adds an input column); ``None``: no bound.
        Learning a sample whose new features would go past it raises
        :class:`streamdas.LimitError` and changes nothing; predicting ignores unknown
        features, as always (:attr:`n_features` counts the known ones).
    rehearsal
        Recent samples revisited per new sample: each optimizer step also learns from
        ``rehearsal * batch_size`` samples drawn uniformly from the last ``rehearsal_window``
        ones learned (:class:`streamdas.rehearsal.RehearsalWindow`), so a local concept gets
        more updates per sample without a second pass. They count neither as samples learned
        nor toward ``grow_every``, ``prune_horizon`` or ``average_horizon``. ``0`` (the
        default) is the paper's behaviour (none): with the neighbour memory on, rehearsal adds
        little and costs speed (docs/benchmarks.md, "Rehearsal" and "Neighbour memory"). Not
        in the paper.
    rehearsal_window
        Most recent samples rehearsal draws from.
    memory
        Recent samples kept for a nearest-neighbour vote beside the network
        (:mod:`streamdas.neighbours`): predictions mix the network's probabilities with the
        vote of the ``n_neighbors`` nearest of the last ``memory`` samples learned, each
        weighted by its recent log loss (:mod:`streamdas.mixing`), so the mix follows whichever
        has been right lately. The vote follows local concepts that move faster than the
        network learns them. ``0``: the network alone (the paper). Not in the paper; what it
        adds and costs is in docs/benchmarks.md, "Neighbour memory".
    n_neighbors
        Nearest samples that vote.
    mix_forgetting
        Fraction of each expert's accumulated log loss forgotten per sample, in (0, 1]: the mix
        switches to the better expert within about ``1 / mix_forgetting`` samples.

    Examples
    --------
    >>> from river import datasets, evaluate, metrics
    >>> from streamdas import DASClassifier
    >>> model = DASClassifier(seed=42)
    >>> evaluate.progressive_val_score(datasets.Phishing(), model, metrics.Accuracy())
    Accuracy: 89.51%
    >>> model.layer_sizes
    [83, 86]

    Hyperparameters that are safe to change while learning (``alpha``, ``lr``, ``tau``,
    ``grow_every``, ``fine_tune``) go through River's ``mutate`` and apply from the next step:

    >>> model.mutate({"alpha": 1e-3, "fine_tune": True})
    >>> model.trainer.regularizer.alpha, model.trainer.fine_tune
    (0.001, True)
    """

    _BOUNDS: ClassVar[dict[str, bool]] = {
        "max_classes": True,
        "max_label_length": False,
        "max_features": True,
    }
    _COUNTS: ClassVar[dict[str, int]] = {**_DASEstimator._COUNTS, "memory": 0, "n_neighbors": 1}
    max_classes: int | None
    max_label_length: int
    memory: int
    n_neighbors: int
    mix_forgetting: float

    def __init__(
        self,
        hidden_sizes: tuple[int, ...] = (64, 64),
        batch_size: int = 16,
        batch_warmup: int = 64,
        grow_every: int = 1000,
        alpha: float = 3e-5,
        lr: float = 1e-2,
        optimizer: str = "adam",
        regularizer: str = "weighted_l1",
        tau: float = 1e-2,
        growth_percentage: float = 0.2,
        min_growth: int = 4,
        min_units: int = 1,
        max_units: int | None = 512,
        grow: bool = True,
        prune: bool = True,
        prune_horizon: int = 800,
        grow_init: str = "tau",
        activation: str = "relu",
        standardize: bool = True,
        clip_sd: float | None = 10.0,
        average_horizon: int = 130,
        drift_detector: base.DriftDetector | None = None,
        device: str = "cpu",
        seed: int | None = None,
        max_classes: int | None = 1000,
        max_label_length: int = 256,
        max_features: int | None = 10_000,
        rehearsal: int = 0,
        rehearsal_window: int = 256,
        memory: int = 512,
        n_neighbors: int = 5,
        mix_forgetting: float = 0.05,
    ) -> None:
        if not 0.0 < mix_forgetting <= 1.0:
            raise ValueError(f"mix_forgetting must be in (0, 1], got {mix_forgetting!r}")
        super().__init__(**arguments(locals()))

    def _reset(self) -> None:
        super()._reset()
        self._labels = LabelIndex(self.max_classes, self.max_label_length)
        self._memory = NeighbourMemory(self.memory, self.n_neighbors) if self.memory else None
        self._mix = ExpertMix(self.mix_forgetting)

    @property
    def _multiclass(self) -> bool:
        return True

    @property
    def classes(self) -> list[Any]:
        """Labels seen so far, in output order."""
        return list(self._labels.classes)

    def _n_outputs(self) -> int:
        return len(self._labels)

    def _check_targets(self, ys: list[Any]) -> None:
        self._labels.check(ys)

    def _encode_targets(self, ys: list[Any]) -> list[Any]:
        n_new = self._labels.add(ys)
        if n_new and self._trainer is not None:
            self._trainer.add_outputs(n_new)
        return ys

    def _known_target(self, y: Any) -> bool:
        return self._labels.known(y)

    def _target_tensor(self, targets: list[Any]) -> torch.Tensor:
        return torch.from_numpy(self._labels.positions(targets))

    def _before_step(self, z: torch.Tensor, y: torch.Tensor) -> None:
        """With the neighbour memory on: score both experts on the batch, then keep it in the
        memory (:func:`~streamdas.mixture.score_and_keep`)."""
        if self._memory is None:
            return
        assert self._fwd is not None
        rows = z.numpy()
        score_and_keep(self._memory, self._mix, self._fwd.many(rows), rows, y.numpy())

    def _prior(self) -> np.ndarray:
        """Before the first step: the frequency of each label among the samples learned so far
        (all still buffered; uniform where none is, as in a state saved without its buffer)."""
        pos = self._labels.pos
        return label_frequencies((pos[y] for y in self._buffer.targets), len(self._labels.classes))

    def predict_proba_one(
        self, x: dict[base.typing.FeatureName, Any], **kwargs: Any
    ) -> dict[base.typing.ClfTarget, float]:
        """The probability of each label seen so far (``kwargs``: River's interface, unused)."""
        if not self._labels.classes:
            return {}
        if self._trainer is None:
            return dict(zip(self._labels.classes, self._prior().tolist(), strict=True))
        assert self._fwd is not None
        z = self._predict_input(x)
        p = mixed_proba(self._memory, self._mix, z, softmax(self._fwd(z)))
        return dict(zip(self._labels.classes, p.tolist(), strict=True))

    def predict_one(
        self, x: dict[base.typing.FeatureName, Any], **kwargs: Any
    ) -> base.typing.ClfTarget | None:
        """The most likely label (``kwargs``: River's interface, unused), computed with as
        little of the mixture as the answer needs (:func:`~streamdas.mixture.mixed_label`)."""
        classes = self._labels.classes
        if not classes:
            return None
        if self._trainer is None:
            return classes[int(self._prior().argmax())]
        assert self._fwd is not None
        z = self._predict_input(x)
        return classes[mixed_label(self._memory, self._mix, z, self._fwd(z))]

    def _proba_many(self, X: pd.DataFrame) -> np.ndarray:
        assert self._trainer is not None
        z = self._encoder.predict_frame(X)
        logits = self._trainer.predict(torch.from_numpy(z)).cpu().numpy()
        return mixed_proba(self._memory, self._mix, z, softmax(logits))

    def predict_proba_many(self, X: pd.DataFrame) -> pd.DataFrame:
        if not self._labels.classes:
            return pd.DataFrame(index=X.index)
        if self._trainer is None:
            p = np.tile(self._prior(), (len(X), 1))
            return pd.DataFrame(p, index=X.index, columns=self._labels.classes)
        return pd.DataFrame(self._proba_many(X), index=X.index, columns=self._labels.classes)

    def predict_many(self, X: pd.DataFrame) -> pd.Series:
        if not self._labels.classes:
            return pd.Series([None] * len(X), index=X.index, dtype=object)
        if self._trainer is None:
            top = self._labels.classes[int(self._prior().argmax())]
            return pd.Series([top] * len(X), index=X.index)
        idx = self._proba_many(X).argmax(axis=1)
        return pd.Series([self._labels.classes[i] for i in idx], index=X.index)

    _EXTRA_KEYS: ClassVar[tuple[str, ...]] = ("classes",)

    _OPTIONAL_KEYS: ClassVar[tuple[str, ...]] = ("rehearsal", "memory")
    _ABSENT_PARAMS: ClassVar[dict[str, Any]] = {
        "batch_warmup": 0,
        "rehearsal": 0,
        "memory": 0,
    }  # states from before them

    @property
    def _kept_rows(self) -> int:
        return super()._kept_rows + self.memory

    def _extra_state(self) -> dict[str, Any]:
        out = {"classes": self._labels.state(), **self._rehearsal_state()}
        if self._memory is not None:
            out["memory"] = {"rows": self._memory.state(), "mix": self._mix.state()}
        return out

    def _load_extra_state(self, state: dict[str, Any]) -> None:
        self._labels.load(state["classes"])
        self._load_rehearsal(state, np.int64)
        saved = state.get("memory")
        checkpoint.require(
            (saved is None) == (self._memory is None)
            and (saved is None or (isinstance(saved, dict) and set(saved) == {"rows", "mix"})),
            "memory state does not match memory",
        )
        if saved is not None:
            self._memory = NeighbourMemory.from_state(
                saved["rows"], self.memory, self.n_neighbors, len(self._encoder), max(len(self._labels), 1)
            )
            self._mix.load(checkpoint.plain(saved["mix"], "mix weights"))
        checkpoint.require(
            all(y in self._labels.pos for y in self._buffer.targets),
            "a buffered label is not among the classes",
        )
        if self._trainer is not None and self._trainer.net.n_outputs != max(len(self._labels), 1):
            raise ValueError("network outputs do not match the classes")

    @classmethod
    def _unit_test_params(cls) -> Any:
        yield {"hidden_sizes": (16, 16), "grow_every": 100, "batch_size": 8}


@checkpoint.checkpointable
class DASRegressor(_DASEstimator, base.MiniBatchRegressor):
    """A Dynamic Auto-Sizing neural network regressor for streams.

    The same network and schedule as :class:`DASClassifier` (see there for the parameters),
    trained with mean squared error on a running-standardized target. Until its first
    optimizer step (``batch_size`` samples) it predicts the mean of the targets seen so far.

    Its defaults are its own, measured on TrumpApproval, ChickWeights and a drifting Friedman
    stream (``python -m benchmarks.accuracy --kind regression``; docs/benchmarks.md, "Regressor
    defaults"): one Adam step per sample (``batch_size=1``) at the paper's ``lr=1e-3``, ReLU
    (the paper: SELU), a (64, 64) start, and a linear path beside the network
    (``linear_path=0.02``; the paper: the network alone, ``linear_path=0``), which fits a
    linear concept from the first samples (docs/benchmarks.md, "Linear path"). One step per
    sample costs more than one per 16: set ``batch_size=16, lr=3e-3`` for speed, at a higher
    error (same section).

    Parameters
    ----------
    hidden_sizes
        Initial hidden widths.
    batch_size
        Samples per optimizer step in ``learn_one`` and ``learn_many(split=True)``.
    batch_warmup
        First batches from one sample, doubling every ``batch_warmup`` samples learned up to
        ``batch_size`` (``0``, the default: none); see :class:`DASClassifier`.
    grow_every
        Samples between two sizing cycles.
    alpha
        Weighted-L1 strength.
    lr
        Learning rate.
    optimizer
        ``"adam"``, ``"adamw"`` or ``"sgd"``.
    regularizer
        ``"weighted_l1"``, ``"l21"``, ``"l1"`` or ``"none"``.
    tau
        Pruning threshold and scale of grown weights.
    growth_percentage
        Growth as a fraction of the layer's width.
    min_growth
        Minimum units grown per layer and cycle.
    min_units
        Width floor.
    max_units
        Width ceiling.
    grow
        Growth on/off.
    prune
        Pruning on/off.
    prune_horizon
        Samples over which the pruning test averages each weight (0: the paper's
        instantaneous test); see :class:`streamdas.SizingConfig`.
    grow_init
        How grown units start (``"tau"`` or ``"silent"``).
    activation
        Hidden activation.
    standardize
        Standardize inputs with running statistics.
    clip_sd
        Clip inputs and targets to ``clip_sd`` running standard deviations (``None``: off);
        see :class:`DASClassifier`. One absurd target (``1e30``) then moves the target
        statistics by a bounded step instead of ruining every later prediction.
    average_horizon
        Predict with running averages of the weights over about this many samples (``0``,
        the default here and the paper's: the live weights); see :class:`DASClassifier`.
    linear_path
        Step size of a linear model learned beside the network on the same standardized
        inputs and target (SGD on the squared error); each prediction blends the two, weighted
        by their recent errors (:class:`streamdas.linear_path.LinearPath`), so a linear concept
        is fit from the first samples while the network sizes itself. ``0`` (the paper's): the
        network alone. Not in the paper.
    drift_detector
        Optional River drift detector on the loss.
    device
        ``"cpu"`` or ``"cuda"``.
    seed
        Random seed.
    max_features
        Most features the model may learn; ``None``: no bound. Beyond it learning raises
        :class:`streamdas.LimitError` and changes nothing (see :class:`DASClassifier`).
    rehearsal
        Recent samples revisited per new sample at each step (``0``, the paper's: none); see
        :class:`DASClassifier` (docs/benchmarks.md, "Rehearsal", for what it costs and gains).
    rehearsal_window
        Most recent samples rehearsal draws from.

    Examples
    --------
    >>> from river import datasets, evaluate, metrics
    >>> from streamdas import DASRegressor
    >>> model = DASRegressor(seed=42)
    >>> evaluate.progressive_val_score(datasets.TrumpApproval(), model, metrics.MAE())
    MAE: 0.324157
    >>> model.layer_sizes
    [77, 77]
    """

    _loss: ClassVar[str] = "mse"
    linear_path: float

    def __init__(
        self,
        hidden_sizes: tuple[int, ...] = (64, 64),
        batch_size: int = 1,
        batch_warmup: int = 0,
        grow_every: int = 1000,
        alpha: float = 1e-4,
        lr: float = 1e-3,
        optimizer: str = "adam",
        regularizer: str = "weighted_l1",
        tau: float = 5e-3,
        growth_percentage: float = 0.2,
        min_growth: int = 4,
        min_units: int = 1,
        max_units: int | None = 512,
        grow: bool = True,
        prune: bool = True,
        prune_horizon: int = 800,
        grow_init: str = "tau",
        activation: str = "relu",
        standardize: bool = True,
        clip_sd: float | None = 10.0,
        average_horizon: int = 0,
        drift_detector: base.DriftDetector | None = None,
        device: str = "cpu",
        seed: int | None = None,
        max_features: int | None = 10_000,
        linear_path: float = 0.02,
        rehearsal: int = 2,
        rehearsal_window: int = 256,
    ) -> None:
        if not (isinstance(linear_path, (int, float)) and 0 <= linear_path <= 10):
            raise ValueError(f"linear_path must be a number in [0, 10], got {linear_path!r}")
        super().__init__(**arguments(locals()))

    def _reset(self) -> None:
        super()._reset()
        self._y_stats = RunningStandardizer(1, clip=self.clip_sd)
        self._linear = LinearPath(self.linear_path) if self.linear_path else None

    def _before_step(self, z: torch.Tensor, y: torch.Tensor) -> None:
        if self._linear is None:
            return
        assert self._trainer is not None and self._fwd is not None
        rows = z.numpy()
        net = self._fwd(rows[0]) if len(rows) == 1 else self._trainer.predict(z).cpu().numpy()[:, 0]
        self._linear.learn(rows, y.numpy(), net)

    def _n_outputs(self) -> int:
        return 1

    def _check_targets(self, ys: list[Any]) -> None:
        for y in ys:
            check_target(y)

    def _encode_targets(self, ys: list[Any]) -> list[Any]:
        return ys

    def _target_tensor(self, targets: list[Any]) -> torch.Tensor:
        y = np.asarray(targets, dtype=np.float32).reshape(-1, 1)
        self._y_stats.update(y)
        return torch.from_numpy(self._y_stats.transform(y, True).astype(np.float32))

    def _to_target(self, out: np.ndarray) -> np.ndarray:
        """Network outputs in target units (in float64 when ``out`` is, as in predict_many)."""
        return out / self._y_stats.inv_std[0] + self._y_stats.center[0]

    def _target_mean(self) -> float:
        """Mean of every target seen, stepped or still buffered (the prediction before the first
        optimizer step)."""
        n = float(self._y_stats.count[0]) if len(self._y_stats.count) else 0.0
        total = n * float(self._y_stats.mean[0]) if n else 0.0
        for y in self._buffer.targets:
            total += float(y)
        count = n + len(self._buffer.targets)
        return total / count if count else 0.0

    def predict_one(self, x: dict[base.typing.FeatureName, Any]) -> float:
        if self._trainer is None:
            return self._target_mean()
        assert self._fwd is not None
        z = self._predict_input(x)
        out = self._fwd(z)
        if self._linear is not None:
            out = self._linear.blend(z, out)
        y = float(self._to_target(out)[0])
        if not math.isfinite(y):  # past float32 (targets near its limit): again in float64
            y = float(self._to_target(out.astype(np.float64))[0])
        return y

    def predict_many(self, X: pd.DataFrame) -> pd.Series:
        if self._trainer is None:
            return pd.Series([self._target_mean()] * len(X), index=X.index, dtype=float)
        if self._linear is None:
            out = self._outputs_many(X)[:, 0].astype(np.float64)
        else:
            assert self._trainer is not None
            z = self._encoder.predict_frame(X)
            with torch.no_grad():
                net = self._trainer.predict(torch.from_numpy(z)).cpu().numpy()[:, 0].astype(np.float64)
            out = self._linear.blend(z, net)
        return pd.Series(self._to_target(out), index=X.index, dtype=float)

    def _extra_state(self) -> dict[str, Any]:
        extra: dict[str, Any] = {"y_stats": self._y_stats.state(), **self._rehearsal_state()}
        if self._linear is not None:  # only then: states without the path keep their keys
            extra["linear"] = self._linear.state()
        return extra

    _EXTRA_KEYS: ClassVar[tuple[str, ...]] = ("y_stats",)
    _OPTIONAL_KEYS: ClassVar[tuple[str, ...]] = ("linear", "rehearsal")
    #: states from before the path and rehearsal
    _ABSENT_PARAMS: ClassVar[dict[str, Any]] = {"batch_warmup": 0, "linear_path": 0.0, "rehearsal": 0}

    def _load_extra_state(self, state: dict[str, Any]) -> None:
        self._y_stats = RunningStandardizer.from_state(state["y_stats"], clip=self.clip_sd)
        checkpoint.require(len(self._y_stats.count) == 1, "target statistics are not one column")
        self._load_rehearsal(state, np.float32)
        linear = state.get("linear")
        checkpoint.require(
            (linear is None) == (self._linear is None), "linear path does not match linear_path"
        )
        if linear is not None:
            self._linear = LinearPath.from_state(linear, self.linear_path, len(self._encoder))
        for y in self._buffer.targets:
            check_target(y)
        if self._trainer is not None:
            checkpoint.require(self._trainer.net.n_outputs == 1, "a regressor has one output")

    @classmethod
    def _unit_test_params(cls) -> Any:
        yield {"hidden_sizes": (16, 16), "grow_every": 100, "batch_size": 8}
