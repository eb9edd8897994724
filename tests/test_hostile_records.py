"""Records written to stop the service: each is predicted, learned or dead-lettered, never an exit.

Unit tests drive :class:`consumers.service.KafkaService` with the in-memory stand-ins of
``test_consumer_service.py``; the ones marked ``integration`` run the real service against Tansu.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
from kafka.errors import MessageSizeTooLargeError
from kafka_fixtures import (
    REPO,
    ServiceProcess,
    create_topics,
    free_port,
    health,
    labelled_records,
    produce,
    read_topic,
    service_args,
    wait_for,
)
from test_consumer_service import TP, FakeFuture, FakeProducer, Message, _service

from consumers.broker import TansuBroker
from consumers.config import ServiceConfig
from consumers.embedded import run_embedded
from consumers.messages import message_limit
from consumers.model import PartitionState, make_estimator
from consumers.records import Rejection, parse_record
from consumers.store import CheckpointStore

DLQ, OUT = "streamdas-dead-letters", "streamdas-predictions"
HUGE = b"1" * 5000  # more digits than Python converts to int


def _strict(data: bytes | str) -> Any:
    """``json.loads`` that refuses NaN and Infinity (standard JSON only)."""

    def refuse(name: str) -> Any:
        raise ValueError(f"not standard JSON: {name}")

    return json.loads(data, parse_constant=refuse)


def _sent(service: Any, topic: str) -> list[dict[str, Any]]:
    return [_strict(v) for t, v in service.producer.sent if t == topic]


def _msgs(
    values: list[bytes | None], start: int = 0, keys: list[bytes | None] | None = None
) -> list[Message]:
    keys = keys or [None] * len(values)
    return [Message("in", 0, start + i, k, v) for i, (k, v) in enumerate(zip(keys, values, strict=True))]


def _good(n: int, start: int = 0, features: tuple[str, ...] = ("a", "b")) -> list[bytes]:
    return [
        json.dumps(
            {"x": {f: (i * (j + 3)) % 7 / 7 for j, f in enumerate(features)}, "y": i % 2, "id": i}
        ).encode()
        for i in range(start, start + n)
    ]


# -- finding 1: an integer of more digits than Python converts ----------------------------------
@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (b'{"x": {"a": 1}, "id": ' + HUGE + b"}", "bad_id"),
        (b'{"x": {"a": ' + HUGE + b"}}", "non_finite_feature"),
        (b'{"x": {"a": -' + HUGE + b'}, "y": 1}', "non_finite_feature"),
        (b'{"x": {"a": 1}, "y": ' + HUGE + b"}", "bad_label"),
        (b'{"x": {"a": 1}, "y": 1, "pad": [' + HUGE + b"]}", None),  # unused field: a record
    ],
)
def test_huge_integers_are_dead_letters_not_an_exit(tmp_path: Path, value: bytes, reason: str | None) -> None:
    parsed = parse_record(value)
    assert (parsed.reason if isinstance(parsed, Rejection) else None) == reason
    service = _service(tmp_path)
    service._assign({TP})
    service._handle(TP, _msgs([value, *_good(3)]))
    dead = _sent(service, DLQ)
    assert [d["reason"] for d in dead] == ([reason] if reason else [])
    assert len(_sent(service, OUT)) == (3 if reason else 4)
    assert service.states[TP].next_offset == 4


def test_parse_record_never_raises_on_deep_nesting_or_odd_bytes() -> None:
    for value in [
        b"[" * 200_000,
        b'{"x": ' * 50_000,
        b'{"x": {"a": 1}, "y": ' + b"[" * 99_999,
        b"\xed\xa0\x80",
        b'{"x": {"\\ud800": 1}}',
        b"\x00" * 10,
        b"1e400",
    ]:
        assert isinstance(parse_record(value), (Rejection, type(parse_record(b'{"x":{"a":1}}'))))


# -- finding 9: standard JSON only -------------------------------------------------------------
def test_output_is_standard_json_even_for_ids_json_cannot_hold(tmp_path: Path) -> None:
    source = tmp_path / "in.jsonl"
    lines = [
        b'{"x": {"a": 1}, "y": 1, "id": 1e400}',
        b'{"x": {"a": 2}, "y": 0, "id": -1e400}',
        b'{"x": {"a": 1}, "id": NaN}',
        b'{"x": {"a": 3}, "y": 1, "id": 12}',
        b'{"x": {"a": 1}, "id": "' + b"i" * 5000 + b'"}',
    ]
    source.write_bytes(b"\n".join(lines) + b"\n")
    out, dead = tmp_path / "out.jsonl", tmp_path / "dead.jsonl"
    cfg = ServiceConfig(source=str(source), output=str(out), dead_letter_output=str(dead), model="linear")
    assert run_embedded(cfg) == 0
    preds = [_strict(line) for line in out.read_text().splitlines()]
    letters = [_strict(line) for line in dead.read_text().splitlines()]
    assert [p["id"] for p in preds] == [12]
    assert [(d["offset"], d["reason"]) for d in letters] == [
        (0, "bad_id"),
        (1, "bad_id"),
        (2, "bad_id"),
        (4, "bad_id"),
    ]


# -- finding 8: the first record no longer fixes the schema ------------------------------------
def test_a_first_record_with_60000_keys_does_not_make_later_records_dead_letters(tmp_path: Path) -> None:
    wide = json.dumps({"x": {f"k{i}": 1.0 for i in range(60_000)}}).encode()
    service = _service(tmp_path)
    service._assign({TP})
    service._handle(TP, _msgs([wide, *_good(40)]))
    assert [d["reason"] for d in _sent(service, DLQ)] == ["too_many_features"]
    preds = _sent(service, OUT)
    assert len(preds) == 40 and all(p["learned"] for p in preds)
    # an unlabelled wide record within the limit is predicted (unknown features ignored) and
    # changes nothing: the records after it are predicted as well
    medium = json.dumps({"x": {f"m{i}": 1.0 for i in range(5_000)}}).encode()
    service._handle(TP, _msgs([medium, *_good(10, start=40)], start=41))
    assert len(_sent(service, DLQ)) == 1 and len(_sent(service, OUT)) == 51


def test_records_bring_their_own_features_as_the_library_takes_them(tmp_path: Path) -> None:
    service = _service(tmp_path)
    service._assign({TP})
    values = (
        _good(20, features=("a", "b"))
        + _good(20, start=20, features=("a", "c"))
        + [b'{"x": {"c": 0.5}, "y": 1}', b'{"x": {"z": 0.5}}']
    )
    service._handle(TP, _msgs(values))
    preds = _sent(service, OUT)
    assert len(preds) == 42 and not _sent(service, DLQ)
    assert [p["learned"] for p in preds] == [True] * 41 + [False]
    est = service.states[TP].estimator
    assert sorted(est.to_state()["features"]) == ["a", "b", "c"]  # z was only predicted


def test_a_schema_stored_by_an_older_version_is_not_enforced(tmp_path: Path) -> None:
    store = CheckpointStore(tmp_path / "ckpt")
    old = PartitionState(
        make_estimator(_service(tmp_path).scope.spec),
        features=[f"k{i}" for i in range(60_000)],
        next_offset=1,
        n_records=1,
    )
    store.save("in", 0, old)
    service = _service(tmp_path)
    service._assign({TP})
    assert service.states[TP].features is None
    service._handle(TP, _msgs(_good(5), start=1))
    assert len(_sent(service, OUT)) == 5 and not _sent(service, DLQ)


def test_configured_features_keep_the_schema_checks(tmp_path: Path) -> None:
    service = _service(tmp_path, features=["a", "b"])
    service._assign({TP})
    service._handle(TP, _msgs([b'{"x": {"a": 1}}', b'{"x": {"a": 1, "b": 2, "c": 3}}', *_good(2)]))
    assert [d["reason"] for d in _sent(service, DLQ)] == ["missing_feature", "unknown_feature"]


# -- finding 3: bounded classes, labels and features -------------------------------------------
def test_labels_beyond_the_limits_are_dead_letters(tmp_path: Path) -> None:
    service = _service(tmp_path)
    service._assign({TP})
    est = service.states[TP].estimator
    max_classes = getattr(est, "max_classes", 1000)
    values = [json.dumps({"x": {"a": i % 5}, "y": f"c{i}"}).encode() for i in range(max_classes + 20)]
    values.append(json.dumps({"x": {"a": 1}, "y": "L" * 600_000}).encode())
    values.append(json.dumps({"x": {"a": 1}, "y": "c3"}).encode())  # a known class: learned
    service._handle(TP, _msgs(values))
    dead = _sent(service, DLQ)
    assert [d["reason"] for d in dead] == ["too_many_classes"] * 20 + ["label_too_long"]
    assert len(est.classes) == max_classes
    preds = _sent(service, OUT)
    assert len(preds) == max_classes + 1 and preds[-1]["learned"]
    limit = message_limit()
    assert all(len(v) <= limit for _, v in service.producer.sent)


def test_new_features_beyond_max_features_are_dead_letters(tmp_path: Path) -> None:
    service = _service(tmp_path)
    service._assign({TP})
    est = service.states[TP].estimator
    max_features = getattr(est, "max_features", 10_000)
    half = max_features // 2 + 1
    first = json.dumps({"x": {f"p{i}": 1.0 for i in range(half)}, "y": 1}).encode()
    second = json.dumps({"x": {f"q{i}": 1.0 for i in range(half)}, "y": 0}).encode()
    unlabelled = json.dumps({"x": {f"q{i}": 1.0 for i in range(half)}}).encode()
    service._handle(TP, _msgs([first, second, unlabelled]))
    assert [(d["offset"], d["reason"]) for d in _sent(service, DLQ)] == [(1, "too_many_features")]
    assert [p["offset"] for p in _sent(service, OUT)] == [0, 2]
    assert len(est.to_state()["features"]) == half


def test_many_labels_keep_the_process_small(tmp_path: Path) -> None:
    """Finding 3 in a process of its own: 3,000 labels, peak RSS well under 1 GiB."""
    source = tmp_path / "labels.jsonl"
    source.write_text(
        "".join(json.dumps({"x": {"a": i % 7, "b": i % 3}, "y": f"label-{i}"}) + "\n" for i in range(3000))
    )
    peak = _run_embedded_measured(tmp_path, source)
    preds = (tmp_path / "out.jsonl").read_text().splitlines()
    dead = [_strict(line) for line in (tmp_path / "dead.jsonl").read_text().splitlines()]
    assert len(preds) + len(dead) == 3000
    assert len(dead) == 2000 and {d["reason"] for d in dead} == {"too_many_classes"}
    assert max(len(line) for line in preds) < message_limit()
    assert peak < 1024**3, f"peak RSS {peak / 2**20:.0f} MiB"


#: Ends a measured child: writes its own peak RSS in bytes to the file named by ``path``. The
#: figure is ``VmHWM``, the high-water mark of the process's own memory, which ``exec`` starts
#: afresh. ``ru_maxrss`` would not do: Linux carries the parent's peak across fork and ``exec``
#: into the child's, so a child of pytest would report pytest's own peak whenever that is higher.
_WRITE_PEAK = """
hwm = next(line for line in open("/proc/self/status") if line.startswith("VmHWM:"))
open(path, "w").write(str(int(hwm.split()[1]) * 1024))
"""


def _run_measured(tmp_path: Path, body: str, *args: str) -> int:
    """Run ``body`` (Python, ``sys.argv[1:]`` = ``args``; it sets ``status``) in a subprocess
    that must exit with status 0; returns the subprocess's own peak RSS in bytes."""
    rss = tmp_path / "rss"
    script = "\n".join(
        ["import sys", textwrap.dedent(body), f"path = {str(rss)!r}", _WRITE_PEAK, "sys.exit(status)"]
    )
    done = subprocess.run([sys.executable, "-c", script, *args], cwd=REPO, capture_output=True, timeout=600)
    assert done.returncode == 0, done.stderr.decode(errors="replace")[-3000:]
    return int(rss.read_text())


