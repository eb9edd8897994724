"""The learner role of the shared model scope: one member of the group learns for all.

Every instance runs a :class:`Learner` (a thread beside its predictor). They form the consumer
group ``<group-id>.learner`` on the training topic, which has one partition: the member the
group protocol assigns that partition is **the** learner -- elected by Kafka, never by a flag or
a lock file. The others wait, and one of them takes over when the group hands the partition on
(the learner left, died, or stopped polling).

**Taking over** (on assignment, in the learner's own thread): load the learner's state --
model, optimizer, averages, minibatch buffer, the highest source offset learned per input
partition, the position in the training topic -- from the state topic (name ``"learner"``; the
newest version that verifies, else a fresh model that reads the training topic from its
beginning); **claim a new epoch** with it (:meth:`~consumers.kafka_state.KafkaStateStore.claim`:
above every epoch of the state and snapshot topics, and no other claimant's); publish a snapshot
with that epoch at once; seek the training topic to the state's position.

**Learning.** Training records are learned in the topic's order, exactly once
(:class:`~consumers.training.LearnerState`: a record at or below the highest source offset
learned for its input partition is a redelivery and is skipped; a bad one is counted and set
aside). Every ``publish_every`` learned records, or ``publish_interval_ms`` after the first
record not yet published, a snapshot goes to the snapshot topic (:mod:`consumers.snapshots`;
a poll that brings more records is learned and published in chunks of ``publish_every``);
every ``checkpoint_every`` training records or ``checkpoint_interval_s`` seconds, the whole
state goes to the state topic (chunked: a state of any size within the store's bound).

**Fencing.** Saves carry the learner's epoch. A save refused because a higher epoch exists
(:class:`~consumers.kafka_state.StaleEpochError`) or because another writer won the epoch
(:class:`~consumers.kafka_state.ConcurrentWriteError`) means the learner was deposed: it stops
learning and publishing at once, and claims again only if the group still gives it the
partition. A deposed learner's snapshot written after its successor's first one is never
accepted by readers (they only move to a higher ``(epoch, version)``), and the state store
refuses its later saves.

**Revocation.** When the group takes the partition away (a rebalance, or this instance
stopping), the learner first publishes what it learned since its last snapshot and saves its
state, within half the session timeout, then stops. A
learner that dies saves nothing: its successor resumes from the last saved state and reads the
training topic again from that state's position; the source offsets in the state make every
record read again a skipped duplicate, so no labelled record is lost and none is learned
twice. Predictions carry on with the last snapshot meanwhile.

Nothing a record or a saved state holds stops the learner: bad records are counted, a state
that does not load falls back to an older version or a fresh model, broker errors are retried
with backoff, and any other failure drops the in-memory state and takes over again from the
last saved one.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from typing import Any

import prometheus_client
from kafka import KafkaConsumer, TopicPartition
from kafka.consumer.subscription_state import AsyncConsumerRebalanceListener
from kafka.errors import KafkaError
from prometheus_client.registry import CollectorRegistry

from consumers.config import ServiceConfig
from consumers.kafka_state import (
    ConcurrentWriteError,
    DamagedStateError,
    KafkaStateStore,
    StaleEpochError,
)
from consumers.messages import message_limit
from consumers.model import ModelSpec, make_estimator
from consumers.snapshots import SNAPSHOT_NAME, encode_snapshot
from consumers.training import LearnerState
from streamdas.checkpoint import CheckpointError

__all__ = ["LEARNER_NAME", "Learner", "LearnerMetrics", "learner_topics", "store_options"]

log = logging.getLogger(__name__)

#: The state name of the learner's saved state on the state topic.
LEARNER_NAME = "learner"
#: Default snapshot cadence (records, milliseconds) when the configuration has none.
DEFAULT_PUBLISH_EVERY = 500
DEFAULT_PUBLISH_INTERVAL_MS = 100
_COORDINATOR_MARGIN_MS = 5000


def learner_topics(cfg: ServiceConfig) -> tuple[str, str, str]:
    """``(train, state, snapshots)`` topics: those configured, else named after the group.

    >>> learner_topics(ServiceConfig(group_id="fraud"))
    ('fraud.train', 'fraud.state', 'fraud.snapshots')
    """
    group = cfg.group_id
    return (
        getattr(cfg, "train_topic", "") or f"{group}.train",
        getattr(cfg, "state_topic", "") or f"{group}.state",
        getattr(cfg, "snapshot_topic", "") or f"{group}.snapshots",
    )


def store_options(cfg: ServiceConfig) -> dict[str, Any]:
    """The ``--kafka`` options every kind of client takes (producer, consumer, admin: security
    settings mostly), less those a state store sets itself, with the client id.

    >>> store_options(ServiceConfig(kafka={"security_protocol": "SSL", "linger_ms": 5}))
    {'security_protocol': 'SSL', 'client_id': 'streamdas-consumer'}
    """
    from kafka import KafkaAdminClient, KafkaProducer

    own = {"bootstrap_servers", "request_timeout_ms", "group_id", "acks", "client_id"}
    known = (
        set(KafkaConsumer.DEFAULT_CONFIG)
        & set(KafkaProducer.DEFAULT_CONFIG)
        & set(KafkaAdminClient.DEFAULT_CONFIG)
    )
    options = {k: v for k, v in cfg.kafka.items() if k in known and k not in own}
    return {**options, "client_id": cfg.client_id}


class LearnerMetrics:
    """The learner's metrics, registered on ``registry``.

    ==================================================  =========  ===========
    metric                                              type       labels
    ==================================================  =========  ===========
    ``streamdas_learner_records_total``                 counter    outcome
    ``streamdas_learner_rejections_total``              counter    reason
    ``streamdas_learner_epoch``                         gauge
    ``streamdas_learner_snapshots_total``               counter
    ``streamdas_learner_snapshot_version``              gauge
    ``streamdas_learner_last_snapshot_timestamp_seconds``  gauge
    ``streamdas_learner_checkpoints_total``             counter
    ``streamdas_learner_last_checkpoint_timestamp_seconds``  gauge
    ``streamdas_learner_state_errors_total``            counter    operation
    ==================================================  =========  ===========

    ``outcome`` is ``learned``, ``duplicate`` (a redelivery skipped) or ``rejected``.

    >>> reg = prometheus_client.CollectorRegistry()
    >>> m = LearnerMetrics(reg)
    >>> m.records.labels(outcome="learned").inc(3)
    >>> reg.get_sample_value("streamdas_learner_records_total", {"outcome": "learned"})
    3.0
    """

    def __init__(self, registry: CollectorRegistry) -> None:
        self.records = prometheus_client.Counter(
            "streamdas_learner_records", "Training records by outcome", ["outcome"], registry=registry
        )
        self.rejections = prometheus_client.Counter(
            "streamdas_learner_rejections",
            "Training records set aside, by reason",
            ["reason"],
            registry=registry,
        )
        self.epoch = prometheus_client.Gauge(
            "streamdas_learner_epoch", "The learner's epoch (-1: not the learner)", registry=registry
        )
        self.snapshots = prometheus_client.Counter(
            "streamdas_learner_snapshots", "Snapshots published", registry=registry
        )
        self.snapshot_version = prometheus_client.Gauge(
            "streamdas_learner_snapshot_version", "Version of the last snapshot published", registry=registry
        )
        self.last_snapshot = prometheus_client.Gauge(
            "streamdas_learner_last_snapshot_timestamp_seconds",
            "When the last snapshot was published",
            registry=registry,
        )
        self.checkpoints = prometheus_client.Counter(
            "streamdas_learner_checkpoints", "Learner states saved", registry=registry
        )
        self.last_checkpoint = prometheus_client.Gauge(
            "streamdas_learner_last_checkpoint_timestamp_seconds",
            "When the learner state was last saved",
            registry=registry,
        )
        self.state_errors = prometheus_client.Counter(
            "streamdas_learner_state_errors",
            "Failed state operations (claim, publish, checkpoint, load)",
            ["operation"],
            registry=registry,
        )
        self.epoch.set(-1)


class _Listener(AsyncConsumerRebalanceListener):
    """Forwards the group's decisions to the learner (runs on kafka-python's IO thread)."""

    def __init__(self, learner: Learner) -> None:
        self.learner = learner

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        self.learner._on_revoked(revoked)

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        self.learner._on_assigned(assigned)

    async def on_partitions_lost(self, lost: set[TopicPartition]) -> None:
        self.learner._on_lost(lost)


class Learner:
    """Take part in the election of the group's learner; learn, publish and save while elected.

    Parameters
    ----------
    cfg
        The service's configuration: brokers, ``group_id`` (the learner group is
        ``<group_id>.learner``), the topics (:func:`learner_topics`), the model (``task``,
        ``model``, ``model_params``, ``seed``, ``features``), the cadences (``publish_every``,
        ``publish_interval_ms``, ``checkpoint_every``, ``checkpoint_interval_s``), the group
        timings and ``kafka`` options.
    telemetry
        Its ``registry`` receives the learner's metrics (:class:`LearnerMetrics`); without it
        they go to a registry of their own (:attr:`registry`).

    Attributes
    ----------
    is_learner
        Whether this instance is the elected learner now.
    epoch
        The epoch it learns under (``None`` when it is not the learner).
    """

    def __init__(self, cfg: ServiceConfig, telemetry: Any = None) -> None:
        self.cfg = cfg
        self.train_topic, self.state_topic, self.snapshot_topic = learner_topics(cfg)
        self.group_id = f"{cfg.group_id}.learner"
        self.tp = TopicPartition(self.train_topic, 0)
        self.spec = ModelSpec(task=cfg.task, kind=cfg.model, params=dict(cfg.model_params), seed=cfg.seed)
        self.publish_every = int(getattr(cfg, "publish_every", DEFAULT_PUBLISH_EVERY))
        self.publish_interval_s = int(getattr(cfg, "publish_interval_ms", DEFAULT_PUBLISH_INTERVAL_MS)) / 1000
        self.registry = getattr(telemetry, "registry", None) or CollectorRegistry()
        self.metrics = LearnerMetrics(self.registry)
        self.owner = os.urandom(8).hex()  # names this instance in the manifests it writes
        self.is_learner = False
        self.epoch: int | None = None
        self.state: LearnerState | None = None
        self.consumer: Any = None
        self.state_store: KafkaStateStore | None = None
        self.snapshot_store: KafkaStateStore | None = None
        self._lock = threading.RLock()  # held while the state changes or is saved
        self._assigned = False
        self._claim_at = 0.0  # monotonic time of the next attempt to take over
        self._claim_backoff = 0.5
        self._saved_version: int | None = None  # our last version on the state topic
        self._parked: LearnerState | None = None  # kept after a revocation, for a quick return
        self._dirty = 0  # training records handled since the last save
        self._unpublished = 0  # records learned since the last snapshot
        self._first_unpublished = 0.0
        self._last_checkpoint = time.monotonic()
        self._n_learned = 0
        self._retry_at = {"publish": 0.0, "checkpoint": 0.0}  # after a failed save, not before
        self._backoff = {"publish": 0.5, "checkpoint": 0.5}

    # ------------------------------------------------------------------ public state
    @property
    def n_learned(self) -> int:
        """Records learned by the model this instance holds or last held (buffer included)."""
        state = self.state
        return state.n_learned if state is not None else self._n_learned

    # ------------------------------------------------------------------ clients
    def _make_consumer(self) -> Any:
        cfg = self.cfg
        options = {k: v for k, v in cfg.kafka.items() if k in KafkaConsumer.DEFAULT_CONFIG}
        fixed = {
            "bootstrap_servers": cfg.bootstrap_servers.split(","),
            "client_id": cfg.client_id,
            "request_timeout_ms": max(
                cfg.request_timeout_ms, cfg.session_timeout_ms + _COORDINATOR_MARGIN_MS
            ),
            "group_id": self.group_id,
            "enable_auto_commit": False,
            "auto_offset_reset": "earliest",
            "session_timeout_ms": cfg.session_timeout_ms,
            "heartbeat_interval_ms": cfg.heartbeat_interval_ms,
            "max_poll_records": cfg.max_poll_records,
        }
        return KafkaConsumer(**{**options, **fixed})

    def _make_store(self, topic: str) -> KafkaStateStore:
        cfg = self.cfg
        return KafkaStateStore(
            cfg.bootstrap_servers,
            topic,
            client_options=store_options(cfg),
            timeout_s=max(5.0, cfg.session_timeout_ms / 2000),
        )

    def _connect(self) -> None:
        self.state_store = self._make_store(self.state_topic)
        self.snapshot_store = self._make_store(self.snapshot_topic)
        self.consumer = self._make_consumer()
        self.consumer.subscribe([self.train_topic], listener=_Listener(self))
        log.info("learner: joined group %r on %s", self.group_id, self.train_topic)

    def _close(self) -> None:
        consumer, self.consumer = self.consumer, None
        if consumer is not None:
            try:  # revokes (the listener saves the state if it changed) and leaves the group
                consumer.close(autocommit=False, timeout_ms=int(self.cfg.session_timeout_ms / 2))
            except Exception as exc:
                log.debug("learner: closing the consumer: %s", exc)
        for store in (self.state_store, self.snapshot_store):
            if store is not None:
                store.close()
        self.state_store = self.snapshot_store = None
        with self._lock:
            self._assigned = False
            self._set_learner(False)

    # ------------------------------------------------------------------ the loop
    def run(self, stop: threading.Event) -> None:
        """Learn while elected, until ``stop`` is set; then save (if elected) and leave the
        group. Never raises for a record, a state or the broker (retried with backoff)."""
        backoff = 0.5
        while not stop.is_set():
            try:
                if self.consumer is None:
                    self._connect()
                self._turn()
                backoff = 0.5
            except (KafkaError, OSError) as exc:
                log.warning(
                    "learner: broker error (%s: %s); reconnecting in %.1f s", type(exc).__name__, exc, backoff
                )
                self._close()
                stop.wait(backoff)
                backoff = min(backoff * 2, self.cfg.retry_backoff_max_s)
            except Exception:  # not expected: start again from the last saved state
                log.exception("learner: unexpected failure; taking over again from the last saved state")
                with self._lock:
                    self._set_learner(False)
                    self._parked = None
                self._close()
                stop.wait(backoff)
                backoff = min(backoff * 2, self.cfg.retry_backoff_max_s)
        self._shutdown()

    def _shutdown(self) -> None:
        with self._lock:
            self._hand_over()
        self._close()
        log.info("learner: stopped (%d records learned)", self.n_learned)

    def _poll_ms(self) -> int:
        wait = self.cfg.poll_timeout_ms / 1000
        if self.is_learner and self._unpublished:
            due = max(self._first_unpublished + self.publish_interval_s, self._retry_at["publish"])
            wait = min(wait, max(0.0, due - time.monotonic()))
        if self._assigned and not self.is_learner:
            wait = min(wait, max(0.0, self._claim_at - time.monotonic()))
        return int(wait * 1000)

    def _turn(self) -> None:
        batch = self.consumer.poll(timeout_ms=self._poll_ms(), max_records=self.cfg.max_poll_records)
        messages = batch.get(self.tp, [])
        with self._lock:
            if not self._assigned:
                return
            if not self.is_learner:
                if time.monotonic() >= self._claim_at:
                    self._take_over()  # what was polled before is read again from the state's position
                return
            for start in range(0, len(messages), self.publish_every):  # publish between chunks
                if not self.is_learner:  # deposed by a refused publication
                    return
                self._learn(messages[start : start + self.publish_every])
                self._maybe_publish()
            self._maybe_publish()
            self._maybe_checkpoint()

    def _learn(self, messages: list[Any]) -> None:
        state = self.state
        assert state is not None
        start = state.train_offset or 0
        pairs = [(m.offset, m.value) for m in messages if m.offset >= start]
        if not pairs:
            return
        if not self._unpublished:
            self._first_unpublished = time.monotonic()
        report = state.learn(pairs)
        self._dirty += report.n_records
        self._unpublished += report.n_learned
        m = self.metrics
        m.records.labels(outcome="learned").inc(report.n_learned)
        m.records.labels(outcome="duplicate").inc(report.n_duplicates)
        m.records.labels(outcome="rejected").inc(sum(report.rejected.values()))
        for reason, n in report.rejected.items():
            m.rejections.labels(reason=reason).inc(n)
        if not report.n_learned and not self._unpublished:
            self._first_unpublished = 0.0

    # ------------------------------------------------------------------ taking over
    def _set_learner(self, value: bool) -> None:
        self.is_learner = value
        if not value:
            self.epoch = None
        self.metrics.epoch.set(self.epoch if value and self.epoch is not None else -1)

    def _retry_later(self) -> None:
        self._claim_at = time.monotonic() + self._claim_backoff
        self._claim_backoff = min(self._claim_backoff * 2, self.cfg.retry_backoff_max_s)

    def _take_over(self) -> None:
        """Load the newest state, claim a new epoch with it, publish, seek (lock held)."""
        assert self.state_store is not None and self.snapshot_store is not None
        try:
            state = self._restore()
            snapshot_epoch = self.snapshot_store.latest_epoch(SNAPSHOT_NAME)
            min_epoch = 0 if snapshot_epoch is None else snapshot_epoch + 1
            epoch, version = self.state_store.claim(
                LEARNER_NAME, state.to_blob(), min_epoch=min_epoch, meta=self._meta(state)
            )
        except (CheckpointError, ValueError) as exc:  # no answer, another claimant won, too large
            log.warning("learner: cannot take over yet (%s); retrying in %.1f s", exc, self._claim_backoff)
            self.metrics.state_errors.labels(operation="claim").inc()
            self._retry_later()
            return
        self.state, self.epoch, self._saved_version = state, epoch, version
        self._set_learner(True)
        self._claim_backoff = 0.5
        self._dirty = 0
        self._last_checkpoint = time.monotonic()
        self._unpublished = 0
        self.metrics.checkpoints.inc()
        self.metrics.last_checkpoint.set_to_current_time()
        log.info(
            "learner: elected; epoch %d, state version %d, %d records learned, training topic from offset %s",
            epoch,
            version,
            state.n_learned,
            state.train_offset or 0,
        )
        if not self._publish():
            return
        if state.train_offset is None:
            self.consumer.seek_to_beginning(self.tp)
        else:
            self.consumer.seek(self.tp, state.train_offset)

    def _restore(self) -> LearnerState:
        """The state to take over with: the one parked at revocation if nobody saved since,
        else the newest saved one that loads, else a fresh model."""
        assert self.state_store is not None
        parked, self._parked = self._parked, None
        if parked is not None and self._saved_version is not None:
            head = self.state_store.head(LEARNER_NAME)
            unchanged = head is not None and (head.version, head.meta.get("owner")) == (
                self._saved_version,
                self.owner,
            )
            if unchanged:
                return parked
        try:
            stored = self.state_store.load(LEARNER_NAME)
        except DamagedStateError as exc:
            log.error("learner: %s", exc)
            self.metrics.state_errors.labels(operation="load").inc()
            stored = exc.previous
        if stored is not None:
            try:
                return LearnerState.from_blob(
                    stored.blob,
                    task=self.cfg.task,
                    kind=self.cfg.model,
                    topics=self.cfg.topics,
                    features=self.cfg.features,
                    max_bytes=message_limit(self.cfg.kafka),
                    params=self.cfg.model_params,
                    where=f"learner state (epoch {stored.epoch}, version {stored.version})",
                )
            except CheckpointError as exc:
                log.error(
                    "learner: the saved state cannot be used (%s); starting a fresh model that "
                    "learns the training topic from its beginning",
                    exc,
                )
                self.metrics.state_errors.labels(operation="load").inc()
        else:
            log.info("learner: no saved state; a fresh model learns the training topic from its beginning")
        return LearnerState(
            make_estimator(self.spec),
            task=self.cfg.task,
            topics=self.cfg.topics,
            features=self.cfg.features,
            max_bytes=message_limit(self.cfg.kafka),
        )

    def _meta(self, state: LearnerState) -> dict[str, Any]:
        return {"owner": self.owner, "n_learned": state.n_learned, "train_offset": state.train_offset}

    # ------------------------------------------------------------------ saving
    def _deposed(self, operation: str, exc: Exception) -> None:
        log.warning("learner: deposed (%s refused: %s); learning stops", operation, exc)
        self.metrics.state_errors.labels(operation=operation).inc()
        self._n_learned = self.n_learned
        self._set_learner(False)
        self._parked = None
        self.state = None
        self._retry_later()  # only if the group still gives this instance the partition

    def _save(self, operation: str, fn: Any) -> Any:
        """``fn()``; on a fencing error the learner is deposed, on other errors it goes on
        (``None``) and tries again after a backoff."""
        try:
            result = fn()
        except (StaleEpochError, ConcurrentWriteError) as exc:
            self._deposed(operation, exc)
        except (CheckpointError, ValueError) as exc:
            backoff = self._backoff[operation]
            log.warning("learner: %s failed (%s); trying again in %.1f s", operation, exc, backoff)
            self.metrics.state_errors.labels(operation=operation).inc()
            self._retry_at[operation] = time.monotonic() + backoff
            self._backoff[operation] = min(backoff * 2, self.cfg.retry_backoff_max_s)
        else:
            self._retry_at[operation], self._backoff[operation] = 0.0, 0.5
            return result
        return None

    def _due(self, operation: str) -> bool:
        return time.monotonic() >= self._retry_at[operation]

    def _maybe_publish(self) -> None:
        if (
            self._unpublished
            and self._due("publish")
            and (
                self._unpublished >= self.publish_every
                or time.monotonic() - self._first_unpublished >= self.publish_interval_s
            )
        ):
            self._publish()

    def _publish(self) -> bool:
        """Publish a snapshot of the model now; ``False`` if this instance was deposed."""
        state, store, epoch = self.state, self.snapshot_store, self.epoch
        if not self.is_learner or state is None or store is None or epoch is None:
            return False
        now = time.time()
        version = self._save(
            "publish",
            lambda: store.save(
                SNAPSHOT_NAME,
                encode_snapshot(state.estimator, n_learned=state.n_learned, published_at=now),
                epoch=epoch,
                meta={"owner": self.owner, "n_learned": state.n_learned, "published_at": now},
            ),
        )
        if version is None:
            return self.is_learner
        self._unpublished = 0
        self.metrics.snapshots.inc()
        self.metrics.snapshot_version.set(version)
        self.metrics.last_snapshot.set(now)
        return True

    def _maybe_checkpoint(self) -> None:
        if (
            self._dirty
            and self._due("checkpoint")
            and (
                self._dirty >= self.cfg.checkpoint_every
                or time.monotonic() - self._last_checkpoint >= self.cfg.checkpoint_interval_s
            )
        ):
            self._checkpoint()

    def _checkpoint(self) -> bool:
        """Save the whole state now; ``False`` if it was not saved."""
        state, store, epoch = self.state, self.state_store, self.epoch
        if not self.is_learner or state is None or store is None or epoch is None:
            return False
        self._last_checkpoint = time.monotonic()  # a failed save waits for the next interval too
        version = self._save(
            "checkpoint",
            lambda: store.save(LEARNER_NAME, state.to_blob(), epoch=epoch, meta=self._meta(state)),
        )
        if version is None:
            return False
        self._saved_version = version
        self._dirty = 0
        self.metrics.checkpoints.inc()
        self.metrics.last_checkpoint.set_to_current_time()
        log.debug("learner: saved state version %d (%d records learned)", version, state.n_learned)
        return True

    def _hand_over(self) -> bool:
        """Before giving the partition up: publish what was learned since the last snapshot,
        save the state if it changed; ``True`` if the saved state is the one in memory."""
        if not self.is_learner:
            return False
        if self._unpublished:
            self._publish()
        return self._dirty == 0 or self._checkpoint()

    # ------------------------------------------------------------------ the group's decisions
    def _on_assigned(self, assigned: set[TopicPartition]) -> None:
        self._assigned = self.tp in assigned
        self._claim_at = 0.0
        self._claim_backoff = 0.5
        if not self._assigned:
            log.info("learner: another member of %r learns", self.group_id)

    def _on_revoked(self, revoked: set[TopicPartition]) -> None:
        if self.tp not in revoked:
            return
        self._assigned = False
        budget = self.cfg.session_timeout_ms / 2000  # the group waits for this callback
        if not self._lock.acquire(timeout=budget):
            log.warning("learner: revoked while busy for %.1f s; not saving", budget)
            self._set_learner(False)
            return
        try:
            if self.is_learner:
                saved = self._hand_over()
                self._parked = self.state if saved and self.is_learner else None
                self._n_learned = self.n_learned
                self.state = None
                log.info("learner: revoked (state %s)", "saved" if saved else "not saved")
            self._set_learner(False)
        finally:
            self._lock.release()

    def _on_lost(self, lost: set[TopicPartition]) -> None:
        if self.tp in lost:
            log.warning("learner: lost the training partition (group membership expired); learning stops")
            self._assigned = False
            self._set_learner(False)
            self._parked = None
