"""Model snapshots (consumers.snapshots) and the incremental state follower
(consumers.kafka_state.StateFollower) against an in-memory log: no broker."""

from __future__ import annotations

import os
import random
from collections.abc import Callable
from typing import Any, NamedTuple

import pandas as pd
import pytest
import torch
from kafka.errors import KafkaConnectionError
from river import linear_model

from consumers.kafka_state import (
    StateFollower,
    StateLog,
    decode_chunk,
    encode_chunk,
    manifest_key,
    plan_save,
)
from consumers.snapshots import (
    SNAPSHOT_NAME,
    Snapshot,
    SnapshotFollower,
    decode_snapshot,
    encode_snapshot,
    model_payload,
)
from streamdas import DASClassifier, DASRegressor, checkpoint
from streamdas.checkpoint import CheckpointError

NAME = "snap"


class Message(NamedTuple):
    offset: int
    key: bytes | None
    value: bytes | None


class MemoryLog:
    """Partition 0 of a state topic, in memory: writers save as the store plans its saves."""

    def __init__(self, chunk_bytes: int = 64) -> None:
        self.records: list[tuple[bytes | None, bytes | None]] = []
        self.chunk_bytes = chunk_bytes

    def save(self, name: str, blob: bytes, epoch: int, view: StateLog | None = None) -> int:
        """Save as a writer whose view of the log is ``view`` (default: all of it)."""
        if view is None:
            view = StateLog(name, keep_values=False)
            for offset, (key, value) in enumerate(self.records):
                view.apply(offset, key, value)
        plan = plan_save(
            view, blob, epoch=epoch, meta=None, chunk_bytes=self.chunk_bytes, token=os.urandom(16)
        )
        self.records += plan.records
        self.records.append((manifest_key(name), plan.manifest.encode()))
        return plan.manifest.version


class FakeConsumer:
    """What StateFollower uses of a KafkaConsumer, reading a MemoryLog ``step`` records a poll."""

    def __init__(self, log: MemoryLog, step: int = 1000, fail: Callable[[], bool] = lambda: False) -> None:
        self.log, self.step, self.fail = log, step, fail
        self.pos = 0
        self.closed = False

    def assign(self, tps: list[Any]) -> None:
        self.tp = tps[0]

    def seek(self, tp: Any, offset: int) -> None:
        self.pos = offset

    def end_offsets(self, tps: list[Any], timeout_ms: int | None = None) -> dict[Any, int]:
        return {tps[0]: len(self.log.records)}

    def poll(self, timeout_ms: int = 0, max_records: int | None = None) -> dict[Any, list[Message]]:
        if self.fail():
            raise KafkaConnectionError("broker away")
        out = [
            Message(i, *self.log.records[i])
            for i in range(self.pos, min(len(self.log.records), self.pos + self.step))
        ]
        self.pos += len(out)
        return {self.tp: out} if out else {}

    def position(self, tp: Any, timeout_ms: int | None = None) -> int:
        return self.pos

    def close(self, autocommit: bool = False) -> None:
        self.closed = True


class Follower(StateFollower):
    def __init__(self, log: MemoryLog, step: int = 1000, name: str = NAME, **kwargs: Any) -> None:
        super().__init__("127.0.0.1:9", "t", name, **kwargs)
        self.log, self.step, self.consumers, self.fail = log, step, 0, lambda: False

    def _get_consumer(self) -> Any:
        if self._consumer is None:
            self.consumers += 1
            self._consumer = FakeConsumer(self.log, self.step, lambda: self.fail())
            self._consumer.assign([("t", 0)])
            self._consumer.seek(None, self._position)
        return self._consumer


def poll_until_caught_up(follower: StateFollower, limit: int = 1000) -> list[Any]:
    found = []
    for _ in range(limit):
        state = follower.poll()
        if state is not None:
            found.append(state)
        if follower.caught_up and state is None:
            break
    return found


# ---------------------------------------------------------------------------------- follower
def test_a_new_follower_returns_only_the_newest_state_once_it_has_read_to_the_end() -> None:
    log = MemoryLog()
    for i in range(4):
        log.save(NAME, f"state {i}".encode() * 40, epoch=0)
    follower = Follower(log, step=3)
    found = poll_until_caught_up(follower)
    assert [(s.version, s.blob[:7]) for s in found] == [(4, b"state 3")]
    assert follower.poll() is None and follower.returned == (0, 4)