def _run_embedded_measured(tmp_path: Path, source: Path, *extra: str) -> int:
    """Run the embedded mode on ``source`` in a subprocess; returns its peak RSS in bytes."""
    args = [
        "--source",
        str(source),
        "--output",
        str(tmp_path / "out.jsonl"),
        "--dead-letter-output",
        str(tmp_path / "dead.jsonl"),
        "--log-level",
        "WARNING",
        "--model-param",
        "hidden_sizes=[8]",
        *extra,
    ]
    body = "from consumers.__main__ import main\nstatus = main(sys.argv[1:])"
    return _run_measured(tmp_path, body, *args)


def test_a_measured_peak_is_the_subprocess_s_own(tmp_path: Path) -> None:
    """The RSS bounds above hold the subprocess to its own peak, whatever the test runner's:
    with 300 MiB held here, a subprocess that allocates nothing measures a few MiB."""
    held = bytearray(300 * 2**20)  # zero-filled, so resident in this process
    peak = _run_measured(tmp_path, "status = 0")
    assert len(held) == 300 * 2**20
    assert peak < 100 * 2**20, f"peak RSS {peak / 2**20:.0f} MiB"


# -- finding 2: every message within the producer's limit, never a rewind ----------------------
class SizedProducer(FakeProducer):
    """Refuses what kafka-python refuses: a record over ``max_request_size``, at ``send``."""

    max_request_size = 20_000

    def send(self, topic: str, key: bytes | None = None, value: bytes = b"") -> FakeFuture:
        if len(key or b"") + len(value) + 82 > self.max_request_size:
            raise MessageSizeTooLargeError(f"{len(value)} bytes")
        return super().send(topic, key=key, value=value)


