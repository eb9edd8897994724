"""``consumers.kafka_state.KafkaStateStore`` against a real Kafka-protocol broker (Tansu, one fresh
in-memory broker per test).

What Tansu 0.6.0 does, pinned by :func:`test_what_tansu_does_with_compaction_and_large_messages`:

* it accepts ``cleanup.policy=compact`` when the topic is created, but never compacts: every
  value of every key, tombstones included, is still read back (here after the saves; in a manual
  check also 30 s later with ``segment.ms=100``, ``min.cleanable.dirty.ratio=0.01``), and
  DescribeConfigs returns no configs for the topic;
* it does not enforce Kafka's 1 MB ``message.max.bytes``: single messages of 2 MB (here) and
  120 MB (manually) are accepted, so the binding bound is kafka-python's ``max_request_size``
  (1,048,576 by default) and the store's own ``max_message_bytes`` (1,000,000), below both;
* ListOffsets(latest) answers the last *batch's* base offset + 1 (not the high watermark), and a
  metadata or ListOffsets request for a missing topic creates it.

So no test here depends on compaction: the store must be right with and without it (the pure
tests in ``tests/test_kafka_state.py`` also play every sequence on a compacted log).
"""

from __future__ import annotations

import os
import random
import subprocess
import time
from collections.abc import Iterator
from typing import Any

import pytest
from kafka_fixtures import (
    produce,
    raw_records,
)

from consumers.broker import TansuBroker
from consumers.kafka_state import (
    DEFAULT_MAX_MESSAGE_BYTES,
    ConcurrentWriteError,
    DamagedStateError,
    KafkaStateStore,
    Manifest,
    SavePlan,
    StaleEpochError,
    StateLog,
    StateUnavailableError,
    chunk_key,
    decode_chunk,
    encode_chunk,
    manifest_key,
    message_size,
    plan_save,
)

pytestmark = pytest.mark.integration

TOPIC = "state"
MiB = 1024 * 1024


def blob(n: int, seed: int = 0) -> bytes:
    return random.Random(seed).randbytes(n)


_OPEN: list[KafkaStateStore] = []


@pytest.fixture(autouse=True)
def _close_stores(tansu: TansuBroker) -> Iterator[None]:
    """Close every store of the test before its broker stops (Tansu lingers on open clients)."""
    yield
    while _OPEN:
        _OPEN.pop().close()


