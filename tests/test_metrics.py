"""Unit tests for streamdas.metrics (no Prometheus server needed)."""

from __future__ import annotations

import json
import socket
import threading
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from typing import Any

import prometheus_client
import pytest
from prometheus_client.parser import text_string_to_metric_families

from consumers.metrics import OUTCOMES, ServiceMetrics
from streamdas.metrics import ModelCollector, expose_models, serve


@dataclass
class FakeModel:
    """Stands in for DASClassifier: only the attributes ModelCollector reads."""

    layer_sizes: list[int] = field(default_factory=lambda: [8, 4])
    n_parameters: int = 100
    model_bytes: int = 400
    n_units_grown: list[int] = field(default_factory=lambda: [2, 0])
    n_units_pruned: list[int] = field(default_factory=lambda: [0, 1])
    n_samples_learned: int = 64
    n_sizing_cycles: int = 1
    n_nonfinite_skipped: int = 0
    n_drifts_detected: int = 0
    min_units: int = 1


def sample(reg: prometheus_client.CollectorRegistry, name: str, **labels: str) -> float | None:
    return reg.get_sample_value(name, labels)


def scrape(reg: prometheus_client.CollectorRegistry) -> dict[str, Any]:
    """Round-trip through the real exposition format and its parser."""
    text = prometheus_client.generate_latest(reg).decode()
    return {fam.name: fam for fam in text_string_to_metric_families(text)}


# -- ModelCollector --------------------------------------------------------------------------


def test_model_collector_reads_live_shape_at_scrape_time() -> None:
    model = FakeModel()
    reg = prometheus_client.CollectorRegistry()
    ModelCollector({"m": model}, registry=reg)
    assert sample(reg, "streamdas_model_hidden_units", model="m", layer="0") == 8
    assert sample(reg, "streamdas_model_hidden_units", model="m", layer="1") == 4
    assert sample(reg, "streamdas_model_hidden_layers", model="m") == 2
    model.layer_sizes = [12, 4, 3]
    model.n_units_grown = [6, 0, 3]
    model.n_parameters = 250
    assert sample(reg, "streamdas_model_hidden_units", model="m", layer="0") == 12
    assert sample(reg, "streamdas_model_hidden_units", model="m", layer="2") == 3
    assert sample(reg, "streamdas_model_units_grown_total", model="m", layer="2") == 6 - 3
    assert sample(reg, "streamdas_model_parameters", model="m") == 250
    # shrinking drops the series of a removed layer
    model.layer_sizes = [5]
    assert sample(reg, "streamdas_model_hidden_units", model="m", layer="1") is None


def test_model_collector_exports_every_documented_attribute() -> None:
    model = FakeModel(
        n_parameters=7,
        model_bytes=28,
        n_samples_learned=9,
        n_sizing_cycles=2,
        n_nonfinite_skipped=3,
        n_drifts_detected=4,
        min_units=2,
    )
    reg = prometheus_client.CollectorRegistry()
    ModelCollector(model, registry=reg)
    expected = {
        "streamdas_model_parameters": 7,
        "streamdas_model_size_bytes": 28,
        "streamdas_model_samples_learned_total": 9,
        "streamdas_model_sizing_cycles_total": 2,
        "streamdas_model_nonfinite_skipped_total": 3,
        "streamdas_model_drifts_detected_total": 4,
        "streamdas_model_min_hidden_units": 2,
    }
    for name, value in expected.items():
        assert sample(reg, name, model="default") == value, name
    assert sample(reg, "streamdas_model_units_pruned_total", model="default", layer="1") == 1
    families = scrape(reg)
    assert families["streamdas_model_units_grown"].type == "counter"
    assert families["streamdas_model_hidden_units"].type == "gauge"


def test_model_collector_several_models_and_replacement() -> None:
    models: dict[str, Any] = {"a": FakeModel(layer_sizes=[1]), "b": FakeModel(layer_sizes=[2])}
    reg = prometheus_client.CollectorRegistry()
    ModelCollector(models, registry=reg)
    assert sample(reg, "streamdas_model_hidden_units", model="a", layer="0") == 1
    assert sample(reg, "streamdas_model_hidden_units", model="b", layer="0") == 2
    models["a"] = FakeModel(layer_sizes=[30])  # e.g. restored from a checkpoint
    del models["b"]
    assert sample(reg, "streamdas_model_hidden_units", model="a", layer="0") == 30
    assert sample(reg, "streamdas_model_hidden_units", model="b", layer="0") is None