def test_it_reads_only_what_was_appended_and_returns_each_newer_state_once() -> None:
    log = MemoryLog()
    log.save(NAME, b"one", epoch=0)
    follower = Follower(log)
    assert follower.poll().blob == b"one"
    read = follower._consumer.pos
    log.save("other", b"x" * 500, epoch=3)  # another name on the same topic: ignored
    assert follower.poll() is None
    log.save(NAME, b"two", epoch=0)
    state = follower.poll()
    assert (state.blob, state.version) == (b"two", 2) and follower.poll() is None
    assert follower._consumer.pos == len(log.records) > read and follower.consumers == 1


def test_a_superseded_writers_later_manifest_is_never_returned_after_the_newer_epoch() -> None:
    """A zombie (epoch 1) that read the log before its successor (epoch 2) took over writes
    after it, with a higher version (its chunks land in the slot the successor used): no
    follower returns the zombie's late version, and one that returned the successor's never
    goes back to epoch 1."""
    log = MemoryLog()
    log.save(NAME, b"zombie's last", epoch=1)
    stale = StateLog(NAME, keep_values=False)
    for offset, (key, value) in enumerate(log.records):
        stale.apply(offset, key, value)
    follower = Follower(log)
    assert follower.poll().blob == b"zombie's last"
    log.save(NAME, b"successor", epoch=2)
    assert follower.poll().blob == b"successor"
    stale.max_version = 99  # the zombie's version is higher; its epoch is not
    log.save(NAME, b"zombie again", epoch=1, view=stale)
    assert follower.poll() is None and follower.returned == (2, 2)
    fresh = Follower(log)  # the successor's version is damaged: the newest intact one before it
    assert [s.blob for s in poll_until_caught_up(fresh)] == [b"zombie's last"]
    log.save(NAME, b"successor again", epoch=2)
    assert follower.poll().blob == fresh.poll().blob == b"successor again"
    assert follower.returned == fresh.returned == (2, 101)


def test_a_damaged_newest_version_falls_back_to_the_previous_one_if_still_newer() -> None:
    log = MemoryLog()
    log.save(NAME, b"a" * 100, epoch=0)
    log.save(NAME, b"b" * 100, epoch=0)
    for i, (key, value) in enumerate(log.records):  # corrupt a chunk of version 2
        if key == b"snap/slot-1/0":
            decode_chunk(value)
            log.records[i] = (key, value[:-1] + bytes([value[-1] ^ 1]))
    follower = Follower(log)
    found = poll_until_caught_up(follower)
    assert [s.blob for s in found] == [b"a" * 100] and follower.n_damaged == 1
    log.save(NAME, b"c" * 100, epoch=0)
    assert follower.poll().blob == b"c" * 100


def test_forged_chunks_beyond_the_memory_bound_are_forgotten_not_fatal() -> None:
    log = MemoryLog()
    for i in range(40):  # chunk data far beyond two states of max_state_bytes
        log.records.append((f"{NAME}/slot-0/{i}".encode(), encode_chunk(b"t" * 16, 1, i, 40, b"z" * 200)))
    log.save(NAME, b"good", epoch=0)
    follower = Follower(log, max_state_bytes=1000)
    assert [s.blob for s in poll_until_caught_up(follower)] == [b"good"]


def test_a_broker_error_is_retried_after_a_backoff_from_where_it_was() -> None:
    log = MemoryLog()
    log.save(NAME, b"one", epoch=0)
    follower = Follower(log)
    assert follower.poll().blob == b"one"
    follower.fail = lambda: True
    log.save(NAME, b"two", epoch=0)
    assert follower.poll() is None and follower._consumer is None
    follower.fail = lambda: False
    assert follower.poll() is None and follower.consumers == 1  # no I/O before the backoff ends
    assert follower.poll(2.0).blob == b"two" and follower.consumers == 2


# ---------------------------------------------------------------------------------- snapshots
def learned_model(n: int = 21) -> DASClassifier:
    model = DASClassifier(seed=1, batch_warmup=0)
    for i in range(n):
        model.learn_one({"a": i / 10, "b": 1.0 - i / 10}, i % 3 == 0)
    return model


def test_a_snapshot_predicts_as_the_model_and_holds_no_buffered_records() -> None:
    model = learned_model()
    assert model.n_samples_buffered > 0
    snap = decode_snapshot(encode_snapshot(model, n_learned=21, published_at=123.5), epoch=3, version=9)
    assert (snap.rank, snap.n_learned, snap.published_at) == ((3, 9), 21, 123.5)
    x = {"a": 0.3, "b": 0.2}
    assert snap.estimator.predict_proba_one(x) == model.predict_proba_one(x)
    assert snap.estimator.n_samples_buffered == 0 and model.n_samples_buffered > 0
    assert snap.estimator.n_samples_learned == model.n_samples_learned


