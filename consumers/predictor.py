"""The shared scope's predictor: one model for the whole stream, learned elsewhere.

``--model-scope shared`` (the default). Every instance predicts the input partitions the group
gave it with the newest model snapshot it has read, and forwards the labelled valid records to
the train topic, where the one elected learner (:mod:`consumers.learner`, which every instance
runs, by default in a process of its own) learns them all, in one order, exactly once. What
this module adds to the loop of :class:`consumers.service.KafkaService`:

* **Snapshots.** A thread follows the snapshot topic (:class:`consumers.snapshots.
  SnapshotFollower`) and keeps the newest verified snapshot in a :class:`SnapshotSlot`; the loop
  takes it before each batch of at most :attr:`SharedScope.max_batch` records
  (:meth:`SharedScope.refresh`), so a batch is predicted by one model from its first record to
  its last (the swap is one reference). Before the first
  snapshot the prediction is ``null``. A prediction names its snapshot (``"snapshot": {"epoch", "version"}``)
  and ``model_records`` is the number of records that snapshot's model had learned.
* **Forwarding.** After a partition's records are predicted, each labelled one that got a
  prediction is sent to the train topic (:func:`consumers.training.encode_training_record`:
  source topic, partition, offset, features, label), in offset order, by a producer that
  keeps order and never expires a batch (:func:`consumers.clients.train_producer_options`);
  its prediction then says ``"learned": true`` (the learner will learn it). A training record
  larger than a message may be is that record's dead letter (``output_too_large``). A training
  record the producer loses is a lost delivery: the service rewinds as for a lost prediction.
* **Position.** Kafka holds it: after the producers are flushed (every prediction, dead letter
  and training record acknowledged) the input offsets are committed to the group; there is no
  checkpoint folder. A rewind goes back to the last commit (or the first offset polled).
* **Learner.** :meth:`SharedScope.start` creates the internal topics that are missing
  (:func:`consumers.clients.ensure_topics`) and starts the learner's thread, which runs
  :meth:`consumers.learner.Learner.run` until the service stops (restarted after a pause should
  it ever raise). With ``--learner-mode process`` (the default) that thread runs the learner in a
  child process (:class:`consumers.learner_process.LearnerProcess`), so that it does not wait for
  the predictor's turn in one interpreter.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from kafka import KafkaProducer, TopicPartition
from kafka.errors import KafkaError, MessageSizeTooLargeError

from consumers.clients import (
    CONNECT_ERRORS,
    MESSAGE_ERRORS,
    client_options,
    ensure_topics,
    replace_producer,
    train_producer_options,
)
from consumers.config import ServiceConfig
from consumers.messages import MAX_KEY_BYTES, Origin
from consumers.model import BatchResult, PartitionState, make_estimator, process_guarded
from consumers.partitions import model_spec
from consumers.records import Rejection
from consumers.telemetry import Telemetry

__all__ = ["SharedScope", "SnapshotSlot"]

log = logging.getLogger(__name__)

#: Producer errors caused by the message itself.
#: Longest pause between attempts of the snapshot reader and the learner after a failure.
MAX_BACKOFF_S = 10.0


def _rank(snapshot: Any) -> tuple[int, int]:
    return int(snapshot.epoch), int(snapshot.version)


class SnapshotSlot:
    """The newest snapshot offered, taken by the loop at most once (thread-safe).

    Examples
    --------
    >>> from types import SimpleNamespace as S
    >>> slot = SnapshotSlot()
    >>> slot.offer(S(epoch=1, version=4)); slot.offer(S(epoch=1, version=3))
    >>> slot.take().version, slot.take()
    (4, None)
    >>> slot.offer(S(epoch=0, version=9)); slot.take()  # an older epoch: never
    >>> slot.offer(S(epoch=2, version=1)); slot.take().epoch
    2
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._newest: Any = None
        self._taken = True

    def offer(self, snapshot: Any) -> None:
        """Keep ``snapshot`` if it is newer (epoch, then version) than any offered before."""
        with self._lock:
            if self._newest is None or _rank(snapshot) > _rank(self._newest):
                self._newest, self._taken = snapshot, False

    def take(self) -> Any:
        """The newest snapshot if not taken yet, else ``None``."""
        with self._lock:
            if self._taken:
                return None
            self._taken = True
            return self._newest