def test_model_collector_tolerates_missing_and_failing_attributes() -> None:
    class Partial:
        layer_sizes = (3, 3)

        @property
        def n_parameters(self) -> int:
            raise RuntimeError("not built yet")

        n_samples_learned = float("nan")

    reg = prometheus_client.CollectorRegistry()
    ModelCollector(lambda: {"p": Partial()}, registry=reg)
    assert sample(reg, "streamdas_model_hidden_units", model="p", layer="1") == 3
    assert sample(reg, "streamdas_model_parameters", model="p") is None
    assert sample(reg, "streamdas_model_samples_learned_total", model="p") is None
    assert sample(reg, "streamdas_model_min_hidden_units", model="p") == 1  # default floor


def test_model_collector_uses_lock() -> None:
    lock = threading.Lock()
    reg = prometheus_client.CollectorRegistry()
    ModelCollector(FakeModel(), registry=reg, lock=lock)
    result: list[float | None] = []
    with lock:
        t = threading.Thread(
            target=lambda: result.append(sample(reg, "streamdas_model_parameters", model="default"))
        )
        t.start()
        t.join(timeout=0.3)
        assert t.is_alive(), "scrape must wait for the model lock"
    t.join(timeout=5)
    assert result == [100]


def test_duplicate_registration_is_detected() -> None:
    reg = prometheus_client.CollectorRegistry()
    ModelCollector(FakeModel(), registry=reg)
    with pytest.raises(ValueError, match="Duplicated"):
        ModelCollector(FakeModel(), registry=reg)


# -- ServiceMetrics --------------------------------------------------------------------------


def test_records_and_dead_letters() -> None:
    reg = prometheus_client.CollectorRegistry()
    m = ServiceMetrics(registry=reg, model="svc")
    for outcome in OUTCOMES:  # pre-created at zero so rate() works from the first scrape
        assert sample(reg, "streamdas_records_total", model="svc", outcome=outcome) == 0
    m.record("predicted", n=5)
    m.record("learned", n=4)
    m.record("dead_lettered", reason="decode_error")
    m.record("dead_lettered", n=2, reason="invalid_feature")
    m.record("dead_lettered")
    assert sample(reg, "streamdas_records_total", model="svc", outcome="predicted") == 5
    assert sample(reg, "streamdas_records_total", model="svc", outcome="learned") == 4
    assert sample(reg, "streamdas_records_total", model="svc", outcome="dead_lettered") == 4
    dl = "streamdas_dead_letters_total"
    assert sample(reg, dl, model="svc", reason="decode_error") == 1
    assert sample(reg, dl, model="svc", reason="invalid_feature") == 2
    assert sample(reg, dl, model="svc", reason="unknown") == 1
    with pytest.raises(ValueError, match="outcome"):
        m.record("exploded")
    with pytest.raises(ValueError):
        m.record("learned", n=-1)


def test_reason_label_stays_bounded() -> None:
    reg = prometheus_client.CollectorRegistry()
    m = ServiceMetrics(registry=reg)
    m.record("dead_lettered", reason="feature 'x1' is NaN in message 1234")  # free text
    for i in range(100):
        m.record("dead_lettered", reason=f"code_{i}")
    reasons = {
        s.labels["reason"]
        for fam in reg.collect()
        if fam.name == "streamdas_dead_letters"
        for s in fam.samples
        if s.name.endswith("_total")
    }
    assert "other" in reasons
    assert len(reasons) <= 33
    assert not any(" " in r for r in reasons)
    total = sum(sample(reg, "streamdas_dead_letters_total", model="default", reason=r) or 0 for r in reasons)
    assert total == 101  # nothing lost, only folded into "other"


