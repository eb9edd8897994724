"""Training records and the learner's exactly-once learning step.

In the shared model scope every instance forwards the labelled, valid records of its input
partitions to one training topic, and one learner learns them all (see :mod:`consumers.learner`).

**Training records** (:func:`encode_training_record`, :func:`decode_training_record`): a JSON
object ``{"t": topic, "p": partition, "o": offset, "x": {feature: number}, "y": label}`` naming
the input record it came from. The training topic is input too: decoding checks every field as
the service checks input records (:func:`streamdas.features.check_value`, ``check_label``,
``check_target``, the bounds of :mod:`consumers.records`) and never raises; an unusable record is
a :class:`~consumers.records.Rejection` with a reason of :data:`TRAINING_REASONS`.

**Exactly-once learning** (:class:`LearnerState`): the learner keeps, per input partition, the
highest source offset it has handled (``learned``). Each partition's records are forwarded in
offset order, so a record whose offset is not above that is a redelivery (a forwarder's replay
after a crash or a rebalance) and is skipped: under at-least-once delivery, each record is
learned once. The offsets are part of the learner's saved state, with the model and its
minibatch buffer, so a restart from a saved state skips exactly what that state has learned.
Learning is ``learn_many(split=True)`` on frames cut so that only a frame's first record may
bring features the model does not know yet: the model after N records is then exactly that of
one ``learn_one`` loop over the same records in the same order, however polls, restarts and
frames cut the stream. A record the estimator refuses (a limit: ``max_classes``,
``max_features``, ``max_label_length``) changes nothing and is counted with the limit's reason.

The training topic is trusted for source positions: whoever can write to it can make the
learner skip records (a forged higher offset). Restrict writes to it, and to the state topics,
to the service's instances.
"""

from __future__ import annotations

import json
import logging
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple, TypeGuard

import numpy as np
import pandas as pd

from consumers.model import DEFAULT_MAX_FEATURES, MAX_FRAME_CELLS, STOP_REQUESTS, limit_reason
from consumers.records import (
    REASONS,
    Rejection,
    check_features,
    check_schema,
    clip,
    decode_json,
    label_problem,
)
from consumers.snapshots import checked, model_from_payload, model_kind, model_payload
from streamdas import checkpoint
from streamdas.checkpoint import CheckpointError
from streamdas.features import EMPTY_RECORD

__all__ = [
    "LEARNER_FORMAT",
    "MAX_FRAME_CELLS",
    "MAX_SOURCES",
    "MAX_TRAINING_BYTES",
    "TRAINING_REASONS",
    "LearnReport",
    "LearnerState",
    "ModelStateError",
    "TrainingRecord",
    "decode_training_record",
    "encode_training_record",
]

log = logging.getLogger(__name__)

#: Largest training record decoded (kafka-python's default ``max_request_size``).
MAX_TRAINING_BYTES = 1_048_576
#: Most input partitions (topic, partition) whose offsets the learner keeps.
MAX_SOURCES = 100_000
#: ``format`` of a learner state's payload.
LEARNER_FORMAT = "streamdas-learner"
#: Largest source partition and offset (Kafka's int32 and int64).
_MAX_PARTITION = 2**31 - 1
_MAX_OFFSET = 2**63 - 1
_TOPIC = re.compile(r"[A-Za-z0-9._-]{1,249}")
_REASON = re.compile(r"[a-z][a-z0-9_]{0,47}")

#: Why the learner set a training record aside: the input checks' reasons that apply, and the
#: learner's own.
TRAINING_REASONS: dict[str, str] = {
    **{
        k: REASONS[k]
        for k in (
            "empty",
            "oversized",
            "undecodable",
            "invalid_json",
            "not_object",
            "missing_x",
            "non_numeric_feature",
            "non_finite_feature",
            "feature_name_too_long",
            "bad_label",
            "missing_feature",
            "unknown_feature",
            "too_many_features",
            "label_too_long",
            "too_many_classes",
            "model_error",
            "internal_error",
        )
    },
    "missing_label": "a training record without a label ('y' absent or null)",
    "bad_source": "'t', 'p' or 'o' is not a topic name, partition and offset, or 't' is not an input topic",
    "too_many_sources": f"a new input partition beyond the {MAX_SOURCES} the learner keeps offsets of",
}


# ---------------------------------------------------------------------------------- codec
class TrainingRecord(NamedTuple):
    """A decoded training record: where it came from, its features and its label."""

    topic: str
    partition: int
    offset: int
    x: dict[str, float]
    y: Any