def _sized_service(tmp_path: Path) -> Any:
    service = _service(
        tmp_path, kafka={"max_request_size": SizedProducer.max_request_size}, dead_letter_value_bytes=4096
    )
    service.producer = SizedProducer()
    service.producer_factory = SizedProducer
    return service


def test_large_refused_records_and_large_predictions_are_bounded_dead_letters(tmp_path: Path) -> None:
    service = _sized_service(tmp_path)
    service._assign({TP})
    big = json.dumps({"x": {"a": "z" * 15_000}}).encode()  # non-numeric feature
    key = json.dumps({"x": {"k" * 9_000: 1.0}}).encode()  # name too long
    labels = [json.dumps({"x": {"a": i}, "y": f"{i:03d}" + "L" * 200}).encode() for i in range(90)]
    values = [big, key, *labels]
    service._handle(TP, _msgs(values, keys=[b"k" * 10_000] + [None] * (len(values) - 1)))
    later = _good(5, start=len(values))  # predicted with the 90 long labels learned above
    service._handle(TP, _msgs(later, start=len(values)))
    values += later
    service._checkpoint_and_commit([TP])
    dead = _sent(service, DLQ)
    reasons = [d["reason"] for d in dead]
    assert reasons[:2] == ["oversized_key", "feature_name_too_long"]
    assert "output_too_large" in reasons  # probabilities of 90 long labels: too large
    assert dead[0]["value_len"] == len(big) and dead[0]["key_len"] == 10_000
    assert all(len(v) + 82 <= SizedProducer.max_request_size for _, v in service.producer.sent)
    assert not service.consumer.seeks  # no rewind
    assert service.consumer.commits == [{TP: len(values)}]