def test_latency_histograms_are_per_record() -> None:
    reg = prometheus_client.CollectorRegistry()
    m = ServiceMetrics(registry=reg)
    m.observe_predict(0.5, n=100)  # 5 ms per record
    m.observe_learn(0.2)
    name = "streamdas_predict_latency_seconds"
    assert sample(reg, f"{name}_count", model="default") == 1
    assert sample(reg, f"{name}_sum", model="default") == pytest.approx(0.005)
    assert sample(reg, f"{name}_bucket", model="default", le="0.0025") == 0
    assert sample(reg, f"{name}_bucket", model="default", le="0.005") == 1
    assert sample(reg, "streamdas_learn_latency_seconds_sum", model="default") == pytest.approx(0.2)
    m.observe_learn(1.0, n=0)  # nothing processed: nothing observed
    assert sample(reg, "streamdas_learn_latency_seconds_count", model="default") == 1
    with pytest.raises(ValueError):
        m.observe_learn(float("nan"))


def test_lag_and_rebalance() -> None:
    reg = prometheus_client.CollectorRegistry()
    m = ServiceMetrics(registry=reg)
    m.set_lag(0, 10)
    m.set_lag(3, 7)
    m.set_lag(3, -2)  # clamped
    assert sample(reg, "streamdas_consumer_lag_messages", model="default", partition="0") == 10
    assert sample(reg, "streamdas_consumer_lag_messages", model="default", partition="3") == 0
    m.forget_partitions(keep=[3])
    assert sample(reg, "streamdas_consumer_lag_messages", model="default", partition="0") is None
    assert sample(reg, "streamdas_consumer_lag_messages", model="default", partition="3") == 0


def test_checkpoint_time() -> None:
    reg = prometheus_client.CollectorRegistry()
    m = ServiceMetrics(registry=reg)
    m.mark_checkpoint(timestamp=1234.5)
    m.mark_checkpoint(timestamp=2000.0)
    assert sample(reg, "streamdas_last_checkpoint_timestamp_seconds", model="default") == 2000.0
    assert sample(reg, "streamdas_checkpoints_total", model="default") == 2


def test_prequential_accuracy_is_rolling() -> None:
    reg = prometheus_client.CollectorRegistry()
    m = ServiceMetrics(registry=reg, window=4)
    for y_true, y_pred in [("a", "a"), ("a", "b"), ("b", None), ("b", "b"), ("a", "b")]:
        m.observe_prequential(y_true, y_pred)  # no prediction (a model that learned nothing)
    assert sample(reg, "streamdas_prequential_accuracy", model="default") == 0.5  # is ignored
    assert sample(reg, "streamdas_prequential_window_samples", model="default") == 4
    for _ in range(4):  # the window forgets the old mistakes
        m.observe_prequential(True, True)
    assert sample(reg, "streamdas_prequential_accuracy", model="default") == 1.0
    assert sample(reg, "streamdas_prequential_window_samples", model="default") == 4
    assert m.task == "classification"
    assert sample(reg, "streamdas_prequential_mean_absolute_error", model="default") is None


def test_prequential_error_for_regressors() -> None:
    reg = prometheus_client.CollectorRegistry()
    m = ServiceMetrics(registry=reg, window=3)
    for y_true, y_pred in [(1.0, 1.5), (2.0, 1.0), (0.0, 0.0), (3.0, 2.0)]:
        m.observe_prequential(y_true, y_pred)
    # window of 3: |2-1| + 0 + |3-2| over 3
    assert sample(reg, "streamdas_prequential_mean_absolute_error", model="default") == (pytest.approx(2 / 3))
    assert m.task == "regression"
    forced = ServiceMetrics(registry=prometheus_client.CollectorRegistry(), task="regression")
    forced.observe_prequential(1, 3)  # integer targets, still regression when told so
    assert forced.mae.labels("default")._value.get() == 2


def test_invalid_constructor_arguments() -> None:
    for kwargs in ({"window": 0}, {"task": "ranking"}, {"stall_seconds": 0}):
        with pytest.raises(ValueError):
            ServiceMetrics(registry=prometheus_client.CollectorRegistry(), **kwargs)