def test_before_the_first_step_a_snapshot_keeps_the_labels_but_no_input_values() -> None:
    """A classifier without a network predicts its buffered labels' frequencies: the snapshot
    keeps those labels (with empty rows) and predicts the same; no input value travels."""
    model = DASClassifier(seed=0, batch_size=16, batch_warmup=0)
    for i, label in enumerate(["b", "a", "a", "c", "a"]):
        model.learn_one({"a": 100.0 + i, "b": -7.0}, label)
    assert model.trainer is None
    snap = decode_snapshot(encode_snapshot(model, n_learned=5), epoch=1, version=1)
    x = {"a": 0.3, "b": 0.2}
    assert (
        snap.estimator.predict_proba_one(x)
        == model.predict_proba_one(x)
        == pytest.approx({"b": 0.2, "a": 0.6, "c": 0.2})
    )
    assert snap.estimator.predict_one(x) == model.predict_one(x) == "a"
    assert snap.estimator.predict_many(pd.DataFrame([x])).tolist() == ["a"]
    assert all(row.size == 0 for row in snap.estimator._buffer.rows)
    payload = model_payload(model, prediction_only=True)["state"]["estimator"]
    assert payload["buffer_y"] == ["b", "a", "a", "c", "a"]
    assert [t.numel() for t in payload["buffer_x"]] == [0] * 5  # the model's own rows hold 2 values
    assert [t.numel() for t in checkpoint.estimator_to_state(model)["estimator"]["buffer_x"]] == [2] * 5


def test_snapshots_of_river_baselines_round_trip() -> None:
    model = linear_model.LogisticRegression()
    model.learn_one({"a": 1.0}, True)
    snap = decode_snapshot(encode_snapshot(model, n_learned=1), epoch=0, version=1, kind="linear")
    assert snap.estimator.weights == model.weights


def full_snapshot(model: Any, n_learned: int) -> bytes:
    """A snapshot as the learner wrote them before they were prediction-only: the whole state."""
    return checkpoint.dumps(
        {
            "format": "streamdas-snapshot",
            "model": model_payload(model, keep_buffer=False),
            "n_learned": n_learned,
            "published_at": 1.0,
        }
    )


def stream_model(model: Any, n: int = 300) -> Any:
    rng = random.Random(4)
    for _ in range(n):
        x = {f"f{k}": rng.gauss(0, 1) for k in range(10)}
        y = x["f0"] + x["f1"] > 0
        model.learn_one(x, y if isinstance(model, DASClassifier) else float(y) + x["f2"])
    return model


@pytest.mark.parametrize(
    "make",
    [
        lambda: DASClassifier(seed=1, batch_size=8),  # predicts with averaged (Polyak) weights
        lambda: DASClassifier(seed=2, batch_size=8, average_horizon=0, hidden_sizes=(64, 32)),
        lambda: DASRegressor(seed=3, batch_size=8),
    ],
    ids=["classifier_polyak", "classifier_live_weights", "regressor"],
)
def test_a_snapshot_is_prediction_only_and_predicts_bit_for_bit_as_the_full_state(make: Any) -> None:
    model = stream_model(make())
    lean_blob = encode_snapshot(model, n_learned=300, published_at=1.0)
    state = checkpoint.loads(lean_blob)["model"]["state"]["estimator"]
    assert state["trainer"]["optimizer"]["state"] == {} and state["trainer"]["averages"] == {}
    assert state["trainer"]["optimizer"]["param_groups"]  # the hyperparameters stay
    full_blob = full_snapshot(model, 300)
    assert len(lean_blob) < len(full_blob)
    lean = decode_snapshot(lean_blob, epoch=0, version=1).estimator
    full = decode_snapshot(full_blob, epoch=0, version=1).estimator
    rng = random.Random(9)
    xs = [{f"f{k}": rng.gauss(0, 3) for k in range(10)} for _ in range(200)]
    xs += [{"f0": 1.0}, {"f1": 1e6, "new": 2.0}]  # missing and unknown features
    for x in xs:
        if isinstance(model, DASClassifier):
            assert lean.predict_proba_one(x) == full.predict_proba_one(x) == model.predict_proba_one(x)
            assert lean.predict_one(x) == full.predict_one(x)
        else:
            assert lean.predict_one(x) == full.predict_one(x) == model.predict_one(x)
    frame = pd.DataFrame(xs[:200])
    many = "predict_proba_many" if isinstance(model, DASClassifier) else "predict_many"
    pd.testing.assert_frame_equal(
        pd.DataFrame(getattr(lean, many)(frame)), pd.DataFrame(getattr(full, many)(frame)), check_exact=True
    )


