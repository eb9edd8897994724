"""Model factory and the predict-then-learn step applied to one partition's batch.

:func:`process_batch` is shared by the Kafka service and the embedded (no-broker) runner: it
validates every raw value (:mod:`consumers.records`), predicts all valid records in one
``predict_proba_many`` / ``predict_many`` call, then learns the labelled ones in arrival order,
one optimizer step per ``batch_size`` records whatever the batch size (``learn_many(split=True)``),
so the model after N records is the same however polls, restarts and rebalances cut the stream
(prequential: each record is predicted *before* the model learns from it).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from consumers.records import Record, Rejection, check_schema, parse_record

__all__ = [
    "BatchResult",
    "ModelSpec",
    "PartitionState",
    "make_estimator",
    "process_batch",
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
        return cls(**params)
    if spec.kind == "linear":
        from river import linear_model

        if spec.task == "classification":
            return linear_model.LogisticRegression(**spec.params)
        return linear_model.LinearRegression(**spec.params)
    raise ValueError(f"model kind must be 'das' or 'linear', got {spec.kind!r}")


@dataclass
class PartitionState:
    """One model and where it stands in its input partition.

    Parameters
    ----------
    estimator
        The streaming estimator.
    features
        The feature schema (set from the first valid record unless configured).
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


@dataclass
class BatchResult:
    """What :func:`process_batch` produced for a batch of raw values.

    ``predictions`` holds ``(index, payload)`` pairs, ``rejections`` ``(index, Rejection)``
    pairs, where ``index`` points into the input batch; every index appears in exactly one
    of the two lists (and also in ``rejections`` when learning failed after predicting).
    """

    predictions: list[tuple[int, dict[str, Any]]] = field(default_factory=list)
    rejections: list[tuple[int, Rejection]] = field(default_factory=list)
    labels: list[tuple[Any, Any]] = field(default_factory=list)
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


def _predict(
    est: Any, X: pd.DataFrame, task: str
) -> tuple[list[Any], list[dict[str, float] | None]]:
    n = len(X)
    if task == "regression":
        preds = est.predict_many(X)
        return [_plain(v) for v in preds.tolist()], [None] * n
    proba = est.predict_proba_many(X)
    if proba is None or proba.shape[1] == 0:
        return [None] * n, [{} for _ in range(n)]
    columns = list(proba.columns)
    names = [str(c) for c in columns]
    values = np.nan_to_num(proba.to_numpy(dtype=float), nan=0.0)
    best = values.argmax(axis=1)
    preds = [_plain(columns[i]) for i in best]
    probs = [dict(zip(names, row, strict=True)) for row in values.tolist()]
    return preds, probs


def _predict_one_by_one(
    est: Any, rows: list[Record], features: list[str], task: str
) -> list[tuple[Any, dict[str, float] | None] | Exception]:
    out: list[tuple[Any, dict[str, float] | None] | Exception] = []
    for rec in rows:
        X = pd.DataFrame([[rec.x[f] for f in features]], columns=features)
        try:
            preds, probs = _predict(est, X, task)
            out.append((preds[0], probs[0]))
        except (ValueError, TypeError, RuntimeError) as exc:
            out.append(exc)
    return out


