"""Unit tests of the consumer service's pieces that need no broker."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from consumers.__main__ import main
from consumers.config import load_config
from consumers.model import ModelSpec, PartitionState, make_estimator, process_batch
from consumers.records import REASONS, Record, Rejection, parse_record
from consumers.sources import open_source
from consumers.store import CheckpointStore

BAD_VALUES = {
    "empty": b"",
    "oversized": b'{"x": {"a": 1.0}, "pad": "' + b"z" * 5000 + b'"}',
    "undecodable": b"\xff\xfe{\x00",
    "invalid_json": b'{"x": {"a": 1',
    "not_object": b"[1, 2, 3]",
    "missing_x": b'{"y": 1}',
    "non_numeric_feature": b'{"x": {"a": "1.0", "b": 2}}',
    "non_finite_feature": b'{"x": {"a": NaN, "b": 2}}',
    "bad_label": b'{"x": {"a": 1, "b": 2}, "y": {"nested": true}}',
}


@pytest.mark.parametrize("reason", sorted(BAD_VALUES))
def test_every_bad_kind_is_rejected_with_its_reason(reason: str) -> None:
    result = parse_record(BAD_VALUES[reason], max_bytes=4096)
    assert isinstance(result, Rejection)
    assert result.reason == reason
    assert reason in REASONS


@pytest.mark.parametrize("literal", [b"Infinity", b"-Infinity", b"1e999", b"1e39", b"null", b'"1"'])
def test_non_finite_and_non_numeric_literals(literal: bytes) -> None:
    result = parse_record(b'{"x": {"a": ' + literal + b"}}")
    assert isinstance(result, Rejection)
    assert result.reason in ("non_finite_feature", "non_numeric_feature")


def test_booleans_are_features_as_in_river() -> None:
    assert parse_record(b'{"x": {"a": true, "b": false}}') == Record(x={"a": 1.0, "b": 0.0})


def test_valid_record_keeps_label_and_id() -> None:
    assert parse_record(b'{"x": {"a": 1, "b": -2.5}, "y": "cat", "id": "r9"}') == Record(
        x={"a": 1.0, "b": -2.5}, y="cat", id="r9"
    )
    assert parse_record(b'{"x": {"a": 1}, "y": "cat"}', task="regression").reason == "bad_label"


def _das_state(task: str = "classification", features: list[str] | None = None) -> PartitionState:
    return PartitionState(
        make_estimator(ModelSpec(task=task, params={"hidden_sizes": (8,)}, seed=3)), features
    )


def _records(n: int, start: int = 0) -> list[bytes]:
    return [
        json.dumps({"x": {"a": (i % 7) / 7, "b": (i % 3) - 1.0}, "y": i % 2, "id": i}).encode()
        for i in range(start, start + n)
    ]


def test_batch_with_bad_records_predicts_the_rest_and_learns_in_batch_size_steps() -> None:
    spec = ModelSpec(task="classification", params={"hidden_sizes": (8,), "batch_warmup": 0}, seed=3)
    state = PartitionState(make_estimator(spec), ["a", "b"])  # a configured schema (--features a,b)
    values = _records(20)
    values[3] = BAD_VALUES["non_finite_feature"]
    values[11] = b'{"x": {"a": 1.0}, "y": 1}'  # schema: b is missing
    values[12] = b'{"x": {"a": 1.0, "b": 0, "c": 3}}'  # schema: c is unknown
    result = process_batch(state, values)
    assert sorted(i for i, _ in result.rejections) == [3, 11, 12]
    assert {r.reason for _, r in result.rejections} == {
        "non_finite_feature",
        "missing_feature",
        "unknown_feature",
    }
    assert len(result.predictions) == 17
    assert result.n_learned == 17
    est = state.estimator
    # one step per batch_size records, the remainder waits for the next batch
    assert est.n_samples_learned == 17 - 17 % est.batch_size
    assert est.n_samples_buffered == 17 % est.batch_size
    assert state.features == ["a", "b"] and state.n_records == 20
    # the next batch is predicted by a model that has learned: probabilities for both classes
    second = process_batch(state, _records(5, start=20))
    for _, payload in second.predictions:
        assert set(payload["probabilities"]) == {"0", "1"}
        assert math.isclose(sum(payload["probabilities"].values()), 1.0, rel_tol=1e-6)
        assert payload["prediction"] in (0, 1)
        assert payload["hidden_sizes"] == state.estimator.layer_sizes
        assert payload["model_records"] == 20


def test_regression_batch_and_unlabelled_records_are_not_learned() -> None:
    state = _das_state("regression")
    values = [json.dumps({"x": {"a": i / 10}, "y": i / 5}).encode() for i in range(10)]
    values += [b'{"x": {"a": 0.3}}']
    result = process_batch(state, values, task="regression")
    assert result.n_learned == 10 and len(result.predictions) == 11
    assert result.predictions[-1][1]["learned"] is False
    assert "probabilities" not in result.predictions[0][1]


def test_checkpoint_roundtrip_keeps_model_offset_and_schema(tmp_path: Path) -> None:
    state = _das_state(features=["a", "b"])
    process_batch(state, _records(64))
    state.next_offset = 64
    store = CheckpointStore(tmp_path, keep=2)
    store.save("in", 2, state)
    loaded = store.load("in", 2)
    assert loaded is not None
    assert loaded.state.next_offset == 64 and loaded.state.features == ["a", "b"]
    assert loaded.extra["offsets"] == {"in:2": 64}
    probe = [b'{"x": {"a": 0.2, "b": 1.0}}']
    assert (
        process_batch(loaded.state, probe).predictions[0][1]["probabilities"]
        == process_batch(state, probe).predictions[0][1]["probabilities"]
    )


def test_corrupt_newest_checkpoint_falls_back_and_old_ones_are_pruned(tmp_path: Path) -> None:
    state = _das_state()
    process_batch(state, _records(8))
    store = CheckpointStore(tmp_path, keep=2)
    for offset in (10, 20, 30):
        state.next_offset = offset
        store.save("in", 0, state)
    files = sorted(p.name for p in store.folder("in", 0).iterdir())
    assert files == [f"{20:020d}.ckpt", f"{30:020d}.ckpt"]
    (store.folder("in", 0) / f"{30:020d}.ckpt").write_bytes(b"torn")
    assert store.load("in", 0).state.next_offset == 20


def test_config_precedence_toml_env_flags(tmp_path: Path) -> None:
    toml = tmp_path / "svc.toml"
    toml.write_text(
        'group_id = "from-file"\ntopics = ["t1", "t2"]\ncheckpoint_every = 7\n'
        '[kafka]\nsecurity_protocol = "SASL_SSL"\nsasl_mechanism = "PLAIN"\n'
        "[model]\nhidden_sizes = [4, 4]\n"
    )
    env = {
        "STREAMDAS_CONFIG": str(toml),
        "STREAMDAS_GROUP_ID": "from-env",
        "STREAMDAS_CHECKPOINT_EVERY": "9",
        "STREAMDAS_KAFKA_SASL_PLAIN_PASSWORD": "s3cret",
    }
    cfg = load_config(["--checkpoint-every", "11", "--kafka", "ssl_cafile=/ca.pem"], env=env)
    assert cfg.group_id == "from-env"
    assert cfg.topics == ["t1", "t2"]
    assert cfg.checkpoint_every == 11
    assert cfg.model_params == {"hidden_sizes": [4, 4]}
    assert cfg.kafka == {
        "security_protocol": "SASL_SSL",
        "sasl_mechanism": "PLAIN",
        "sasl_plain_password": "s3cret",
        "ssl_cafile": "/ca.pem",
    }
    with pytest.raises(ValueError, match="task"):
        load_config(["--task", "ranking"], env={})


def test_security_settings_reach_kafka_python_clients() -> None:
    from kafka import KafkaConsumer, KafkaProducer

    from consumers.clients import only_known

    options = {"security_protocol": "SSL", "ssl_cafile": "/ca.pem", "fetch_max_bytes": 1024}
    assert only_known(options, KafkaConsumer) == options
    assert only_known(options, KafkaProducer) == {"security_protocol": "SSL", "ssl_cafile": "/ca.pem"}


def test_embedded_mode_jsonl_file(tmp_path: Path) -> None:
    source = tmp_path / "in.jsonl"
    lines = [*_records(50), b"not json", b'{"x": {"a": Infinity, "b": 1}}']
    source.write_bytes(b"\n".join(lines) + b"\n")
    out, dead = tmp_path / "pred.jsonl", tmp_path / "dead.jsonl"
    status = main(
        [
            "--source",
            str(source),
            "--output",
            str(out),
            "--dead-letter-output",
            str(dead),
            "--max-poll-records",
            "16",
            "--model-param",
            "hidden_sizes=[8]",
            "--log-level",
            "WARNING",
        ]
    )
    assert status == 0
    predictions = [json.loads(line) for line in out.read_text().splitlines()]
    dead_letters = [json.loads(line) for line in dead.read_text().splitlines()]
    assert [p["offset"] for p in predictions] == list(range(50))
    assert [p["id"] for p in predictions] == list(range(50))
    assert [(d["offset"], d["reason"]) for d in dead_letters] == [
        (50, "invalid_json"),
        (51, "non_finite_feature"),
    ]


def test_embedded_sources_river_and_simulation() -> None:
    assert len(list(open_source("river:SEA", seed=1, limit=5))) == 5
    sim = list(open_source("sim:sea_abrupt", seed=1, limit=40))
    assert len(sim) == 40 and all(isinstance(parse_record(v), Record) for v in sim)
    with pytest.raises(ValueError, match="is not a file"):
        open_source("/nonexistent/file.jsonl")


def test_embedded_metrics_carry_the_documented_model_label(tmp_path: Path) -> None:
    """docs/metrics.md: each model is exported with ``model="<topic>-<partition>"``."""
    import io
    from contextlib import redirect_stdout

    from consumers.config import ServiceConfig
    from consumers.embedded import run_embedded
    from consumers.telemetry import Telemetry

    cfg = ServiceConfig(source="river:SEA", limit=64, max_poll_records=16, model_params={"hidden_sizes": [8]})
    telemetry = Telemetry(cfg)
    with redirect_stdout(io.StringIO()):
        assert run_embedded(cfg, telemetry) == 0
    get = telemetry.registry.get_sample_value
    assert get("streamdas_model_samples_learned_total", {"model": "river:SEA-0"}) > 0
    assert get("streamdas_model_samples_learned_total", {"model": "embedded"}) is None


def test_only_consumers_names_lag_dead_letters_or_broker_health() -> None:
    """Issue 12: what only the Kafka service knows lives in ``consumers/``."""
    import re

    root = Path(__file__).resolve().parents[1]
    words = re.compile(
        r"\blag\b|consumer_lag|dead.letter|broker.up|broker.unreachable"
        r"|broker.health|broker.reachab",
        re.IGNORECASE,
    )
    offenders = []
    for folder in ("streamdas",):  # the core library (the service and its benchmark may)
        for path in sorted((root / folder).rglob("*.py")):
            for n, line in enumerate(path.read_text().splitlines(), 1):
                if words.search(line):
                    offenders.append(f"{path.relative_to(root)}:{n}: {line.strip()}")
    assert not offenders, "\n".join(offenders)


def test_consumer_request_timeout_covers_a_held_sync_group_but_producer_keeps_its_own(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A follower's SyncGroup may be held up to the leader's session timeout; a shorter consumer
    request timeout made a member restarted behind a dead leader rejoin forever (chaos test)."""
    from consumers.clients import (
        COORDINATOR_MARGIN_MS,
        common_options,
        consumer_request_timeout_ms,
    )
    from consumers.service import KafkaService

    built: dict[str, object] = {}

    class FakeConsumer:  # records what the service builds its consumer with
        def __init__(self, **options: object) -> None:
            built.update(options)

        def subscribe(self, topics: list[str], listener: object) -> None:
            pass

    monkeypatch.setattr("consumers.clients.KafkaConsumer", FakeConsumer)
    for session, request in [(6000, 2000), (6000, 5000), (45000, 30000), (6000, 30000)]:
        cfg = load_config(
            [
                "--bootstrap-servers",
                "localhost:1",
                "--topics",
                "in",
                "--output-topic",
                "out",
                "--session-timeout-ms",
                str(session),
                "--request-timeout-ms",
                str(request),
                "--model-scope",
                "partition",
            ]
        )
        timeout = consumer_request_timeout_ms(cfg)
        assert timeout >= session + COORDINATOR_MARGIN_MS
        assert timeout >= request
        assert timeout in (request, session + COORDINATOR_MARGIN_MS)
        service = KafkaService(cfg)
        assert common_options(cfg)["request_timeout_ms"] == request  # the producer's
        built.clear()
        service.producer_factory = object  # no broker: connect builds only the fakes
        assert service._connect()
        assert built["request_timeout_ms"] == timeout
        assert built["session_timeout_ms"] == session
