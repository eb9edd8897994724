"""Chaos test of the shared model scope against a real broker (Tansu).

A seeded run: thousands of records with a unique id each (valid labelled, valid unlabelled and
malformed) stream into a four-partition topic read by two instances of one group, neither with
a checkpoint folder. The instance that is the learner is SIGKILLed at a random moment and
restarted, twice (whichever instance the group elected each time), the other instance (a
predictor only) is SIGKILLed and restarted, and the broker is frozen (SIGSTOP) past the
producer's delivery timeout. Nobody helps the service: at the end every valid id has a
prediction, every malformed id is dead-lettered with its reason and no valid one is, and the
final learner state -- read back from the state topic after a graceful stop -- has learned every
labelled valid record exactly once: the records its model learned plus those waiting in its
minibatch buffer equal the number of distinct labelled valid records, and its count of records
learned says the same. After each learner kill the other instance must be elected before the
killed one comes back, so learning really moves between instances. A member is killed only
while both groups (predictors and learners) are settled: Tansu 0.6.0 never re-forms a group
whose leader left in the middle of a rebalance (``tests/test_chaos.py``).
"""

from __future__ import annotations

import base64
import os
import random
import signal
import threading
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import pytest
from kafka_fixtures import (
    ServiceProcess,
    create_topics,
    free_port,
    produce,
    read_topic,
    wait_for,
)
from test_chaos import _dataset, _key_id
from test_shared_kafka import learner_state, scrape, shared_args

from consumers.broker import TansuBroker

# In the default run (about 1-2 minutes); alone: ``pytest -m chaos tests/test_chaos_shared.py``.
pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.chaos]

N_RECORDS = 6000
MAX_BYTES = 2048

#: The last group event each role logs: the predictor's and the learner's.
PREDICTOR_EVENTS = (
    "assigned in:",
    "assigned no partitions",
    "revoked [",
    "lost [",
    "consumers.service: connected to",
)
LEARNER_EVENTS = (
    "learner: elected",
    "learner: another member",
    "learner: revoked",
    "learner: lost",
    "learner: joined group",
    "learner: deposed",
)


def _settled_events(text: str) -> tuple[tuple[int, bool], tuple[int, bool]]:
    """Where each role's last group event is in a log, and whether it ends a rebalance."""
    out = []
    for events, done in (
        (PREDICTOR_EVENTS, ("assigned ",)),
        (LEARNER_EVENTS, ("learner: elected", "learner: another member")),
    ):
        at = max(text.rfind(e) for e in events)
        out.append((at, at >= 0 and text.startswith(done, at)))
    return out[0], out[1]


