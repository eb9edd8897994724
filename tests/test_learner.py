"""The learner role (consumers.learner) against in-memory topics and a scripted group: taking
over, exactly-once learning across restarts, publishing, saving, revocation, deposition and
epoch claims. The same against a real broker: tests/test_learner_kafka.py."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from typing import Any, NamedTuple

import pytest
from test_training import reference, same, stream

from consumers.config import ServiceConfig
from consumers.kafka_state import (
    ConcurrentWriteError,
    KafkaStateStore,
    StaleEpochError,
    StateLog,
    StateUnavailableError,
)
from consumers.learner import LEARNER_NAME, Learner, learner_topics, store_options
from consumers.snapshots import SNAPSHOT_NAME, decode_snapshot
from consumers.training import LearnerState, encode_training_record
from streamdas import DASClassifier

Log = list[tuple[bytes | None, bytes | None]]


class MemoryStore(KafkaStateStore):
    """A KafkaStateStore whose partition is a list: the store's own logic, no broker.

    ``before_send(records)`` runs before each batch of records is appended (to interleave
    another writer, or to fail like an unreachable broker)."""

    def __init__(self, log: Log, before_send: Callable[[list[Any]], None] | None = None) -> None:
        super().__init__("memory:1", "mem", timeout_s=5.0)
        self.log = log
        self.before_send = before_send
        self.loads = 0

    def _end_offset(self, deadline: float) -> int:
        return len(self.log)

    def _read(
        self,
        start: int | None,
        stop: int | None,
        deadline: float,
        on_record: Callable[[int, bytes | None, bytes | None], None],
    ) -> int:
        position = 0 if start is None else start
        end = len(self.log) if stop is None else stop
        for offset in range(position, end):
            on_record(offset, *self.log[offset])
        return max(position, end)

    def _send(self, records: Any, deadline: float) -> list[int]:
        records = list(records)
        if self.before_send is not None:
            self.before_send(records)
        offsets = []
        for key, value in records:
            self.log.append((key, value))
            offsets.append(len(self.log) - 1)
        return offsets

    def load(self, name: str) -> Any:
        self.loads += 1
        return super().load(name)


class Message(NamedTuple):
    offset: int
    value: bytes


class Group:
    """A scripted consumer group on a one-partition training topic: the test decides who holds
    the partition; each member's consumer runs the rebalance listener at its next poll."""

    def __init__(self) -> None:
        self.train: list[bytes] = []

    def produce(self, values: list[bytes]) -> None:
        self.train += values


class ScriptedConsumer:
    def __init__(self, group: Group, max_records: int = 50) -> None:
        self.group = group
        self.max_records = max_records
        self.listener: Any = None
        self.assigned = False
        self.events: list[str] = []
        self.pos = 0
        self.tp: Any = None

    def subscribe(self, topics: list[str], listener: Any) -> None:
        self.listener = listener

    def assign(self) -> None:
        self.events.append("assign")

    def revoke(self) -> None:
        self.events.append("revoke")

    def _run_events(self) -> None:
        from kafka import TopicPartition

        tp = TopicPartition(self.listener.learner.train_topic, 0)
        while self.events:
            event = self.events.pop(0)
            if event == "assign":
                self.assigned = True
                self.pos = 0
                asyncio.run(self.listener.on_partitions_assigned({tp}))
            elif self.assigned:
                asyncio.run(self.listener.on_partitions_revoked({tp}))
                self.assigned = False

    def poll(self, timeout_ms: int = 0, max_records: int | None = None) -> dict[Any, list[Message]]:
        self._run_events()
        if not self.assigned:
            return {}
        from kafka import TopicPartition

        tp = TopicPartition(self.listener.learner.train_topic, 0)
        end = min(len(self.group.train), self.pos + self.max_records)
        out = [Message(i, self.group.train[i]) for i in range(self.pos, end)]
        self.pos = end
        return {tp: out} if out else {}

    def seek(self, tp: Any, offset: int) -> None:
        self.pos = offset

    def seek_to_beginning(self, tp: Any) -> None:
        self.pos = 0

    def close(self, autocommit: bool = False, timeout_ms: int | None = None) -> None:
        self.revoke()
        self._run_events()