def test_a_broker_refusing_a_message_is_a_dead_letter_not_a_rewind(tmp_path: Path) -> None:
    service = _service(tmp_path)
    service._assign({TP})
    service._handle(TP, _msgs(_good(12)))
    service.producer.errbacks[3](MessageSizeTooLargeError("MESSAGE_SIZE_TOO_LARGE"))
    service._checkpoint_and_commit([TP])
    dead = _sent(service, DLQ)
    assert [(d["offset"], d["reason"]) for d in dead] == [(3, "output_too_large")]
    assert not service.consumer.seeks and service.consumer.commits == [{TP: 12}]
    # a refused dead letter is sent again without the value's prefix, then given up on
    service._handle(TP, _msgs([b"not json"], start=12))
    service.producer.errbacks[-1](MessageSizeTooLargeError("MESSAGE_SIZE_TOO_LARGE"))
    service._checkpoint_and_commit([TP])
    again = _sent(service, DLQ)[-2:]
    assert [d["reason"] for d in again] == ["invalid_json"] * 2
    assert again[0]["value_b64"] == "bm90IGpzb24=" and again[1]["value_b64"] == ""
    service.producer.errbacks[-1](MessageSizeTooLargeError("MESSAGE_SIZE_TOO_LARGE"))
    service._checkpoint_and_commit([TP])
    assert not service.consumer.seeks and service.consumer.commits[-1] == {TP: 13}


