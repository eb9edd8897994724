"""The shared scope's predictor loop, driven with the in-memory Kafka stand-ins of
``test_consumer_service.py``: predictions from the newest snapshot, labelled records forwarded to
the train topic in order with their source, the position committed to Kafka after the flush (no
folder), rewinds to the last commit, the learner and snapshot threads, the metrics."""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from kafka.errors import KafkaTimeoutError
from test_consumer_service import TP, FakeConsumer, FakeProducer, Message, _messages

from consumers.config import ServiceConfig
from consumers.model import ModelSpec, make_estimator
from consumers.predictor import SharedScope, SnapshotSlot
from consumers.service import KafkaService

TP1 = type(TP)("in", 1)


@pytest.fixture(autouse=True)
def _training_codec(monkeypatch: pytest.MonkeyPatch) -> None:
    """consumers.training's encoder, stood in for by the contract's JSON until it exists."""
    try:
        import consumers.training  # noqa: F401
    except ImportError:
        import sys
        import types

        stub = types.ModuleType("consumers.training")
        stub.encode_training_record = lambda t, p, o, x, y: json.dumps(  # type: ignore[attr-defined]
            {"t": t, "p": p, "o": o, "x": x, "y": y}
        ).encode()
        monkeypatch.setitem(sys.modules, "consumers.training", stub)


@dataclass
class Snap:
    """A snapshot as :class:`consumers.snapshots.Snapshot` describes one."""

    estimator: Any
    epoch: int
    version: int
    n_learned: int
    published_at: float


class Learner:
    """Stands for :class:`consumers.learner.Learner`: elected at once, runs until stopped;
    with ``fail``, its first run raises."""

    def __init__(self, fail: bool = False) -> None:
        self.is_learner, self.epoch, self.n_learned = True, 1, 42
        self.fail = fail
        self.runs = 0

    def run(self, stop: threading.Event) -> None:
        self.runs += 1
        if self.fail and self.runs == 1:
            raise RuntimeError("learner bug")
        stop.wait()


def _trained(n: int = 200) -> Any:
    est = make_estimator(ModelSpec(kind="linear"))
    for o in range(n):
        est.learn_one({"a": o % 5, "b": 1.0}, int(o % 5 > 2))
    return est


def _service(tmp_path: Path, **overrides: Any) -> KafkaService:
    settings: dict[str, Any] = {
        "checkpoint_every": 10,
        "model": "linear",
        "group_id": "g",
        "checkpoint_dir": str(tmp_path / "ckpt"),
    }
    settings.update(overrides)
    service = KafkaService(ServiceConfig(**settings), learner_factory=Learner, producer_factory=FakeProducer)
    service.consumer, service.producer = FakeConsumer(), FakeProducer()
    service.producer_factory = FakeProducer
    service.scope.producer = FakeProducer()
    return service


def _train(service: KafkaService) -> list[dict[str, Any]]:
    return [json.loads(v) for t, v in service.scope.producer.sent if t == "g.train"]


def _predictions(service: KafkaService) -> list[dict[str, Any]]:
    return [json.loads(v) for t, v in service.producer.sent if t == "streamdas-predictions"]


def test_scope_is_shared_by_default_and_needs_no_folder(tmp_path: Path) -> None:
    service = _service(tmp_path)
    assert isinstance(service.scope, SharedScope)
    assert service.cfg.topic_names() == ("g.train", "g.state", "g.snapshots")
    service._assign({TP})
    service._handle(TP, _messages(0, 12))
    service._checkpoint_and_commit([TP])
    assert service.consumer.commits == [{TP: 12}]
    assert not (tmp_path / "ckpt").exists()


def test_before_any_snapshot_predictions_are_null_and_labelled_records_go_to_the_learner(
    tmp_path: Path,
) -> None:
    service = _service(tmp_path)
    service._assign({TP})
    unlabelled = Message("in", 0, 3, None, b'{"x": {"a": 1, "b": 2}, "id": "u"}')
    bad = Message("in", 0, 4, None, b'{"x": {"a": "one"}, "y": 1}')
    messages = [*_messages(0, 3), unlabelled, bad, *_messages(5, 3)]
    service._handle(TP, messages)
    preds = _predictions(service)
    assert [p["offset"] for p in preds] == [0, 1, 2, 3, 5, 6, 7]
    assert all(p["prediction"] is None and p["snapshot"] is None and p["model_records"] == 0 for p in preds)
    assert [p["learned"] for p in preds] == [True, True, True, False, True, True, True]
    train = _train(service)  # in offset order, with the source, features and label
    assert [(t["t"], t["p"], t["o"]) for t in train] == [("in", 0, o) for o in (0, 1, 2, 5, 6, 7)]
    assert train[1]["x"] == {"a": 1.0, "b": 1.0} and train[1]["y"] == 1
    reg = service.telemetry.registry  # a null prediction says nothing about accuracy
    assert reg.get_sample_value("streamdas_prequential_window_samples", {"model": "service"}) == 0


