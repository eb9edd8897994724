"""Record fuzzer: hostile and random records through the embedded mode and the Kafka service.

Random JSON, huge numbers, deep nesting, long strings and keys, many keys, many labels, odd
bytes, long message keys. Whatever comes, the process never exits, every record is predicted or
dead-lettered, every message written is standard JSON within the producer's size limit, no record
needs the ``internal_error`` safety net, and the process stays under 1 GiB of RSS. Each run is
seeded (``STREAMDAS_FUZZ_SEED``) and many records go through one process.
"""

from __future__ import annotations

import json
import os
import random
import signal
from pathlib import Path
from typing import Any

import pytest
from kafka_fixtures import (
    ServiceProcess,
    create_topics,
    free_port,
    health,
    produce,
    read_topic,
    service_args,
    wait_for,
)
from test_hostile_records import _run_embedded_measured, _strict

from consumers.broker import TansuBroker
from consumers.messages import message_limit
from consumers.records import REASONS
from consumers.store import CheckpointStore

SEED = int(os.environ.get("STREAMDAS_FUZZ_SEED", "23"))
GiB = 1024**3
HUGE_INT = "9" * 5000


def _text(rng: random.Random, n: int) -> str:
    alphabet = "abcxyz019 _-/\\\"'\u00e9\u4e2d\U0001f600\t"
    return "".join(rng.choice(alphabet) for _ in range(n))


def _number(rng: random.Random) -> Any:
    return rng.choice(
        [
            lambda: rng.uniform(-10, 10),
            lambda: rng.randint(-5, 5),
            lambda: rng.random() * 1e38,
            lambda: 3.4e38,
            lambda: -1e308,
            lambda: 1e-320,
            lambda: 2**63,
            lambda: -(10**300),
            lambda: True,
            lambda: 0,
        ]
    )()


def _random_json(rng: random.Random, depth: int = 0) -> Any:
    kind = rng.randrange(7 if depth < 4 else 4)
    if kind == 0:
        return _number(rng)
    if kind == 1:
        return _text(rng, rng.randrange(12))
    if kind == 2:
        return rng.choice([None, True, False])
    if kind == 3:
        return rng.randrange(-(10**20), 10**20)
    if kind in (4, 5):
        return {
            _text(rng, rng.randrange(1, 6)): _random_json(rng, depth + 1) for _ in range(rng.randrange(4))
        }
    return [_random_json(rng, depth + 1) for _ in range(rng.randrange(4))]


def _literal(rng: random.Random) -> str:
    """A JSON number text Python cannot hold as it is, or a non-standard literal."""
    return rng.choice(
        [
            HUGE_INT,
            "-" + HUGE_INT,
            "1e400",
            "-1e400",
            "NaN",
            "Infinity",
            "-Infinity",
            "1" + "0" * 4300,
            "123456789" * 40,
            "1e-400",
        ]
    )


def _value(rng: random.Random, i: int, labels: list[Any]) -> bytes:
    """One fuzzed message value (never empty, no raw newline: it must fit a JSONL line)."""
    x = {f: rng.uniform(-3, 3) for f in rng.sample(["a", "b", "c", "d", "e"], rng.randint(1, 5))}
    record: dict[str, Any] = {"x": x, "id": i}
    if rng.random() < 0.9:  # most labels are new: the model reaches its class bound
        record["y"] = rng.choice(labels) if rng.random() < 0.05 else f"n{i}"
    kind = rng.randrange(20)
    if kind == 0:  # a number Python cannot make an int of, or Infinity / NaN, anywhere
        where = rng.choice(['"x": {"a": %s}', '"y": %s', '"id": %s', '"pad": [%s]'])
        return ('{"x": {"b": 1}, ' + where % _literal(rng) + "}").encode()
    if kind == 1:  # deep nesting
        depth = rng.choice([50, 5_000, 200_000])
        where = rng.choice(["x", "y", "id", "top"])
        nest = "[" * depth + "]" * depth if rng.random() < 0.5 else "[" * depth
        if where == "top":
            return nest.encode()
        return json.dumps({**record, where: 0}).replace(f'"{where}": 0', f'"{where}": {nest}').encode()
    if kind == 2:  # a long label
        record["y"] = _text(rng, rng.choice([257, 5_000, 300_000]))
    elif kind == 3:  # a long feature name
        x[_text(rng, rng.choice([257, 20_000, 300_000]))] = 1.0
    elif kind == 4:  # many keys
        n = rng.choice([300, 3_000, 12_000])
        x.update({f"k{i}_{j}": rng.random() for j in range(n)})
    elif kind == 5:  # a label never seen before
        record["y"] = f"new-{i}-{_text(rng, rng.randrange(40))}"
    elif kind == 6:  # random JSON as the record, as x, as a feature, as y or as id
        part = rng.choice(["record", "x", "feature", "y", "id"])
        junk = _random_json(rng)
        if part == "record":
            return json.dumps(junk).encode() if junk not in ("", None) else b"{}"
        if part == "feature":
            x["junk"] = junk
        else:
            record[part] = junk
    elif kind == 7:  # random bytes
        data = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 300)))
        data = data.replace(b"\n", b"_").replace(b"\r", b"_")
        return data if data.strip() else b"_"
    elif kind == 8:  # escapes that are no characters (lone surrogates) in names, labels, ids
        if rng.random() < 0.5:
            return json.dumps(record).replace('"x": {', '"x": {"\\ud800a": 1, ', 1).encode()
        return json.dumps({"x": {"\udc00": 1.0}, "y": "\ud83d", "id": "\udfff"}).encode()
    elif kind == 9:  # a long id, or an id JSON cannot hold
        record["id"] = rng.choice([_text(rng, 300), 1e308, -(10**400), [i], {"i": i}])
    elif kind == 10:  # a large value (refused or not)
        record["pad"] = "p" * rng.choice([10_000, 200_000, 1_100_000])
    return json.dumps(record).encode()