def test_health_stalled_loop_and_broker() -> None:
    m = ServiceMetrics(registry=prometheus_client.CollectorRegistry(), stall_seconds=10)
    assert m.health()[0]  # just started: healthy during the grace period
    m.heartbeat(timestamp=1000.0)
    m.set_broker_up(True)
    assert m.health(now=1005.0) == (True, "ok")
    ok, reason = m.health(now=1011.0)
    assert not ok and "stalled" in reason
    m.heartbeat(timestamp=1011.0)
    m.set_broker_up(False)
    ok, reason = m.health(now=1012.0)
    assert not ok and "broker" in reason


def test_naming_conventions_on_populated_registry() -> None:
    reg = prometheus_client.CollectorRegistry()
    ModelCollector(FakeModel(), registry=reg)
    m = ServiceMetrics(registry=reg)
    m.record("dead_lettered", reason="decode_error")
    m.observe_learn(0.1)
    m.observe_predict(0.1)
    m.set_lag(0, 1)
    m.mark_checkpoint()
    m.observe_prequential(1, 1)
    m.set_broker_up(True)
    m.heartbeat()
    allowed_labels = {"model", "layer", "partition", "outcome", "reason", "le"}
    families = scrape(reg)
    assert len(families) >= 20
    for name, fam in families.items():
        assert name.startswith("streamdas_"), name
        if name.endswith("_created"):  # prometheus_client's creation-time gauges
            continue
        assert fam.documentation, name
        if fam.type == "counter":
            assert all(s.name.endswith(("_total", "_created")) for s in fam.samples), name
        else:
            assert not name.endswith("_total"), name
        if "latency" in name or "timestamp" in name or name.endswith("time_seconds"):
            assert name.endswith("_seconds"), name
        if "bytes" in name:
            assert name.endswith("_bytes"), name
        for s in fam.samples:
            assert set(s.labels) <= allowed_labels, (name, s.labels)
            assert "model" in s.labels, name


# -- HTTP server -----------------------------------------------------------------------------


def _get(url: str) -> tuple[int, str, str]:
    return _get_request(urllib.request.Request(url))


def _get_request(request: urllib.request.Request) -> tuple[int, str, str]:
    try:
        with urllib.request.urlopen(request, timeout=30) as resp:
            return resp.status, resp.headers.get("Content-Type", ""), resp.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.headers.get("Content-Type", ""), err.read().decode()


def test_serve_metrics_and_healthz() -> None:
    reg = prometheus_client.CollectorRegistry()
    model = FakeModel()
    ModelCollector({"default": model}, registry=reg)
    m = ServiceMetrics(registry=reg, stall_seconds=30)
    state = {"now": None}
    with serve(port=0, registry=reg, health=lambda: m.health(now=state["now"])) as server:
        assert server.address == "127.0.0.1"
        code, ctype, body = _get(server.url + "/metrics")
        assert code == 200 and ctype.startswith("text/plain")
        fams = {f.name: f for f in text_string_to_metric_families(body)}
        widths = {s.labels["layer"]: s.value for s in fams["streamdas_model_hidden_units"].samples}
        assert widths == {"0": 8.0, "1": 4.0}
        model.layer_sizes = [9, 4]
        assert (
            'streamdas_model_hidden_units{layer="0",model="default"} 9.0' in _get(server.url + "/metrics")[2]
        )

        m.heartbeat(timestamp=100.0)
        state["now"] = 101.0
        code, ctype, body = _get(server.url + "/healthz")
        assert code == 200 and json.loads(body) == {"status": "ok", "reason": "ok"}
        state["now"] = 200.0
        code, _, body = _get(server.url + "/healthz")
        assert code == 503 and json.loads(body)["status"] == "unhealthy"
        assert "stalled" in json.loads(body)["reason"]
        state["now"] = 101.0
        m.set_broker_up(False)
        code, _, body = _get(server.url + "/healthz")
        assert code == 503 and "broker" in json.loads(body)["reason"]
        assert _get(server.url + "/nope")[0] == 404
    with pytest.raises(OSError):  # shut down: the port no longer answers
        urllib.request.urlopen(server.url + "/metrics", timeout=2)


