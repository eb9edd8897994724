"""Training records and the learner's exactly-once learning step (consumers.training), no broker."""

from __future__ import annotations

import contextlib
import json
import random
from typing import Any

import pytest
import torch
from river import linear_model

from consumers import training
from consumers.records import Rejection
from consumers.training import (
    TRAINING_REASONS,
    LearnerState,
    TrainingRecord,
    decode_training_record,
    encode_training_record,
)
from streamdas import DASClassifier, DASRegressor, checkpoint
from streamdas.checkpoint import CheckpointError


def same(a: Any, b: Any, path: str = "state") -> None:
    """Assert two estimator states are identical, tensors bit for bit."""
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype and a.shape == b.shape, path
        nan_safe = a.is_floating_point() and torch.equal(a.nan_to_num(7.0), b.nan_to_num(7.0))
        assert torch.equal(a, b) or nan_safe, path
        return
    if isinstance(a, dict):
        assert isinstance(b, dict) and list(a) == list(b), path
        for k in a:
            same(a[k], b[k], f"{path}/{k}")
        return
    if isinstance(a, (list, tuple)):
        assert isinstance(b, (list, tuple)) and len(a) == len(b), path
        for i, (u, v) in enumerate(zip(a, b, strict=True)):
            same(u, v, f"{path}[{i}]")
        return
    if isinstance(a, float) and a != a:
        assert isinstance(b, float) and b != b, path
        return
    assert a == b, (path, a, b)


def stream(n: int, seed: int = 0, partitions: int = 3) -> list[tuple[str, int, int, dict[str, float], Any]]:
    """``n`` labelled records from ``partitions`` input partitions: features that come and go
    (a feature new to the model mid-stream, records lacking some), new classes late."""
    rng = random.Random(seed)
    out = []
    next_offset = dict.fromkeys(range(partitions), 0)
    for i in range(n):
        p = rng.randrange(partitions)
        names = (
            ["a", "b"]
            + (["c"] if i > n // 5 and rng.random() < 0.5 else [])
            + ([f"d{i * 4 // n}"] if rng.random() < 0.3 else [])
        )
        x = {k: rng.uniform(-2, 2) for k in names}
        y: Any = int(x["a"] + x["b"] > 0) if i < n * 2 // 3 else rng.choice([0, 1, "late"])
        out.append(("in", p, next_offset[p], x, y))
        next_offset[p] += rng.choice([1, 1, 2])  # unlabelled records in between are not forwarded
    return out


def reference(records: list[tuple[str, int, int, dict[str, float], Any]], model: Any) -> Any:
    """One learn_one loop over the records, each once, in order; refused records skipped."""
    for _, _, _, x, y in records:
        with contextlib.suppress(ValueError):
            model.learn_one(dict(x), y)
    return model


def redelivered(values: list[bytes], rng: random.Random) -> list[list[tuple[int, bytes]]]:
    """The values as a training topic holds them after forwarders replayed pieces: every
    value in order, some runs sent again right after; cut into polls of random sizes."""
    topic: list[bytes] = []
    i = 0
    while i < len(values):
        n = rng.randint(1, 300)
        topic += values[i : i + n]
        if rng.random() < 0.5:
            back = rng.randint(1, n + min(i, 200))
            topic += values[max(0, i + n - back) : i + n]  # a replay from an earlier offset
        i += n
    polls, i = [], 0
    while i < len(topic):
        n = rng.randint(1, 700)
        polls.append([(i + k, v) for k, v in enumerate(topic[i : i + n])])
        i += n
    return polls


# ---------------------------------------------------------------------------------- codec
def test_a_training_record_round_trips() -> None:
    value = encode_training_record("in.put", 7, 2**40, {"a": 0.25, "b": -3.0}, "spam")
    assert json.loads(value) == {"t": "in.put", "p": 7, "o": 2**40, "x": {"a": 0.25, "b": -3.0}, "y": "spam"}
    assert decode_training_record(value, task="classification") == TrainingRecord(
        "in.put", 7, 2**40, {"a": 0.25, "b": -3.0}, "spam"
    )
    regression = decode_training_record(encode_training_record("t", 0, 0, {"a": 1.0}, 2.5), task="regression")
    assert isinstance(regression, TrainingRecord) and regression.y == 2.5
    with pytest.raises(ValueError):
        encode_training_record("t", 0, 0, {"a": float("nan")}, 1)


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (None, "empty"),
        (b"", "empty"),
        (b"x" * 2_000_000, "oversized"),
        (b"\xff\xfe", "undecodable"),
        (b"{", "invalid_json"),
        (b"[" * 100_000 + b"]" * 100_000, "invalid_json"),
        (b"[1]", "not_object"),
        (b'{"t":"in","p":0,"o":1,"y":1}', "missing_x"),
        (b'{"t":"in","p":0,"o":1,"x":{},"y":1}', "missing_x"),
        (b'{"t":"in","p":0,"o":1,"x":{"a":"1"},"y":1}', "non_numeric_feature"),
        (b'{"t":"in","p":0,"o":1,"x":{"a":1e39},"y":1}', "non_finite_feature"),
        (b'{"t":"in","p":0,"o":1,"x":{"a":' + b"9" * 5000 + b'},"y":1}', "non_finite_feature"),
        (b'{"t":"in","p":0,"o":1,"x":{"' + b"k" * 300 + b'":1},"y":1}', "feature_name_too_long"),
        (b'{"t":"in","p":0,"o":1,"x":{"a":1}}', "missing_label"),
        (b'{"t":"in","p":0,"o":1,"x":{"a":1},"y":null}', "missing_label"),
        (b'{"t":"in","p":0,"o":1,"x":{"a":1},"y":[1]}', "bad_label"),
        (b'{"p":0,"o":1,"x":{"a":1},"y":1}', "bad_source"),
        (b'{"t":"bad topic","p":0,"o":1,"x":{"a":1},"y":1}', "bad_source"),
        (b'{"t":"in","p":true,"o":1,"x":{"a":1},"y":1}', "bad_source"),
        (b'{"t":"in","p":2147483648,"o":1,"x":{"a":1},"y":1}', "bad_source"),
        (b'{"t":"in","p":0,"o":-1,"x":{"a":1},"y":1}', "bad_source"),
        (b'{"t":"in","p":0,"o":1.5,"x":{"a":1},"y":1}', "bad_source"),
        (b'{"t":"in","p":0,"o":' + b"9" * 5000 + b',"x":{"a":1},"y":1}', "bad_source"),
    ],
)
def test_hostile_training_values_are_rejections_with_a_reason(value: bytes | None, reason: str) -> None:
    result = decode_training_record(value, task="classification")
    assert isinstance(result, Rejection) and result.reason == reason
    assert reason in TRAINING_REASONS