def encode_training_record(topic: str, partition: int, offset: int, x: dict[str, float], y: Any) -> bytes:
    """The training-topic value for one labelled input record (standard JSON).

    Raises ``ValueError`` for a value JSON cannot hold (a NaN or infinite feature: records are
    validated before they are forwarded).

    >>> value = encode_training_record("in", 3, 42, {"a": 0.5}, "spam")
    >>> value
    b'{"t":"in","p":3,"o":42,"x":{"a":0.5},"y":"spam"}'
    >>> decode_training_record(value, task="classification")
    TrainingRecord(topic='in', partition=3, offset=42, x={'a': 0.5}, y='spam')
    """
    if isinstance(y, np.generic):
        y = y.item()
    return json.dumps(
        {"t": topic, "p": int(partition), "o": int(offset), "x": x, "y": y},
        separators=(",", ":"),
        allow_nan=False,
    ).encode("utf-8")


def _count(value: Any, high: int) -> TypeGuard[int]:
    return type(value) is int and 0 <= value <= high


def decode_training_record(
    value: bytes | None, *, task: str = "classification", max_bytes: int = MAX_TRAINING_BYTES
) -> TrainingRecord | Rejection:
    """Decode and check one training-topic value; never raises.

    Examples
    --------
    >>> decode_training_record(b'{"t":"in","p":0,"o":7,"x":{"a":1},"y":true}', task="classification")
    TrainingRecord(topic='in', partition=0, offset=7, x={'a': 1.0}, y=True)
    >>> decode_training_record(b'{"t":"in","p":-1,"o":7,"x":{"a":1},"y":1}').reason
    'bad_source'
    >>> decode_training_record(b'{"t":"in","p":0,"o":7,"x":{"a":1}}').reason
    'missing_label'
    >>> decode_training_record(b'{"t":"in","p":0,"o":7,"x":{"a":1e999},"y":1}').reason
    'non_finite_feature'
    """
    try:
        return _decode(value, task, max_bytes)
    except Exception as exc:  # a record never stops the learner: name what went wrong
        return Rejection("internal_error", f"{type(exc).__name__}: {exc}")


def _decode(value: bytes | None, task: str, max_bytes: int) -> TrainingRecord | Rejection:
    obj = decode_json(value, max_bytes)
    if isinstance(obj, Rejection):
        return obj
    if type(obj) is not dict:
        return Rejection("not_object", type(obj).__name__)
    topic, partition, offset = obj.get("t"), obj.get("p"), obj.get("o")
    if (
        type(topic) is not str
        or not _TOPIC.fullmatch(topic)
        or not _count(partition, _MAX_PARTITION)
        or not _count(offset, _MAX_OFFSET)
    ):
        return Rejection(
            "bad_source",
            f"t={clip(repr(topic), 100)}, p={clip(repr(partition), 40)}, o={clip(repr(offset), 40)}",
        )
    raw_x = obj.get("x")
    if type(raw_x) is not dict or not raw_x:
        return Rejection("missing_x", EMPTY_RECORD if raw_x == {} else "no 'x' object")
    x = check_features(raw_x)
    if isinstance(x, Rejection):
        return x
    y = obj.get("y")
    if y is None:
        return Rejection("missing_label")
    problem = label_problem(y, task)
    if problem is not None:
        return Rejection("bad_label", problem[:200])
    return TrainingRecord(topic, partition, offset, x, y)


# ---------------------------------------------------------------------------------- learning
@dataclass
class LearnReport:
    """What one :meth:`LearnerState.learn` call did with its records."""

    n_records: int = 0
    n_learned: int = 0
    n_duplicates: int = 0
    rejected: Counter[str] = field(default_factory=Counter)


class ModelStateError(RuntimeError):
    """Learning failed after the model had already changed: its state is not known to match
    the records it was given, so the learner's state must be restored from its last save."""


def _unless_unsafe(exc: BaseException, est: Any, before: tuple[int, int] | None) -> None:
    """Re-raise ``exc`` if it asks the process to stop; raise :class:`ModelStateError` if the
    estimator took in part of what failed (it can no longer be trusted); else return."""
    if isinstance(exc, STOP_REQUESTS):
        raise exc
    if _progress(est) != before:
        raise ModelStateError(f"learning failed midway: {type(exc).__name__}: {clip(str(exc), 300)}") from exc


