"""The service's checkpoint / commit / rewind logic, driven with in-memory Kafka stand-ins."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from kafka import TopicPartition
from kafka.errors import KafkaTimeoutError

from consumers.clients import producer_options
from consumers.config import ServiceConfig
from consumers.service import KafkaService
from consumers.store import CheckpointStore

TP = TopicPartition("in", 0)


@dataclass
class Message:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None


class FakeFuture:
    def __init__(self, producer: FakeProducer) -> None:
        self.producer = producer

    def add_errback(self, fn: Callable[[BaseException], Any]) -> FakeFuture:
        self.producer.errbacks.append(fn)
        return self


@dataclass
class FakeProducer:
    sent: list[tuple[str, bytes]] = field(default_factory=list)
    errbacks: list[Callable[[BaseException], Any]] = field(default_factory=list)
    flush_times_out: bool = False
    fail_sends: bool = False
    closed: bool = False

    def send(self, topic: str, key: bytes | None = None, value: bytes = b"") -> FakeFuture:
        if self.fail_sends:
            raise KafkaTimeoutError("buffer full")
        self.sent.append((topic, value))
        return FakeFuture(self)

    def flush(self, timeout: float | None = None) -> None:
        if self.flush_times_out:
            raise KafkaTimeoutError("flush")

    def close(self, timeout: float | None = None) -> None:
        self.closed = True

    def fail_last(self) -> None:
        self.errbacks[-1](KafkaTimeoutError("delivery timed out"))


@dataclass
class FakeConsumer:
    seeks: list[tuple[TopicPartition, int]] = field(default_factory=list)
    commits: list[dict[TopicPartition, int]] = field(default_factory=list)
    assigned: set[TopicPartition] = field(default_factory=set)

    def seek(self, tp: TopicPartition, offset: int) -> None:
        self.seeks.append((tp, offset))

    def commit(self, offsets: dict[TopicPartition, Any]) -> None:
        self.commits.append({tp: o.offset for tp, o in offsets.items()})

    def highwater(self, tp: TopicPartition) -> int | None:
        return None

    def assignment(self) -> set[TopicPartition]:
        return set(self.assigned)


def _service(tmp_path: Path, **overrides: Any) -> KafkaService:
    settings: dict[str, Any] = {"checkpoint_every": 10, "model_params": {"hidden_sizes": [8]}}
    settings.update(overrides)
    cfg = ServiceConfig(checkpoint_dir=str(tmp_path / "ckpt"), model_scope="partition", **settings)
    service = KafkaService(cfg)
    service.consumer, service.producer = FakeConsumer(), FakeProducer()
    service.producer_factory = FakeProducer
    return service


def _messages(start: int, n: int) -> list[Message]:
    return [
        Message("in", 0, o, None, json.dumps({"x": {"a": o % 5, "b": 1.0}, "y": o % 2}).encode())
        for o in range(start, start + n)
    ]


def test_checkpoint_then_commit_after_every_n_records(tmp_path: Path) -> None:
    service = _service(tmp_path)
    service._assign({TP})
    service._handle(TP, _messages(0, 6))
    assert not service._checkpoint_due()
    service._handle(TP, _messages(6, 6))
    assert service._checkpoint_due()
    service._checkpoint_and_commit([TP])
    assert CheckpointStore(tmp_path / "ckpt").latest_offset("in", 0) == 12
    assert service.consumer.commits == [{TP: 12}]
    assert sum(1 for topic, _ in service.producer.sent if topic == "streamdas-predictions") == 12


def test_a_replaced_producer_is_connected_in_the_partition_scope(tmp_path: Path) -> None:
    service = _service(tmp_path)
    old = service.producer
    assert service._new_producer() is True  # the partition scope has no producer of its own
    assert old.closed and isinstance(service.producer, FakeProducer) and service.producer is not old


def test_lost_delivery_rewinds_to_checkpoint_instead_of_checkpointing(tmp_path: Path) -> None:
    service = _service(tmp_path)
    service._assign({TP})
    service._handle(TP, _messages(0, 12))
    service._checkpoint_and_commit([TP])
    learned_at_checkpoint = service.states[TP].estimator.n_samples_learned
    service._handle(TP, _messages(12, 12))
    service.producer.fail_last()  # one prediction of 12..23 was never delivered
    service._checkpoint_and_commit([TP])
    assert CheckpointStore(tmp_path / "ckpt").latest_offset("in", 0) == 12
    assert service.consumer.commits == [{TP: 12}]
    assert service.consumer.seeks[-1] == (TP, 12)  # replay from the checkpoint
    assert service.states[TP].next_offset == 12
    assert service.states[TP].estimator.n_samples_learned == learned_at_checkpoint
    assert not service._send_failed


def test_flush_timeout_postpones_checkpoint_and_reports_broker_down(tmp_path: Path) -> None:
    service = _service(tmp_path)
    service._assign({TP})
    service._handle(TP, _messages(0, 12))
    service.producer.flush_times_out = True
    service._checkpoint_and_commit([TP])
    assert CheckpointStore(tmp_path / "ckpt").latest_offset("in", 0) is None
    assert service.consumer.commits == []
    assert service.telemetry.health() == (False, "broker unreachable (producer flush timing out)")
    service.producer.flush_times_out = False
    service._checkpoint_and_commit([TP])
    assert CheckpointStore(tmp_path / "ckpt").latest_offset("in", 0) == 12


def test_revoked_partition_model_is_loaded_by_the_next_owner(tmp_path: Path) -> None:
    first = _service(tmp_path, client_id="first")
    first._assign({TP})
    first._handle(TP, _messages(0, 7))
    offsets = first._revoke({TP})
    assert {tp: o.offset for tp, o in offsets.items()} == {TP: 7}
    assert TP not in first.states

    second = _service(tmp_path, client_id="second")
    second._assign({TP})
    assert second.consumer.seeks == [(TP, 7)]
    state = second.states[TP]
    assert state.n_records == 7 and state.features is None  # no schema configured
    probe = [Message("in", 0, 7, None, b'{"x": {"a": 2, "b": 1.0}}')]
    second._handle(TP, probe)
    payload = json.loads(second.producer.sent[-1][1])
    assert payload["model_records"] == 7 and payload["consumer"] == "second"


def test_records_before_the_checkpoint_offset_are_not_processed_twice(tmp_path: Path) -> None:
    service = _service(tmp_path)
    service._assign({TP})
    service._handle(TP, _messages(0, 5))
    service._handle(TP, _messages(3, 5))  # a re-fetch overlapping what was done
    offsets = [json.loads(v)["offset"] for t, v in service.producer.sent]
    assert offsets == list(range(8))


@pytest.mark.parametrize("bad", [b"\x00\x01", None])
def test_dead_letters_carry_original_bytes(tmp_path: Path, bad: bytes | None) -> None:
    service = _service(tmp_path)
    service._assign({TP})
    service._handle(TP, [Message("in", 0, 0, b"k", bad)])
    topic, value = service.producer.sent[-1]
    letter = json.loads(value)
    assert topic == "streamdas-dead-letters"
    assert letter["reason"] in ("undecodable", "invalid_json", "empty")
    assert letter["key_b64"] == "aw=="


def _labelled(start: int, n: int) -> list[Message]:
    import random

    rng = random.Random(start)
    out = []
    for o in range(start, start + n):
        a, b = rng.uniform(-1, 1), rng.uniform(-1, 1)
        out.append(
            Message(
                "in", 0, o, None, json.dumps({"x": {"a": a, "b": b}, "y": int(a + b > 0), "id": o}).encode()
            )
        )
    return out


def _parameters(service: KafkaService) -> list[Any]:
    return [p.detach().clone() for p in service.states[TP].estimator.trainer.net.parameters()]


def test_model_after_n_records_does_not_depend_on_poll_size(tmp_path: Path) -> None:
    import torch

    messages = _labelled(0, 1000)
    finals = {}
    for poll in (1, 16, 1000):
        service = _service(tmp_path / str(poll), model_params={"hidden_sizes": [8], "grow_every": 100})
        service._assign({TP})
        for start in range(0, len(messages), poll):
            service._handle(TP, messages[start : start + poll])
        est = service.states[TP].estimator
        assert est.n_samples_learned + est.n_samples_buffered == 1000
        assert est.n_sizing_cycles >= 9
        finals[poll] = (_parameters(service), est.layer_sizes)
    for poll in (16, 1000):
        assert finals[poll][1] == finals[1][1]
        for p, q in zip(finals[poll][0], finals[1][0], strict=True):
            assert torch.equal(p, q), f"poll size {poll} learned a different model"


def test_failed_minibatch_is_learned_record_by_record_and_nothing_is_left_behind(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import torch

    reference = _service(tmp_path / "ref")
    reference._assign({TP})
    service = _service(tmp_path / "svc")
    service._assign({TP})
    first, rest = _labelled(0, 20), _labelled(20, 30)
    service._handle(TP, first[:1])  # the model exists now
    est = service.states[TP].estimator
    original = type(est).learn_many
    calls = {"n": 0}

    def flaky(self: Any, X: Any, y: Any, **kwargs: Any) -> None:
        calls["n"] += 1
        if calls["n"] == 1:  # the whole minibatch is refused once
            raise RuntimeError("injected failure")
        original(self, X, y, **kwargs)

    monkeypatch.setattr(type(est), "learn_many", flaky)
    service._handle(TP, first[1:])
    monkeypatch.setattr(type(est), "learn_many", original)
    service._handle(TP, rest)
    reference._handle(TP, first + rest)
    sent = [json.loads(v) for t, v in service.producer.sent if t == "streamdas-predictions"]
    assert len(sent) == 50 and all(p["learned"] for p in sent)
    # every labelled record went into the model: the buffer holds only the latest ones
    assert est.n_samples_learned + est.n_samples_buffered == 50
    assert est.n_samples_buffered < est.batch_size  # the warm-up's batches, then batch_size
    for p, q in zip(_parameters(service), _parameters(reference), strict=True):
        assert torch.equal(p, q)


TP1 = TopicPartition("in", 1)


def _on(tp: TopicPartition, messages: list[Message]) -> list[Message]:
    return [Message(tp.topic, tp.partition, m.offset, m.key, m.value) for m in messages]


def test_failed_poll_rewinds_every_partition_even_those_not_handled_yet(tmp_path: Path) -> None:
    service = _service(tmp_path)
    service._assign({TP, TP1})
    producer = service.producer
    producer.fail_sends = True  # the first partition's sends fail: the second is never handled
    service._process_poll({TP: _messages(0, 5), TP1: _on(TP1, _messages(0, 5))})
    assert (TP, 0) in service.consumer.seeks and (TP1, 0) in service.consumer.seeks
    assert producer.closed and service.producer is not producer  # a fresh producer
    assert not service._send_failed
    service._process_poll({TP: _messages(0, 5), TP1: _on(TP1, _messages(0, 5))})
    offsets = sorted((json.loads(v)["partition"], json.loads(v)["offset"]) for _, v in service.producer.sent)
    assert offsets == [(p, o) for p in (0, 1) for o in range(5)]


def test_partial_checkpoint_on_revoke_keeps_the_other_partitions_countdown(tmp_path: Path) -> None:
    service = _service(tmp_path)  # checkpoint every 10 records
    service._assign({TP, TP1})
    service._handle(TP, _messages(0, 8))
    service._handle(TP1, _on(TP1, _messages(0, 8)))
    service._revoke({TP1})
    assert CheckpointStore(tmp_path / "ckpt").latest_offset("in", 1) == 8
    service._handle(TP, _messages(8, 4))  # partition 0 has 12 unsaved records now
    assert service._checkpoint_due()


def test_revoke_spends_bounded_time_and_hands_back_what_it_could_not_save(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import consumers.service as service_module

    clock = {"now": 1000.0}
    monkeypatch.setattr(service_module.time, "monotonic", lambda: clock["now"])
    service = _service(tmp_path, session_timeout_ms=6000)  # budget: 3 s
    tps = [TopicPartition("in", p) for p in range(4)]
    service._assign(set(tps))
    for tp in tps:
        service._handle(tp, _on(tp, _messages(0, 3)))
    save = service.store.save

    def slow_save(*args: Any, **kwargs: Any) -> Any:
        clock["now"] += 2.0  # each checkpoint write takes 2 s
        return save(*args, **kwargs)

    monkeypatch.setattr(service.store, "save", slow_save)
    start = clock["now"]
    offsets = service._revoke(set(tps))
    assert clock["now"] - start <= 3.0 + 2.0  # stops at the first write past the budget
    assert 1 <= len(offsets) < len(tps)
    store = CheckpointStore(tmp_path / "ckpt")
    saved = {tp for tp in tps if store.latest_offset(tp.topic, tp.partition) == 3}
    assert saved == set(offsets)  # commits only what was checkpointed
    assert not service.states


def test_producer_is_at_least_once_without_idempotence(tmp_path: Path) -> None:
    options = producer_options(_service(tmp_path).cfg)
    assert options["enable_idempotence"] is False
    assert options["acks"] == "all"
    forced = _service(tmp_path, kafka={"enable_idempotence": True})
    assert producer_options(forced.cfg)["enable_idempotence"] is True  # the user's choice


def test_liveness_ignores_the_broker_and_readiness_needs_broker_and_assignment(tmp_path: Path) -> None:
    service = _service(tmp_path)
    telemetry = service.telemetry
    telemetry.heartbeat()
    telemetry.broker_up(True)
    assert telemetry.alive() == (True, "ok")
    assert telemetry.health() == (False, "no partitions assigned yet")
    service._assign({TP})
    assert telemetry.health() == (True, "ok")
    telemetry.broker_up(False)
    assert telemetry.alive() == (True, "ok") and telemetry.health()[0] is False


def test_readiness_says_which_check_failed(tmp_path: Path) -> None:
    """/healthz names the failing condition, so an unready replica can be diagnosed."""

    class Coordinator:
        unknown = True

        def coordinator_unknown(self) -> bool:
            return self.unknown

    service = _service(tmp_path)
    coordinator = Coordinator()
    service.consumer._coordinator = coordinator  # type: ignore[attr-defined]
    telemetry = service.telemetry
    telemetry.heartbeat()
    service._report()
    assert telemetry.health() == (False, "broker unreachable (group coordinator unknown)")
    coordinator.unknown = False
    service._report()
    assert telemetry.health() == (False, "no partitions assigned yet")
    service._assign({TP})
    service._handle(TP, _messages(0, 3))
    service.producer.fail_last()
    service._report()
    assert telemetry.health() == (False, "broker unreachable (a send failed: rewinding)")
    service._process_poll({})  # the next poll rewinds and clears it
    service._report()
    assert telemetry.health() == (True, "ok")


def test_scrape_waits_for_the_learning_step_to_finish(tmp_path: Path) -> None:
    import threading

    service = _service(tmp_path)
    service._assign({TP})
    service._handle(TP, _messages(0, 20))  # the model exists
    est = service.states[TP].estimator
    inside, release = threading.Event(), threading.Event()
    seen: list[int] = []
    original = type(est).learn_many

    def slow_learn(self: Any, X: Any, y: Any, **kwargs: Any) -> None:
        inside.set()
        release.wait(timeout=10)
        original(self, X, y, **kwargs)

    cls = type(est)
    cls.learn_many = slow_learn  # type: ignore[method-assign]
    try:
        worker = threading.Thread(target=service._handle, args=(TP, _messages(20, 20)))
        worker.start()
        assert inside.wait(timeout=10)
        scrape = threading.Thread(
            target=lambda: seen.append(
                int(
                    service.telemetry.registry.get_sample_value(
                        "streamdas_model_samples_learned_total", {"model": "in-0"}
                    )
                    or -1
                )
            )
        )
        scrape.start()
        scrape.join(timeout=0.5)
        still_waiting = scrape.is_alive()
        release.set()
        worker.join(timeout=30)
        scrape.join(timeout=30)
    finally:
        cls.learn_many = original  # type: ignore[method-assign]
        release.set()
    assert still_waiting, "a scrape read the model in the middle of a learning step"
    assert seen == [est.n_samples_learned]


def test_records_of_a_lost_partition_are_left_to_its_owner(tmp_path: Path) -> None:
    service = _service(tmp_path)
    service._assign({TP, TP1})
    service._handle(TP1, _on(TP1, _messages(0, 4)))
    service._lose({TP1})  # membership expired; another member owns partition 1 now
    service._process_poll({TP: _messages(0, 12), TP1: _on(TP1, _messages(4, 12))})
    service._checkpoint_and_commit(list(service.states))
    store = CheckpointStore(tmp_path / "ckpt")
    assert store.latest_offset("in", 0) == 12
    assert store.latest_offset("in", 1) is None  # no model that skipped offsets 0..3
    assert TP1 not in service.states


def test_records_of_an_assigned_partition_unknown_to_the_service_come_again(tmp_path: Path) -> None:
    service = _service(tmp_path)  # e.g. the assignment listener failed for partition 1
    service._assign({TP})
    service.consumer.assigned = {TP, TP1}
    service._process_poll({TP: _messages(0, 3), TP1: _on(TP1, _messages(5, 3))})
    assert TP1 in service.states and (TP1, 5) in service.consumer.seeks
    sent = [json.loads(v) for _, v in service.producer.sent]
    assert all(p["partition"] == 0 for p in sent)  # nothing of partition 1 learned yet