# -- a failure outside the per-record guards: counted, rewound, then dead-lettered --------------
class PoisonedProducer(FakeProducer):
    """Its serializer chokes (a plain exception, not a Kafka error) on one prediction."""

    def send(self, topic: str, key: bytes | None = None, value: bytes = b"") -> FakeFuture:
        if topic == OUT and b'"id":13,' in value:
            raise RuntimeError("serializer bug")
        return super().send(topic, key=key, value=value)


def test_a_record_that_keeps_failing_is_dead_lettered_and_the_loop_moves_on(tmp_path: Path) -> None:
    service = _service(tmp_path, checkpoint_every=1000)
    producers: list[PoisonedProducer] = []

    def factory() -> PoisonedProducer:
        producers.append(PoisonedProducer())
        return producers[-1]

    service.producer_factory = factory
    service.producer = factory()
    service._assign({TP})
    messages = _msgs(_good(30))
    position, polls = 0, 0
    while position < len(messages):
        polls += 1
        assert polls < 20, "the loop does not move on"
        seeks = len(service.consumer.seeks)
        service._process_poll({TP: messages[position : position + 10]})
        if len(service.consumer.seeks) > seeks:
            position = service.consumer.seeks[-1][1]  # rewound: the broker serves from there
        else:
            position += 10
    service._checkpoint_and_commit([TP])
    sent = [(t, _strict(v)) for p in producers for t, v in p.sent]
    dead = [v for t, v in sent if t == DLQ]
    assert [(d["offset"], d["reason"]) for d in dead] == [(13, "internal_error")]
    assert "RuntimeError: serializer bug" in dead[0]["detail"]
    assert {v["offset"] for t, v in sent if t == OUT} == set(range(30)) - {13}
    assert service.consumer.commits[-1] == {TP: 30}
    assert not service._failures


