"""Model factory and the predict-then-learn step applied to one partition's batch.

:func:`process_batch` is shared by the Kafka service and the embedded (no-broker) runner: it
validates every raw value (:mod:`consumers.records`), checks it against the model's limits
(:func:`model_limits`), predicts all valid records with ``predict_proba_many`` /
``predict_many``, then learns the labelled ones in arrival order, one optimizer step per
``batch_size`` records whatever the batch size (``learn_many(split=True)``), so the model after N
records is the same however polls, restarts and rebalances cut the stream (prequential: each
record is predicted *before* the model learns from it).

Records need not share their features: as in the library, a new feature grows the model's input
layer (up to ``max_features``) and a missing one is imputed with its running mean (NaN in the
frames handed to the estimator); a feature schema is enforced only when one is configured
(``--features``). A record can only be predicted, learned or rejected: any failure while
handling one record is that record's :class:`~consumers.records.Rejection`
(:func:`process_guarded` contains even failures outside the per-record guards).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Collection, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from consumers.records import Record, Rejection, check_schema, clip, parse_record

__all__ = [
    "DEFAULT_MAX_FEATURES",
    "BatchResult",
    "Limits",
    "ModelSpec",
    "PartitionState",
    "make_estimator",
    "model_limits",
    "process_batch",
    "process_guarded",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ModelSpec:
    """What estimator to build for a fresh partition.

    Parameters
    ----------
    task
        ``"classification"`` or ``"regression"``.
    kind
        ``"das"`` (:class:`streamdas.DASClassifier` / :class:`streamdas.DASRegressor`) or
        ``"linear"`` (River's logistic / linear regression, a cheap baseline).
    params
        Keyword arguments for the estimator's constructor (e.g. ``hidden_sizes``, ``lr``).
    seed
        Random seed passed to DAS estimators.
    """

    task: str = "classification"
    kind: str = "das"
    params: dict[str, Any] = field(default_factory=dict)
    seed: int = 42


def make_estimator(spec: ModelSpec) -> Any:
    """Build a fresh estimator from ``spec``.

    Examples
    --------
    >>> est = make_estimator(ModelSpec(task="regression", kind="linear"))
    >>> type(est).__name__
    'LinearRegression'
    """
    if spec.task not in ("classification", "regression"):
        raise ValueError(f"task must be 'classification' or 'regression', got {spec.task!r}")
    if spec.kind == "das":
        from streamdas import DASClassifier, DASRegressor

        cls = DASClassifier if spec.task == "classification" else DASRegressor
        params = {"seed": spec.seed, **spec.params}
        est = cls(**params)
        check_checkpointable(est)
        return est
    if spec.kind == "linear":
        from river import linear_model

        if spec.task == "classification":
            return linear_model.LogisticRegression(**spec.params)
        return linear_model.LinearRegression(**spec.params)
    raise ValueError(f"model kind must be 'das' or 'linear', got {spec.kind!r}")


def check_checkpointable(est: Any) -> None:
    """``ValueError`` unless the largest network ``est`` may grow into can be checkpointed.

    A service reloads its models from checkpoints, which refuse networks beyond
    :class:`streamdas.checkpoint.Limits`; a model allowed to outgrow them would be saved but
    never loaded again. The bound counts every hidden layer at ``max_units``, ``max_features``
    inputs and ``max_classes`` outputs, so all three must be bounded.

    >>> from streamdas import DASClassifier
    >>> check_checkpointable(DASClassifier())
    >>> check_checkpointable(DASClassifier(max_units=None))
    Traceback (most recent call last):
    ...
    ValueError: max_units=None: the service needs max_units, max_features (and max_classes) ...
    >>> check_checkpointable(DASClassifier(max_units=4000, max_features=10_000))
    Traceback (most recent call last):
    ...
    ValueError: a network of 10000 inputs, 2 hidden layers of up to 4000 units and 1000 outputs ...
    """
    from streamdas.checkpoint import DEFAULT_LIMITS

    width, inputs = est.max_units, est.max_features
    outputs = getattr(est, "max_classes", 1)
    for name, value in (("max_units", width), ("max_features", inputs), ("max_classes", outputs)):
        if value is None:
            raise ValueError(
                f"{name}=None: the service needs max_units, max_features (and "
                f"max_classes) bounded, so that every model it saves can be loaded"
            )
    depth = len(est.hidden_sizes)
    n = inputs * width + width + (depth - 1) * (width * width + width) + width * outputs + outputs
    limits = DEFAULT_LIMITS
    if width > limits.max_units or n > limits.max_parameters:
        raise ValueError(
            f"a network of {inputs} inputs, {depth} hidden layers of up to {width} units and "
            f"{outputs} outputs may reach {n:,} parameters; a checkpoint holds at most "
            f"{limits.max_units} units a layer and {limits.max_parameters:,} parameters: lower "
            f"max_units, max_features or max_classes"
        )


#: Feature bound of estimators that have none of their own (River's linear baselines).
DEFAULT_MAX_FEATURES = 10_000
#: Class and label bounds of classifiers that keep labels but do not say their bounds.
DEFAULT_MAX_CLASSES = 1000
DEFAULT_MAX_LABEL_LENGTH = 256
#: Most values (rows x columns) in one frame handed to the estimator: a batch whose records
#: bring many different features is predicted and learned in several frames (same result).
MAX_FRAME_CELLS = 1_000_000
#: Exceptions that stop the process rather than fail one record.
STOP_REQUESTS = (KeyboardInterrupt, SystemExit, GeneratorExit)


@dataclass
class PartitionState:
    """One model and where it stands in its input partition.

    Parameters
    ----------
    estimator
        The streaming estimator.
    features
        The configured feature schema (``--features``): every record must have exactly these
        features. ``None`` (the default): records bring any features, as the library takes them.
    next_offset
        Offset of the next record to process (``None``: nothing processed yet).
    n_records
        Records processed by this model so far (all outcomes).
    dirty
        Records processed since the last checkpoint.
    """

    estimator: Any
    features: list[str] | None = None
    next_offset: int | None = None
    n_records: int = 0
    dirty: int = 0

    def hidden_sizes(self) -> list[int]:
        """The estimator's current hidden widths (empty for models without hidden layers)."""
        sizes = getattr(self.estimator, "layer_sizes", None)
        return [int(s) for s in sizes] if sizes is not None else []


@dataclass(frozen=True)
class Limits:
    """What an estimator can take in: features, classes and label length (``None``: no bound).

    Read from the estimator's own ``max_features``, ``max_classes`` and ``max_label_length``;
    River's linear baselines have none, and get :data:`DEFAULT_MAX_FEATURES` (their weights grow
    with every new feature) and no class bound (they keep no labels).
    """

    max_features: int | None = DEFAULT_MAX_FEATURES
    max_classes: int | None = None
    max_label_length: int | None = None


def model_limits(est: Any) -> Limits:
    """The :class:`Limits` of ``est``.

    Examples
    --------
    >>> model_limits(make_estimator(ModelSpec(kind="linear")))
    Limits(max_features=10000, max_classes=None, max_label_length=None)
    """
    keeps_labels = hasattr(est, "classes")
    return Limits(
        max_features=getattr(est, "max_features", DEFAULT_MAX_FEATURES),
        max_classes=getattr(est, "max_classes", DEFAULT_MAX_CLASSES) if keeps_labels else None,
        max_label_length=(
            getattr(est, "max_label_length", DEFAULT_MAX_LABEL_LENGTH) if keeps_labels else None
        ),
    )


def _known_features(est: Any) -> Collection[Any] | None:
    """The feature names ``est`` has learned (``None``: it does not say; its own limit check at
    learning then decides)."""
    names = getattr(est, "feature_names", None)  # DASClassifier / DASRegressor
    if names is not None:
        return names
    weights = getattr(est, "weights", None)  # River's linear models
    return weights if isinstance(weights, dict) else None


class _Admission:
    """Checks a batch's records, in order, against the model's limits and schema, counting
    the features and classes the records admitted so far will add when learned."""

    def __init__(self, state: PartitionState, task: str, learn: bool) -> None:
        est = state.estimator
        self.schema = state.features
        self.limits = model_limits(est)
        self.learn = learn
        self.classification = task == "classification"
        self.known = _known_features(est) if self.schema is None else None
        self.new_features: set[Any] = set()
        classes = getattr(est, "classes", None) if self.classification else None
        self.classes: set[Any] | None = set(classes) if classes is not None else None
        self.new_classes: set[Any] = set()

    def check(self, rec: Record) -> Rejection | None:
        if self.schema is not None:
            problem = check_schema(rec.x, self.schema)
            if problem is not None:
                return problem
        lim = self.limits
        if lim.max_features is not None and len(rec.x) > lim.max_features:
            return Rejection("too_many_features", f"{len(rec.x)} features > max_features={lim.max_features}")
        if rec.y is None or not self.learn:
            return None
        if self.classification and lim.max_label_length is not None:
            length = len(str(rec.y))
            if length > lim.max_label_length:
                return Rejection(
                    "label_too_long",
                    f"label of {length} characters > max_label_length={lim.max_label_length}",
                )
        new_classes: list[Any] = []
        if self.classes is not None and lim.max_classes is not None:
            labels = [False, True] if isinstance(rec.y, bool) else [rec.y]
            new_classes = [c for c in labels if c not in self.classes and c not in self.new_classes]
            total = len(self.classes) + len(self.new_classes) + len(new_classes)
            if new_classes and total > lim.max_classes:
                return Rejection(
                    "too_many_classes",
                    f"label {clip(repr(rec.y), 100)} would be class {total} > max_classes={lim.max_classes}",
                )
        if self.known is not None and lim.max_features is not None:
            new = [k for k in rec.x if k not in self.known and k not in self.new_features]
            total = len(self.known) + len(self.new_features) + len(new)
            if new and total > lim.max_features:
                return Rejection(
                    "too_many_features",
                    f"{len(new)} new features would make {total} > max_features={lim.max_features}",
                )
            self.new_features.update(new)
        self.new_classes.update(new_classes)
        return None


@dataclass
class BatchResult:
    """What :func:`process_batch` produced for a batch of raw values.

    ``predictions`` holds ``(index, payload)`` pairs, ``rejections`` ``(index, Rejection)``
    pairs, where ``index`` points into the input batch; every index appears in exactly one
    of the two lists (and also in ``rejections`` when learning failed after predicting).
    ``labels`` holds ``(label, prediction)`` of the labelled predicted records (prequential
    scores), ``labelled`` their ``(index, record)``: what the shared scope forwards to its
    learner.
    """

    predictions: list[tuple[int, dict[str, Any]]] = field(default_factory=list)
    rejections: list[tuple[int, Rejection]] = field(default_factory=list)
    labels: list[tuple[Any, Any]] = field(default_factory=list)
    labelled: list[tuple[int, Record]] = field(default_factory=list)
    n_learned: int = 0
    predict_seconds: float = 0.0
    learn_seconds: float = 0.0


def _plain(value: Any) -> Any:
    """Turn numpy scalars into JSON-friendly Python values."""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _failure(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


def _frames(rows: list[Record], uniform: bool) -> Iterator[tuple[int, pd.DataFrame]]:
    """``(start, frame)`` for consecutive runs of ``rows``: one column per feature of the run
    (NaN where a record lacks it), at most :data:`MAX_FRAME_CELLS` values per frame. With
    ``uniform``, a run holds only records with the same features in the same order (for
    estimators that cannot take missing values)."""
    start = 0
    while start < len(rows):
        first = tuple(rows[start].x)
        columns: dict[str, int] = dict.fromkeys(first, 0)
        stop = start + 1
        same = True  # every record of the run has ``first``'s keys, in that order
        while stop < len(rows):
            keys = rows[stop].x.keys()
            if len(keys) == len(first) and tuple(keys) == first:
                if len(columns) * (stop + 1 - start) > MAX_FRAME_CELLS:
                    break
                stop += 1
                continue
            if uniform:
                break
            grown = len(columns) + sum(1 for k in keys if k not in columns)
            if grown * (stop + 1 - start) > MAX_FRAME_CELLS:
                break
            columns.update(dict.fromkeys(keys, 0))
            same = False
            stop += 1
        names = list(columns)
        if same:
            data = np.array([list(r.x.values()) for r in rows[start:stop]], dtype=float)
            data = data.reshape(stop - start, len(names))
        else:
            pos = {name: j for j, name in enumerate(names)}
            data = np.full((stop - start, len(names)), np.nan)
            for i, rec in enumerate(rows[start:stop]):
                for name, v in rec.x.items():
                    data[i, pos[name]] = v
        yield start, pd.DataFrame(data, columns=names)
        start = stop


def _predict(est: Any, X: pd.DataFrame, task: str) -> tuple[list[Any], list[dict[str, float] | None]]:
    n = len(X)
    if task == "regression":
        preds = est.predict_many(X)
        return [_plain(v) for v in np.asarray(preds).tolist()], [None] * n
    proba = est.predict_proba_many(X)
    if proba is None or proba.shape[1] == 0:
        return [None] * n, [{} for _ in range(n)]
    columns = list(proba.columns)
    names = [str(c) for c in columns]
    values = np.nan_to_num(proba.to_numpy(dtype=float), nan=0.0, posinf=0.0, neginf=0.0)
    best = values.argmax(axis=1)
    preds = [_plain(columns[i]) for i in best]
    probs: list[dict[str, float] | None] = [dict(zip(names, row, strict=True)) for row in values.tolist()]
    return preds, probs


Outcome = tuple[Any, "dict[str, float] | None"] | BaseException


def _predict_frame(est: Any, X: pd.DataFrame, task: str) -> list[Outcome]:
    """Predictions for the rows of ``X``; if the frame fails, row by row (a row that fails
    alone gets its exception)."""
    try:
        preds, probs = _predict(est, X, task)
        return list(zip(preds, probs, strict=True))
    except BaseException as exc:
        if isinstance(exc, STOP_REQUESTS):
            raise
        log.warning("batch prediction failed (%s); retrying record by record", _failure(exc))
    out: list[Outcome] = []
    for k in range(len(X)):
        try:
            row = X.iloc[k : k + 1].dropna(axis=1, how="all")
            preds, probs = _predict(est, row, task)
            out.append((preds[0], probs[0]))
        except BaseException as exc:
            if isinstance(exc, STOP_REQUESTS):
                raise
            out.append(exc)
    return out


def _predict_rows(est: Any, rows: list[Record], task: str) -> list[Outcome]:
    split = hasattr(est, "n_samples_buffered")  # a streamdas estimator: NaN = missing
    outcomes: list[Outcome] = []
    for _, X in _frames(rows, uniform=not split):
        outcomes.extend(_predict_frame(est, X, task))
    return outcomes


def process_batch(
    state: PartitionState,
    values: Sequence[bytes | None],
    *,
    task: str = "classification",
    max_bytes: int = 1_048_576,
    learn: bool = True,
    keys: Sequence[bytes | None] | None = None,
    max_key_bytes: int | None = None,
    check_labels: bool | None = None,
) -> BatchResult:
    """Validate, predict and (for labelled records) learn one batch from one partition.

    Parameters
    ----------
    state
        The partition's model; its ``n_records`` grows by ``len(values)``.
    values
        Raw message values, in offset order.
    task
        ``"classification"`` or ``"regression"``.
    max_bytes
        Larger values are rejected as ``oversized``.
    learn
        Set ``False`` to predict only.
    check_labels
        Check labelled records against the model's limits on classes, label length and new
        features, as learning them would (default: ``learn``). The shared scope predicts only
        and checks them, since its learner learns what it forwards.
    keys
        The messages' keys (optional): with ``max_key_bytes``, a record with a longer key is
        rejected as ``oversized_key``.
    max_key_bytes
        Longest key accepted.

    Returns
    -------
    BatchResult
        Prediction payloads hold ``id``, ``prediction``, ``probabilities`` (classifiers),
        ``hidden_sizes``, ``learned`` and ``model_records`` (records this model had seen
        before the batch); the caller adds routing fields (key, offset, ...).

    Examples
    --------
    >>> state = PartitionState(make_estimator(ModelSpec(kind="linear")))
    >>> batch = [b'{"x": {"a": 1.0}, "y": true, "id": 7}', b'not json', b'{"x": {"b": 0.5}}']
    >>> result = process_batch(state, batch)
    >>> [i for i, _ in result.predictions], [(i, r.reason) for i, r in result.rejections]
    ([0, 2], [(1, 'invalid_json')])
    >>> result.predictions[0][1]["id"], result.n_learned, sorted(state.estimator.weights)
    (7, 1, ['a'])
    """
    result = BatchResult()
    seen_before = state.n_records
    est = state.estimator
    admission = _Admission(state, task, learn if check_labels is None else check_labels)
    valid: list[tuple[int, Record]] = []
    for i, raw in enumerate(values):
        try:
            key = keys[i] if keys is not None else None
            if key is not None and max_key_bytes is not None and len(key) > max_key_bytes:
                parsed: Record | Rejection = Rejection("oversized_key", f"{len(key)} bytes > {max_key_bytes}")
            else:
                parsed = parse_record(raw, task=task, max_bytes=max_bytes)
            if isinstance(parsed, Record):
                parsed = admission.check(parsed) or parsed
        except Exception as exc:  # the checks themselves failed: this record's dead letter
            parsed = Rejection("internal_error", _failure(exc))
        if isinstance(parsed, Rejection):
            result.rejections.append((i, parsed))
        else:
            valid.append((i, parsed))
    state.n_records += len(values)
    state.dirty += len(values)
    if not valid:
        return result

    rows = [rec for _, rec in valid]
    t0 = time.perf_counter()
    outcomes = _predict_rows(est, rows, task)
    result.predict_seconds = time.perf_counter() - t0

    labelled: list[int] = []
    for pos, ((i, rec), outcome) in enumerate(zip(valid, outcomes, strict=True)):
        if isinstance(outcome, BaseException):
            result.rejections.append((i, Rejection("model_error", f"predict: {_failure(outcome)}")))
            continue
        pred, proba = outcome
        payload: dict[str, Any] = {"id": rec.id, "prediction": pred}
        if task == "classification":
            payload["probabilities"] = proba
        payload["learned"] = False
        result.predictions.append((i, payload))
        if rec.y is not None:
            labelled.append(pos)
            result.labels.append((rec.y, pred))
            result.labelled.append((i, rec))

    if learn and labelled:
        t0 = time.perf_counter()
        learned = _learn(est, rows, labelled, result, valid)
        result.learn_seconds = time.perf_counter() - t0
        result.n_learned = len(learned)
        by_index = dict(result.predictions)
        for pos in learned:
            by_index[valid[pos][0]]["learned"] = True
    sizes = state.hidden_sizes()
    for _, payload in result.predictions:
        payload["hidden_sizes"] = sizes
        payload["model_records"] = seen_before
    return result


LIMIT_REASONS = ("too_many_classes", "label_too_long", "too_many_features")


def limit_reason(exc: BaseException) -> str:
    """The dead-letter reason of a failed learn: the bound a ``streamdas.LimitError`` names
    (its ``reason``), else ``model_error``."""
    reason = getattr(exc, "reason", None)
    return reason if isinstance(exc, ValueError) and reason in LIMIT_REASONS else "model_error"


def _learn(
    est: Any,
    rows: list[Record],
    labelled: list[int],
    result: BatchResult,
    valid: list[tuple[int, Record]],
) -> list[int]:
    """Learn the labelled rows in arrival order, as ``learn_one`` would, whatever the batch.

    A streamdas estimator gets ``learn_many(split=True)`` (one optimizer step per
    ``batch_size`` rows, the remainder buffered for the next batch and saved in checkpoints), so
    the model after N records does not depend on poll sizes; each frame holds the features of its
    rows only (a feature no labelled record has is not learned). Other estimators get
    ``learn_one`` per record. If a frame is refused (a bad row; nothing was learned), each record
    is tried alone -- through the same buffer, so nothing is left behind -- and the ones that fail
    are dead-lettered (``model_error``, or the limit the estimator enforced).
    """
    split = hasattr(est, "n_samples_buffered")
    done: list[int] = []

    def attempt(pos: int, learn: Callable[[], None]) -> None:
        """Learn one record: done, or its dead letter (a stop request goes through)."""
        try:
            learn()
            done.append(pos)
        except BaseException as exc:
            if isinstance(exc, STOP_REQUESTS):
                raise
            result.rejections.append((valid[pos][0], Rejection(limit_reason(exc), f"learn: {_failure(exc)}")))

    if not split:
        for pos in labelled:

            def learn_one(rec: Record = rows[pos]) -> None:
                est.learn_one(dict(rec.x), rec.y)

            attempt(pos, learn_one)
        return done
    chosen = [rows[p] for p in labelled]
    for start, X in _frames(chosen, uniform=False):
        part = labelled[start : start + len(X)]
        y = pd.Series([rows[p].y for p in part])
        try:
            est.learn_many(X, y, split=True)
            done.extend(part)
            continue
        except BaseException as exc:
            if isinstance(exc, STOP_REQUESTS):
                raise
            log.warning("minibatch learning failed (%s); retrying record by record", _failure(exc))
        for k, pos in enumerate(part):

            def learn_row(k: int = k, X: pd.DataFrame = X, y: pd.Series = y) -> None:
                est.learn_many(X.iloc[k : k + 1].dropna(axis=1, how="all"), y.iloc[k : k + 1], split=True)

            attempt(pos, learn_row)
    return done


def process_guarded(state: PartitionState, values: Sequence[bytes | None], **options: Any) -> BatchResult:
    """:func:`process_batch`, which contains each record's failures; should the batch still
    raise, its records are processed again one at a time, and a record that raises alone is
    rejected as ``internal_error``. Only a stop request (``KeyboardInterrupt``,
    ``SystemExit``) goes through.

    Examples
    --------
    >>> state = PartitionState(make_estimator(ModelSpec(kind="linear")))
    >>> result = process_guarded(state, [b'{"x": {"a": 1}, "y": true}', b"[]"])
    >>> len(result.predictions), [r.reason for _, r in result.rejections]
    (1, ['not_object'])
    """
    before = (state.n_records, state.dirty)
    try:
        return process_batch(state, values, **options)
    except BaseException as exc:
        if isinstance(exc, STOP_REQUESTS):
            raise
        log.error(
            "a batch of %d records failed outside the per-record checks (%s); "
            "processing its records one at a time",
            len(values),
            _failure(exc),
        )
    state.n_records, state.dirty = before
    keys = options.pop("keys", None)
    result = BatchResult()
    for i, value in enumerate(values):
        one_key = None if keys is None else [keys[i]]
        try:
            part = process_batch(state, [value], keys=one_key, **options)
        except BaseException as exc:
            if isinstance(exc, STOP_REQUESTS):
                raise
            state.n_records += 1
            state.dirty += 1
            result.rejections.append((i, Rejection("internal_error", _failure(exc))))
            continue
        result.predictions += [(i, p) for _, p in part.predictions]
        result.rejections += [(i, r) for _, r in part.rejections]
        result.labels += part.labels
        result.labelled += [(i, rec) for _, rec in part.labelled]
        result.n_learned += part.n_learned
        result.predict_seconds += part.predict_seconds
        result.learn_seconds += part.learn_seconds
    return result