class MemoryLearner(Learner):
    """A Learner on in-memory topics (``logs``: topic -> log) in a scripted group."""

    def __init__(
        self,
        cfg: ServiceConfig,
        logs: dict[str, Log],
        group: Group,
        hooks: dict[str, Callable[[list[Any]], None]] | None = None,
    ) -> None:
        super().__init__(cfg)
        self.logs, self.group, self.hooks = logs, group, hooks or {}
        self.stores: dict[str, MemoryStore] = {}

    def _make_store(self, topic: str) -> MemoryStore:
        store = MemoryStore(self.logs.setdefault(topic, []), self.hooks.get(topic))
        self.stores[topic] = store
        return store

    def _make_consumer(self) -> ScriptedConsumer:
        return ScriptedConsumer(self.group)

    def turns(self, n: int = 1) -> None:
        if self.consumer is None:
            self._connect()
        for _ in range(n):
            self._turn()


def config(**overrides: Any) -> ServiceConfig:
    settings: dict[str, Any] = {
        "group_id": "g",
        "topics": ["in"],
        "model_params": {"hidden_sizes": [8]},
        "checkpoint_every": 200,
        "checkpoint_interval_s": 3600.0,
        "session_timeout_ms": 6000,
        "heartbeat_interval_ms": 1000,
        "retry_backoff_max_s": 0.2,
        "poll_timeout_ms": 0,
    }
    settings.update(overrides)
    cfg = ServiceConfig(**{k: v for k, v in settings.items() if k in ServiceConfig.__dataclass_fields__})
    for key in ("publish_every", "publish_interval_ms"):  # whether or not the config has them yet
        if key in settings:
            setattr(cfg, key, settings[key])
    return cfg


def stored(logs: dict[str, Log], topic: str, name: str) -> Any:
    return MemoryStore(logs.setdefault(topic, [])).load(name)


def manifests(log: Log, name: str) -> list[tuple[int, int]]:
    """(epoch, version) of every manifest of ``name``, in log order."""
    view = StateLog(name, keep_values=False)
    out = []
    for offset, (key, value) in enumerate(log):
        before = dict(view._manifests)
        view.apply(offset, key, value)
        out += [(m.epoch, m.version) for o, m in view._manifests.items() if o not in before]
    return out


def values_of(records: list[Any]) -> list[bytes]:
    return [encode_training_record(*r) for r in records]


TRAIN, STATE, SNAPS = learner_topics(config())
REF_SEED = 42


# ---------------------------------------------------------------------------------- taking over
def test_topics_and_client_options_follow_the_configuration() -> None:
    assert (TRAIN, STATE, SNAPS) == ("g.train", "g.state", "g.snapshots")
    cfg = config(kafka={"security_protocol": "SSL", "max_request_size": 5, "fetch_min_bytes": 2})
    assert store_options(cfg) == {"security_protocol": "SSL", "client_id": cfg.client_id}


def test_the_elected_member_claims_an_epoch_publishes_at_once_and_learns_from_the_start() -> None:
    logs: dict[str, Log] = {}
    group = Group()
    group.produce(values_of(stream(120)))
    learner = MemoryLearner(config(publish_every=50), logs, group)
    learner.turns(1)
    assert not learner.is_learner  # not assigned yet: waits
    learner.consumer.assign()
    learner.turns(1)
    assert learner.is_learner and learner.epoch == 0
    assert manifests(logs[STATE], LEARNER_NAME) == [(0, 1)]
    assert manifests(logs[SNAPS], SNAPSHOT_NAME) == [(0, 1)]  # published at once, before learning
    learner.turns(5)
    assert learner.n_learned == 120
    assert [v for _, v in manifests(logs[SNAPS], SNAPSHOT_NAME)] == [1, 2, 3]  # every 50 records
    snap = stored(logs, SNAPS, SNAPSHOT_NAME)
    assert decode_snapshot(snap.blob, epoch=snap.epoch, version=snap.version).n_learned == 100
    assert learner.registry.get_sample_value("streamdas_learner_epoch") == 0.0  # -1: not the learner
    assert learner.registry.get_sample_value("streamdas_learner_records_total", {"outcome": "learned"}) == 120