def test_regression_targets_are_checked() -> None:
    for y in (True, "1.5", float("inf")):
        value = json.dumps({"t": "in", "p": 0, "o": 0, "x": {"a": 1}, "y": y}).encode()
        result = decode_training_record(value, task="regression")
        assert isinstance(result, Rejection) and result.reason in ("bad_label", "invalid_json")


def test_decoding_never_raises_on_random_bytes_and_json() -> None:
    rng = random.Random(5)
    pieces = [
        b'{"t":"in"',
        b',"p":0',
        b',"o":3',
        b',"x":{"a":1e308,"b":-0.0}',
        b',"y":[',
        b'"y":{}',
        b"NaN",
        b"Infinity",
        b"\x00",
        b"\\ud800",
        b'"',
        b"}",
        b"]",
        b"1" * 5000,
        b",",
        b":",
    ]
    for _ in range(3000):
        value = b"".join(rng.choice(pieces) for _ in range(rng.randint(0, 12)))
        if rng.random() < 0.3:
            value = rng.randbytes(rng.randint(0, 64))
        result = decode_training_record(value, task=rng.choice(["classification", "regression"]))
        assert isinstance(result, (TrainingRecord, Rejection))
        if isinstance(result, Rejection):
            assert result.reason in TRAINING_REASONS