def test_serve_ipv6_loopback() -> None:
    import socket

    if not socket.has_ipv6:
        pytest.skip("no IPv6")
    try:
        server = serve(address="::1", port=0, registry=prometheus_client.CollectorRegistry())
    except OSError as exc:
        pytest.skip(f"IPv6 loopback unavailable: {exc}")
    with server:
        assert server.url.startswith("http://[::1]:")
        assert _get(server.url + "/healthz")[0] == 200


def test_healthz_when_check_raises() -> None:
    def broken() -> tuple[bool, str]:
        raise RuntimeError("secret path /etc/boom")

    with serve(
        port=0, registry=prometheus_client.CollectorRegistry(), health=broken, checks={"/livez": broken}
    ) as server:
        for path in ("/healthz", "/livez"):
            code, _, body = _get(server.url + path)
            reason = json.loads(body)["reason"]
            assert code == 503 and "boom" not in reason and "RuntimeError" not in reason


def test_expose_models_without_kafka() -> None:
    model = FakeModel(layer_sizes=[5])
    with expose_models({"sim": model}, port=0) as server:
        body = _get(server.url + "/metrics")[2]
        assert _get(server.url + "/healthz")[0] == 200
    fams = {f.name: f for f in text_string_to_metric_families(body)}
    assert [s.value for s in fams["streamdas_model_hidden_units"].samples] == [5.0]
    assert "streamdas_records" not in fams  # no service metrics in a plain simulation


def _silent_clients(port: int, n: int, first_bytes: bytes = b"") -> list[socket.socket]:
    """``n`` connections that send ``first_bytes`` (an unfinished request head) and then wait."""
    clients = []
    for _ in range(n):
        client = socket.create_connection(("127.0.0.1", port), timeout=30)
        if first_bytes:
            client.sendall(first_bytes)
        clients.append(client)
    return clients


def _closed_by_server(client: socket.socket) -> bool:
    """Whether the server closed ``client`` (reads until the end, or the client's 30 s timeout)."""
    try:
        while client.recv(4096):
            pass
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False
    return True


def test_slow_clients_hold_no_thread_and_the_endpoints_still_answer() -> None:
    """A hundred clients that never finish their request neither add a thread to the server
    (it used to start one per connection) nor keep it from answering every endpoint."""
    reg = prometheus_client.CollectorRegistry()
    m = ServiceMetrics(registry=reg, stall_seconds=30)
    m.heartbeat()
    checks = {"/livez": m.alive, "/readyz": m.ready}
    with serve(port=0, registry=reg, health=m.ready, checks=checks) as server:
        threads = threading.active_count()
        clients = _silent_clients(server.port, 50) + _silent_clients(
            server.port, 50, b"GET /metrics HTTP/1.1\r\nHost: x\r\n"
        )
        try:
            for path in ("/metrics", "/livez", "/readyz", "/healthz"):
                code, _, body = _get(server.url + path)
                assert code == 200, (path, body)
            assert "streamdas_records_total" in _get(server.url + "/metrics")[2]
            assert threading.active_count() == threads
        finally:
            for client in clients:
                client.close()


