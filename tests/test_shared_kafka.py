"""The shared model scope end to end against a real broker (Tansu): two service processes, one
four-partition input topic, no checkpoint folder. Every valid record is predicted, the learner
(one of the two, elected by the group) learns every labelled valid record exactly once, and
predictions come from its snapshots."""

from __future__ import annotations

import base64
import json
import random
import signal
import urllib.request
from collections import Counter
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

from consumers.broker import TansuBroker

pytestmark = pytest.mark.integration


def dataset(n: int, seed: int = 0) -> tuple[list[bytes | None], set[int], set[int], set[int]]:
    """Values in id order and the ids of the labelled valid, unlabelled valid and malformed ones
    (the first 100 labelled valid)."""
    rng = random.Random(seed)
    values: list[bytes | None] = []
    labelled, unlabelled, malformed = set(), set(), set()
    for i in range(n):
        draw = rng.random() if i >= 100 else 1.0
        a, b = rng.uniform(-1, 1), rng.uniform(-1, 1)
        if draw < 0.05:
            values.append(b'{"x": {"a": "one", "b": 2}, "y": 1, "id": %d}' % i)
            malformed.add(i)
            continue
        record: dict[str, Any] = {"x": {"a": a, "b": b}, "id": i}
        if draw < 0.2:
            unlabelled.add(i)
        else:
            record["y"] = int(a + b > 0)
            labelled.add(i)
        values.append(json.dumps(record).encode())
    return values, labelled, unlabelled, malformed


def scrape(port: int) -> dict[str, float]:
    """``{sample name: value}`` of the service's own gauges (label ``model="service"``)."""
    from prometheus_client.parser import text_string_to_metric_families

    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    return {
        s.name: s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.labels.get("model") == "service" and len(s.labels) == 1
    }


def learner_state(bootstrap: str, topic: str) -> Any:
    """The newest learner state saved on ``topic``."""
    from consumers.kafka_state import KafkaStateStore
    from consumers.training import LearnerState

    with KafkaStateStore(bootstrap, topic) as store:
        stored = store.load("learner")
    assert stored is not None
    return LearnerState.from_blob(stored.blob, task="classification")


def shared_args(bs: str, tmp_path: Path, name: str, **overrides: Any) -> list[str]:
    """A shared-scope instance: no checkpoint folder, frequent snapshots and saves."""
    settings: dict[str, Any] = {
        "client_id": name,
        "model_scope": "shared",
        "checkpoint_dir": None,
        "checkpoint_every": 300,
        "max_poll_records": 100,
        "publish_every": 100,
        "features": "a,b",
    }
    settings.update(overrides)
    return service_args(bs, tmp_path, **settings)


def test_two_instances_share_one_model_learned_exactly_once(tansu: TansuBroker, tmp_path: Path) -> None:
    bs = tansu.bootstrap
    create_topics(bs, {"in": 4, "out": 1, "dlq": 1})
    values, labelled, unlabelled, malformed = dataset(3000)
    keys = [f"id-{i}".encode() for i in range(len(values))]
    ports = [free_port(), free_port()]
    procs = [
        ServiceProcess(shared_args(bs, tmp_path, f"i{k}", metrics_port=ports[k]), tmp_path / f"i{k}.log")
        for k in range(2)
    ]
    try:
        assert wait_for(lambda: all(health(p)[0] == 200 for p in ports), timeout=90), [
            p.log()[-2000:] for p in procs
        ]
        # The elected learner publishes its (empty) model at once: both instances use it first.
        assert wait_for(
            lambda: all(scrape(p).get("streamdas_snapshot_version", 0) >= 1 for p in ports), timeout=90
        ), [scrape(p) for p in ports]
        produce(bs, "in", values[:1500], keys=keys[:1500])
        first = len([i for i in labelled if i < 1500])

        def snapshot_of_all_first() -> bool:  # both instances read a snapshot of all of them
            return all(scrape(p).get("streamdas_snapshot_records_learned") == first for p in ports)

        assert wait_for(snapshot_of_all_first, timeout=90), [scrape(p) for p in ports]
        produce(bs, "in", values[1500:], keys=keys[1500:])
        valid = labelled | unlabelled
        preds = read_topic(bs, "out", lambda r: valid <= {p["id"] for p in r}, timeout=120)
        dead = read_topic(bs, "dlq", lambda r: len(r) >= len(malformed), timeout=30)

        def learned_all() -> bool:
            gauges = [scrape(p) for p in ports]
            return any(
                g.get("streamdas_learner") == 1
                and g.get("streamdas_learner_records_learned") == len(labelled)
                for g in gauges
            )

        assert wait_for(learned_all, timeout=90), [scrape(p) for p in ports]
        gauges = [scrape(p) for p in ports]
        assert sorted(g["streamdas_learner"] for g in gauges) == [0, 1]  # one learner
        for g in gauges:  # both predict with a snapshot of it
            assert g["streamdas_snapshot_version"] >= 1 and g["streamdas_snapshot_age_seconds"] >= 0
        for proc in procs:
            proc.signal(signal.SIGTERM)
        for proc in procs:
            assert proc.wait(timeout=60) == 0, proc.log()[-3000:]
    finally:
        for proc in procs:
            proc.stop()

    predicted = Counter(p["id"] for p in preds)
    assert set(predicted) == labelled | unlabelled
    assert {d["reason"] for d in dead} == {"non_numeric_feature"}
    assert {int(base64.b64decode(d["key_b64"])[3:]) for d in dead} == malformed
    late = [p for p in preds if p["id"] >= 1500]
    assert all(p["snapshot"] is not None and p["prediction"] in (0, 1) for p in late)
    assert min(p["model_records"] for p in late) >= first
    assert {p["consumer"] for p in preds} == {"i0", "i1"}  # both instances predicted
    assert all(p["learned"] == (p["id"] in labelled) for p in preds)
    versions = {(p["snapshot"]["epoch"], p["snapshot"]["version"]) for p in preds if p["snapshot"]}
    assert len(versions) > 1  # snapshots were applied as they came

    state = learner_state(bs, "test.state")
    est = state.estimator
    assert state.n_learned == len(labelled)
    assert est.n_samples_learned + est.n_samples_buffered == len(labelled)
    assert est.n_samples_buffered < est.batch_size
    highest = {}
    for p in preds:
        if p["id"] in labelled:
            key = ("in", p["partition"])
            highest[key] = max(highest.get(key, -1), p["offset"])
    assert state.learned == highest
    assert not (tmp_path / "ckpt").exists()  # no folder in the shared scope