def _progress(est: Any) -> tuple[int, int] | None:
    """What a streamdas estimator has taken in (``None`` for other models)."""
    if not hasattr(est, "n_samples_buffered"):
        return None
    return (int(est.n_samples_learned), int(est.n_samples_buffered))


def _frame_end(records: Sequence[TrainingRecord], start: int, known: Any) -> tuple[int, list[str] | None]:
    """Where the frame starting at ``start`` ends, and its columns (``None``: every record of
    the frame has the first one's features in the same order). Only the first record may bring
    features ``known`` (the model's) lacks; at most :data:`MAX_FRAME_CELLS` values."""
    first = records[start].x
    keys = tuple(first)
    width = len(keys)
    columns: dict[str, None] | None = None
    stop = start + 1
    n = len(records)
    while stop < n:
        x = records[stop].x
        if columns is None and len(x) == width and tuple(x) == keys:
            if width * (stop + 1 - start) > MAX_FRAME_CELLS:
                break
            stop += 1
            continue
        if columns is None:
            columns = dict.fromkeys(keys)
        new = [k for k in x if k not in columns]
        if any(k not in known for k in new):  # a feature new to the model: the next frame's first
            break
        if (len(columns) + len(new)) * (stop + 1 - start) > MAX_FRAME_CELLS:
            break
        columns.update(dict.fromkeys(new))
        stop += 1
    return stop, None if columns is None else list(columns)


def _frame(records: Sequence[TrainingRecord], columns: list[str] | None) -> pd.DataFrame:
    if columns is None:
        names = list(records[0].x)
        data = np.array([list(r.x.values()) for r in records], dtype=np.float64)
        return pd.DataFrame(data.reshape(len(records), len(names)), columns=names)
    pos = {name: j for j, name in enumerate(columns)}
    data = np.full((len(records), len(columns)), np.nan)
    for i, rec in enumerate(records):
        for name, v in rec.x.items():
            data[i, pos[name]] = v
    return pd.DataFrame(data, columns=columns)