def test_a_poll_larger_than_publish_every_is_published_in_chunks() -> None:
    """Snapshots keep their cadence when one poll brings many publication periods' records."""
    logs: dict[str, Log] = {}
    group = Group()
    group.produce(values_of(stream(200)))
    learner = MemoryLearner(config(publish_every=40), logs, group)
    learner.turns(1)
    learner.consumer.max_records = 200
    learner.consumer.assign()
    learner.turns(1)  # claims and publishes version 1
    learner.turns(1)  # one poll of 200 records
    assert learner.n_learned == 200
    assert [v for _, v in manifests(logs[SNAPS], SNAPSHOT_NAME)] == [1, 2, 3, 4, 5, 6]
    assert stored(logs, SNAPS, SNAPSHOT_NAME).meta["n_learned"] == 200


def test_snapshots_follow_the_interval_when_records_are_few() -> None:
    logs: dict[str, Log] = {}
    group = Group()
    learner = MemoryLearner(config(publish_every=1000, publish_interval_ms=50), logs, group)
    learner.turns(1)
    learner.consumer.assign()
    learner.turns(2)
    group.produce(values_of(stream(3)))
    learner.turns(1)
    assert len(manifests(logs[SNAPS], SNAPSHOT_NAME)) == 1
    time.sleep(0.06)
    learner.turns(1)
    assert len(manifests(logs[SNAPS], SNAPSHOT_NAME)) == 2
    learner.turns(3)  # nothing new learned: nothing published
    assert len(manifests(logs[SNAPS], SNAPSHOT_NAME)) == 2


def test_a_restart_resumes_from_the_saved_state_and_learns_each_record_once() -> None:
    """Learner A saves every 200 records and stops without saving (killed); B takes over from
    A's last saved state, reads the training topic again from its position, where replays
    of earlier pieces are mixed in: every record learned once, the model bit for bit one
    learn_one loop."""
    records = stream(900, seed=4)
    values = values_of(records)
    logs: dict[str, Log] = {}
    group = Group()
    group.produce(values[:500] + values[100:250] + values[500:600])
    a = MemoryLearner(config(), logs, group)
    a.turns(1)
    a.consumer.assign()
    a.turns(30)
    assert a.n_learned == 600
    saved = stored(logs, STATE, LEARNER_NAME)
    assert saved.meta["n_learned"] < 600  # A's last save is behind: the rest is read again
    group.produce(values[550:900] + values[:50])
    b = MemoryLearner(config(), logs, group)
    b.turns(1)
    b.consumer.assign()
    b.turns(40)
    assert b.is_learner and b.epoch == 1
    est = b.state.estimator
    assert b.n_learned == est.n_samples_learned + est.n_samples_buffered == 900
    same(reference(records, DASClassifier(hidden_sizes=[8], seed=REF_SEED)).to_state(), est.to_state())


def test_revocation_saves_and_a_quick_return_reuses_the_state_in_memory() -> None:
    logs: dict[str, Log] = {}
    group = Group()
    group.produce(values_of(stream(70)))
    learner = MemoryLearner(config(), logs, group)
    learner.turns(1)
    learner.consumer.assign()
    learner.turns(4)
    assert learner._dirty == 70
    learner.consumer.revoke()
    learner.turns(1)
    assert not learner.is_learner and stored(logs, STATE, LEARNER_NAME).meta["n_learned"] == 70
    loads = learner.stores[STATE].loads
    learner.consumer.assign()
    learner.turns(2)
    assert learner.is_learner and learner.epoch == 1 and learner.stores[STATE].loads == loads
    assert learner.n_learned == 70