# ---------------------------------------------------------------------------------- exactly once
def test_redelivered_records_are_learned_once_and_the_model_is_one_learn_one_loop() -> None:
    """The training topic holds every record, with replayed runs; it is read in polls of any
    size and the learner restarts from its saved bytes now and then: the records learned plus
    buffered are exactly the distinct ones, and the model is bit for bit that of one learn_one
    loop over them."""
    rng = random.Random(1)
    records = stream(2500)
    values = [encode_training_record(*r) for r in records]
    state = LearnerState(DASClassifier(seed=3), topics=["in"])
    restarts = 0
    for k, poll in enumerate(redelivered(values, rng)):
        state.learn(poll)
        if k % 4 == 3:
            state = LearnerState.from_blob(state.to_blob(), task="classification", topics=["in"])
            restarts += 1
    assert restarts >= 3
    est = state.estimator
    assert state.n_duplicates > 200
    assert state.n_learned == est.n_samples_learned + est.n_samples_buffered == len(records)
    assert est.n_samples_buffered > 0 or len(records) % est.batch_size == 0
    same(reference(records, DASClassifier(seed=3)).to_state(), est.to_state())


def test_without_the_source_offsets_a_replay_would_be_learned_twice() -> None:
    """What the offsets kept in the state prevent: a replayed run learned again."""
    records = stream(300)
    values = [(i, encode_training_record(*r)) for i, r in enumerate(records)]
    state = LearnerState(DASClassifier(seed=3), topics=["in"])
    state.learn(values)
    forgetful = LearnerState.from_blob(state.to_blob(), task="classification")
    forgetful.learned.clear()
    forgetful.learn(values[:100])
    assert forgetful.n_learned == 400
    state.learn(values[:100])
    assert state.n_learned == 300 and state.n_duplicates == 100


def test_records_the_model_refuses_are_counted_and_skipped_as_learn_one_would() -> None:
    """A label beyond max_classes, a feature beyond max_features: the record changes nothing,
    is counted with the limit's reason, and the records after it are learned as usual."""
    rng = random.Random(2)
    records = []
    for i in range(400):
        x = {"a": rng.uniform(-1, 1), "b": rng.uniform(-1, 1)}
        if i % 50 == 7:
            x.update({f"wide{i}_{j}": 1.0 for j in range(3)})
        records.append(("in", 0, i, x, f"c{rng.randrange(5)}" if i % 9 else "rare"))
    params = {"seed": 4, "max_classes": 4, "max_features": 8}
    state = LearnerState(DASClassifier(**params))
    for start in range(0, len(records), 64):
        state.learn([(i, encode_training_record(*records[i])) for i in range(start, min(start + 64, 400))])
    assert state.rejected["too_many_classes"] > 0 and state.rejected["too_many_features"] > 0
    est = state.estimator
    ref = reference(records, DASClassifier(**params))
    assert (
        state.n_learned
        == est.n_samples_learned + est.n_samples_buffered
        == (ref.n_samples_learned + ref.n_samples_buffered)
    )
    assert state.n_learned + sum(state.rejected.values()) == len(records)
    same(ref.to_state(), est.to_state())


def test_regression_and_linear_models_learn_through_the_same_step() -> None:
    records = [("in", 0, i, {"a": i / 100, "b": 1.0}, i / 50) for i in range(200)]
    values = [(i, encode_training_record(*r)) for i, r in enumerate(records)]
    das = LearnerState(DASRegressor(seed=1), task="regression")
    das.learn(values[:77])
    das.learn(values[50:])
    same(reference(records, DASRegressor(seed=1)).to_state(), das.estimator.to_state())
    linear = LearnerState(linear_model.LinearRegression(), task="regression")
    linear.learn(values + values[:30])
    ref = reference(records, linear_model.LinearRegression())
    assert linear.n_learned == 200 and linear.estimator.weights == ref.weights
    back = LearnerState.from_blob(linear.to_blob(), task="regression", kind="linear")
    assert back.estimator.weights == ref.weights and back.learned == {("in", 0): 199}


def test_sources_are_checked_and_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    state = LearnerState(DASClassifier(seed=1), topics=["in"], features=["a", "b"])
    batch = [
        encode_training_record("other", 0, 0, {"a": 1.0, "b": 1.0}, 1),
        encode_training_record("in", 0, 0, {"a": 1.0}, 1),
        encode_training_record("in", 0, 1, {"a": 1.0, "b": 2.0, "z": 0.0}, 1),
        encode_training_record("in", 0, 2, {"a": 1.0, "b": 2.0}, 1),
    ]
    report = state.learn(enumerate(batch))
    assert dict(report.rejected) == {"bad_source": 1, "missing_feature": 1, "unknown_feature": 1}
    assert report.n_learned == 1 and state.learned == {("in", 0): 2}
    monkeypatch.setattr(training, "MAX_SOURCES", 3)
    many = [encode_training_record("in", p, 0, {"a": 1.0, "b": 1.0}, 0) for p in range(1, 6)]
    report = state.learn(enumerate(many, start=4))
    assert report.n_learned == 2 and report.rejected["too_many_sources"] == 3 and len(state.learned) == 3


