"""Integration tests of the consumer service against a real broker (Tansu, started per test).

Every service runs as a subprocess (``python -m consumers``), exactly as deployed.
"""

from __future__ import annotations

import base64
import itertools
import json
import signal
import threading
import time
import urllib.request
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import pytest
from kafka_fixtures import (
    ServiceProcess,
    create_topics,
    free_port,
    healthz,
    labelled_records,
    produce,
    read_topic,
    service_args,
    wait_for,
)

from consumers.broker import TansuBroker
from consumers.store import CheckpointStore

pytestmark = pytest.mark.integration


def _inputs(bootstrap: str, topic: str, n: int) -> set[tuple[int, int]]:
    """(partition, offset) of all ``n`` records of ``topic``, read back from the broker.

    Tansu answers ListOffsets(latest) with the last *batch's* base offset + 1, not the high
    watermark, so the test reads the topic instead of asking for end offsets.
    """
    records = read_topic(bootstrap, topic, lambda r: len(r) >= n, timeout=30, decode=False)
    assert len(records) == n
    return {(m.partition, m.offset) for m in records}


def _scrape(port: int) -> dict[tuple[str, str], float]:
    """``{(sample name, reason / outcome / model label): value}`` from ``/metrics``."""
    from prometheus_client.parser import text_string_to_metric_families

    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    out: dict[tuple[str, str], float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            label = (
                sample.labels.get("reason") or sample.labels.get("outcome") or sample.labels.get("model", "")
            )
            out[(sample.name, label)] = out.get((sample.name, label), 0.0) + sample.value
    return out


def _committed(bootstrap: str, group: str, topic: str, partitions: list[int]) -> dict[int, Any]:
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(
        bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False, request_timeout_ms=10000
    )
    try:
        return {p: consumer.committed(TopicPartition(topic, p)) for p in partitions}
    finally:
        consumer.close(autocommit=False)


def _covered(predictions: list[dict[str, Any]]) -> set[tuple[int, int]]:
    return {(p["partition"], p["offset"]) for p in predictions}


def _until_covered(wanted: set[tuple[int, int]]):
    return lambda records: wanted <= _covered(records)


def test_bad_records_go_to_dead_letter_topic_and_sigterm_is_graceful(
    tansu: TansuBroker, tmp_path: Path
) -> None:
    bs = tansu.bootstrap
    create_topics(bs, {"in": 1, "out": 1, "dlq": 1})
    good = labelled_records(200)
    bad = {
        "invalid_json": b'{"x": {"a": 1',
        "not_object": b'"just a string"',
        "missing_x": b'{"y": 1, "id": 5}',
        "non_numeric_feature": b'{"x": {"a": "one", "b": 2}}',
        "non_finite_feature": b'{"x": {"a": NaN, "b": 2}, "y": 1}',
        "oversized": json.dumps({"x": {"a": 1, "b": 2}, "note": "z" * 3000}).encode(),
        "undecodable": b'{"x": {"a": 1, "b": 2\xff\xfe}}',
        "empty": None,
        "missing_feature": b'{"x": {"a": 0.5}, "y": 1}',
        "unknown_feature": b'{"x": {"a": 0.5, "b": 0.1, "c": 9}}',
    }
    # the schema is configured (--features a,b); bad ones interleaved after good ones
    values: list[bytes | None] = list(good[:100])
    keys: list[bytes | None] = [None] * 100
    for i, (reason, value) in enumerate(bad.items()):
        values += [value, good[100 + i]]
        keys += [reason.encode(), None]
    values += good[100 + len(bad) :]
    keys += [None] * (len(values) - len(keys))
    assert produce(bs, "in", values, keys=keys) == len(values)

    metrics = free_port()
    service = ServiceProcess(
        service_args(bs, tmp_path, max_record_bytes=2048, features="a,b", metrics_port=metrics),
        tmp_path / "svc.log",
    )
    try:
        dead = read_topic(bs, "dlq", lambda r: len(r) >= len(bad), timeout=60)
        preds = read_topic(bs, "out", lambda r: len(r) >= 200, timeout=30)
        assert {d["reason"] for d in dead} == set(bad), service.log()[-3000:]
        for d in dead:
            reason = base64.b64decode(d["key_b64"]).decode()
            assert d["reason"] == reason
            original = bad[reason]
            restored = None if d["value_b64"] is None else base64.b64decode(d["value_b64"])
            assert restored == original
        assert len(preds) == 200 and len(_covered(preds)) == 200
        assert {p["id"] for p in preds} == set(range(200))
        assert not (_covered(preds) & {(0, d["offset"]) for d in dead})
        for p in preds:
            assert set(p["probabilities"]) <= {"0", "1"} and p["hidden_sizes"]
        scraped = _scrape(metrics)
        for reason in bad:
            assert scraped[("streamdas_dead_letters_total", reason)] == 1.0
        assert scraped[("streamdas_records_total", "predicted")] == 200.0
        widths = [
            v
            for (name, label), v in scraped.items()
            if name == "streamdas_model_hidden_units" and label == "in-0"
        ]
        assert widths == [float(w) for w in preds[-1]["hidden_sizes"]]

        service.signal(signal.SIGTERM)
        assert service.wait(timeout=30) == 0
        log = service.log()
        assert "received SIGTERM" in log and "stopped" in log
        end = len(values)
        assert CheckpointStore(tmp_path / "ckpt").latest_offset("in", 0) == end
        assert _committed(bs, "test", "in", [0])[0] == end
    finally:
        service.stop()


def _background_producer(bs: str, n: int, start: int, chunk: int, pause: float) -> threading.Thread:
    def run() -> None:
        for first in range(start, start + n, chunk):
            produce(bs, "in", labelled_records(min(chunk, start + n - first), start=first))
            time.sleep(pause)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def test_sigkill_then_restart_leaves_no_record_without_prediction(tansu: TansuBroker, tmp_path: Path) -> None:
    bs = tansu.bootstrap
    create_topics(bs, {"in": 3, "out": 3, "dlq": 1})
    total = 6000
    produce(bs, "in", labelled_records(1500))
    first = ServiceProcess(
        service_args(bs, tmp_path, client_id="first", checkpoint_every=300, max_poll_records=200),
        tmp_path / "first.log",
    )
    try:
        assert read_topic(bs, "out", lambda r: len(r) >= 1000, timeout=60), first.log()[-2000:]
        producer = _background_producer(bs, total - 1500, start=1500, chunk=300, pause=0.2)
        time.sleep(1.5)  # the stream is flowing: kill in the middle of it
        first.signal(signal.SIGKILL)
        first.wait(timeout=10)
    finally:
        first.stop()
    store = CheckpointStore(tmp_path / "ckpt")
    at_kill = {p: store.latest_offset("in", p) or 0 for p in range(3)}
    assert 0 < sum(at_kill.values()) < total  # killed mid-stream, after some checkpoint
    producer.join(timeout=60)
    inputs = _inputs(bs, "in", total)

    second = ServiceProcess(
        service_args(bs, tmp_path, client_id="second", checkpoint_every=300, max_poll_records=200),
        tmp_path / "second.log",
    )
    try:
        preds = read_topic(bs, "out", _until_covered(inputs), timeout=90)
    finally:
        second.signal(signal.SIGTERM)
        second.wait(timeout=30)
        second.stop()
    covered = _covered(preds)
    missing = inputs - covered
    assert not missing, f"{len(missing)} records without prediction; {second.log()[-2000:]}"
    counts = Counter((p["partition"], p["offset"]) for p in preds)
    for (partition, offset), n in counts.items():
        if n > 1:  # a duplicate is only allowed after the last checkpoint before the kill
            assert offset >= at_kill[partition], (partition, offset, at_kill)
    for partition in range(3):
        if not any(p == partition and o >= at_kill[partition] for p, o in inputs):
            continue  # the first instance had checkpointed all of this partition
        resumed = [p for p in preds if p["consumer"] == "second" and p["partition"] == partition]
        first_after = min(resumed, key=lambda p: p["offset"])
        assert first_after["offset"] == at_kill[partition]  # resumed exactly at the checkpoint
        assert first_after["model_records"] == at_kill[partition]  # with the saved model


def test_sigterm_mid_stream_then_restart_has_no_gap_and_no_duplicate(
    tansu: TansuBroker, tmp_path: Path
) -> None:
    bs = tansu.bootstrap
    create_topics(bs, {"in": 2, "out": 2, "dlq": 1})
    total = 4000
    produce(bs, "in", labelled_records(1000))
    args = {"checkpoint_every": 100_000, "checkpoint_interval_s": 600, "max_poll_records": 100}
    first = ServiceProcess(service_args(bs, tmp_path, client_id="first", **args), tmp_path / "first.log")
    try:
        assert read_topic(bs, "out", lambda r: len(r) >= 500, timeout=60), first.log()[-2000:]
        producer = _background_producer(bs, total - 1000, start=1000, chunk=200, pause=0.1)
        time.sleep(1.0)
        first.signal(signal.SIGTERM)  # no periodic checkpoint yet: only the shutdown one
        assert first.wait(timeout=30) == 0
    finally:
        first.stop()
    store = CheckpointStore(tmp_path / "ckpt")
    at_stop = {p: store.latest_offset("in", p) or 0 for p in range(2)}
    assert sum(at_stop.values()) >= 500
    producer.join(timeout=60)
    inputs = _inputs(bs, "in", total)
    assert sum(at_stop.values()) < total  # stopped mid-stream
    second = ServiceProcess(service_args(bs, tmp_path, client_id="second", **args), tmp_path / "second.log")
    try:
        preds = read_topic(bs, "out", _until_covered(inputs), timeout=90)
    finally:
        second.signal(signal.SIGTERM)
        second.wait(timeout=30)
        second.stop()
    assert inputs <= _covered(preds), second.log()[-2000:]
    counts = Counter((p["partition"], p["offset"]) for p in preds)
    assert max(counts.values()) == 1  # graceful: the batch in hand was checkpointed
    for p in preds:
        expected = "first" if p["offset"] < at_stop[p["partition"]] else "second"
        assert p["consumer"] == expected


def _switches(preds: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Predictions whose partition was handled by another instance just before."""
    by_partition: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for p in preds:
        by_partition[p["partition"]].append(p)
    switched = []
    for items in by_partition.values():
        items.sort(key=lambda p: p["offset"])
        for before, after in itertools.pairwise(items):
            if before["consumer"] != after["consumer"]:
                switched.append(after)
    return switched


def test_two_instances_split_partitions_and_hand_over_model_state(tansu: TansuBroker, tmp_path: Path) -> None:
    bs = tansu.bootstrap
    create_topics(bs, {"in": 4, "out": 2, "dlq": 1})
    a = ServiceProcess(service_args(bs, tmp_path, client_id="a"), tmp_path / "a.log")
    b = ServiceProcess(service_args(bs, tmp_path, client_id="b"), tmp_path / "b.log")
    produced = 0

    def feed(n: int, start: int) -> None:
        nonlocal produced
        for partition in range(4):
            produced += produce(
                bs, "in", labelled_records(n, start=10_000 * partition + start), partition=partition
            )

    def owners(records: list[dict[str, Any]]) -> dict[int, str]:
        return {r["partition"]: r["consumer"] for r in sorted(records, key=lambda r: r["offset"])}

    try:
        feed(300, 0)
        # keep feeding until both instances joined and own the latest records of 2 partitions each
        preds: list[dict[str, Any]] = []
        for round_ in range(30):
            inputs = _inputs(bs, "in", produced)
            preds = read_topic(bs, "out", _until_covered(inputs), timeout=20)
            if sorted(owners(preds).values()) == ["a", "a", "b", "b"]:
                break
            feed(20, 300 + 20 * round_)
        assert sorted(owners(preds).values()) == ["a", "a", "b", "b"], (
            owners(preds),
            a.log()[-1500:],
            b.log()[-1500:],
        )

        b.signal(signal.SIGTERM)  # b leaves: its partitions (and their models) move to a
        assert b.wait(timeout=30) == 0
        feed(100, 5000)
        inputs = _inputs(bs, "in", produced)

        def moved(records: list[dict[str, Any]]) -> bool:
            return inputs <= _covered(records) and set(owners(records).values()) == {"a"}

        preds = read_topic(bs, "out", moved, timeout=60)
        assert moved(preds), a.log()[-2000:]
    finally:
        a.signal(signal.SIGTERM)
        a.wait(timeout=30)
        a.stop()
        b.stop()
    counts = Counter((p["partition"], p["offset"]) for p in preds)
    assert max(counts.values()) == 1, "graceful rebalances must not duplicate predictions"
    switched = _switches(preds)
    assert any(s["consumer"] == "a" for s in switched)
    for s in switched:  # the new owner continued the previous owner's model
        assert s["model_records"] == s["offset"], s


def test_broker_down_at_start_then_up(tansu_binary: str, tmp_path: Path) -> None:
    port, metrics = free_port(), free_port()
    bs = f"127.0.0.1:{port}"
    service = ServiceProcess(service_args(bs, tmp_path, metrics_port=metrics), tmp_path / "svc.log")
    broker = TansuBroker(tansu_binary, port=port, log_path=tmp_path / "tansu.log")
    try:
        assert wait_for(lambda: healthz(metrics) == 503, timeout=30), service.log()[-2000:]
        time.sleep(2)
        assert service.alive()
        broker.start()
        try:
            create_topics(bs, {"in": 2, "out": 1, "dlq": 1})
        except Exception as exc:  # the service's metadata request may auto-create "in" first
            assert "TopicAlreadyExists" in type(exc).__name__ + str(exc)
        produce(bs, "in", labelled_records(300))
        inputs = _inputs(bs, "in", 300)
        preds = read_topic(bs, "out", _until_covered(inputs), timeout=60)
        assert inputs <= _covered(preds), service.log()[-2000:]
        assert wait_for(lambda: healthz(metrics) == 200, timeout=20)
        service.signal(signal.SIGTERM)
        assert service.wait(timeout=30) == 0
    finally:
        service.stop()
        broker.stop()


def test_broker_hang_sigstop_then_sigcont_is_survived(tansu: TansuBroker, tmp_path: Path) -> None:
    bs = tansu.bootstrap
    metrics = free_port()
    create_topics(bs, {"in": 2, "out": 1, "dlq": 1})
    produce(bs, "in", labelled_records(300))
    service = ServiceProcess(service_args(bs, tmp_path, metrics_port=metrics), tmp_path / "svc.log")
    try:
        inputs = _inputs(bs, "in", 300)
        assert inputs <= _covered(read_topic(bs, "out", _until_covered(inputs), timeout=60))
        assert healthz(metrics) == 200
        tansu.pause()
        try:
            started = time.monotonic()
            unhealthy = wait_for(lambda: healthz(metrics) == 503, timeout=25)
            time.sleep(max(0.0, 10 - (time.monotonic() - started)))  # > session timeout
        finally:
            tansu.resume()
        assert unhealthy, service.log()[-2000:]
        assert service.alive()
        produce(bs, "in", labelled_records(300, start=300))
        inputs = _inputs(bs, "in", 600)
        preds = read_topic(bs, "out", _until_covered(inputs), timeout=90)
        assert inputs <= _covered(preds), service.log()[-3000:]
        assert wait_for(lambda: healthz(metrics) == 200, timeout=30), service.log()[-2000:]
        service.signal(signal.SIGTERM)
        assert service.wait(timeout=30) == 0
    finally:
        service.stop()


def test_service_resumes_after_its_predictions_expired_while_the_broker_was_frozen(
    tansu: TansuBroker, tmp_path: Path
) -> None:
    """Issue 14: after a delivery timeout kafka-python 3.0's idempotent producer never sent
    again; the service must resume by itself within seconds of the broker's return."""
    bs = tansu.bootstrap
    metrics = free_port()
    create_topics(bs, {"in": 2, "out": 1, "dlq": 1})
    n = 6000
    produce(bs, "in", labelled_records(n))
    args = service_args(
        bs,
        tmp_path,
        metrics_port=metrics,
        max_poll_records=10,
        request_timeout_ms=2000,
        flush_timeout_s=2,
        checkpoint_every=100000,
        checkpoint_interval_s=60,
    )
    args += ["--kafka", "delivery_timeout_ms=3000", "--kafka", "linger_ms=50"]
    service = ServiceProcess(args, tmp_path / "svc.log")
    try:
        assert read_topic(bs, "out", lambda r: len(r) >= 1, timeout=60), service.log()[-2000:]
        tansu.pause()  # the service goes on with what it fetched; its sends expire
        try:
            assert wait_for(lambda: "could not deliver" in service.log(), timeout=30), service.log()[-3000:]
            time.sleep(1)
        finally:
            tansu.resume()
        back = time.monotonic()
        produce(bs, "in", labelled_records(50, start=n))
        inputs = _inputs(bs, "in", n + 50)
        preds = read_topic(bs, "out", _until_covered(inputs), timeout=90)
        assert inputs <= _covered(preds), service.log()[-3000:]
        assert wait_for(lambda: healthz(metrics) == 200, timeout=30), service.log()[-2000:]
        print(f"every record predicted {time.monotonic() - back:.1f} s after the broker's return")
        service.signal(signal.SIGTERM)
        assert service.wait(timeout=30) == 0
    finally:
        service.stop()


def test_a_paused_broker_has_every_thread_stopped_when_pause_returns(tansu: TansuBroker) -> None:
    """SIGSTOP stops each thread of a process only as it next runs; the chaos tests count on
    a broker that answers nothing once ``pause()`` returned."""
    import os

    assert tansu.process is not None
    tasks = f"/proc/{tansu.process.pid}/task"
    if not os.path.isdir(tasks):
        pytest.skip("needs /proc")
    for _ in range(3):
        tansu.pause()
        states = set()
        for task in os.listdir(tasks):
            with open(f"{tasks}/{task}/stat") as f:
                states.add(f.read().rsplit(")", 1)[1].split()[0])
        tansu.resume()
        assert states <= {"T", "t"}, states