def test_liveness_needs_progress_not_only_a_turning_loop(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import consumers.telemetry

    clock = {"now": 1000.0}
    monkeypatch.setattr(consumers.telemetry.time, "monotonic", lambda: clock["now"])
    service = _service(tmp_path, stall_seconds=60)
    telemetry = service.telemetry
    service._assign({TP})
    service._handle(TP, _msgs(_good(10)))
    telemetry.heartbeat()
    assert telemetry.alive() == (True, "ok")
    # replaying the same records (a rewind loop) turns the loop but is no progress
    for _ in range(5):
        clock["now"] += 20
        service.states[TP].next_offset = 0
        service._handle(TP, _msgs(_good(10)))
        telemetry.heartbeat()
    assert telemetry.alive()[0] is False and "no progress" in telemetry.alive()[1]
    assert telemetry.health()[0] is False
    service._handle(TP, _msgs(_good(5, start=10), start=10))  # new offsets: live again
    assert telemetry.alive() == (True, "ok")


# -- finding 2 against the real service --------------------------------------------------------
@pytest.mark.integration
def test_records_that_made_oversized_messages_are_bounded_dead_letters_on_tansu(
    tansu: TansuBroker, tmp_path: Path
) -> None:
    bs = tansu.bootstrap
    create_topics(bs, {"in": 1, "out": 1, "dlq": 1})
    hostile = {
        "non_numeric_feature": json.dumps({"x": {"a": "z" * 800_000}, "y": 1}).encode(),
        "feature_name_too_long": json.dumps({"x": {"a": 1, "b": 2, "k" * 450_000: 1}}).encode(),
        "label_too_long": json.dumps({"x": {"a": 1, "b": 2}, "y": "L" * 600_000}).encode(),
        "bad_id": b'{"x": {"a": 1, "b": 2}, "y": 1, "id": ' + HUGE + b"}",
    }
    good = labelled_records(300)
    values = good[:100] + list(hostile.values()) + good[100:]
    keys = [None] * 100 + [r.encode() for r in hostile] + [None] * 200
    produce(bs, "in", values, keys=keys)
    metrics = free_port()
    service = ServiceProcess(
        service_args(bs, tmp_path, metrics_port=metrics, checkpoint_interval_s=0.5), tmp_path / "svc.log"
    )
    try:
        dead = read_topic(bs, "dlq", lambda r: len(r) >= len(hostile), timeout=60, decode=False)
        preds = read_topic(bs, "out", lambda r: len(r) >= len(good), timeout=60, decode=False)
        end = len(values)
        assert wait_for(
            lambda: CheckpointStore(tmp_path / "ckpt").latest_offset("in", 0) == end, timeout=30
        ), service.log()[-3000:]
        assert health(metrics, "/livez")[0] == 200
        service.signal(signal.SIGTERM)
        assert service.wait(timeout=30) == 0
        log = service.log()
    finally:
        service.stop()
    assert "rewinding" not in log and "could not deliver" not in log, log[-3000:]
    letters = [_strict(m.value) for m in dead]
    assert {d["reason"]: d["key_b64"] for d in letters}.keys() == hostile.keys()
    for m, d in zip(dead, letters, strict=True):
        assert len(m.value) < 200_000  # a 64 KiB prefix of the value, base64
        assert d["value_len"] == len(hostile[d["reason"]])
    assert len(preds) == len(good)  # once each: no rewind, no replay
    assert sorted(_strict(m.value)["id"] for m in preds) == list(range(300))
    assert max(len(m.value) for m in preds) < 10_000


def test_a_limit_the_estimator_enforces_itself_is_that_records_dead_letter(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without the pre-check (an estimator that does not list its features), learning raises
    ``streamdas.LimitError``: the record was predicted, then dead-lettered with the bound."""
    import consumers.model

    monkeypatch.setattr(consumers.model, "_known_features", lambda est: None)
    service = _service(tmp_path)
    service._assign({TP})
    est = service.states[TP].estimator
    half = getattr(est, "max_features", 10_000) // 2 + 1
    values = [
        json.dumps({"x": {f"{p}{i}": 1.0 for i in range(half)}, "y": 1}).encode() for p in "pq"
    ] + _good(3)
    service._handle(TP, _msgs(values))
    assert [(d["offset"], d["reason"]) for d in _sent(service, DLQ)] == [(1, "too_many_features")]
    assert [(p["offset"], p["learned"]) for p in _sent(service, OUT)] == [
        (0, True),
        (1, False),
        (2, True),
        (3, True),
        (4, True),
    ]