def test_a_snapshot_is_taken_between_batches_and_named_by_every_prediction(tmp_path: Path) -> None:
    service = _service(tmp_path)
    service._assign({TP})
    first = Snap(_trained(), epoch=3, version=7, n_learned=200, published_at=time.time() - 2)
    service._handle(TP, _messages(0, 4))  # none yet
    assert {p["snapshot"] is None for p in _predictions(service)} == {True}
    service.scope.slot.offer(first)
    service._handle(TP, _messages(4, 4))  # taken before the batch
    service.scope.slot.offer(
        Snap(_trained(50), epoch=3, version=6, n_learned=50, published_at=time.time())
    )  # older: never taken
    service._handle(TP, _messages(8, 4))
    preds = _predictions(service)[4:]
    assert {json.dumps(p["snapshot"]) for p in preds} == {'{"epoch": 3, "version": 7}'}
    assert {p["model_records"] for p in preds} == {200}
    assert all(p["prediction"] is not None and len(p["probabilities"]) == 2 for p in preds)
    reg = service.telemetry.registry
    labels = {"model": "service"}
    assert reg.get_sample_value("streamdas_snapshot_version", labels) == 7
    assert reg.get_sample_value("streamdas_snapshot_epoch", labels) == 3
    assert reg.get_sample_value("streamdas_snapshot_records_learned", labels) == 200
    assert 1.5 < reg.get_sample_value("streamdas_snapshot_age_seconds", labels) < 600
    assert reg.get_sample_value("streamdas_prequential_window_samples", labels) == 8
    models = service._models()
    assert list(models) == ["snapshot"] and models["snapshot"] is first.estimator


def test_a_snapshot_read_during_a_poll_serves_the_next_partition_of_that_poll(tmp_path: Path) -> None:
    service = _service(tmp_path)
    service._assign({TP, TP1})
    snap = Snap(_trained(), epoch=1, version=2, n_learned=200, published_at=time.time())
    forward = service.scope.forward

    def forward_then_read(result: Any, origins: Any) -> bool:  # the reader thread meanwhile
        service.scope.slot.offer(snap)
        return forward(result, origins)

    service.scope.forward = forward_then_read  # type: ignore[method-assign]
    other = [Message("in", 1, m.offset, m.key, m.value) for m in _messages(0, 4)]
    service._process_poll({TP: _messages(0, 4), TP1: other})
    tags = {(p["partition"], json.dumps(p["snapshot"])) for p in _predictions(service)}
    assert tags == {(0, "null"), (1, '{"epoch": 1, "version": 2}')}


def test_a_long_batch_is_predicted_in_parts_each_with_the_newest_snapshot(tmp_path: Path) -> None:
    service = _service(tmp_path)
    service._assign({TP})
    snap = Snap(_trained(), epoch=1, version=2, n_learned=200, published_at=time.time())
    forward = service.scope.forward

    def forward_then_read(result: Any, origins: Any) -> bool:
        service.scope.slot.offer(snap)
        return forward(result, origins)

    service.scope.forward = forward_then_read  # type: ignore[method-assign]
    n = 2 * service.scope.max_batch + 3
    service._process_poll({TP: _messages(0, n)})
    tags = [p["snapshot"] for p in _predictions(service)]
    first = service.scope.max_batch
    assert len(tags) == n and tags[:first] == [None] * first
    assert tags[first:] == [{"epoch": 1, "version": 2}] * (n - first)
    assert service.states[TP].next_offset == n


def test_a_lost_training_record_rewinds_to_the_last_commit_with_fresh_producers(tmp_path: Path) -> None:
    service = _service(tmp_path)
    service._assign({TP, TP1})
    service._process_poll({TP: _messages(0, 6)})
    service._checkpoint_and_commit([TP])
    assert service.consumer.commits == [{TP: 6}]
    train_producer = service.scope.producer
    service._process_poll({TP: _messages(6, 6), TP1: [Message("in", 1, 0, None, b'{"x": {"a": 1}}')]})
    train_producer.fail_last()  # a training record was not delivered
    service._checkpoint_and_commit([TP, TP1])
    assert service.consumer.commits == [{TP: 6}]  # nothing committed past the lost record
    assert (TP, 6) in service.consumer.seeks and (TP1, 0) in service.consumer.seeks
    assert train_producer.closed and service.scope.producer is not train_producer
    service._process_poll({TP: _messages(6, 6)})  # the replay forwards them again
    service._checkpoint_and_commit([TP])
    assert [t["o"] for t in _train(service)] == list(range(6, 12))
    assert service.consumer.commits[-1] == {TP: 12}


def test_a_train_producer_that_cannot_send_is_a_lost_delivery(tmp_path: Path) -> None:
    service = _service(tmp_path)
    service._assign({TP})
    service.scope.producer.fail_sends = True
    service._process_poll({TP: _messages(0, 5)})
    assert service.consumer.seeks == [(TP, 0)]  # rewound, nothing committed
    assert not service.consumer.commits and not service._send_failed