def process_batch(
    state: PartitionState,
    values: Sequence[bytes | None],
    *,
    task: str = "classification",
    max_bytes: int = 1_048_576,
    learn: bool = True,
) -> BatchResult:
    """Validate, predict and (for labelled records) learn one batch from one partition.

    Parameters
    ----------
    state
        The partition's model; its ``features`` schema is fixed by the first valid record
        if not set yet; its ``n_records`` grows by ``len(values)``.
    values
        Raw message values, in offset order.
    task
        ``"classification"`` or ``"regression"``.
    max_bytes
        Larger values are rejected as ``oversized``.
    learn
        Set ``False`` to predict only.

    Returns
    -------
    BatchResult
        Prediction payloads hold ``id``, ``prediction``, ``probabilities`` (classifiers),
        ``hidden_sizes``, ``learned`` and ``model_records`` (records this model had seen
        before the batch); the caller adds routing fields (key, offset, ...).

    Examples
    --------
    >>> state = PartitionState(make_estimator(ModelSpec(kind="linear")))
    >>> batch = [b'{"x": {"a": 1.0}, "y": true, "id": 7}', b'not json', b'{"x": {"a": 0.5}}']
    >>> result = process_batch(state, batch)
    >>> [i for i, _ in result.predictions], [(i, r.reason) for i, r in result.rejections]
    ([0, 2], [(1, 'invalid_json')])
    >>> result.predictions[0][1]["id"], result.n_learned, state.features
    (7, 1, ['a'])
    """
    result = BatchResult()
    seen_before = state.n_records
    valid: list[tuple[int, Record]] = []
    for i, raw in enumerate(values):
        parsed = parse_record(raw, task=task, max_bytes=max_bytes)
        if isinstance(parsed, Rejection):
            result.rejections.append((i, parsed))
            continue
        if state.features is None:
            state.features = sorted(parsed.x)
        problem = check_schema(parsed.x, state.features)
        if problem is not None:
            result.rejections.append((i, problem))
            continue
        valid.append((i, parsed))
    state.n_records += len(values)
    state.dirty += len(values)
    if not valid:
        return result

    features = state.features or []
    est = state.estimator
    rows = [rec for _, rec in valid]
    X = pd.DataFrame(
        np.array([[rec.x[f] for f in features] for rec in rows], dtype=float), columns=features
    )
    t0 = time.perf_counter()
    try:
        preds, probs = _predict(est, X, task)
        outcomes: list[tuple[Any, dict[str, float] | None] | Exception] = list(
            zip(preds, probs, strict=True)
        )
    except (ValueError, TypeError, RuntimeError) as exc:
        log.warning("batch prediction failed (%s); retrying record by record", exc)
        outcomes = _predict_one_by_one(est, rows, features, task)
    result.predict_seconds = time.perf_counter() - t0

    labelled: list[int] = []
    for pos, ((i, rec), outcome) in enumerate(zip(valid, outcomes, strict=True)):
        if isinstance(outcome, Exception):
            result.rejections.append((i, Rejection("model_error", f"predict: {outcome}")))
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

    if learn and labelled:
        t0 = time.perf_counter()
        learned = _learn(est, X, rows, labelled, features, result, valid)
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


def _learn(
    est: Any,
    X: pd.DataFrame,
    rows: list[Record],
    labelled: list[int],
    features: list[str],
    result: BatchResult,
    valid: list[tuple[int, Record]],
) -> list[int]:
    """Learn the labelled rows in arrival order, as ``learn_one`` would, whatever the batch.

    A streamdas estimator gets ``learn_many(split=True)`` (one optimizer step per
    ``batch_size`` rows, the remainder buffered for the next batch and saved in checkpoints), so
    the model after N records does not depend on poll sizes. Other estimators get ``learn_one``
    per record. If the batch is refused (a bad row; nothing was learned), each record is tried
    alone -- through the same buffer, so nothing is left behind -- and the ones that fail are
    dead-lettered as ``model_error``.
    """
    Xl = X.iloc[labelled].reset_index(drop=True)
    yl = pd.Series([rows[p].y for p in labelled])
    split = hasattr(est, "n_samples_buffered")
    if split:
        try:
            est.learn_many(Xl, yl, split=True)
            return labelled
        except (ValueError, TypeError, RuntimeError) as exc:
            log.warning("minibatch learning failed (%s); retrying record by record", exc)
    done: list[int] = []
    for k, pos in enumerate(labelled):
        rec = rows[pos]
        try:
            if split:
                est.learn_many(Xl.iloc[k:k + 1], yl.iloc[k:k + 1], split=True)
            else:
                est.learn_one({f: rec.x[f] for f in features}, rec.y)
            done.append(pos)
        except (ValueError, TypeError, RuntimeError) as exc:
            result.rejections.append((valid[pos][0], Rejection("model_error", f"learn: {exc}")))
    return done
