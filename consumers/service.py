"""The Kafka consumer service: predict every record, learn the labelled ones -- at least once.

The loop is the same in both model scopes; what differs is behind its ``scope``:
:class:`~consumers.predictor.SharedScope` (``--model-scope shared``, the default: one model for
the whole stream, learned by the elected learner, predictions from its snapshots, the position
committed to Kafka) or :class:`~consumers.partitions.PartitionScope` (``--model-scope
partition``: one model per input partition, checkpointed with its offset in a folder).

Loop, per poll:

1. take the newest model the scope has (shared: the newest snapshot read);
2. each partition's records go through the scope's ``process`` (predict all valid records; the
   partition scope then learns the labelled ones as one minibatch), the shared scope forwards
   the labelled ones to the learner, predictions go to the output topic and unusable records to
   the dead-letter topic;
3. every ``checkpoint_every`` records or ``checkpoint_interval_s`` seconds: flush the producers
   (everything sent so far is acknowledged), save each changed partition (partition scope: its
   checkpoint file), then commit the same offsets to the group.

On revocation (rebalance, shutdown) the partitions are saved and committed first, within a time
budget (half the session timeout) so the rebalance listener never holds the group; a partition
not saved in time is handed back at its last save and replayed by its next owner. If a producer
loses a message, or cannot be flushed, nothing is saved past it: the service rewinds every
partition of the failed poll (to its checkpoint or last commit, or to the first offset it polled
from it), builds fresh producers, and replays, so a record can be predicted twice but never zero
times. A message the broker refuses because of the message itself (too large) is not a lost
delivery: the record is dead-lettered instead (``output_too_large``), and a dead letter refused
that way is sent again without the value's prefix, then logged and counted.

No record can stop the loop: :func:`~consumers.model.process_guarded` turns any failure of one
record into its dead letter, and should handling a partition's records still raise, the records
involved are counted (per ``(partition, offset)``, in memory, at most
:data:`MAX_TRACKED_FAILURES` entries), every partition rewinds, and those records are then
handled one at a time; a record that fails :data:`MAX_ATTEMPTS` times is dead-lettered
(``internal_error``) without being handled again. Liveness follows progress: ``/livez`` fails
when no new offset was handled for ``stall_seconds`` while there were records to handle, so a
loop that only replays the same records is not live. Kafka clients: :mod:`consumers.clients`.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.consumer.subscription_state import AsyncConsumerRebalanceListener
from kafka.errors import (
    KafkaError,
    KafkaTimeoutError,
)
from kafka.structs import OffsetAndMetadata

from consumers.clients import (
    CONNECT_ERRORS,
    COORDINATOR_MARGIN_MS,
    MESSAGE_ERRORS,
    consumer_request_timeout_ms,
    make_consumer,
    only_known,
    producer_options,
    replace_producer,
)
from consumers.config import ServiceConfig
from consumers.messages import (
    Origin,
    Outgoing,
    dead_letter,
    dead_letter_value_bytes,
    message_key,
    message_limit,
    render,
)
from consumers.model import BatchResult, PartitionState
from consumers.partitions import PartitionScope
from consumers.predictor import SharedScope
from consumers.records import Rejection, clip
from consumers.telemetry import Telemetry

__all__ = ["MAX_ATTEMPTS", "MAX_TRACKED_FAILURES", "KafkaService"]

log = logging.getLogger(__name__)


#: Times a record may be part of a failed attempt before it is dead-lettered unhandled.
MAX_ATTEMPTS = 3
#: Most ``(partition, offset)`` failure counts kept (the oldest are forgotten first).
MAX_TRACKED_FAILURES = 10_000


class _Listener(AsyncConsumerRebalanceListener):
    """Save and commit on revoke, load (and seek) on assign (runs on kafka-python's IO
    thread)."""

    def __init__(self, service: KafkaService) -> None:
        self.service = service

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        offsets = self.service._revoke(revoked)
        if offsets:
            consumer = self.service.consumer
            coordinator = getattr(consumer, "_coordinator", None)
            commit = getattr(coordinator, "_commit_offsets_sync_async", None)
            if commit is not None:
                try:
                    await commit(offsets, timeout_ms=5000)
                except Exception as exc:  # a replay by the next owner, at worst
                    log.warning("commit on revoke failed: %s", exc)

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        self.service._assign(assigned)

    async def on_partitions_lost(self, lost: set[TopicPartition]) -> None:
        self.service._lose(lost)


class KafkaService:
    """Run the consume-predict-learn loop until :meth:`request_stop` (or a signal).

    Parameters
    ----------
    cfg
        Service configuration.
    telemetry
        Metrics and health (see :class:`consumers.telemetry.Telemetry`).
    **scope_options
        Passed to the shared scope (:class:`~consumers.predictor.SharedScope`: its follower,
        learner and train producer factories).
    """

    def __init__(self, cfg: ServiceConfig, telemetry: Telemetry | None = None, **scope_options: Any) -> None:
        self.cfg = cfg
        self.telemetry = telemetry or Telemetry(cfg)
        self.lock = threading.RLock()  # held while the models change; scrapes read under it
        self.scope: PartitionScope | SharedScope
        if cfg.model_scope == "partition":
            self.scope = PartitionScope(cfg, self.telemetry, self.lock)
            self.store = self.scope.store
        else:
            self.scope = SharedScope(
                cfg, self.telemetry, self.lock, on_send_error=self._on_send_error, **scope_options
            )
        self.states: dict[TopicPartition, PartitionState] = {}
        self._start_offsets: dict[TopicPartition, int] = {}
        self._stop = threading.Event()
        self._send_failed = False
        self._handle_failed = False  # handling raised outside the per-record guards: rewind
        # (partition, offset) -> (failed attempts, last error), see MAX_ATTEMPTS
        self._failures: dict[tuple[TopicPartition, int], tuple[int, str]] = {}
        self._refused: list[tuple[str, Origin, Rejection | None, BaseException]] = []
        self._refused_lock = threading.Lock()  # the producer's IO thread appends
        self._high: dict[TopicPartition, int] = {}  # highest next offset ever reached
        self.limit = message_limit(cfg.kafka)
        self.value_bytes = dead_letter_value_bytes(cfg.dead_letter_value_bytes, self.limit)
        if self.value_bytes < cfg.dead_letter_value_bytes:
            log.warning(
                "dead letters carry %d bytes of the original value, not %d: the "
                "producer's max_request_size allows messages of %d bytes",
                self.value_bytes,
                cfg.dead_letter_value_bytes,
                self.limit,
            )
        self._flush_failing = False
        self._last_checkpoint = time.monotonic()
        self._last_lag = 0.0
        self.consumer: Any = None
        self.producer: Any = None
        self.producer_factory: Callable[[], Any] = lambda: KafkaProducer(**producer_options(cfg))
        self.telemetry.watch_models(self._models, lock=self.lock)
        self.telemetry.assigned(False)  # not ready until the group has assigned partitions

    # -- lifecycle -----------------------------------------------------------------------
    def request_stop(self) -> None:
        """Ask the loop to finish its batch, checkpoint, commit, leave the group and return."""
        self._stop.set()

    def _models(self) -> dict[str, Any]:
        with self.lock:  # the metrics thread reads while the loop holds no lock
            return self.scope.models(self.states)

    def _new_producer(self) -> bool:
        """Replace the producers (what they still held is replayed); ``False`` if unreachable."""
        old, self.producer = self.producer, None
        self.producer = replace_producer(old, self.producer_factory, "producer")
        return self.producer is not None and self.scope.renew()

    def _connect(self) -> bool:
        """Prepare the scope, create producer and consumer, retrying with backoff until
        connected or stopped."""
        cfg = self.cfg
        delay = 0.5
        unknown = (
            set(cfg.kafka)
            - set(only_known(cfg.kafka, KafkaConsumer))
            - set(only_known(cfg.kafka, KafkaProducer))
        )
        if unknown:
            log.warning("ignoring Kafka options no kafka-python client accepts: %s", sorted(unknown))
        if not self.scope.start(self._stop, self.limit):
            return False
        while not self._stop.is_set():
            try:
                self.producer = self.producer_factory()
                consumer_timeout = consumer_request_timeout_ms(cfg)
                if consumer_timeout != cfg.request_timeout_ms:
                    log.info(
                        "consumer request timeout raised to %d ms (session timeout + "
                        "%d ms) so a held SyncGroup can complete",
                        consumer_timeout,
                        COORDINATOR_MARGIN_MS,
                    )
                self.consumer = make_consumer(cfg, cfg.group_id)
                self.consumer.subscribe(cfg.topics, listener=_Listener(self))
                self.telemetry.broker_up(True)
                log.info(
                    "connected to %s; subscribed to %s as group %r (model scope: %s)",
                    cfg.bootstrap_servers,
                    cfg.topics,
                    cfg.group_id,
                    cfg.model_scope,
                )
                return True
            except CONNECT_ERRORS as exc:
                self._close_clients()
                self.telemetry.broker_up(False, "cannot connect")
                log.warning("broker unreachable (%s); retrying in %.1f s", exc, delay)
                self._stop.wait(delay)
                delay = min(delay * 2, cfg.retry_backoff_max_s)
        return False

    def _close_clients(self) -> None:
        for client in (self.consumer, self.producer):
            if client is not None:
                try:
                    client.close(timeout=5) if client is self.producer else client.close(
                        autocommit=False, timeout_ms=5000
                    )
                except Exception as exc:
                    log.debug("closing client: %s", exc)
        self.consumer = self.producer = None

    def run(self) -> int:
        """Connect, then loop until stopped; returns the process exit status (0)."""
        if not self._connect():
            self.scope.close()
            return 0
        backoff = 0.5
        while not self._stop.is_set():
            if self.producer is None and not self._new_producer():
                self.telemetry.heartbeat()  # the loop is alive, only the broker is not
                self.telemetry.progress()
                self.telemetry.broker_up(False, "cannot create a producer")
                self._stop.wait(backoff)
                backoff = min(backoff * 2, self.cfg.retry_backoff_max_s)
                continue
            try:
                batch = self.consumer.poll(
                    timeout_ms=self.cfg.poll_timeout_ms, max_records=self.cfg.max_poll_records
                )
                backoff = 0.5
            except KafkaError as exc:
                self.telemetry.broker_up(False, "poll failed")
                log.warning("poll failed (%s); retrying in %.1f s", exc, backoff)
                self._stop.wait(backoff)
                backoff = min(backoff * 2, self.cfg.retry_backoff_max_s)
                continue
            self.telemetry.heartbeat()
            if not any(batch.values()):
                self.telemetry.progress()  # nothing to do is no lack of progress
            self.scope.refresh(self.states)
            self._process_poll(batch)
            self._report()
        log.info("stopping: final save, commit, leaving the group")
        self._checkpoint_and_commit(list(self.states))
        self._close_clients()  # close() revokes (no-op: nothing dirty) and leaves the group
        self.scope.close()
        log.info("stopped")
        return 0

    # -- per batch -------------------------------------------------------------------------
    def _process_poll(self, batch: dict[TopicPartition, list[Any]]) -> None:
        """Handle one poll's records; rewind on a lost message, else checkpoint when due.

        Records of a partition that is not assigned here (any more) are left to its owner: a
        fresh model started in the middle of a partition would save past records it never
        learned.
        """
        batch_all = batch
        stray = [tp for tp in batch if tp not in self.states]
        if stray:
            log.warning("skipping records of partitions not assigned here: %s", sorted(map(tuple, stray)))
            batch = {tp: m for tp, m in batch.items() if tp in self.states}
            try:
                mine = set(self.consumer.assignment())
            except Exception:  # assignment unknown: leave them to the next rebalance
                mine = set()
            for tp in stray:  # assigned after all (a listener call failed): load it now
                if tp in mine:
                    self._assign({tp})
                    offset = self.states[tp].next_offset
                    first = min(m.offset for m in batch_all[tp]) if batch_all[tp] else None
                    target = offset if offset is not None else first
                    if target is not None:
                        self.consumer.seek(tp, target)  # its skipped records come again
        for tp, messages in batch.items():  # where each partition of this poll began
            if messages:
                self._start_offsets.setdefault(tp, messages[0].offset)
        for tp, messages in batch.items():
            if self._must_rewind:
                break
            self._handle(tp, messages)
        self._resend_refused()
        if self._must_rewind:
            self._rewind()
        elif self._checkpoint_due():
            self._checkpoint_and_commit(list(self.states))

    @property
    def _must_rewind(self) -> bool:
        return self._send_failed or self._handle_failed

    def _handle(self, tp: TopicPartition, messages: list[Any]) -> None:
        """Process and send one partition's messages of a poll.

        Records that were part of a failed attempt are handled one at a time, so a failure is
        that record's own; one that failed :data:`MAX_ATTEMPTS` times is dead-lettered unhandled.
        A failure outside the per-record guards counts an attempt for the records involved and
        asks for a rewind (the model may be half-way through them).
        """
        state = self.states.get(tp)
        if state is None:  # not assigned here (any more): its owner processes it
            return
        if state.next_offset is not None:
            messages = [m for m in messages if m.offset >= state.next_offset]
        if not messages:
            return
        self._start_offsets.setdefault(tp, messages[0].offset)
        for part in self._parts(tp, messages):
            self.scope.refresh(self.states)  # the newest model, between batches
            try:
                sent = self._handle_part(tp, state, part)
            except Exception as exc:
                self._part_failed(tp, part, exc)
                return
            if not sent:
                return

    def _parts(self, tp: TopicPartition, messages: list[Any]) -> Iterable[list[Any]]:
        """Runs of records never seen failing (of at most the scope's ``max_batch``), and each
        suspect record alone."""
        run: list[Any] = []
        limit = self.scope.max_batch or len(messages)
        for m in messages:
            if (tp, m.offset) in self._failures:
                if run:
                    yield run
                    run = []
                yield [m]
            else:
                run.append(m)
                if len(run) >= limit:
                    yield run
                    run = []
        if run:
            yield run

    def _part_failed(self, tp: TopicPartition, part: list[Any], exc: Exception) -> None:
        log.exception(
            "handling %d record(s) of %s:%d from offset %d failed; they will be "
            "handled one at a time after a rewind",
            len(part),
            tp.topic,
            tp.partition,
            part[0].offset,
            exc_info=exc,
        )
        error = clip(f"{type(exc).__name__}: {exc}", 300)
        for m in part:
            count = self._failures.pop((tp, m.offset), (0, ""))[0]
            self._failures[(tp, m.offset)] = (count + 1, error)
        while len(self._failures) > MAX_TRACKED_FAILURES:
            del self._failures[next(iter(self._failures))]
        self._handle_failed = True

    def _handle_part(self, tp: TopicPartition, state: PartitionState, messages: list[Any]) -> bool:
        """Process and send ``messages``; ``False`` when a lost send asks for a rewind."""
        cfg = self.cfg
        origins = [Origin(m.topic, m.partition, m.offset, m.key, m.value) for m in messages]
        failed = self._failures.get((tp, messages[0].offset))
        if len(messages) == 1 and failed is not None and failed[0] >= MAX_ATTEMPTS:
            rejection = Rejection("internal_error", f"handling failed {failed[0]} times; last: {failed[1]}")
            with self.lock:
                state.n_records += 1
                state.dirty += 1
            result = BatchResult(rejections=[(0, rejection)])
        else:
            result = self.scope.process(state, [m.value for m in messages], [m.key for m in messages])
            if not self.scope.forward(result, origins):
                return False
        outgoing = render(
            result, origins, limit=self.limit, value_bytes=self.value_bytes, extra={"consumer": cfg.client_id}
        )
        for message in outgoing:
            if not self._send(message, origins[message.index], result):
                return False
        state.next_offset = messages[-1].offset + 1
        for m in messages:
            self._failures.pop((tp, m.offset), None)
        self.telemetry.batch(result)
        if state.next_offset > self._high.get(tp, -1):
            self._high[tp] = state.next_offset
            self.telemetry.progress()
        return True

    def _send(self, message: Outgoing, origin: Origin, result: BatchResult | None) -> bool:
        """Send one message; ``False`` when the producer failed as a whole (rewind).

        A refusal of the message itself (too large) turns a prediction into a dead letter
        (recorded in ``result``) and a dead letter into a smaller one, never into a rewind.
        """
        cfg = self.cfg
        topic = cfg.output_topic if message.kind == "prediction" else cfg.dead_letter_topic
        rejection = None if message.kind == "prediction" else Rejection(message.reason or "")
        try:
            future = self.producer.send(topic, key=message.key, value=message.value)
        except MESSAGE_ERRORS as exc:
            self._on_refused(message.kind, origin, rejection, exc)
            return True
        except KafkaError as exc:  # e.g. buffer full while the broker is unreachable
            self._on_send_error(exc)
            return False
        future.add_errback(functools.partial(self._on_delivery_error, message.kind, origin, rejection))
        return True

    def _on_delivery_error(
        self, kind: str, origin: Origin, rejection: Rejection | None, exc: BaseException
    ) -> None:
        if isinstance(exc, MESSAGE_ERRORS):
            self._on_refused(kind, origin, rejection, exc)
        else:
            self._on_send_error(exc)

    def _on_refused(self, kind: str, origin: Origin, rejection: Rejection | None, exc: BaseException) -> None:
        """The broker or the producer refused one message for its size (any thread)."""
        with self._refused_lock:
            self._refused.append((kind, origin, rejection, exc))

    def _resend_refused(self) -> None:
        """Replace each refused message: a prediction by a dead letter, a dead letter by one
        without the value's prefix; a refused replacement is logged and counted, not retried."""
        with self._refused_lock:
            refused, self._refused = self._refused, []
        for kind, origin, rejection, exc in refused:
            where = f"{origin.topic}:{origin.partition}@{origin.offset}"
            if kind == "prediction":
                log.error("the prediction of %s was refused (%s): dead-lettered", where, exc)
                replacement = Rejection("output_too_large", f"prediction refused: {exc}")
                value_bytes = self.value_bytes
            elif kind == "dead_letter" and rejection is not None:
                log.error("the dead letter of %s was refused (%s): sent again without the value", where, exc)
                replacement = Rejection(
                    rejection.reason, f"dead letter refused with the value's prefix: {exc}"
                )
                value_bytes = 0
            else:
                log.error(
                    "the dead letter of %s was refused again (%s): not written; the "
                    "record stays in its input topic",
                    where,
                    exc,
                )
                self.telemetry.metrics.record("dead_lettered", reason="undeliverable")
                continue
            data = dead_letter(origin, replacement, limit=self.limit, value_bytes=value_bytes)
            again = "dead_letter" if kind == "prediction" else "dead_letter_again"
            message = Outgoing(again, 0, message_key(origin.key), data, replacement.reason)
            if kind == "prediction":
                self.telemetry.metrics.record("dead_lettered", reason=replacement.reason)
            self._send(message, origin, None)

    def _on_send_error(self, exc: BaseException) -> None:
        log.error("producer could not deliver a message (%s): will rewind to the checkpoints", exc)
        self._send_failed = True
        self.telemetry.broker_up(False, "a send failed: rewinding")

    # -- checkpoints -----------------------------------------------------------------------
    def _pending(self) -> int:
        """Records processed since their partition's last checkpoint, over all partitions."""
        return sum(st.dirty for st in list(self.states.values()))

    def _checkpoint_due(self) -> bool:
        pending = self._pending()
        if pending <= 0:
            return False
        return (
            pending >= self.cfg.checkpoint_every
            or time.monotonic() - self._last_checkpoint >= self.cfg.checkpoint_interval_s
        )

    def _checkpoint(
        self,
        tps: Iterable[TopicPartition],
        flush_timeout_s: float | None = None,
        deadline: float | None = None,
    ) -> dict[TopicPartition, OffsetAndMetadata] | None:
        """Flush the producers, then save every changed partition; ``None`` if postponed.

        With a ``deadline`` (``time.monotonic()``), partitions are saved until it passes; the
        others keep their older save and are left out of the returned offsets.
        """
        dirty = [
            tp
            for tp in tps
            if tp in self.states and self.states[tp].dirty > 0 and self.states[tp].next_offset is not None
        ]
        if not dirty:
            return {}
        if self.producer is None:
            return None
        timeout = self.cfg.flush_timeout_s if flush_timeout_s is None else flush_timeout_s
        try:
            self.producer.flush(timeout=timeout)
            while self._refused and not self._send_failed:  # at most three rounds (see above)
                self._resend_refused()
                self.producer.flush(timeout=timeout)
            self.scope.flush(timeout)
        except KafkaTimeoutError:
            self._flush_failing = True
            self.telemetry.broker_up(False, "producer flush timing out")
            log.warning("producer flush timed out after %.1f s: save and commit postponed", timeout)
            return None
        self._flush_failing = False
        if self._must_rewind:
            return None
        offsets: dict[TopicPartition, OffsetAndMetadata] = {}
        checkpointed = False
        for tp in dirty:
            if deadline is not None and time.monotonic() >= deadline:
                log.warning(
                    "save time budget spent: %d partition(s) handed back at their previous save",
                    len(dirty) - len(offsets),
                )
                break
            state = self.states[tp]
            checkpointed = self.scope.save(tp, state) or checkpointed
            state.dirty = 0
            offsets[tp] = OffsetAndMetadata(state.next_offset, "", -1)
        if self._pending() == 0:  # a partial save (revoke) keeps the others' countdown
            self._last_checkpoint = time.monotonic()
        if checkpointed:
            self.telemetry.checkpointed()
        log.debug("saved %s", {f"{t.topic}:{t.partition}": o.offset for t, o in offsets.items()})
        return offsets

    def _checkpoint_and_commit(self, tps: Iterable[TopicPartition]) -> None:
        offsets = self._checkpoint(tps)
        if offsets is None:
            if self._must_rewind:
                self._rewind()
            return
        if offsets and self.consumer is not None:
            try:
                self.consumer.commit(offsets)
            except KafkaError as exc:  # a replay from the previous commit, at worst
                log.warning("offset commit failed: %s", exc)

    def _rewind(self) -> None:
        """Reload every assigned partition from its last save and seek there (replay).

        Partition scope: its checkpoint; shared scope: the last offset committed here. A
        partition without one goes back to the first offset polled from it since it was
        assigned (recorded before any of its records was handled), with a fresh model. The
        producers are rebuilt: whatever they still held will be produced again by the replay.
        """
        tps = sorted(set(self.states) | set(self._start_offsets))
        log.warning("rewinding %d partition(s) to their last save", len(tps))
        self._new_producer()
        self._send_failed = self._handle_failed = False
        with self.lock:
            for tp in tps:
                state, offset = self.scope.reload(tp, self._start_offsets.get(tp))
                self.states[tp] = state
                if offset is not None:
                    self.consumer.seek(tp, offset)

    # -- rebalance callbacks (kafka-python IO thread, while the main thread is in poll/close)
    def _revoke(self, revoked: set[TopicPartition]) -> dict[TopicPartition, OffsetAndMetadata]:
        budget = self.cfg.session_timeout_ms / 2000  # the listener must not hold the group
        deadline = time.monotonic() + budget
        offsets = self._checkpoint(
            revoked, flush_timeout_s=min(self.cfg.flush_timeout_s, budget), deadline=deadline
        )
        for tp in revoked:
            self.scope.revoked(tp, self.states.pop(tp, None), offsets is not None)
            self._start_offsets.pop(tp, None)
        if not self.states:  # nothing left that could depend on the lost message
            self._send_failed = self._handle_failed = False
        log.info("revoked %s (saved: %s)", sorted(map(tuple, revoked)), offsets is not None)
        return offsets or {}

    def _lose(self, lost: set[TopicPartition]) -> None:
        self.telemetry.assigned(False)
        for tp in lost:
            self.states.pop(tp, None)
            self.scope.lost(tp)
            self._start_offsets.pop(tp, None)
        log.warning("lost %s without a save (group membership expired)", sorted(map(tuple, lost)))

    def _assign(self, assigned: set[TopicPartition]) -> None:
        with self.lock:
            self._assign_locked(assigned)

    def _assign_locked(self, assigned: set[TopicPartition]) -> None:
        for tp in sorted(assigned):
            state, source = self.scope.assign(tp)
            self.states[tp] = state
            if state.next_offset is not None:
                self.consumer.seek(tp, state.next_offset)
            log.info("assigned %s:%d at offset %s (%s)", tp.topic, tp.partition, state.next_offset, source)
        if not assigned:
            log.info("assigned no partitions (the group gave them all to other members)")
        self.scope.assigned()
        self.telemetry.partitions([tp.partition for tp in self.states])
        self.telemetry.assigned(True)

    # -- reporting -------------------------------------------------------------------------
    def _report(self) -> None:
        now = time.monotonic()
        coordinator = getattr(self.consumer, "_coordinator", None)
        known = coordinator is None or not coordinator.coordinator_unknown()
        why = (
            "group coordinator unknown"
            if not known
            else "producer flush timing out"
            if self._flush_failing
            else "a send failed: rewinding"
            if self._send_failed
            else None
        )
        self.telemetry.broker_up(why is None, why)
        if now - self._last_lag < 1.0:
            return
        self._last_lag = now
        for tp, state in list(self.states.items()):
            high = self.consumer.highwater(tp)
            if high is not None and state.next_offset is not None:
                self.telemetry.lag(tp.partition, high - state.next_offset)