def test_a_flush_of_the_training_records_that_times_out_postpones_the_commit(tmp_path: Path) -> None:
    service = _service(tmp_path)
    service._assign({TP})
    service._handle(TP, _messages(0, 12))
    service.scope.producer.flush_times_out = True
    service._checkpoint_and_commit([TP])
    assert service.consumer.commits == []
    assert service.telemetry.health() == (False, "broker unreachable (producer flush timing out)")
    service.scope.producer.flush_times_out = False
    service._checkpoint_and_commit([TP])
    assert service.consumer.commits == [{TP: 12}]


def test_a_training_record_too_large_to_send_is_a_dead_letter_and_not_learned(tmp_path: Path) -> None:
    service = _service(tmp_path, kafka={"max_request_size": 4096})
    service.scope._limit = service.limit
    service._assign({TP})
    wide = {f"feature_{i:04d}": float(i) for i in range(260)}  # the prediction fits, its
    value = json.dumps({"x": wide, "y": 1, "id": 9}).encode()  # training record does not
    assert len(value) < service.cfg.max_record_bytes
    service._handle(TP, [Message("in", 0, 0, b"k", value), *_messages(1, 2)])
    preds = _predictions(service)
    dead = [json.loads(v) for t, v in service.producer.sent if t == "streamdas-dead-letters"]
    assert [(p["offset"], p["learned"]) for p in preds] == [(0, False), (1, True), (2, True)]
    assert [(d["offset"], d["reason"]) for d in dead] == [(0, "output_too_large")]
    assert "training record" in dead[0]["detail"]
    assert [t["o"] for t in _train(service)] == [1, 2]


def test_a_label_beyond_the_limits_is_a_dead_letter_before_it_reaches_the_learner(tmp_path: Path) -> None:
    service = _service(tmp_path, model="das", model_params={"hidden_sizes": [8], "max_label_length": 5})
    service._assign({TP})
    long_label = Message("in", 0, 0, None, b'{"x": {"a": 1}, "y": "abcdefgh"}')
    service._handle(TP, [long_label, *_messages(1, 2)])
    dead = [json.loads(v) for t, v in service.producer.sent if t == "streamdas-dead-letters"]
    assert [(d["offset"], d["reason"]) for d in dead] == [(0, "label_too_long")]
    assert [t["o"] for t in _train(service)] == [1, 2]


def test_start_runs_the_learner_and_the_snapshot_reader_until_stopped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    created: list[str] = []
    monkeypatch.setattr("consumers.predictor.ensure_topics", lambda cfg: created.append("all"))
    snaps = [None, RuntimeError("broker away"), Snap(_trained(), 1, 1, 200, time.time()), None]

    class Follower:
        closed = 0

        def poll(self, timeout_s: float = 0.0) -> Any:
            item = snaps.pop(0) if snaps else None
            if isinstance(item, Exception):
                raise item
            time.sleep(0.01)
            return item

        def close(self) -> None:
            Follower.closed += 1

    learners: list[Learner] = []

    def learner() -> Learner:  # one learner, whose first run raises
        learners.append(Learner(fail=True))
        return learners[-1]

    cfg = ServiceConfig(group_id="g", model="linear", retry_backoff_max_s=0.1)
    service = KafkaService(
        cfg, follower_factory=Follower, learner_factory=learner, producer_factory=FakeProducer
    )
    reg = service.telemetry.registry
    stop = service._stop
    assert service.scope.start(stop)
    assert created == ["all"]
    deadline = time.monotonic() + 30
    while (
        not learners or learners[0].runs < 2 or service.scope.slot._newest is None
    ) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(learners) == 1 and learners[0].runs == 2  # a learner that raised runs again
    assert reg.get_sample_value("streamdas_learner", {"model": "service"}) == 1
    assert reg.get_sample_value("streamdas_learner_records_learned", {"model": "service"}) == 42
    assert service.scope.slot.take().version == 1
    stop.set()
    service.scope.close(timeout=10)
    assert not any(t.is_alive() for t in service.scope._threads)
    assert Follower.closed >= 2  # the failed follower and the last one


def test_start_retries_the_internal_topics_until_the_broker_answers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[int] = []

    def ensure(cfg: ServiceConfig) -> None:
        calls.append(1)
        if len(calls) < 3:
            raise KafkaTimeoutError("no broker")

    monkeypatch.setattr("consumers.predictor.ensure_topics", ensure)
    cfg = ServiceConfig(group_id="g", model="linear", retry_backoff_max_s=0.01)
    scope = KafkaService(cfg, follower_factory=lambda: None, learner_factory=Learner).scope
    stop = threading.Event()
    stop.set()
    assert not scope.start(stop)  # stopped first: nothing started
    stop.clear()
    threads = threading.Thread(target=lambda: scope.start(stop))
    threads.start()
    threads.join(timeout=30)
    assert len(calls) == 3 and len(scope._threads) == 2
    stop.set()
    scope.close(timeout=10)


def test_snapshot_slot_keeps_only_the_newest() -> None:
    slot = SnapshotSlot()
    assert slot.take() is None
    for epoch, version in [(1, 1), (1, 3), (1, 2), (2, 1), (1, 9)]:
        slot.offer(Snap(None, epoch, version, 0, 0.0))
    newest = slot.take()
    assert (newest.epoch, newest.version) == (2, 1) and slot.take() is None