def test_decoding_a_snapshot_predicts_but_never_learns(monkeypatch: pytest.MonkeyPatch) -> None:
    blob = encode_snapshot(learned_model(), n_learned=21)

    def refuse(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("a snapshot was learned from")

    monkeypatch.setattr(DASClassifier, "learn_one", refuse)
    monkeypatch.setattr(DASClassifier, "learn_many", refuse)
    assert decode_snapshot(blob, epoch=0, version=1).n_learned == 21


class FakePanic(BaseException):
    """Like pyo3's PanicException: passes every ``except Exception``."""


@pytest.mark.parametrize("output", ["nan", "panic"])
def test_a_snapshot_whose_trial_prediction_fails_is_a_checkpoint_error(
    output: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    blob = encode_snapshot(learned_model(), n_learned=21)

    def predict(self: Any, x: Any, **kwargs: Any) -> dict[Any, float]:
        if output == "panic":
            raise FakePanic("native code panicked")
        return {True: float("nan"), False: float("nan")}

    monkeypatch.setattr(DASClassifier, "predict_proba_one", predict)
    with pytest.raises(CheckpointError, match="trial prediction"):
        decode_snapshot(blob, epoch=0, version=1)
    assert decode_snapshot(blob, epoch=0, version=1, check=False).n_learned == 21


@pytest.mark.parametrize(
    "change", ["inf_weights", "inf_polyak", "moments_of_unknown_parameter", "stale_averages"]
)
def test_a_prediction_only_snapshot_is_validated_as_a_checkpoint(change: str) -> None:
    model = stream_model(DASClassifier(seed=1, batch_size=8))
    payload = checkpoint.loads(encode_snapshot(model, n_learned=300, published_at=1.0))
    trainer = payload["model"]["state"]["estimator"]["trainer"]
    if change == "inf_weights":
        trainer["model"]["hidden.0.weight"][0, 0] = float("inf")
    elif change == "inf_polyak":
        trainer["polyak"]["output.bias"][0] = float("inf")
    elif change == "moments_of_unknown_parameter":
        trainer["optimizer"]["state"][99] = {"step": torch.tensor(1.0)}
    else:
        trainer["averages"]["no.such.weight"] = torch.zeros(2)
    with pytest.raises(CheckpointError):
        decode_snapshot(checkpoint.dumps(payload), epoch=0, version=1)


@pytest.mark.parametrize("change", ["kind", "format", "n_learned", "published_at", "nan_weights", "bytes"])
def test_a_snapshot_that_does_not_fit_is_a_checkpoint_error(change: str) -> None:
    model = learned_model(16)
    payload = {
        "format": "streamdas-snapshot",
        "model": model_payload(model, keep_buffer=False),
        "n_learned": 16,
        "published_at": 1.0,
    }
    kind = "das"
    if change == "kind":
        kind = "linear"
    elif change == "format":
        payload["format"] = "streamdas-learner"
    elif change == "n_learned":
        payload["n_learned"] = -1
    elif change == "published_at":
        payload["published_at"] = float("nan")
    elif change == "nan_weights":
        payload["model"]["state"]["estimator"]["trainer"]["averages"]["hidden.0.weight"].fill_(float("inf"))
    blob = checkpoint.dumps(payload)
    if change == "bytes":
        blob = blob[:-10]
    with pytest.raises(CheckpointError):
        decode_snapshot(blob, epoch=0, version=1, kind=kind)


class SnapFollower(SnapshotFollower):
    def __init__(self, log: MemoryLog) -> None:
        options = {"security_protocol": "PLAINTEXT", "linger_ms": 5}
        super().__init__("127.0.0.1:9", "t", client_options=options)
        self._follower = Follower(log, name=SNAPSHOT_NAME)


def test_the_follower_skips_a_snapshot_that_fails_its_checks() -> None:
    log = MemoryLog(chunk_bytes=65536)
    model = learned_model()
    log.save(SNAPSHOT_NAME, encode_snapshot(model, n_learned=21), epoch=0)
    follower = SnapFollower(log)
    snap = follower.poll()
    assert isinstance(snap, Snapshot) and snap.rank == (0, 1) and snap.n_learned == 21
    log.save(SNAPSHOT_NAME, checkpoint.dumps({"format": "nope"}), epoch=0)  # verifies, but no model
    assert follower.poll() is None and follower.n_rejected == 1
    log.save(SNAPSHOT_NAME, encode_snapshot(model, n_learned=22), epoch=0)
    assert follower.poll().rank == (0, 3)