def test_shared_scope_learns_exactly_once_through_learner_kills_and_a_frozen_broker(
    tansu: TansuBroker, tmp_path: Path
) -> None:
    seed = int(os.environ.get("STREAMDAS_CHAOS_SEED", "2024"))
    rng = random.Random(seed)
    bs = tansu.bootstrap
    create_topics(bs, {"in": 4, "out": 1, "dlq": 1})
    values, malformed, labelled, unlabelled = _dataset(seed)
    keys = [f"id-{i}".encode() for i in range(N_RECORDS)]
    valid = labelled | unlabelled
    stop_feed = threading.Event()
    fed = [0]
    feeding = threading.Lock()  # each id is produced once

    def send(n: int) -> None:
        with feeding:
            last = min(fed[0] + n, N_RECORDS - 1000)
            produce(bs, "in", values[fed[0] : last], keys=keys[fed[0] : last])
            fed[0] = last

    def feed() -> None:  # the stream keeps flowing through the chaos
        while fed[0] < N_RECORDS - 1000 and not stop_feed.is_set():
            send(50)
            time.sleep(0.25)

    ports = {"a": free_port(), "b": free_port()}
    incarnations = {"a": 0, "b": 0}

    def start(name: str) -> ServiceProcess:
        args = shared_args(
            bs,
            tmp_path,
            name,
            metrics_port=ports[name],
            max_poll_records=20,
            max_record_bytes=MAX_BYTES,
            request_timeout_ms=2000,
            flush_timeout_s=2,
        )
        args += ["--kafka", "delivery_timeout_ms=3000"]
        # A log per incarnation: a restarted member's log must not show its predecessor's
        # events, or the group would look settled before the newcomer joined.
        incarnations[name] += 1
        return ServiceProcess(args, tmp_path / f"{name}-{incarnations[name]}.log")

    procs = {"a": start("a"), "b": start("b")}
    history = list(procs.values())

    def settled(quiet: float = 2.0) -> None:
        """Wait until neither group is in a rebalance: each member's last event of each role
        is the end of one, one member is the learner, and nothing changed for ``quiet`` s."""

        def snapshot() -> tuple[Any, ...]:
            return tuple(_settled_events(p.log()) for p in procs.values())

        seen, since = snapshot(), time.monotonic()

        def quiet_and_done() -> bool:
            nonlocal seen, since
            now = snapshot()
            if now != seen:
                seen, since = now, time.monotonic()
            done = all(ok for roles in now for _, ok in roles)
            return done and learner() is not None and time.monotonic() - since >= quiet

        assert wait_for(quiet_and_done, timeout=120), {n: p.log()[-2000:] for n, p in procs.items()}

    def learner() -> str | None:
        for name, port in ports.items():
            try:
                if scrape(port).get("streamdas_learner") == 1:
                    return name
            except OSError:
                continue
        return None

    def kill(name: str, failover: bool = False) -> None:
        """SIGKILL ``name`` and start it again; with ``failover``, only once the other
        instance has been elected learner (else the restarted one could win the election
        back before the group noticed the death)."""
        procs[name].signal(signal.SIGKILL)
        procs[name].wait(timeout=10)
        if failover:
            other = "b" if name == "a" else "a"
            assert wait_for(lambda: learner() == other, timeout=90), procs[other].log()[-3000:]
        procs[name] = start(name)
        history.append(procs[name])

    producer = threading.Thread(target=feed, daemon=True)
    producer.start()
    killed: list[str] = []
    expired = False
    try:
        for _ in range(2):  # the learner dies at a random moment, twice
            settled()
            time.sleep(rng.uniform(0.5, 2.0))
            name = learner()
            assert name is not None
            kill(name, failover=True)  # the other instance takes over from the saved state
            killed.append(f"learner {name}")
        settled()
        name = "a" if learner() == "b" else "b"
        time.sleep(rng.uniform(0.5, 1.5))
        kill(name)  # ... then a predictor that is not the learner
        killed.append(f"predictor {name}")
        settled()
        for _attempt in range(3):  # the broker freezes past the delivery timeout ...
            send(300)  # ... with a backlog in flight, if the race allows
            time.sleep(rng.uniform(0.05, 0.3))
            tansu.pause()
            try:
                expired = wait_for(
                    lambda: any("could not deliver" in p.log() for p in procs.values()), timeout=6
                )
            finally:
                tansu.resume()
            if expired:
                break
            time.sleep(1.0)
        stop_feed.set()
        producer.join(timeout=120)
        assert not producer.is_alive()
        produce(bs, "in", values[fed[0] :], keys=keys[fed[0] :])  # the rest at once

        def predicted_ids(records: list[dict[str, Any]]) -> set[int]:
            return {_key_id(p["key"]) for p in records}

        preds = read_topic(bs, "out", lambda r: valid <= predicted_ids(r), timeout=120)
        dead = read_topic(
            bs,
            "dlq",
            lambda r: len({_key_id(base64.b64decode(d["key_b64"]).decode()) for d in r}) >= len(malformed),
            timeout=60,
        )

        def learned_all() -> bool:
            name = learner()
            return name is not None and scrape(ports[name]).get("streamdas_learner_records_learned") == len(
                labelled
            )

        assert wait_for(learned_all, timeout=120), (
            {n: scrape(p) for n, p in ports.items()},
            procs["a"].log()[-3000:],
        )
        settled()
        for proc in procs.values():  # a graceful stop saves the learner's state
            proc.signal(signal.SIGTERM)
        for proc in procs.values():
            assert proc.wait(timeout=60) == 0, proc.log()[-3000:]
    finally:
        stop_feed.set()
        tansu.resume()
        for proc in history:
            proc.stop()
        debug = os.environ.get("STREAMDAS_CHAOS_DEBUG")
        if debug:  # keep the evidence, pass or fail: the logs
            import shutil

            shutil.copytree(tmp_path, debug, dirs_exist_ok=True)

    predicted = Counter(_key_id(p["key"]) for p in preds)
    missing = valid - set(predicted)
    assert not missing, f"{len(missing)} valid ids without prediction: {sorted(missing)[:20]}"
    dead_reasons: dict[int, set[str]] = defaultdict(set)
    for d in dead:
        dead_reasons[_key_id(base64.b64decode(d["key_b64"]).decode())].add(d["reason"])
    assert not (set(dead_reasons) & valid), "a valid record was dead-lettered"
    for i, reason in malformed.items():
        assert dead_reasons.get(i) == {reason}, (i, reason, dead_reasons.get(i), values[i])

    state = learner_state(bs, "test.state")
    est = state.estimator
    assert est.n_samples_learned + est.n_samples_buffered == len(labelled), (
        est.n_samples_learned,
        est.n_samples_buffered,
        len(labelled),
    )
    assert state.n_learned == len(labelled)
    assert not (tmp_path / "ckpt").exists()
    print(
        f"chaos (shared scope): {N_RECORDS} records ({len(labelled)} labelled, "
        f"{len(unlabelled)} unlabelled, {len(malformed)} malformed); SIGKILLed: {killed}; "
        f"duplicate predictions: {sum(n - 1 for n in predicted.values())}; redeliveries the "
        f"learner skipped: {state.n_duplicates}; a prediction expired during a freeze: "
        f"{expired}"
    )