class LearnerState:
    """The learner's whole state: the model (with its optimizer, averages and minibatch
    buffer), the highest source offset handled per input partition, the position in the
    training topic, and counts.

    Parameters
    ----------
    estimator
        The model learned (a streamdas estimator, or one of River's linear baselines).
    task
        ``"classification"`` or ``"regression"``.
    topics
        The input topics a training record may name (``None``: any topic).
    features
        A fixed feature schema (``--features``); ``None``: records bring any features.
    max_bytes
        Larger training records are refused (``oversized``).

    Examples
    --------
    >>> from streamdas import DASClassifier
    >>> state = LearnerState(DASClassifier(seed=1, batch_warmup=0), topics=["in"])
    >>> rec = encode_training_record("in", 0, 5, {"a": 1.0}, True)
    >>> report = state.learn([(0, rec), (1, rec), (2, b"junk")])
    >>> report.n_learned, report.n_duplicates, dict(report.rejected), state.learned, state.train_offset
    (1, 1, {'invalid_json': 1}, {('in', 0): 5}, 3)
    >>> clone = LearnerState.from_blob(state.to_blob(), task="classification")
    >>> clone.learned, clone.n_learned, clone.estimator.n_samples_buffered
    ({('in', 0): 5}, 1, 1)
    """

    def __init__(
        self,
        estimator: Any,
        *,
        task: str = "classification",
        topics: Iterable[str] | None = None,
        features: Sequence[str] | None = None,
        max_bytes: int = MAX_TRAINING_BYTES,
    ) -> None:
        if task not in ("classification", "regression"):
            raise ValueError(f"task must be 'classification' or 'regression', got {task!r}")
        self.estimator = estimator
        self.task = task
        self.topics = None if topics is None else frozenset(topics)
        self.features = None if features is None else list(features)
        self.max_bytes = int(max_bytes)
        #: ``(topic, partition) -> highest source offset handled``.
        self.learned: dict[tuple[str, int], int] = {}
        #: The next offset to read in the training topic (``None``: its beginning).
        self.train_offset: int | None = None
        #: Records given to the model (learned, or waiting in its minibatch buffer).
        self.n_learned = 0
        #: Redelivered records skipped.
        self.n_duplicates = 0
        #: Records set aside, by reason.
        self.rejected: Counter[str] = Counter()
        self._split = hasattr(estimator, "n_samples_buffered")

    # ------------------------------------------------------------------ learning
    def learn(self, messages: Iterable[tuple[int, bytes | None]]) -> LearnReport:
        """Learn ``(training-topic offset, value)`` pairs, in order: decode, skip redeliveries,
        check, learn. A record the model refuses without changing (a limit, a bad value) is
        that record's rejection; a failure after the model changed (not expected) raises
        :class:`ModelStateError`, and the caller then restores the last saved state."""
        report = LearnReport()
        pending: list[TrainingRecord] = []
        learned = self.learned
        for offset, value in messages:
            report.n_records += 1
            self.train_offset = offset + 1
            rec = decode_training_record(value, task=self.task, max_bytes=self.max_bytes)
            if isinstance(rec, Rejection):
                self._reject(report, rec.reason)
                continue
            key = (rec.topic, rec.partition)
            last = learned.get(key)
            if last is not None and rec.offset <= last:
                report.n_duplicates += 1
                continue
            if self.topics is not None and rec.topic not in self.topics:
                self._reject(report, "bad_source")
                continue
            if last is None and len(learned) >= MAX_SOURCES:
                self._reject(report, "too_many_sources")
                continue
            learned[key] = rec.offset
            problem = self._check(rec)
            if problem is not None:
                self._reject(report, problem)
                continue
            pending.append(rec)
        if pending:
            if self._split:
                self._learn_frames(pending, report)
            else:
                self._learn_each(pending, report)
        self.n_learned += report.n_learned
        self.n_duplicates += report.n_duplicates
        return report

    def _reject(self, report: LearnReport, reason: str) -> None:
        report.rejected[reason] += 1
        self.rejected[reason] += 1

    def _check(self, rec: TrainingRecord) -> str | None:
        if self.features is not None:
            problem = check_schema(rec.x, self.features)
            if problem is not None:
                return problem.reason
        if not self._split:  # River's baselines have no bounds of their own
            weights = getattr(self.estimator, "weights", {})
            new = sum(1 for k in rec.x if k not in weights)
            if len(rec.x) > DEFAULT_MAX_FEATURES or (new and len(weights) + new > DEFAULT_MAX_FEATURES):
                return "too_many_features"
        return None

    def _learn_frames(self, records: list[TrainingRecord], report: LearnReport) -> None:
        est = self.estimator
        start = 0
        while start < len(records):
            stop, columns = _frame_end(records, start, est.feature_names)
            part = records[start:stop]
            start = stop
            before = _progress(est)
            try:
                X = _frame(part, columns)
                y = pd.Series([r.y for r in part])
                est.learn_many(X, y, split=True)
                report.n_learned += len(part)
                continue
            except BaseException as exc:
                _unless_unsafe(exc, est, before)
                log.debug("a frame of %d records was refused (%s); learning them one by one", len(part), exc)
            self._learn_each(part, report)  # nothing was learned: as learn_one would, one by one

    def _learn_each(self, records: list[TrainingRecord], report: LearnReport) -> None:
        est = self.estimator
        for rec in records:
            before = _progress(est)
            try:
                est.learn_one(dict(rec.x), rec.y)
                report.n_learned += 1
            except BaseException as exc:
                _unless_unsafe(exc, est, before)
                reason = limit_reason(exc)
                if reason == "model_error":
                    log.warning(
                        "the model refused a training record from %s:%d@%d: %s: %s",
                        rec.topic,
                        rec.partition,
                        rec.offset,
                        type(exc).__name__,
                        clip(str(exc), 300),
                    )
                self._reject(report, reason)

    # ------------------------------------------------------------------ saving
    def to_blob(self) -> bytes:
        """The whole state as checkpoint bytes (:func:`streamdas.checkpoint.dumps`)."""
        learned: dict[str, dict[int, int]] = {}
        for (topic, partition), offset in self.learned.items():
            learned.setdefault(topic, {})[partition] = offset
        return checkpoint.dumps(
            {
                "format": LEARNER_FORMAT,
                "task": self.task,
                "model": model_payload(self.estimator),
                "learned": learned,
                "train_offset": self.train_offset,
                "n_learned": self.n_learned,
                "n_duplicates": self.n_duplicates,
                "rejected": dict(self.rejected),
            }
        )

    @classmethod
    def from_blob(
        cls,
        blob: bytes,
        *,
        task: str,
        kind: str | None = None,
        topics: Iterable[str] | None = None,
        features: Sequence[str] | None = None,
        max_bytes: int = MAX_TRAINING_BYTES,
        limits: checkpoint.Limits | None = None,
        params: dict[str, Any] | None = None,
        where: str = "learner state",
        check: bool = True,
    ) -> LearnerState:
        """Read what :meth:`to_blob` wrote, validating every field; with ``check`` the model
        then passes its trial step (:func:`consumers.snapshots.checked`). ``params`` are the
        configured model parameters: every difference with the state's is logged, and the
        ones a model may change while learning (``lr``, ``alpha``...) take the configured
        value. :class:`CheckpointError` for anything wrong."""
        payload = checkpoint.loads(blob, limits, where)
        fields = {
            "format",
            "task",
            "model",
            "learned",
            "train_offset",
            "n_learned",
            "n_duplicates",
            "rejected",
        }
        if set(payload) != fields or payload["format"] != LEARNER_FORMAT:
            raise CheckpointError(f"{where} is not a {LEARNER_FORMAT} payload")
        if payload["task"] != task:
            raise CheckpointError(
                f"{where} is a {clip(repr(payload['task']), 40)} learner, the service runs {task!r}"
            )
        estimator = model_from_payload(payload["model"], kind=kind, where=where, limits=limits)
        state = cls(estimator, task=task, topics=topics, features=features, max_bytes=max_bytes)
        checkpoint.guarded(lambda: state._read_fields(payload), where)
        if params:
            _reconcile(estimator, params, where)
        if check:
            checked(estimator, where)
        return state

    def _read_fields(self, payload: dict[str, Any]) -> None:
        require = checkpoint.require
        learned = payload["learned"]
        require(isinstance(learned, dict), "learned offsets are not a dict")
        out: dict[tuple[str, int], int] = {}
        for topic, offsets in learned.items():
            require(
                type(topic) is str and _TOPIC.fullmatch(topic) is not None and isinstance(offsets, dict),
                "learned offsets are not topic -> {partition: offset}",
            )
            for partition, offset in offsets.items():
                require(
                    _count(partition, _MAX_PARTITION) and _count(offset, _MAX_OFFSET),
                    "a learned offset is not a partition and an offset",
                )
                out[(topic, partition)] = offset
                require(len(out) <= MAX_SOURCES, f"more than {MAX_SOURCES} learned offsets")
        train_offset = payload["train_offset"]
        require(train_offset is None or _count(train_offset, _MAX_OFFSET), "train_offset is not an offset")
        n_learned, n_duplicates = payload["n_learned"], payload["n_duplicates"]
        require(_count(n_learned, _MAX_OFFSET) and _count(n_duplicates, _MAX_OFFSET), "bad counts")
        rejected = payload["rejected"]
        require(
            isinstance(rejected, dict)
            and len(rejected) <= 64
            and all(
                type(k) is str and _REASON.fullmatch(k) and _count(v, _MAX_OFFSET)
                for k, v in rejected.items()
            ),
            "rejection counts are not reason -> count",
        )
        self.learned = out
        self.train_offset = train_offset
        self.n_learned, self.n_duplicates = n_learned, n_duplicates
        self.rejected = Counter(rejected)

    @property
    def kind(self) -> str:
        """``"das"`` or ``"linear"``."""
        return model_kind(self.estimator)


def _plain(value: Any) -> Any:
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _reconcile(estimator: Any, params: dict[str, Any], where: str) -> None:
    """Log each configured parameter that differs from the restored model's; apply the
    configured value where the model may change it while learning."""
    try:
        current = estimator._get_params()
    except Exception:  # a model that does not say its parameters: nothing to compare
        return
    mutable: set[str] = (
        getattr(estimator, "_mutable_attributes", set()) if model_kind(estimator) == "das" else set()
    )
    apply = {}
    for key, configured in sorted(params.items()):
        if key not in current or _plain(current[key]) == _plain(configured):
            continue
        use = "configured" if key in mutable else "saved"
        log.warning(
            "%s: parameter %s is %r in the saved state and %r in the configuration; using the %s value",
            where,
            key,
            clip(repr(_plain(current[key])), 100),
            clip(repr(configured), 100),
            use,
        )
        if key in mutable:
            apply[key] = configured
    if apply:
        try:
            estimator.mutate(apply)
        except (TypeError, ValueError) as exc:
            log.warning("%s: the configured %s cannot be applied (%s)", where, sorted(apply), exc)
