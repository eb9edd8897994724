"""The service's checkpoint folder holds data, never code: no pickle, one error type, and a
counted fallback to an older checkpoint, then to a fresh model."""

from __future__ import annotations

import json
import logging
import pickle
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from kafka import TopicPartition
from river import datasets, linear_model, optim

from consumers.config import ServiceConfig
from consumers.model import ModelSpec, PartitionState, make_estimator, process_batch
from consumers.service import KafkaService
from consumers.store import CheckpointStore, linear_from_state, linear_to_state
from streamdas import checkpoint

TP = TopicPartition("in", 0)


class _Touch:
    """Unpickling this creates a file: proof that pickle ran code from the folder."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self):
        return (Path.touch, (self.path,))


def _records(n: int, start: int = 0) -> list[bytes]:
    return [
        json.dumps({"x": {"a": (i % 7) / 7, "b": (i % 3) - 1.0}, "y": i % 2, "id": i}).encode()
        for i in range(start, start + n)
    ]


def _state(kind: str, n: int = 40) -> PartitionState:
    state = PartitionState(
        make_estimator(ModelSpec(kind=kind, params={"hidden_sizes": [8]} if kind == "das" else {}, seed=1))
    )
    process_batch(state, _records(n))
    state.next_offset = n
    return state


def test_a_pickled_checkpoint_is_never_unpickled(tmp_path: Path):
    marker = tmp_path / "pwned"
    store = CheckpointStore(tmp_path / "ckpt", kind="linear")
    path = store.folder("in", 0) / f"{5:020d}.ckpt"
    checkpoint.save(
        {"format": "streamdas-consumer-pickle", "pickle": pickle.dumps(_Touch(marker)), "extra": {}}, path
    )
    assert store.load("in", 0) is None
    assert not marker.exists()
    assert CheckpointStore(tmp_path / "ckpt").load("in", 0) is None  # whatever the kind
    assert not marker.exists()


@pytest.mark.parametrize(
    "model",
    [
        linear_model.LogisticRegression(l2=0.01),
        linear_model.LogisticRegression(l1=0.001),
        linear_model.LinearRegression(intercept_lr=0.05),
        linear_model.LinearRegression(optimizer=optim.SGD(0.002)),
    ],
)
def test_linear_baselines_are_stored_as_plain_data(tmp_path: Path, model):
    data = datasets.Phishing() if "Logistic" in type(model).__name__ else datasets.TrumpApproval()
    rows = list(data.take(200))
    for x, y in rows[:150]:
        model.learn_one(x, y)
    state = PartitionState(model, next_offset=150)
    store = CheckpointStore(tmp_path, kind="linear")
    path = store.save("in", 0, state)
    assert checkpoint.load(path)["format"] == "streamdas-linear-baseline"
    loaded = store.load("in", 0).state.estimator
    method = "predict_proba_one" if "Logistic" in type(model).__name__ else "predict_one"
    for x, y in rows[150:]:
        assert getattr(loaded, method)(x) == getattr(model, method)(x)
        loaded.learn_one(x, y)
        model.learn_one(x, y)
    assert loaded.weights == model.weights


def test_non_default_nested_objects_are_refused_at_save():
    with pytest.raises(ValueError, match="non-default optimizer"):
        linear_to_state(linear_model.LogisticRegression(optimizer=optim.Adam()))


@pytest.mark.parametrize(
    "bad",
    [
        {"class": "os.system", "params": {}},
        {"class": "LogisticRegression", "params": {"optimizer": "x"}},
        {
            "class": "LogisticRegression",
            "params": {"nope": 1},
            "weights": {},
            "intercept": 0.0,
            "n_iterations": 0,
        },
        {
            "class": "LogisticRegression",
            "params": {},
            "weights": {"a": "1"},
            "intercept": 0.0,
            "n_iterations": 0,
        },
        {
            "class": "LogisticRegression",
            "params": {},
            "weights": {},
            "intercept": float("nan"),
            "n_iterations": 0,
        },
    ],
)
def test_bad_baseline_states_raise_value_error(bad):
    with pytest.raises(ValueError):
        linear_from_state(bad)


def test_store_of_one_kind_refuses_the_other(tmp_path: Path):
    CheckpointStore(tmp_path).save("in", 0, _state("linear"))
    assert CheckpointStore(tmp_path, kind="das").load("in", 0) is None
    assert CheckpointStore(tmp_path, kind="linear").load("in", 0) is not None
    CheckpointStore(tmp_path).save("in", 1, _state("das"))
    assert CheckpointStore(tmp_path, kind="linear").load("in", 1) is None
    assert CheckpointStore(tmp_path, kind="das").load("in", 1) is not None


def _hostile_copy(src: Path, dst: Path) -> None:
    """A crafted checkpoint that made the loader raise AttributeError before the allow-list."""
    payload = checkpoint.load(src)
    payload["estimator"]["params"]["drift_detector"] = {
        "module": "river.datasets.base",
        "class": "os.getcwd",
        "params": {},
    }
    checkpoint.save(payload, dst)


@dataclass
class _Consumer:
    seeks: list = field(default_factory=list)

    def seek(self, tp, offset) -> None:
        self.seeks.append((tp, offset))


def test_service_falls_back_to_older_then_fresh_and_counts_it(tmp_path: Path, caplog):
    cfg = ServiceConfig(
        checkpoint_dir=str(tmp_path / "ckpt"), model_params={"hidden_sizes": [8]}, model_scope="partition"
    )
    store = CheckpointStore(cfg.checkpoint_dir)
    good = store.save("in", 0, _state("das", 40))
    _hostile_copy(good, store.folder("in", 0) / f"{80:020d}.ckpt")

    service = KafkaService(cfg)
    service.consumer = _Consumer()
    reg = service.telemetry.registry
    with caplog.at_level(logging.ERROR, logger="consumers.store"):
        service._assign({TP})
    assert service.consumer.seeks == [(TP, 40)]  # the older checkpoint
    assert service.states[TP].n_records == 40
    assert (
        reg.get_sample_value("streamdas_checkpoint_fallbacks_total", {"model": "service", "to": "older"}) == 1
    )
    assert any("checkpoint fallback" in r.getMessage() for r in caplog.records)

    _hostile_copy(good, good)  # now every checkpoint of the partition is unreadable
    service.states.clear()
    service._assign({TP})
    assert service.states[TP].next_offset is None and service.states[TP].n_records == 0
    assert (
        reg.get_sample_value("streamdas_checkpoint_fallbacks_total", {"model": "service", "to": "fresh"}) == 1
    )
    assert (
        reg.get_sample_value("streamdas_checkpoint_fallbacks_total", {"model": "service", "to": "older"}) == 2
    )
