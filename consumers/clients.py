"""Kafka clients of the service: their options, their construction and the topics it creates.

Every client gets the configured bootstrap servers, client id and request timeout, plus the
``--kafka`` options that client accepts (:func:`only_known`: security settings reach all of
them). Producers are at least once without idempotence (``enable_idempotence=False``):
kafka-python 3.0's idempotent producer stops sending for good after a delivery timeout (its
producer-id reset leaves the transaction manager waiting).

The shared scope's train producer (:func:`train_producer_options`) must also never let a
record land after a later one of the same input partition was lost: it keeps one request in
flight (``max_in_flight_requests_per_connection=1``: a retried batch is resent before anything
after it) and never expires a batch (``delivery_timeout_ms`` of about 24 days: while the broker
is away ``send()`` blocks, then fails, and the service rewinds). What reaches the train topic
from one producer is therefore a prefix of what it was given, in order, which is what the
learner's exactly-once rule (highest source offset learned per input partition) needs.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer
from kafka.admin import NewTopic
from kafka.errors import (
    KafkaError,
    MessageSizeTooLargeError,
    RecordListTooLargeError,
    TopicAlreadyExistsError,
)

from consumers.config import ServiceConfig
from consumers.kafka_state import KafkaStateStore, StateUnavailableError

__all__ = [
    "CONNECT_ERRORS",
    "COORDINATOR_MARGIN_MS",
    "MESSAGE_ERRORS",
    "client_options",
    "common_options",
    "consumer_request_timeout_ms",
    "ensure_topics",
    "make_consumer",
    "only_known",
    "producer_options",
    "replace_producer",
    "train_producer_options",
]

log = logging.getLogger(__name__)

#: Added to the session timeout for the consumer's request timeout (see below).
COORDINATOR_MARGIN_MS = 5000
#: The train producer's delivery timeout: never reached in practice (see the module's text).
NEVER_EXPIRE_MS = 2**31 - 1


def only_known(options: dict[str, Any], client: type) -> dict[str, Any]:
    """The ``options`` that kafka-python's ``client`` class accepts.

    >>> only_known({"security_protocol": "SSL", "fetch_max_bytes": 1}, KafkaProducer)
    {'security_protocol': 'SSL'}
    """
    known = getattr(client, "DEFAULT_CONFIG", {})
    return {k: v for k, v in options.items() if k in known}


def consumer_request_timeout_ms(cfg: ServiceConfig) -> int:
    """The consumer's request timeout: ``request_timeout_ms``, raised to cover a SyncGroup.

    A group coordinator may legitimately hold a follower's SyncGroup until the leader's
    assignment arrives or the leader's session expires (up to ``session_timeout_ms``; Tansu
    also pauses group requests for about 3 s). kafka-python 3.0 extends only JoinGroup's
    timeout, so with a request timeout below that the follower aborts its SyncGroup, closes
    the coordinator connection and rejoins, and a group whose leader died can keep electing
    that dead leader (each rejoin starts a new generation before the dead member's session
    expires): the consumer never gets an assignment. The consumer's request timeout is
    therefore at least ``session_timeout_ms + COORDINATOR_MARGIN_MS``; the producer keeps
    ``request_timeout_ms`` as given (its delivery timeout is bounded by it).

    >>> consumer_request_timeout_ms(ServiceConfig(session_timeout_ms=6000, request_timeout_ms=2000))
    11000
    >>> consumer_request_timeout_ms(ServiceConfig(session_timeout_ms=6000, request_timeout_ms=30000))
    30000
    """
    return max(cfg.request_timeout_ms, cfg.session_timeout_ms + COORDINATOR_MARGIN_MS)


def common_options(cfg: ServiceConfig) -> dict[str, Any]:
    """Options every client of the service gets (servers, client id, request timeout)."""
    return {
        "bootstrap_servers": cfg.bootstrap_servers.split(","),
        "client_id": cfg.client_id,
        "request_timeout_ms": cfg.request_timeout_ms,
        "bootstrap_timeout_ms": min(cfg.request_timeout_ms, 10000),
    }


def producer_options(cfg: ServiceConfig) -> dict[str, Any]:
    """The output producer's options (predictions and dead letters), ``--kafka`` ones last.

    >>> options = producer_options(ServiceConfig())
    >>> options["acks"], options["enable_idempotence"]
    ('all', False)
    """
    # At least once needs no idempotent producer, and kafka-python 3.0's jams for good
    # after a delivery timeout; a user may still turn it on through cfg.kafka.
    options: dict[str, Any] = {
        "acks": "all",
        "linger_ms": 5,
        "batch_size": 256 * 1024,
        "enable_idempotence": False,
        "max_block_ms": max(cfg.request_timeout_ms, 10000),
    }
    options.update(only_known(cfg.kafka, KafkaProducer))
    return {**common_options(cfg), **options}


def train_producer_options(cfg: ServiceConfig) -> dict[str, Any]:
    """The train producer's options: :func:`producer_options` with one request in flight, no
    idempotence and no delivery timeout, whatever ``--kafka`` says (see the module's text).

    >>> options = train_producer_options(ServiceConfig(kafka={"delivery_timeout_ms": 3000}))
    >>> options["max_in_flight_requests_per_connection"], options["delivery_timeout_ms"]
    (1, 2147483647)
    """
    return {
        **producer_options(cfg),
        "max_in_flight_requests_per_connection": 1,
        "enable_idempotence": False,
        "retries": float("inf"),
        "delivery_timeout_ms": NEVER_EXPIRE_MS,
    }


def make_consumer(cfg: ServiceConfig, group_id: str, **options: Any) -> KafkaConsumer:
    """A consumer of ``group_id`` that commits only when told to; ``options`` go last.

    Its request timeout is :func:`consumer_request_timeout_ms`.
    """
    timeout = consumer_request_timeout_ms(cfg)
    return KafkaConsumer(
        **{**common_options(cfg), "request_timeout_ms": timeout},
        group_id=group_id,
        enable_auto_commit=False,
        auto_offset_reset=cfg.auto_offset_reset,
        session_timeout_ms=cfg.session_timeout_ms,
        heartbeat_interval_ms=cfg.heartbeat_interval_ms,
        max_poll_records=cfg.max_poll_records,
        **{**only_known(cfg.kafka, KafkaConsumer), **options},
    )


def client_options(cfg: ServiceConfig) -> dict[str, Any]:
    """``--kafka`` options every kind of client accepts (producer, consumer, admin), with the
    client id: what :class:`~consumers.kafka_state.KafkaStateStore` and the snapshot follower
    pass to theirs (security settings, mostly).

    >>> client_options(ServiceConfig(kafka={"security_protocol": "SSL", "linger_ms": 5}))
    {'security_protocol': 'SSL', 'client_id': 'streamdas-consumer'}
    """
    shared = only_known(only_known(only_known(cfg.kafka, KafkaProducer), KafkaConsumer), KafkaAdminClient)
    return {**shared, "client_id": cfg.client_id}


def ensure_topics(cfg: ServiceConfig) -> list[str]:
    """Create the shared scope's topics that do not exist yet; returns those created.

    The state and snapshot topics are compacted, one partition each
    (:meth:`~consumers.kafka_state.KafkaStateStore.ensure_topic`); the train topic has one
    partition (its single consumer is the learner). Raises
    :class:`~consumers.kafka_state.StateUnavailableError` or :class:`kafka.errors.KafkaError`
    when the broker cannot be reached or refuses.
    """
    names = cfg.topic_names()
    created = []
    for topic in (names.state, names.snapshots):
        with KafkaStateStore(cfg.bootstrap_servers, topic, client_options=client_options(cfg)) as store:
            if store.ensure_topic():
                created.append(topic)
    admin = KafkaAdminClient(
        bootstrap_servers=cfg.bootstrap_servers.split(","),
        request_timeout_ms=cfg.request_timeout_ms,
        **client_options(cfg),
    )
    try:
        admin.create_topics([NewTopic(names.train, 1, 1)])
        created.append(names.train)
    except TopicAlreadyExistsError:
        pass
    finally:
        admin.close()
    if created:
        log.info("created topic(s) %s", created)
    return created


#: Producer errors caused by the message itself: never a reason to rewind.
MESSAGE_ERRORS = (MessageSizeTooLargeError, RecordListTooLargeError)

#: What :func:`ensure_topics` and the client constructors may raise when the broker is away.
CONNECT_ERRORS = (KafkaError, OSError, StateUnavailableError)


def replace_producer(old: Any, factory: Callable[[], Any], what: str) -> Any:
    """Close ``old`` without waiting (what it still held is sent again by the replay) and build
    its successor with ``factory``; ``None`` while the broker cannot be reached."""
    if old is not None:
        try:
            old.close(timeout=0)
        except Exception as exc:
            log.debug("closing the old %s: %s", what, exc)
    try:
        return factory()
    except CONNECT_ERRORS as exc:
        log.warning("cannot create the %s yet (%s)", what, exc)
        return None