class SharedScope:
    """The shared scope's part of the service loop (see the module's text).

    Parameters
    ----------
    cfg
        Service configuration (the topics of :meth:`ServiceConfig.topic_names`).
    telemetry
        Metrics: snapshot version and age, the learner's gauges.
    lock
        Held while the model in use changes or predicts; metric scrapes read under it.
    on_send_error
        Called (on the producer's IO thread) when a training record was not delivered: the
        service then rewinds.
    follower_factory, learner_factory, producer_factory
        Builders of the snapshot follower, the learner and the train producer (tests replace
        them); by default :class:`consumers.snapshots.SnapshotFollower`,
        :class:`consumers.learner.Learner` and a :class:`kafka.KafkaProducer`.
    """

    name = "shared"
    #: Records predicted between two looks at the newest snapshot (a poll's batch of a partition
    #: is predicted in parts of at most this many).
    max_batch = 250

    def __init__(
        self,
        cfg: ServiceConfig,
        telemetry: Telemetry,
        lock: threading.RLock,
        *,
        on_send_error: Callable[[BaseException], None],
        follower_factory: Callable[[], Any] | None = None,
        learner_factory: Callable[[], Any] | None = None,
        producer_factory: Callable[[], Any] | None = None,
    ) -> None:
        self.cfg = cfg
        self.telemetry = telemetry
        self.lock = lock
        self.topics = cfg.topic_names()
        self.on_send_error = on_send_error
        self.follower_factory = follower_factory or self._follower
        self.learner_factory = learner_factory or self._learner
        self.producer_factory = producer_factory or (lambda: KafkaProducer(**train_producer_options(cfg)))
        self.slot = SnapshotSlot()
        self.snapshot: Any = None  # the snapshot in use
        self._blank = make_estimator(model_spec(cfg))  # its limits check records before any snapshot
        self.producer: Any = None
        self.learner: Any = None
        self._committed: dict[TopicPartition, int] = {}
        self._threads: list[threading.Thread] = []
        self._stop: threading.Event | None = None
        self._limit = 0
        telemetry.watch_learner(lambda: self.learner)

    def _follower(self) -> Any:
        from consumers.snapshots import SnapshotFollower

        return SnapshotFollower(
            self.cfg.bootstrap_servers, self.topics.snapshots, client_options=client_options(self.cfg)
        )

    def _learner(self) -> Any:
        if self.cfg.learner_mode == "process":
            from consumers.learner_process import LearnerProcess

            return LearnerProcess(self.cfg, self.telemetry)
        from consumers.learner import Learner

        return Learner(self.cfg, self.telemetry)

    # -- the loop's hooks ------------------------------------------------------------------
    def models(self, states: Mapping[TopicPartition, PartitionState]) -> dict[str, Any]:
        """The model in use, as metric label ``snapshot`` (call under the lock)."""
        return {} if self.snapshot is None else {"snapshot": self.snapshot.estimator}

    def start(self, stop: threading.Event, limit: int = 0) -> bool:
        """Create the missing internal topics (retrying while the broker is away), then start
        the snapshot reader and the learner; ``False`` if stopped first. ``limit``: the largest
        message the producer may send (a larger training record is a dead letter)."""
        self._stop, self._limit = stop, limit
        delay = 0.5
        while not stop.is_set():
            try:
                ensure_topics(self.cfg)
                break
            except CONNECT_ERRORS as exc:
                self.telemetry.broker_up(False, "cannot create the internal topics")
                log.warning(
                    "cannot create the shared scope's topics %s yet (%s); retrying in %.1f s",
                    list(self.topics),
                    exc,
                    delay,
                )
                stop.wait(delay)
                delay = min(delay * 2, self.cfg.retry_backoff_max_s)
        if stop.is_set():
            return False
        for name, target in (("snapshot-reader", self._follow), ("learner", self._learn)):
            thread = threading.Thread(target=target, args=(stop,), name=name, daemon=True)
            thread.start()
            self._threads.append(thread)
        return True

    def refresh(self, states: Mapping[TopicPartition, PartitionState]) -> None:
        """Between polls: take the newest snapshot read, if any (one reference swap)."""
        snapshot = self.slot.take()
        if snapshot is None:
            return
        with self.lock:
            self.snapshot = snapshot
        self.telemetry.snapshot(snapshot)
        log.debug(
            "predicting with snapshot %d.%d (%d records learned)",
            snapshot.epoch,
            snapshot.version,
            snapshot.n_learned,
        )

    def assign(self, tp: TopicPartition) -> tuple[PartitionState, str]:
        """A newly assigned partition starts where the group committed it (no seek)."""
        self._committed.pop(tp, None)
        return self._state(), "the group's committed offset"

    def assigned(self) -> None:
        """Nothing to drop."""

    def revoked(self, tp: TopicPartition, state: PartitionState | None, saved: bool) -> None:
        self._committed.pop(tp, None)

    def lost(self, tp: TopicPartition) -> None:
        self._committed.pop(tp, None)

    def reload(self, tp: TopicPartition, start: int | None) -> tuple[PartitionState, int | None]:
        """After a rewind: back to the last offset committed here, else to ``start``."""
        return self._state(), self._committed.get(tp, start)

    def process(
        self, state: PartitionState, values: Sequence[bytes | None], keys: Sequence[bytes | None]
    ) -> BatchResult:
        """Predict one partition's records with the snapshot in use (nothing is learned here;
        labelled records are checked against the model's limits as learning would)."""
        with self.lock:
            snapshot = self.snapshot
            state.estimator = self._blank if snapshot is None else snapshot.estimator
            try:
                result = process_guarded(
                    state,
                    values,
                    task=self.cfg.task,
                    max_bytes=self.cfg.max_record_bytes,
                    keys=keys,
                    max_key_bytes=MAX_KEY_BYTES,
                    learn=False,
                    check_labels=True,
                )
            finally:
                state.estimator = None
        tag = None if snapshot is None else {"epoch": snapshot.epoch, "version": snapshot.version}
        for _, payload in result.predictions:
            payload["snapshot"] = tag
            payload["model_records"] = 0 if snapshot is None else snapshot.n_learned
            if snapshot is None:  # a model that learned nothing predicts nothing
                payload["prediction"] = None
                if "probabilities" in payload:
                    payload["probabilities"] = {}
                payload["hidden_sizes"] = []
        if snapshot is None:
            result.labels = [(y, None) for y, _ in result.labels]
        return result

    def forward(self, result: BatchResult, origins: Sequence[Origin]) -> bool:
        """Send the batch's labelled predicted records to the train topic, in offset order;
        ``False`` when the producer failed as a whole (the service rewinds)."""
        from consumers.training import encode_training_record

        if not result.labelled:
            return True
        if self.producer is None and not self.renew():
            return False
        predictions = dict(result.predictions)
        for i, rec in result.labelled:
            payload = predictions.get(i)
            if payload is None:  # not predicted (dead-lettered): not learned either
                continue
            o = origins[i]
            try:
                value = encode_training_record(o.topic, o.partition, o.offset, rec.x, rec.y)
            except (TypeError, ValueError) as exc:  # validated records encode: a defect
                result.rejections.append(
                    (i, Rejection("internal_error", f"training record: {type(exc).__name__}: {exc}"))
                )
                continue
            try:
                if self._limit and len(value) > self._limit:
                    raise MessageSizeTooLargeError(f"{len(value)} bytes > {self._limit}")
                future = self.producer.send(self.topics.train, value=value)
            except MESSAGE_ERRORS as exc:  # refused before anything was queued: not learned
                result.rejections.append(
                    (i, Rejection("output_too_large", f"training record refused: {exc}; not learned"))
                )
                continue
            except KafkaError as exc:  # e.g. buffer full while the broker is unreachable
                self.on_send_error(exc)
                return False
            future.add_errback(self._on_error)
            payload["learned"] = True
        return True

    def _on_error(self, exc: BaseException) -> None:
        if isinstance(exc, MESSAGE_ERRORS):
            log.error(
                "the broker refused a training record for its size (%s): the train topic's "
                "max.message.bytes must allow the producer's max_request_size",
                exc,
            )
        self.on_send_error(exc)

    def flush(self, timeout: float) -> None:
        """Wait until every training record sent is acknowledged (``KafkaTimeoutError``)."""
        if self.producer is not None:
            self.producer.flush(timeout=timeout)

    def renew(self) -> bool:
        """Replace the train producer (what it still held is sent again by the replay);
        ``False`` if the broker cannot be reached."""
        old, self.producer = self.producer, None
        self.producer = replace_producer(old, self.producer_factory, "train producer")
        return self.producer is not None

    def save(self, tp: TopicPartition, state: PartitionState) -> bool:
        """Nothing to write: the committed offset is the predictor's state (``False``: no
        checkpoint); a later rewind comes back here."""
        if state.next_offset is not None:
            self._committed[tp] = state.next_offset
        return False

    def close(self, timeout: float = 60.0) -> None:
        """Close the train producer (flushing it) and wait for the threads (the service has
        set the stop event: the learner checkpoints and leaves its group)."""
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(timeout=max(0.0, deadline - time.monotonic()))
            if thread.is_alive():
                log.warning("the %s thread did not stop within %.0f s", thread.name, timeout)
        if self.producer is not None:
            try:
                self.producer.close(timeout=5)
            except Exception as exc:
                log.debug("closing the train producer: %s", exc)
            self.producer = None

    # -- threads ---------------------------------------------------------------------------
    def _state(self) -> PartitionState:
        features = list(self.cfg.features) if self.cfg.features else None
        return PartitionState(estimator=None, features=features)

    def _follow(self, stop: threading.Event) -> None:
        """Read snapshots into the slot until stopped; a failure is logged and retried."""
        follower, delay = None, 0.5
        while not stop.is_set():
            try:
                if follower is None:
                    follower = self.follower_factory()
                snapshot = follower.poll(timeout_s=0.5)
                delay = 0.5
            except Exception as exc:  # predictions go on with the snapshot in use
                log.warning("reading snapshots failed (%s); retrying in %.1f s", exc, delay)
                follower = self._close(follower)
                stop.wait(delay)
                delay = min(delay * 2, MAX_BACKOFF_S)
                continue
            if snapshot is not None:
                self.slot.offer(snapshot)
        self._close(follower)

    def _learn(self, stop: threading.Event) -> None:
        """Run the learner until stopped; should it raise (or return), log it and run it again
        (the same one: it registered its metrics, and takes over from the saved state)."""
        delay = 1.0
        while not stop.is_set():
            try:
                if self.learner is None:
                    self.learner = self.learner_factory()
                self.learner.run(stop)
            except Exception:
                log.exception("the learner stopped; it starts again in %.0f s", delay)
            else:
                if not stop.is_set():
                    log.error("the learner returned; it starts again in %.0f s", delay)
            stop.wait(delay)
            delay = min(delay * 2, MAX_BACKOFF_S)

    @staticmethod
    def _close(client: Any) -> None:
        if client is not None:
            try:
                client.close()
            except Exception as exc:
                log.debug("closing the snapshot follower: %s", exc)