class Tracked(KafkaStateStore):
    """A store closed at the end of the test."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        _OPEN.append(self)


def store(broker: TansuBroker, **kwargs: Any) -> KafkaStateStore:
    return Tracked(broker.bootstrap, TOPIC, **{"timeout_s": 20.0, **kwargs})


class Hooked(Tracked):
    """A store that calls ``hook(plan)`` after its chunks are acknowledged, before it checks
    for other writers, and ``before_manifest()`` right before it sends its manifest."""

    def __init__(self, *args: Any, hook: Any = None, before_manifest: Any = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.hook = hook
        self.before_manifest = before_manifest

    def _check_alone(self, view: StateLog, plan: SavePlan, *args: Any) -> int:
        if self.hook is not None:
            self.hook(plan)
        return super()._check_alone(view, plan, *args)

    def _send(self, records: Any, deadline: float) -> list[int]:
        records = list(records)
        if self.before_manifest is not None and records and records[0][0].endswith(b"/manifest"):
            self.before_manifest()
        return super()._send(records, deadline)


def freeze(broker: TansuBroker, timeout: float = 10.0) -> None:
    """``broker.pause()`` and wait until every thread of it is stopped.

    SIGSTOP stops a multi-threaded process only once the thread it was delivered to runs; on a
    loaded machine the broker's other threads can still answer a request or two meanwhile (seen
    here: a manifest sent right after ``pause()`` was acknowledged), so wait for state ``T``.
    """
    broker.pause()
    assert broker.process is not None
    tasks = f"/proc/{broker.process.pid}/task"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        states = []
        for task in os.listdir(tasks):
            try:
                with open(f"{tasks}/{task}/stat") as f:
                    states.append(f.read().rsplit(")", 1)[1].split()[0])
            except OSError:  # a thread that just ended
                continue
        if states and all(state in "Tt" for state in states):
            return
        time.sleep(0.001)
    raise AssertionError(f"tansu did not stop within {timeout} s")


class Crash(Exception):
    """The writer dies between its chunks and its manifest."""


def test_round_trip_of_a_6_mib_state_and_every_message_under_the_bound(tansu: TansuBroker):
    s = store(tansu)
    assert s.ensure_topic() is True
    assert s.ensure_topic() is False  # already there: fine
    assert s.load("learner") is None  # the empty topic
    assert s.latest_epoch("learner") is None
    data = blob(6 * MiB, seed=1)
    meta = {"offsets": {"in:0": 1234, "in:1": 99}, "format": "torch"}
    assert s.save("learner", data, epoch=1, meta=meta) == 1
    reader = store(tansu)  # a fresh process: no cached view
    state = reader.load("learner")
    assert (state.blob == data, state.epoch, state.version, state.meta) == (True, 1, 1, meta)
    assert reader.latest_epoch("learner") == 1
    assert reader.head("learner").version == 1
    records = raw_records(tansu.bootstrap, TOPIC)
    assert len(records) == 12 + 1  # 6 MiB in 512 KiB chunks, then the manifest
    assert records[-1].key == manifest_key("learner")
    sizes = [message_size(r.key, r.value) for r in records]
    assert max(sizes) <= DEFAULT_MAX_MESSAGE_BYTES < 1_048_576


def test_many_versions_in_a_row_and_a_new_writer_continues(tansu: TansuBroker):
    s = store(tansu, chunk_bytes=64 * 1024)
    s.ensure_topic()
    reader = store(tansu)
    rng = random.Random(3)
    for v in range(1, 16):
        data = blob(rng.choice([0, 10, 64 * 1024, 200_000, 400_000]), seed=v)
        assert s.save("learner", data, epoch=1, meta={"v": v}) == v
        if v % 3 == 0:
            state = reader.load("learner")
            assert (state.version, state.blob, state.meta) == (v, data, {"v": v})
    s.save("other", b"another name, same topic", epoch=0)
    successor = store(tansu)
    epoch = successor.latest_epoch("learner") + 1
    assert successor.save("learner", b"next", epoch=epoch) == 16
    assert reader.load("learner").blob == b"next"
    assert reader.load("other").blob == b"another name, same topic"


def test_a_crash_before_the_manifest_leaves_the_previous_version(tansu: TansuBroker):
    s = store(tansu, chunk_bytes=100_000)
    s.ensure_topic()
    s.save("learner", blob(250_000, 1), epoch=1)
    s.save("learner", blob(250_000, 2), epoch=1)

    def crash(plan: SavePlan) -> None:
        raise Crash

    crashing = Hooked(tansu.bootstrap, TOPIC, chunk_bytes=100_000, timeout_s=20.0, hook=crash)
    with pytest.raises(Crash):
        crashing.save("learner", blob(900_000, 3), epoch=1)  # 9 chunks land in slot 0
    state = store(tansu).load("learner")
    assert (state.version, state.blob) == (2, blob(250_000, 2))
    # the next writer reuses that slot and tombstones the crashed write's extra chunks
    before = len(raw_records(tansu.bootstrap, TOPIC))
    assert store(tansu, chunk_bytes=100_000).save("learner", blob(150_000, 4), epoch=1) == 3
    tail = raw_records(tansu.bootstrap, TOPIC)[before:]
    assert {r.key for r in tail if r.value is None} == {chunk_key("learner", 0, i) for i in range(2, 9)}
    assert store(tansu).load("learner").blob == blob(150_000, 4)


def test_a_longer_state_then_a_shorter_one(tansu: TansuBroker):
    s = store(tansu, chunk_bytes=256 * 1024)
    s.ensure_topic()
    s.save("learner", blob(3 * MiB, 1), epoch=1)  # slot 0: 12 chunks
    s.save("learner", blob(100, 2), epoch=1)  # slot 1
    s.save("learner", blob(300_000, 3), epoch=1)  # slot 0: 2 chunks, 10 tombstones
    assert store(tansu).load("learner").blob == blob(300_000, 3)
    tombstones = {r.key for r in raw_records(tansu.bootstrap, TOPIC) if r.value is None}
    assert tombstones == {chunk_key("learner", 0, i) for i in range(2, 12)}


def test_a_corrupted_chunk_gives_the_previous_version_never_a_wrong_blob(tansu: TansuBroker):
    s = store(tansu, chunk_bytes=100_000)
    s.ensure_topic()
    s.save("learner", blob(250_000, 1), epoch=1, meta={"v": 1})
    s.save("learner", blob(250_000, 2), epoch=1, meta={"v": 2})  # slot 1
    newest = store(tansu).head("learner")
    key = chunk_key("learner", newest.slot, 1)
    value = next(r.value for r in reversed(raw_records(tansu.bootstrap, TOPIC)) if r.key == key)
    flipped = bytearray(value)
    flipped[5000] ^= 0x01  # one bit, as a broken disk would
    produce(tansu.bootstrap, TOPIC, [bytes(flipped)], keys=[key])
    with pytest.raises(DamagedStateError, match=r"version 2 .*chunk 1 .*CRC-32.*version 1") as info:
        store(tansu).load("learner")
    assert info.value.version == 2
    previous = info.value.previous
    assert (previous.version, previous.blob, previous.meta) == (1, blob(250_000, 1), {"v": 1})
    # a chunk rewritten with a valid header and CRC but other bytes: the SHA-256 catches it
    header, payload = decode_chunk(value)
    changed = bytearray(payload)
    changed[1000] ^= 0xFF
    produce(
        tansu.bootstrap,
        TOPIC,
        [encode_chunk(header.token, header.version, 1, header.n_chunks, bytes(changed))],
        keys=[key],
    )
    with pytest.raises(DamagedStateError, match=r"version 2 fails its SHA-256") as info:
        store(tansu).load("learner")
    assert info.value.previous.blob == blob(250_000, 1)
    # a garbage manifest on top: still damaged, the last good version still offered
    produce(tansu.bootstrap, TOPIC, [b"\x00garbage"], keys=[manifest_key("learner")])
    with pytest.raises(DamagedStateError, match="unreadable") as info:
        store(tansu).load("learner")
    assert info.value.previous.blob == blob(250_000, 1)
    # a new save repairs it
    s.save("learner", blob(10, 3), epoch=1)
    assert store(tansu).load("learner").blob == blob(10, 3)


def test_a_lower_epoch_save_after_a_higher_one_is_refused_and_never_loaded(tansu: TansuBroker):
    old = store(tansu)
    old.ensure_topic()
    old.save("learner", b"old v1", epoch=1)
    new = store(tansu)
    assert new.latest_epoch("learner") == 1
    assert new.save("learner", b"new v2", epoch=2) == 2
    end = len(raw_records(tansu.bootstrap, TOPIC))
    with pytest.raises(StaleEpochError, match="epoch 1 is below"):
        old.save("learner", b"old v3", epoch=1)
    assert len(raw_records(tansu.bootstrap, TOPIC)) == end  # nothing written
    # a zombie that never saw epoch 2 (the race window): its write is ignored by readers
    stale_view = StateLog("learner", keep_values=False)
    for r in raw_records(tansu.bootstrap, TOPIC)[:2]:  # v1's chunk and manifest
        stale_view.apply(r.offset, r.key, r.value)
    new.save("learner", b"new v3", epoch=2)  # slot 0, so the zombie's slot-1 write spares it
    plan = plan_save(stale_view, b"zombie", epoch=1, meta=None, chunk_bytes=1000, token=os.urandom(16))
    produce(
        tansu.bootstrap,
        TOPIC,
        [v for _, v in plan.records] + [plan.manifest.encode()],
        keys=[k for k, _ in plan.records] + [manifest_key("learner")],
    )
    state = store(tansu).load("learner")
    assert (state.epoch, state.version, state.blob) == (2, 3, b"new v3")


def test_a_writer_superseded_during_its_save_does_not_publish(tansu: TansuBroker):
    old = Hooked(tansu.bootstrap, TOPIC, timeout_s=20.0)
    old.ensure_topic()
    old.save("learner", b"v1", epoch=1)
    new = store(tansu)
    new.load("learner")
    old.hook = lambda plan: new.save("learner", b"new", epoch=2)  # lands during old's upload
    with pytest.raises(StaleEpochError, match="epoch 2 saved version 2 during this save"):
        old.save("learner", b"old", epoch=1)
    # the same epoch from another writer during the upload: a conflict, not published
    twin = store(tansu)
    twin.load("learner")
    new_hooked = Hooked(
        tansu.bootstrap, TOPIC, timeout_s=20.0, hook=lambda plan: twin.save("learner", b"twin", epoch=2)
    )
    with pytest.raises(ConcurrentWriteError):
        new_hooked.save("learner", b"mine", epoch=2)
    state = store(tansu).load("learner")
    assert (state.version, state.blob) == (3, b"twin")


def test_a_broker_that_goes_away_is_a_clear_error_and_nothing_is_lost(tansu: TansuBroker):
    s = Hooked(tansu.bootstrap, TOPIC, timeout_s=2.0)
    s.ensure_topic()
    s.save("learner", b"v1", epoch=1)
    freeze(tansu)
    try:
        with pytest.raises(StateUnavailableError):
            s.save("learner", b"v2", epoch=1)
        with pytest.raises(StateUnavailableError):
            s.load("learner")
    finally:
        tansu.resume()
    s.hook = lambda plan: freeze(tansu)  # the broker freezes between chunks and manifest
    try:
        with pytest.raises(StateUnavailableError) as info:
            s.save("learner", b"v3", epoch=1)
        assert info.value.__cause__ is not None  # the kafka-python error, chained
    finally:
        tansu.resume()
        s.hook = None
    assert store(tansu).load("learner").blob == b"v1"  # v3 has no manifest
    s.before_manifest = lambda: freeze(tansu)  # ... and while the manifest is in flight
    try:
        with pytest.raises(StateUnavailableError, match="not acknowledged"):
            s.save("learner", b"v4", epoch=1)
    finally:
        tansu.resume()
        s.before_manifest = None
    # unacknowledged is not lost: the manifest may still land (it was on the wire); either way
    # a reader gets a complete version, and the next save goes on from whatever is there
    assert store(tansu).load("learner").blob in {b"v1", b"v4"}
    version = s.save("learner", b"v5", epoch=1)
    state = store(tansu).load("learner")
    assert (state.version, state.blob) == (version, b"v5")


def test_a_missing_topic_is_an_error_not_an_empty_state(tansu: TansuBroker):
    s = Tracked(tansu.bootstrap, "never-created", timeout_s=1.0)
    with pytest.raises(StateUnavailableError, match="does not exist"):
        s.load("learner")


def test_what_tansu_does_with_compaction_and_large_messages(tansu: TansuBroker, tansu_binary: str):
    """Pins Tansu's behaviour that the docs above state; revisit them if this fails."""
    from kafka import KafkaAdminClient, KafkaProducer
    from kafka.admin import ConfigResource, ConfigResourceType

    version = subprocess.run([tansu_binary, "--version"], capture_output=True, text=True).stdout
    if "0.6.0" not in version:
        pytest.skip(f"documents tansu 0.6.0, found {version.strip()}")
    s = store(tansu, chunk_bytes=1000)
    s.ensure_topic({"segment.ms": "100", "min.cleanable.dirty.ratio": "0.01"})
    for v in range(5):
        s.save("learner", blob(5000 - 1000 * v, v), epoch=1)
    admin = KafkaAdminClient(bootstrap_servers=tansu.bootstrap)
    try:
        configs = admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, TOPIC)])
    finally:
        admin.close()
    assert configs == {"topic": {TOPIC: {}}}  # nothing reported
    records = raw_records(tansu.bootstrap, TOPIC)
    manifests = [r for r in records if r.key == manifest_key("learner")]
    assert len(manifests) == 5  # not compacted: every manifest value is still there
    assert [Manifest.decode(r.value, "learner", max_state_bytes=MiB).version for r in manifests] == [
        1,
        2,
        3,
        4,
        5,
    ]
    assert any(r.value is None for r in records)
    producer = KafkaProducer(bootstrap_servers=tansu.bootstrap, max_request_size=4 * MiB, acks="all")
    try:
        metadata = producer.send(TOPIC, key=b"big", value=bytes(2 * MiB), partition=0).get(timeout=20)
    finally:
        producer.close()
    assert metadata.offset == len(records)  # 2 MiB in one message: above Kafka's 1 MB default
    assert s.load("learner").version == 5  # foreign keys are ignored
