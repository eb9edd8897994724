"""The learner role against a real Kafka-protocol broker (Tansu, one fresh broker per test):
election by the group, exactly-once learning across a hand-over and a crash, epoch fencing of
a deposed learner, a state of several MiB, hostile training records, snapshots followed."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from kafka_fixtures import (
    REPO,
    create_topics,
    produce,
    raw_records,
    wait_for,
)
from test_training import reference, same, stream

from consumers.broker import TansuBroker
from consumers.config import ServiceConfig
from consumers.kafka_state import KafkaStateStore, StateLog
from consumers.learner import LEARNER_NAME, Learner, learner_topics
from consumers.snapshots import SNAPSHOT_NAME, SnapshotFollower
from consumers.training import LearnerState, encode_training_record
from streamdas import DASClassifier

pytestmark = pytest.mark.integration

MiB = 1024 * 1024
SETTINGS: dict[str, Any] = {
    "topics": ["in"],
    "model_params": {"hidden_sizes": [8]},
    "session_timeout_ms": 6000,
    "heartbeat_interval_ms": 1000,
    "request_timeout_ms": 5000,
    "poll_timeout_ms": 100,
    "retry_backoff_max_s": 1.0,
    "checkpoint_every": 10_000,
    "checkpoint_interval_s": 3600.0,
    "max_poll_records": 100,
}


def config(broker: TansuBroker, group: str, **overrides: Any) -> ServiceConfig:
    settings = {**SETTINGS, "bootstrap_servers": broker.bootstrap, "group_id": group, **overrides}
    cadence = {k: settings.pop(k) for k in ("publish_every", "publish_interval_ms") if k in settings}
    cfg = ServiceConfig(**settings)
    for key, value in cadence.items():
        setattr(cfg, key, value)
    return cfg


def make_topics(cfg: ServiceConfig) -> tuple[str, str, str]:
    train, state, snapshots = learner_topics(cfg)
    create_topics(cfg.bootstrap_servers, {train: 1})
    for topic in (state, snapshots):
        with KafkaStateStore(cfg.bootstrap_servers, topic) as store:
            store.ensure_topic()
    return train, state, snapshots


class Running:
    """A Learner on its own thread (as the service runs it), counting the group's assignments.

    Tansu 0.6.0 keeps a member that leaves while the group is forming as the leader of that
    group for good (docs/service.md): a member is stopped only once the group has settled,
    every member having received its assignment."""

    def __init__(self, cfg: ServiceConfig) -> None:
        self.learner = Learner(cfg)
        self.assignments = 0
        on_assigned = self.learner._on_assigned

        def counted(assigned: Any) -> None:
            on_assigned(assigned)
            self.assignments += 1

        self.learner._on_assigned = counted  # type: ignore[method-assign]
        self.stop_event = threading.Event()
        self.thread = threading.Thread(target=self.learner.run, args=(self.stop_event,), daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.stop_event.set()
        self.thread.join(30)
        assert not self.thread.is_alive()


@pytest.fixture
def closing() -> Iterator[list[Any]]:
    """Things to stop or close before the broker stops (Tansu lingers on open clients)."""
    items: list[Any] = []
    yield items
    for item in reversed(items):
        if isinstance(item, Running):
            item.stop_event.set()
            item.thread.join(30)
        elif isinstance(item, subprocess.Popen):
            item.kill()
            item.wait(10)
        else:
            item.close()


def saved(cfg: ServiceConfig, topic: str, name: str) -> Any:
    with KafkaStateStore(cfg.bootstrap_servers, topic, timeout_s=20.0) as store:
        return store.load(name)


def head_meta(cfg: ServiceConfig, topic: str, name: str) -> dict[str, Any]:
    with KafkaStateStore(cfg.bootstrap_servers, topic, timeout_s=20.0) as store:
        head = store.head(name)
    return {} if head is None else {**head.meta, "epoch": head.epoch}


def follow_until(follower: SnapshotFollower, seen: list[Any], n_learned: int, timeout: float = 30) -> bool:
    def newest() -> bool:
        snap = follower.poll(0.2)
        if snap is not None:
            seen.append(snap)
        return bool(seen) and seen[-1].n_learned == n_learned

    return wait_for(newest, timeout, interval=0.0)


HOSTILE = [
    b"",
    b"not json",
    b'{"t":"in","p":0,"o":5,"x":{"a":1}}',
    b"[" * 50_000 + b"]" * 50_000,
    b'{"t":"elsewhere","p":0,"o":5,"x":{"a":1},"y":1}',
    b'{"t":"in","p":-4,"o":5,"x":{"a":1},"y":1}',
    b'{"t":"in","p":0,"o":5,"x":{"a":"NaN"},"y":1}',
    json.dumps({"t": "in", "p": 99, "o": 2, "x": {"a": 1.0}, "y": "L" * 100_000}).encode(),
]


def test_hand_over_learns_every_record_once_and_fences_the_deposed_learner(
    tansu: TansuBroker, closing: list[Any]
) -> None:
    """A learns a stream with replays and hostile records; B waits in the group; A stops and B
    takes over from A's state; A, acting on as a zombie, cannot publish; B learns the rest
    (with more replays). Every record is learned once and the model is bit for bit one
    learn_one loop; the snapshots a reader follows only ever move to a higher epoch."""
    cfg = config(tansu, "handover", publish_every=100)
    train, state_topic, snap_topic = make_topics(cfg)
    records = stream(800, seed=7)
    values = [encode_training_record(*r) for r in records]
    produce(cfg.bootstrap_servers, train, values[:300] + HOSTILE + values[100:200] + values[300:400])
    follower = SnapshotFollower(cfg.bootstrap_servers, snap_topic)
    closing.append(follower)
    seen: list[Any] = []

    a = Running(cfg)
    closing.append(a)
    assert wait_for(lambda: a.learner.n_learned == 400, 30)
    assert follow_until(follower, seen, 400)
    epoch_a = a.learner.epoch
    assert a.learner.is_learner and seen[-1].epoch == epoch_a
    sample = a.learner.registry.get_sample_value
    assert sample("streamdas_learner_records_total", {"outcome": "duplicate"}) == 100
    assert sample("streamdas_learner_records_total", {"outcome": "rejected"}) == len(HOSTILE)
    assert sample("streamdas_learner_rejections_total", {"reason": "label_too_long"}) == 1

    joined = a.assignments
    b = Running(cfg)
    closing.append(b)
    assert wait_for(lambda: b.assignments and a.assignments > joined, 40)  # the group settled
    a.stop()
    assert wait_for(lambda: b.learner.is_learner, 40)
    assert b.learner.epoch > epoch_a and b.learner.n_learned == 400

    zombie = a.learner  # stopped, but acting as if it still learned under its old epoch
    zombie.snapshot_store = zombie._make_store(snap_topic)
    closing.append(zombie.snapshot_store)
    zombie.state = LearnerState(DASClassifier(hidden_sizes=[8], seed=1))
    zombie.epoch, zombie.is_learner, zombie._unpublished = epoch_a, True, 1
    assert zombie._publish() is False and not zombie.is_learner
    assert head_meta(cfg, snap_topic, SNAPSHOT_NAME)["epoch"] == b.learner.epoch

    produce(cfg.bootstrap_servers, train, values[350:800] + values[:20])
    assert wait_for(lambda: b.learner.n_learned == 800, 40)
    assert follow_until(follower, seen, 800)
    epoch_b = b.learner.epoch
    b.stop()

    ranks = [s.rank for s in seen]
    assert ranks == sorted(ranks) and len(set(ranks)) == len(ranks)
    first_b = next(i for i, s in enumerate(seen) if s.epoch > epoch_a)
    assert all(s.epoch == epoch_b for s in seen[first_b:])
    final = LearnerState.from_blob(saved(cfg, state_topic, LEARNER_NAME).blob, task="classification")
    est = final.estimator
    assert final.n_learned == est.n_samples_learned + est.n_samples_buffered == 800
    assert final.n_duplicates == 100 + 50 + 20
    same(reference(records, DASClassifier(hidden_sizes=[8], seed=42)).to_state(), est.to_state())
    x = {"a": 0.5, "b": -0.25}
    assert seen[-1].estimator.predict_proba_one(x) == est.predict_proba_one(x)


LEARNER_PROCESS = """
import json, logging, os, threading
logging.basicConfig(level=logging.INFO)
from consumers.config import ServiceConfig
from consumers.learner import Learner
Learner(ServiceConfig(**json.loads(os.environ["LEARNER_CONFIG"]))).run(threading.Event())
"""


def test_a_killed_learners_successor_resumes_from_its_last_saved_state(
    tansu: TansuBroker, closing: list[Any], tmp_path: Any
) -> None:
    """The learner process is killed (SIGKILL) with records learned since its last save;
    another member takes over when the group gives up on it, resumes from the state topic and
    the source offsets in it: every record learned once, bit for bit one learn_one loop."""
    cfg = config(tansu, "crash", checkpoint_every=250, publish_every=100)
    train, state_topic, snap_topic = make_topics(cfg)
    records = stream(900, seed=8)
    values = [encode_training_record(*r) for r in records]
    produce(cfg.bootstrap_servers, train, values[:400] + values[250:300] + values[400:600])
    settings = {
        **SETTINGS,
        "checkpoint_every": 250,
        "bootstrap_servers": cfg.bootstrap_servers,
        "group_id": "crash",
    }
    env = {**os.environ, "LEARNER_CONFIG": json.dumps(settings), "PYTHONPATH": str(REPO)}
    with open(tmp_path / "learner.log", "wb") as log_file:
        process = subprocess.Popen(
            [sys.executable, "-c", LEARNER_PROCESS],
            cwd=REPO,
            env=env,
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
    closing.append(process)
    assert wait_for(lambda: head_meta(cfg, snap_topic, SNAPSHOT_NAME).get("n_learned") == 600, 40), (
        tmp_path / "learner.log"
    ).read_text()
    meta = head_meta(cfg, state_topic, LEARNER_NAME)
    assert meta["n_learned"] < 600  # learned since its last save: lost with the process
    process.send_signal(signal.SIGKILL)
    process.wait(10)

    b = Running(cfg)
    closing.append(b)
    produce(cfg.bootstrap_servers, train, values[550:900])
    assert wait_for(lambda: b.learner.n_learned == 900, 60)
    assert b.learner.epoch == meta["epoch"] + 1
    b.stop()
    final = LearnerState.from_blob(saved(cfg, state_topic, LEARNER_NAME).blob, task="classification")
    est = final.estimator
    assert final.n_learned == est.n_samples_learned + est.n_samples_buffered == 900
    same(reference(records, DASClassifier(hidden_sizes=[8], seed=42)).to_state(), est.to_state())


def test_a_state_of_several_mib_is_saved_in_chunks_and_restored(
    tansu: TansuBroker, closing: list[Any]
) -> None:
    """A model with 1,500 features and 256 units: its state and snapshots are several MiB,
    written as chunks within the broker's message limit, and a new learner restores it."""
    cfg = config(tansu, "big", model_params={"hidden_sizes": [256]}, publish_every=10)
    train, state_topic, snap_topic = make_topics(cfg)
    records = [
        ("in", 0, i, {f"f{j}": ((i * 7 + j) % 13) / 13 for j in range(1500)}, i % 3) for i in range(24)
    ]
    produce(cfg.bootstrap_servers, train, [encode_training_record(*r) for r in records])
    a = Running(cfg)
    closing.append(a)
    assert wait_for(lambda: a.learner.n_learned == 24, 60)
    a.stop()

    messages = raw_records(cfg.bootstrap_servers, state_topic)
    view = StateLog(LEARNER_NAME, keep_values=False)
    for m in messages:
        view.apply(m.offset, m.key, m.value)
    assert view.best.length > 4 * MiB and view.best.n_chunks >= 8
    assert max(len(m.value or b"") + len(m.key or b"") for m in messages) < 1_000_000

    b = Running(cfg)
    closing.append(b)
    assert wait_for(lambda: b.learner.is_learner, 40)
    assert b.learner.n_learned == 24
    same(
        reference(records, DASClassifier(hidden_sizes=[256], seed=42)).to_state(),
        b.learner.state.estimator.to_state(),
    )
    follower = SnapshotFollower(cfg.bootstrap_servers, snap_topic)
    closing.append(follower)
    snap = follower.poll(20)
    assert snap is not None and snap.epoch == b.learner.epoch and snap.n_learned == 24
    assert snap.estimator.n_features == 1500