# ---------------------------------------------------------------------------------- fencing
def test_a_deposed_learner_stops_and_its_snapshot_is_refused_after_the_successors() -> None:
    """A zombie: A (epoch 0) still thinks it learns when B has taken over (epoch 1); A's next
    snapshot and save are refused before anything is written, and A stops learning."""
    logs: dict[str, Log] = {}
    group = Group()
    group.produce(values_of(stream(60)))
    a = MemoryLearner(config(publish_every=10), logs, group)
    a.turns(1)
    a.consumer.assign()
    a.turns(1)
    b = MemoryLearner(config(publish_every=10), logs, group)
    b.turns(1)
    b.consumer.assign()
    b.turns(2)
    assert a.is_learner and a.epoch == 0 and b.is_learner and b.epoch == 1
    before = manifests(logs[SNAPS], SNAPSHOT_NAME)
    a.turns(1)  # A learns 50 records and tries to publish
    assert not a.is_learner and a.epoch is None and a.state is None
    assert manifests(logs[SNAPS], SNAPSHOT_NAME) == before and max(before) == (1, before[-1][1])
    assert a.registry.get_sample_value("streamdas_learner_state_errors_total", {"operation": "publish"}) == 1
    a.consumer.revoke()  # the group tells A at its next poll
    group.produce(values_of(stream(30, seed=9)))
    a.turns(3)
    assert not a.is_learner and manifests(logs[STATE], LEARNER_NAME)[-1][0] == 1


def test_two_claims_of_the_same_epoch_the_first_in_the_log_wins() -> None:
    """B computes the same epoch as A and its manifest lands between A's checks and A's
    manifest: B owns the epoch, A's claim fails (and A does not publish)."""
    logs: dict[str, Log] = {}
    group = Group()
    b = MemoryLearner(config(), logs, group)
    b.turns(1)
    b.consumer.assign()
    fired = []

    def b_claims_first(records: list[Any]) -> None:
        if not fired and len(records) == 1 and records[0][0] == b"learner/manifest":
            fired.append(True)
            b.turns(1)  # B read the log before A's manifest: the same epoch

    a = MemoryLearner(config(), logs, group, hooks={STATE: b_claims_first})
    a.turns(1)
    a.consumer.assign()
    a.turns(1)
    assert fired and b.is_learner and b.epoch == 0
    assert not a.is_learner
    assert manifests(logs[STATE], LEARNER_NAME) == [(0, 1), (0, 1)]  # B's, then A's (its chunks overwritten)
    assert [e for e, _ in manifests(logs[SNAPS], SNAPSHOT_NAME)] == [0]  # B's only
    assert a.registry.get_sample_value("streamdas_learner_state_errors_total", {"operation": "claim"}) == 1
    time.sleep(0.6)
    a.turns(1)  # A still holds the partition (as far as it knows): it claims again, a new epoch
    assert a.is_learner and a.epoch == 1


def test_claim_takes_an_epoch_above_both_topics_and_refuses_a_lost_race() -> None:
    log: Log = []
    store = MemoryStore(log)
    assert store.claim("x", b"a", min_epoch=5) == (5, 1)
    assert store.claim("x", b"b") == (6, 2)
    other = MemoryStore(log)
    assert other.claim("x", b"c", min_epoch=2) == (7, 3)
    with pytest.raises(StaleEpochError):
        store.save("x", b"d", epoch=6)

    def meanwhile(records: list[Any]) -> None:  # another writer's manifest of the same epoch lands first
        if records == [(b"x/manifest", records[0][1])]:
            other.save("x", b"e", epoch=8)

    late = MemoryStore(log, before_send=meanwhile)
    with pytest.raises(ConcurrentWriteError, match="epoch 8 was claimed first"):
        late.claim("x", b"f")
    assert store.claim("x", b"g") == (9, 5)