# ---------------------------------------------------------------------------------- saved state
def test_the_saved_state_holds_model_buffer_offsets_and_counts() -> None:
    state = LearnerState(DASClassifier(seed=1, batch_size=8, batch_warmup=0), topics=["in"])
    state.learn([(i, encode_training_record("in", i % 2, i, {"a": float(i)}, i % 2)) for i in range(13)])
    state.learn([(13, b"junk"), (14, encode_training_record("in", 0, 0, {"a": 0.0}, 0))])
    back = LearnerState.from_blob(state.to_blob(), task="classification")
    assert back.learned == {("in", 0): 12, ("in", 1): 11}
    assert (back.train_offset, back.n_learned, back.n_duplicates) == (15, 13, 1)
    assert dict(back.rejected) == {"invalid_json": 1} and back.estimator.n_samples_buffered == 5
    same(state.estimator.to_state(), back.estimator.to_state())


def _payload(state: LearnerState) -> dict[str, Any]:
    return checkpoint.loads(state.to_blob())


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("learned", {"in": {0: -1}}),
        ("learned", {"bad topic": {0: 1}}),
        ("learned", {"in": {"0": 1}}),
        ("learned", [["in", 0, 1]]),
        ("train_offset", -1),
        ("train_offset", 1.5),
        ("n_learned", -3),
        ("rejected", {"Not A Reason": 1}),
        ("rejected", {f"r{i}": 1 for i in range(65)}),
        ("task", "regression"),
        ("format", "something-else"),
    ],
)
def test_a_state_that_does_not_fit_is_a_checkpoint_error(field: str, value: Any) -> None:
    state = LearnerState(DASClassifier(seed=1))
    state.learn([(0, encode_training_record("in", 0, 0, {"a": 1.0}, 1))])
    payload = _payload(state)
    payload[field] = value
    with pytest.raises(CheckpointError):
        LearnerState.from_blob(checkpoint.dumps(payload), task="classification")


def test_damaged_or_foreign_bytes_are_a_checkpoint_error() -> None:
    state = LearnerState(DASClassifier(seed=1))
    blob = bytearray(state.to_blob())
    blob[len(blob) // 2] ^= 0x10
    with pytest.raises(CheckpointError, match="SHA-256"):
        LearnerState.from_blob(bytes(blob), task="classification")
    with pytest.raises(CheckpointError):
        LearnerState.from_blob(b"\x80\x04K\x01.", task="classification")  # a pickle: never loaded
    with pytest.raises(CheckpointError, match="'linear'"):
        LearnerState.from_blob(
            LearnerState(linear_model.LogisticRegression()).to_blob(), task="classification", kind="das"
        )


def test_a_model_that_loads_but_cannot_learn_is_refused() -> None:
    model = DASClassifier(seed=1, batch_size=8)
    for i in range(8):
        model.learn_one({"a": float(i)}, i % 2 == 0)
    payload = _payload(LearnerState(model))
    payload["model"]["state"]["estimator"]["trainer"]["model"]["hidden.0.weight"].fill_(float("nan"))
    with pytest.raises(CheckpointError):
        LearnerState.from_blob(checkpoint.dumps(payload), task="classification")


def test_a_failure_after_the_model_changed_asks_for_the_saved_state() -> None:
    """A frame that fails after an optimizer step was taken cannot be retried record by record
    (those records would be learned twice): ModelStateError, and the caller restores."""
    est = DASClassifier(seed=1, batch_size=8)
    state = LearnerState(est)
    step, calls = est._step, []

    def second_step_fails(*args: Any) -> None:
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("a fault in the middle of learning")
        step(*args)

    est._step = second_step_fails  # type: ignore[method-assign]
    with pytest.raises(training.ModelStateError):
        state.learn([(i, encode_training_record("in", 0, i, {"a": float(i)}, i % 2)) for i in range(24)])