class _WaitingLock:
    """The loop's lock, counting the scrapes that wait for it."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.waiting = threading.Semaphore(0)

    def __enter__(self) -> None:
        self.waiting.release()
        self.lock.acquire()

    def __exit__(self, *exc: object) -> None:
        self.lock.release()


def test_scrapes_waiting_for_the_models_do_not_delay_the_health_checks() -> None:
    """While the loop holds the models (a batch being learned), scrapes wait for them; more such
    scrapes than workers must not keep /livez and /readyz from answering."""
    reg = prometheus_client.CollectorRegistry()
    lock = _WaitingLock()
    ModelCollector({"m": FakeModel()}, registry=reg, lock=lock)  # type: ignore[arg-type]
    m = ServiceMetrics(registry=reg, stall_seconds=30)
    m.heartbeat()
    checks = {"/livez": m.alive, "/readyz": m.ready}
    codes: list[int] = []
    with serve(port=0, registry=reg, health=m.ready, checks=checks, workers=2) as server:
        with lock.lock:  # the loop holds the models
            scrapes = [
                threading.Thread(target=lambda: codes.append(_get(server.url + "/metrics")[0]))
                for _ in range(4)
            ]
            for scrape in scrapes:
                scrape.start()
            for _ in range(2):  # both workers are now waiting for the models
                assert lock.waiting.acquire(timeout=30)
            for path in ("/livez", "/readyz", "/healthz"):
                assert _get(server.url + path)[0] == 200, path
        for scrape in scrapes:
            scrape.join(timeout=30)
    assert codes == [200] * 4


def test_a_connection_that_sends_nothing_is_closed_after_the_timeout() -> None:
    with serve(port=0, registry=prometheus_client.CollectorRegistry(), timeout_s=0.5) as server:
        silent, unfinished = _silent_clients(server.port, 1) + _silent_clients(
            server.port, 1, b"GET /metrics HTTP/1.1\r\n"
        )
        assert _closed_by_server(silent) and _closed_by_server(unfinished)
        silent.close()
        unfinished.close()
        assert _get(server.url + "/healthz")[0] == 200


def test_waiting_connections_are_bounded_oldest_closed_first() -> None:
    with serve(port=0, registry=prometheus_client.CollectorRegistry(), max_connections=4) as server:
        clients = _silent_clients(server.port, 10)
        try:
            assert _get(server.url + "/healthz")[0] == 200  # the newest connection is served
            assert all(_closed_by_server(c) for c in clients[:6])
        finally:
            for client in clients:
                client.close()


def test_an_oversized_request_head_is_refused() -> None:
    with serve(port=0, registry=prometheus_client.CollectorRegistry()) as server:
        request = urllib.request.Request(server.url + "/metrics", headers={"X-Big": "a" * 40_000})
        assert _get_request(request)[0] == 431
        assert _get(server.url + "/metrics")[0] == 200


# -- the real estimators ---------------------------------------------------------------------


def test_model_collector_reads_real_das_estimators() -> None:
    import itertools

    import pandas as pd

    from simulations.scenarios import make_scenario
    from streamdas import DASClassifier, DASRegressor

    clf = DASClassifier(hidden_sizes=(6, 3), batch_size=16, grow_every=64, seed=3, min_units=2)
    reg = DASRegressor(hidden_sizes=(5,), batch_size=16, grow_every=64, seed=3)
    registry = prometheus_client.CollectorRegistry()
    ModelCollector({"clf": clf, "reg": reg}, registry=registry)
    before = sample(registry, "streamdas_model_samples_learned_total", model="clf") or 0.0
    for est, scenario in ((clf, "complexity"), (reg, "friedman")):
        rows = list(itertools.islice(make_scenario(scenario, n_samples=400, seed=3), 400))
        est.learn_many(pd.DataFrame([x for x, _ in rows]), pd.Series([y for _, y in rows]))
    assert clf.n_sizing_cycles > 0 and reg.n_sizing_cycles > 0
    for name, est in (("clf", clf), ("reg", reg)):
        widths = [
            sample(registry, "streamdas_model_hidden_units", model=name, layer=str(i))
            for i in range(len(est.layer_sizes))
        ]
        assert widths == [float(w) for w in est.layer_sizes]
        assert sample(registry, "streamdas_model_parameters", model=name) == est.n_parameters
        assert sample(registry, "streamdas_model_size_bytes", model=name) == est.model_bytes
        assert sample(registry, "streamdas_model_sizing_cycles_total", model=name) == (est.n_sizing_cycles)
        for i in range(len(est.layer_sizes)):
            assert (
                sample(registry, "streamdas_model_units_grown_total", model=name, layer=str(i))
                == est.n_units_grown[i]
            )
            assert (
                sample(registry, "streamdas_model_units_pruned_total", model=name, layer=str(i))
                == est.n_units_pruned[i]
            )
    assert (
        sample(registry, "streamdas_model_samples_learned_total", model="clf")
        == (clf.n_samples_learned)
        > before
    )
    assert sample(registry, "streamdas_model_min_hidden_units", model="clf") == 2
    assert sample(registry, "streamdas_model_drifts_detected_total", model="clf") == (clf.n_drifts_detected)
