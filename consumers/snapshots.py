"""Model snapshots: what an instance needs to predict, published by the learner, followed by all.

In the shared model scope one learner (see :mod:`consumers.learner`) learns every labelled
record and publishes **snapshots** of its model to a compacted topic (name ``"snapshot"`` of a
:class:`~consumers.kafka_state.KafkaStateStore`); every instance follows that topic with a
:class:`SnapshotFollower` and predicts with the newest snapshot it has read.

**What a snapshot holds.** What prediction needs of the estimator as
:func:`streamdas.checkpoint.estimator_to_state` writes it -- parameters, architecture, weights,
the averaged (Polyak) weights that predictions use, the feature and class order, the
standardizer -- and none of what only learning reads: the optimizer's per-parameter moments
(its state is that of an optimizer before its first step) and the sizer's running averages
are left out, and so are the input rows of the learner's minibatch buffer (input records):
before the model's first step its labels stay, each with an empty row (no feature known),
since a classifier without a network predicts their frequencies; after it, the buffer is
emptied. Such a
state loads through the validated load path of a checkpoint and predicts exactly as the
learner's model does; it is not meant to learn (predictors never learn from a snapshot).
River's linear baselines are stored as plain data (:func:`consumers.store.linear_to_state`).
Beside the model: ``n_learned`` (records the model had learned, its minibatch buffer included)
and ``published_at`` (the learner's clock, epoch seconds). The epoch and version are the
store's: a reader prefers the highest ``(epoch, version)`` and never goes back to a lower one,
so a deposed learner's snapshot is never accepted after its successor's.

The bytes are :func:`streamdas.checkpoint.dumps` of plain data and tensors: reading them
(:func:`decode_snapshot`) makes every check of a checkpoint file -- SHA-256, the pickle's
allow-list, tensors, parameters, architecture bounds -- and then a trial prediction
(:func:`streamdas.checkpoint.self_check` with ``learn=False``). Every failure is a
:class:`~streamdas.checkpoint.CheckpointError`.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from typing import Any

import torch

from consumers.kafka_state import DEFAULT_MAX_STATE_BYTES, StateFollower
from consumers.store import linear_from_state, linear_to_state
from streamdas import checkpoint
from streamdas.checkpoint import CheckpointError

__all__ = [
    "SNAPSHOT_FORMAT",
    "SNAPSHOT_NAME",
    "Snapshot",
    "SnapshotFollower",
    "checked",
    "consumer_options",
    "decode_snapshot",
    "encode_snapshot",
    "model_from_payload",
    "model_kind",
    "model_payload",
    "prediction_state",
]

log = logging.getLogger(__name__)

#: ``format`` of a snapshot's payload.
SNAPSHOT_FORMAT = "streamdas-snapshot"
#: The state name snapshots are stored under on the snapshot topic.
SNAPSHOT_NAME = "snapshot"
_KINDS = ("das", "linear")


def model_kind(estimator: Any) -> str:
    """``"das"`` for a checkpointable streamdas estimator, else ``"linear"`` (River's baselines).

    >>> from streamdas import DASClassifier
    >>> model_kind(DASClassifier())
    'das'
    """
    return "das" if type(estimator).__name__ in checkpoint.ESTIMATORS else "linear"


def model_payload(
    estimator: Any, *, keep_buffer: bool = True, prediction_only: bool = False
) -> dict[str, Any]:
    """``estimator`` as plain data and tensors: ``{"kind": ..., "state": ...}``.

    ``keep_buffer=False`` empties a streamdas estimator's minibatch buffer in the payload;
    ``prediction_only=True`` leaves out its input rows (keeping, before the first step, the
    labels that predictions read) and what only learning reads (see :func:`prediction_state`).
    The estimator itself is not changed. Raises ``ValueError`` for a model that cannot be
    stored.

    >>> from streamdas import DASClassifier
    >>> model = DASClassifier(seed=1, batch_warmup=0)
    >>> model.learn_one({"a": 1.0}, True)
    >>> payload = model_payload(model, keep_buffer=False)
    >>> payload["kind"], payload["state"]["estimator"]["buffer_y"], model.n_samples_buffered
    ('das', [], 1)
    """
    if model_kind(estimator) == "das":
        state = checkpoint.estimator_to_state(estimator)
        if not keep_buffer:
            state["estimator"] = {**state["estimator"], "buffer_x": [], "buffer_y": []}
        elif prediction_only:  # no input rows; the labels only where predictions read them
            labels = state["estimator"]["buffer_y"] if state["estimator"]["trainer"] is None else []
            rows = [torch.zeros(0) for _ in labels]
            state["estimator"] = {**state["estimator"], "buffer_x": rows, "buffer_y": labels}
        if prediction_only:
            state["estimator"] = prediction_state(state["estimator"])
        return {"kind": "das", "state": state}
    return {"kind": "linear", "state": linear_to_state(estimator)}


def prediction_state(state: dict[str, Any]) -> dict[str, Any]:
    """A streamdas estimator's state (``to_state()``) less what only learning reads: the
    optimizer's per-parameter state (Adam's moments and step counts; its parameter group with
    the hyperparameters stays, as an optimizer has it before its first step), the sizer's
    running averages and the rehearsal window (``rehearsal``: recent input rows). Weights,
    averaged weights, standardizer, feature and class order and parameters are kept, so the
    estimator it loads as predicts exactly as ``state``'s. A new dict: ``state`` is not changed.

    >>> from streamdas import DASClassifier
    >>> model = DASClassifier(seed=1, batch_size=1)
    >>> model.learn_one({"a": 1.0}, True)
    >>> full = model.to_state()
    >>> lean = prediction_state(full)
    >>> len(full["trainer"]["optimizer"]["state"]) > 0, lean["trainer"]["optimizer"]["state"]
    (True, {})
    >>> lean["trainer"]["averages"], lean["trainer"]["model"] is full["trainer"]["model"]
    ({}, True)
    """
    state = {k: v for k, v in state.items() if k != "rehearsal"}
    trainer = state.get("trainer")
    if trainer is None:  # no optimizer step yet: nothing else to leave out
        return state
    optimizer = {"state": {}, "param_groups": trainer["optimizer"]["param_groups"]}
    return {**state, "trainer": {**trainer, "optimizer": optimizer, "averages": {}}}


def model_from_payload(
    payload: Any, *, kind: str | None = None, where: str = "model", limits: checkpoint.Limits | None = None
) -> Any:
    """Rebuild what :func:`model_payload` wrote, validating every field; ``kind`` (``"das"``
    or ``"linear"``) refuses a model of the other kind. :class:`CheckpointError` naming
    ``where`` for anything that does not fit. No trial step here (see :func:`checked`).

    >>> from river import linear_model
    >>> model = linear_model.LogisticRegression()
    >>> model.learn_one({"a": 1.0}, True)
    >>> clone = model_from_payload(model_payload(model), kind="linear")
    >>> clone.weights == model.weights
    True
    >>> model_from_payload(model_payload(model), kind="das")
    Traceback (most recent call last):
    ...
    streamdas.checkpoint.CheckpointError: model holds a 'linear' model, not 'das'
    """
    if not isinstance(payload, dict) or set(payload) != {"kind", "state"} or payload["kind"] not in _KINDS:
        raise CheckpointError(f"{where} is not a model payload")
    if kind is not None and payload["kind"] != kind:
        raise CheckpointError(f"{where} holds a {payload['kind']!r} model, not {kind!r}")
    if payload["kind"] == "das":
        return checkpoint.estimator_from_state(payload["state"], where=where, limits=limits)
    return checkpoint.guarded(lambda: linear_from_state(payload["state"]), where)


def checked(estimator: Any, where: str, *, learn: bool = True) -> Any:
    """``estimator`` after its trial prediction and learning step on a copy
    (:func:`streamdas.checkpoint.self_check`; ``learn=False``: the trial prediction only);
    :class:`CheckpointError` if it fails."""
    x, y = checkpoint.trial_input(estimator)
    checkpoint.self_check(estimator, x, y, where, learn=learn)
    return estimator


@dataclass(frozen=True)
class Snapshot:
    """A model snapshot as read from the snapshot topic.

    Parameters
    ----------
    estimator
        The model to predict with (a fresh object: nothing else holds it).
    epoch
        The publishing learner's epoch.
    version
        The snapshot's version on the topic (increases with every snapshot, across epochs).
    n_learned
        Records the model had learned when it was published.
    published_at
        When it was published, in epoch seconds of the learner's clock.
    """

    estimator: Any
    epoch: int
    version: int
    n_learned: int
    published_at: float

    @property
    def rank(self) -> tuple[int, int]:
        """``(epoch, version)``: a reader only ever moves to a higher one."""
        return (self.epoch, self.version)


def encode_snapshot(estimator: Any, *, n_learned: int, published_at: float | None = None) -> bytes:
    """The bytes of a snapshot of ``estimator`` (see the module docs for what it holds).

    >>> from streamdas import DASClassifier
    >>> model = DASClassifier(seed=1, batch_warmup=0)
    >>> model.learn_one({"a": 1.0}, True)
    >>> snap = decode_snapshot(encode_snapshot(model, n_learned=1, published_at=5.0), epoch=2, version=7)
    >>> x = {"a": 1.0}
    >>> snap.rank, snap.n_learned, snap.estimator.predict_proba_one(x) == model.predict_proba_one(x)
    ((2, 7), 1, True)
    """
    stamp = time.time() if published_at is None else float(published_at)
    if not isinstance(n_learned, int) or n_learned < 0 or not math.isfinite(stamp):
        raise ValueError("n_learned must be a count and published_at a finite time")
    return checkpoint.dumps(
        {
            "format": SNAPSHOT_FORMAT,
            "model": model_payload(estimator, prediction_only=True),
            "n_learned": int(n_learned),
            "published_at": stamp,
        }
    )


def decode_snapshot(
    blob: bytes,
    *,
    epoch: int,
    version: int,
    kind: str | None = None,
    limits: checkpoint.Limits | None = None,
    check: bool = True,
) -> Snapshot:
    """Read a snapshot's bytes (every checkpoint check, then a trial prediction unless ``check``
    is false); :class:`CheckpointError` for anything wrong."""
    where = f"snapshot (epoch {epoch}, version {version})"
    payload = checkpoint.loads(blob, limits, where)
    fields = {"format", "model", "n_learned", "published_at"}
    if set(payload) != fields or payload["format"] != SNAPSHOT_FORMAT:
        raise CheckpointError(f"{where} is not a {SNAPSHOT_FORMAT} payload")
    n_learned, stamp = payload["n_learned"], payload["published_at"]
    if type(n_learned) is not int or n_learned < 0:
        raise CheckpointError(f"{where}: n_learned is not a count")
    if type(stamp) is not float or not math.isfinite(stamp):
        raise CheckpointError(f"{where}: published_at is not a finite time")
    estimator = model_from_payload(payload["model"], kind=kind, where=where, limits=limits)
    if check:
        checked(estimator, where, learn=False)
    return Snapshot(estimator, int(epoch), int(version), n_learned, stamp)


def consumer_options(options: dict[str, Any] | None) -> dict[str, Any]:
    """The entries of ``options`` (e.g. the service's ``--kafka`` settings) a reader's
    KafkaConsumer takes, less those the reader sets itself (``fetch_max_wait_ms`` is taken: a
    broker that holds every fetch for that long delays each snapshot by as much).

    >>> consumer_options({"security_protocol": "SSL", "linger_ms": 5, "group_id": "g"})
    {'security_protocol': 'SSL'}
    >>> consumer_options({"fetch_max_wait_ms": 20})
    {'fetch_max_wait_ms': 20}
    """
    from kafka import KafkaConsumer

    own = {
        "bootstrap_servers",
        "group_id",
        "enable_auto_commit",
        "auto_offset_reset",
        "allow_auto_create_topics",
        "max_partition_fetch_bytes",
        "request_timeout_ms",
    }
    return {k: v for k, v in (options or {}).items() if k in KafkaConsumer.DEFAULT_CONFIG and k not in own}


class SnapshotFollower:
    """Follow the snapshot topic: :meth:`poll` returns each newer verified snapshot once.

    It reads the topic incrementally (:class:`~consumers.kafka_state.StateFollower`): a new
    follower first reads up to the topic's end and then returns the newest snapshot, later
    polls read only what was appended. A snapshot is returned only if it ranks above the last
    one returned (``(epoch, version)``); one that fails its checks is logged, counted
    (:attr:`n_rejected`) and skipped. Nothing raises for what the topic holds or for broker
    errors (retried at the next poll).

    Parameters
    ----------
    bootstrap_servers
        Kafka brokers.
    topic
        The snapshot topic.
    client_options
        Extra kafka-python settings (security...); those a consumer does not take are
        ignored.
    kind
        ``"das"`` or ``"linear"``: refuse snapshots of the other model kind (``None``: both).
    limits
        Bounds on what a snapshot may make the reader allocate.
    request_timeout_ms
        The consumer's request timeout.
    max_state_bytes
        Largest snapshot read.
    """

    def __init__(
        self,
        bootstrap_servers: str,
        topic: str,
        *,
        client_options: dict[str, Any] | None = None,
        kind: str | None = None,
        limits: checkpoint.Limits | None = None,
        request_timeout_ms: int = 30000,
        max_state_bytes: int = DEFAULT_MAX_STATE_BYTES,
    ) -> None:
        self.kind = kind
        self.limits = limits
        self._follower = StateFollower(
            bootstrap_servers,
            topic,
            SNAPSHOT_NAME,
            max_state_bytes=max_state_bytes,
            request_timeout_ms=request_timeout_ms,
            client_options=consumer_options(client_options),
        )
        #: Snapshots that verified on the topic but failed the model's checks.
        self.n_rejected = 0

    @property
    def n_damaged(self) -> int:
        """Newest versions on the topic that did not verify (chunks missing or damaged)."""
        return self._follower.n_damaged

    def poll(self, timeout_s: float = 0.0) -> Snapshot | None:
        """A newer verified snapshot than the last returned, or ``None`` (waits up to
        ``timeout_s`` seconds for one)."""
        deadline = time.monotonic() + max(0.0, float(timeout_s))
        while True:
            stored = self._follower.poll(max(0.0, deadline - time.monotonic()))
            if stored is None:
                return None
            try:
                return decode_snapshot(
                    stored.blob,
                    epoch=stored.epoch,
                    version=stored.version,
                    kind=self.kind,
                    limits=self.limits,
                )
            except CheckpointError as exc:
                self.n_rejected += 1
                log.error("snapshot refused: %s", exc)
            if time.monotonic() >= deadline:
                return None

    def close(self) -> None:
        """Close the consumer."""
        self._follower.close()