def fuzz_values(seed: int, n: int) -> list[bytes]:
    """``n`` fuzzed values, reproducible from ``seed``."""
    rng = random.Random(seed)
    labels: list[Any] = [0, 1, True, "cat", "dog", 2.5, -3, "\u4e2d"]
    values = [_value(rng, i, labels) for i in range(n)]
    assert all(b"\n" not in v and b"\r" not in v and v.strip() for v in values)
    return values


def _check_outputs(lines: list[bytes], n: int) -> dict[str, int]:
    """Every index ``0..n-1`` covered, every line standard JSON within the producer's limit;
    returns the dead-letter reasons counted."""
    limit = message_limit()
    covered: set[int] = set()
    reasons: dict[str, int] = {}
    for line in lines:
        assert len(line) <= limit
        message = _strict(line)
        covered.add(message["offset"])
        if "reason" in message:
            reasons[message["reason"]] = reasons.get(message["reason"], 0) + 1
            assert message["reason"] in REASONS
            assert len(message["detail"]) <= 1000
    assert covered == set(range(n)), sorted(set(range(n)) - covered)[:20]
    assert "internal_error" not in reasons, reasons  # a bug the safety net had to contain
    return reasons


def test_fuzzed_records_through_the_embedded_mode(tmp_path: Path) -> None:
    n = 2000
    values = fuzz_values(SEED, n)
    source = tmp_path / "fuzz.jsonl"
    source.write_bytes(b"\n".join(values) + b"\n")
    peak = _run_embedded_measured(tmp_path, source, "--max-poll-records", "100")
    lines = (tmp_path / "out.jsonl").read_bytes().splitlines()
    lines += (tmp_path / "dead.jsonl").read_bytes().splitlines()
    reasons = _check_outputs(lines, n)
    print(f"embedded: dead letters {reasons}; peak RSS {peak / 2**20:.0f} MiB")
    assert len(reasons) >= 10, reasons  # the fuzzer reaches many kinds of refusal
    assert peak < GiB, f"peak RSS {peak / 2**20:.0f} MiB"


def _vm_hwm(pid: int) -> int:
    """Peak resident set size of a running process, in bytes (Linux)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM")


@pytest.mark.integration
def test_fuzzed_records_through_the_kafka_service(tansu: TansuBroker, tmp_path: Path) -> None:
    n = 700
    rng = random.Random(SEED + 1)
    # what the producer can send: a value cut short is invalid JSON
    values: list[bytes | None] = [v[:1_000_000] for v in fuzz_values(SEED + 1, n)]
    keys: list[bytes | None] = [None] * n
    for i in rng.sample(range(n), 40):  # tombstones, empty values, long and binary keys
        values[i] = rng.choice([None, b"", values[i]])
        keys[i] = rng.choice([b"k" * 5000, bytes(range(256)), b"key-%d" % i])
        if values[i] is None and keys[i] is None:
            keys[i] = b"tombstone"
    bs = tansu.bootstrap
    create_topics(bs, {"in": 2, "out": 1, "dlq": 1})
    produce(bs, "in", values, keys=keys, partition=None)
    metrics = free_port()
    service = ServiceProcess(
        service_args(bs, tmp_path, metrics_port=metrics, max_poll_records=200), tmp_path / "svc.log"
    )
    try:
        inputs = read_topic(bs, "in", lambda r: len(r) >= n, timeout=30, decode=False)
        assert len(inputs) == n
        expected = {(m.partition, m.offset) for m in inputs}
        ends = {p: 1 + max(o for q, o in expected if q == p) for p, _ in expected}
        store = CheckpointStore(tmp_path / "ckpt")
        # a checkpoint follows a flush: every message before its offset has been written
        assert wait_for(
            lambda: {p: store.latest_offset("in", p) for p in ends} == ends or not service.alive(),
            timeout=120,
        )
        assert service.alive(), service.log()[-3000:]
        assert {p: store.latest_offset("in", p) for p in ends} == ends, service.log()[-3000:]
        peak = _vm_hwm(service.process.pid)
        assert health(metrics, "/livez")[0] == 200
        service.signal(signal.SIGTERM)
        assert service.wait(timeout=30) == 0
        log = service.log()
    finally:
        service.stop()
    outputs = read_topic(bs, "out", lambda r: False, timeout=3, decode=False) + read_topic(
        bs, "dlq", lambda r: False, timeout=3, decode=False
    )
    assert "Traceback" not in log, log[-3000:]
    assert "rewinding" not in log, log[-3000:]
    limit = message_limit()
    seen: set[tuple[int, int]] = set()
    reasons: dict[str, int] = {}
    for m in outputs:
        assert len(m.value) + len(m.key or b"") <= limit
        message = _strict(m.value)
        seen.add((message["partition"], message["offset"]))
        if "reason" in message:
            reasons[message["reason"]] = reasons.get(message["reason"], 0) + 1
    print(f"kafka: dead letters {reasons}; peak RSS {peak / 2**20:.0f} MiB")
    assert expected <= seen, sorted(expected - seen)[:20]
    assert "internal_error" not in reasons, reasons
    assert {"oversized_key", "empty"} <= set(reasons), reasons
    assert peak < GiB, f"peak RSS {peak / 2**20:.0f} MiB"