# ---------------------------------------------------------------------------------- failures
def test_hostile_training_records_are_counted_and_never_stop_the_learner() -> None:
    logs: dict[str, Log] = {}
    group = Group()
    good = values_of(stream(40))
    hostile = [
        b"",
        b"\xff",
        b"[1]",
        b'{"t":"in","p":0,"o":1}',
        b'{"t":"other","p":0,"o":1,"x":{"a":1},"y":1}',
        b"{" * 5000,
        b'{"t":"in","p":0,"o":9,"x":{"a":1e999},"y":1}',
        b"1" * 3_000_000,
    ]
    group.produce([v for pair in zip(good, hostile * 5, strict=True) for v in pair])
    learner = MemoryLearner(config(), logs, group)
    learner.turns(1)
    learner.consumer.assign()
    learner.turns(5)
    assert learner.n_learned == 40
    sample = learner.registry.get_sample_value
    assert sample("streamdas_learner_records_total", {"outcome": "rejected"}) == 40
    assert sample("streamdas_learner_rejections_total", {"reason": "oversized"}) == 5


def test_an_unreachable_state_topic_delays_saving_and_taking_over_without_losing_anything() -> None:
    logs: dict[str, Log] = {}
    group = Group()
    group.produce(values_of(stream(300)))
    down = [True]

    def broker(records: list[Any]) -> None:
        if down[0]:
            raise StateUnavailableError("broker away")

    learner = MemoryLearner(config(), logs, group, hooks={STATE: broker})
    learner.turns(1)
    learner.consumer.assign()
    learner.turns(1)
    assert not learner.is_learner and learner._claim_at > time.monotonic()
    down[0] = False
    learner._claim_at = 0.0
    learner.turns(1)
    assert learner.is_learner
    down[0] = True
    learner.turns(8)  # saving fails after 200 records: learning goes on, saving waits a backoff
    assert learner.is_learner and learner.n_learned == 300 and learner._dirty == 300
    errors = learner.registry.get_sample_value
    assert errors("streamdas_learner_state_errors_total", {"operation": "checkpoint"}) == 1
    down[0] = False
    learner.turns(1)
    assert learner._dirty == 300  # not before the backoff
    time.sleep(0.6)
    learner.turns(1)
    assert learner._dirty == 0 and stored(logs, STATE, LEARNER_NAME).meta["n_learned"] == 300


def test_run_saves_on_stop_and_an_unexpected_failure_restarts_from_the_saved_state() -> None:
    logs: dict[str, Log] = {}
    group = Group()
    group.produce(values_of(stream(100)))
    learner = MemoryLearner(config(), logs, group)
    broken = [True]
    learn = LearnerState.learn

    def fails_once(self: LearnerState, messages: Any) -> Any:
        if broken[0]:
            broken[0] = False
            raise RuntimeError("a bug")
        return learn(self, messages)

    stop = threading.Event()
    original_connect = learner._connect

    def connect() -> None:
        original_connect()
        learner.consumer.assign()

    learner._connect = connect  # type: ignore[method-assign]
    LearnerState.learn = fails_once  # type: ignore[method-assign]
    try:
        thread = threading.Thread(target=learner.run, args=(stop,))
        thread.start()
        deadline = time.monotonic() + 20
        while learner.n_learned < 100 and time.monotonic() < deadline:
            time.sleep(0.05)
        stop.set()
        thread.join(20)
    finally:
        LearnerState.learn = learn  # type: ignore[method-assign]
    assert not thread.is_alive() and not broken[0]
    assert stored(logs, STATE, LEARNER_NAME).meta["n_learned"] == 100
    assert [e for e, _ in manifests(logs[STATE], LEARNER_NAME)][-1] == 1  # taken over again after the failure
