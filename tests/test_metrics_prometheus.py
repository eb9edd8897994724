"""A real Prometheus scrapes a DASClassifier learning a drift stream and sees its width change.

Needs the ``prometheus`` binary (Debian package ``prometheus``); skipped without it unless
``STREAMDAS_REQUIRE_SERVICES=1``.
"""

from __future__ import annotations

import contextlib
import importlib.util
import itertools
import os
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path
from types import ModuleType
from typing import Any

import pandas as pd
import pytest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_fixtures import (  # noqa: F401
    MetricsEndpoint,
    Prometheus,
    free_port,
    metrics_endpoint,
    prometheus,
    prometheus_factory,
    require_binary,
)

from consumers.metrics import ServiceMetrics
from simulations.scenarios import make_scenario
from streamdas import DASClassifier
from streamdas.metrics import ModelCollector

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[1]

MODEL = "drift"
WIDTH = f'streamdas_model_hidden_units{{job="streamdas",model="{MODEL}",layer="0"}}'


def _import_replay() -> ModuleType:
    spec = importlib.util.spec_from_file_location("streamdas_deploy_replay", ROOT / "deploy" / "replay.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _value(result: list[dict[str, Any]]) -> float | None:
    return float(result[0]["value"][1]) if len(result) == 1 else None


def test_prometheus_sees_hidden_units_change_during_drift(
    prometheus: Prometheus,  # noqa: F811
    metrics_endpoint: MetricsEndpoint,  # noqa: F811
) -> None:
    clf = DASClassifier(hidden_sizes=(8,), batch_size=32, grow_every=256, alpha=1e-3, seed=1)
    lock = threading.Lock()  # the server thread scrapes while this thread learns
    ModelCollector({MODEL: clf}, registry=metrics_endpoint.registry, lock=lock)
    service = ServiceMetrics(registry=metrics_endpoint.registry, model=MODEL, window=500)
    stream = make_scenario("complexity", n_samples=3000, seed=7)  # 2 -> 50 -> 2 centroids
    start = time.time()

    # Prometheus must first see the initial width ...
    widths = [int(clf.layer_sizes[0])]
    prometheus.wait_for(WIDTH, lambda r: _value(r) == widths[-1])

    # ... then every new width the model takes while it learns the drifting stream; each
    # change is waited for (a scrape is 1 s), so no width can fall between two scrapes.
    samples = iter(stream)
    while len(widths) < 6:
        chunk = list(itertools.islice(samples, 64))
        if not chunk:
            break
        X = pd.DataFrame([x for x, _ in chunk])
        y = pd.Series([label for _, label in chunk])
        with lock:
            t0 = time.perf_counter()
            y_pred = clf.predict_many(X)
            service.observe_predict(time.perf_counter() - t0, n=len(X))
            t0 = time.perf_counter()
            clf.learn_many(X, y)
            service.observe_learn(time.perf_counter() - t0, n=len(X))
            width = int(clf.layer_sizes[0])
        for truth, pred in zip(y, y_pred, strict=True):
            service.observe_prequential(truth, pred)
        service.record("predicted", n=len(X))
        service.record("learned", n=len(X))
        service.heartbeat()
        if width != widths[-1]:
            widths.append(width)
            prometheus.wait_for(WIDTH, lambda r, w=width: _value(r) == w)

    assert len(widths) >= 3, f"the width changed fewer than twice: {widths}"

    # The stored series, read back with a range query, went through those widths in order.
    series = prometheus.query_range(WIDTH, start - 1, time.time() + 1, step=0.5)
    assert len(series) == 1, series
    stored = [int(float(v)) for _, v in series[0]["values"]]
    deduped = [w for i, w in enumerate(stored) if i == 0 or w != stored[i - 1]]
    assert deduped == widths, (deduped, widths)

    # Counters agree with the model once the last state is scraped.
    grown = f'streamdas_model_units_grown_total{{model="{MODEL}",layer="0"}}'
    prometheus.wait_for(grown, lambda r: _value(r) == clf.n_units_grown[0])
    assert clf.n_units_grown[0] > 0
    samples_learned = f'streamdas_model_samples_learned_total{{model="{MODEL}"}}'
    prometheus.wait_for(samples_learned, lambda r: _value(r) == clf.n_samples_learned)
    records = f'sum(streamdas_records_total{{model="{MODEL}",outcome="learned"}})'
    learned = prometheus.wait_for(records, lambda r: (_value(r) or 0) > 0)
    assert _value(learned) <= 3000
    accuracy = prometheus.wait_for(
        f'streamdas_prequential_accuracy{{model="{MODEL}"}}', lambda r: _value(r) is not None
    )
    assert 0.0 <= _value(accuracy) <= 1.0


def _scrape(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    with urllib.request.urlopen(url, timeout=5) as resp:
        text = resp.read().decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for fam in text_string_to_metric_families(text)
        for s in fam.samples
    }


def _get(values: dict[Any, float], name: str, **labels: str) -> float | None:
    return values.get((name, tuple(sorted(labels.items()))))


def test_prometheus_scrapes_the_consumer_service(prometheus_factory: Any) -> None:  # noqa: F811
    """`streamdas consume` (embedded mode, records on stdin) serves /metrics to Prometheus."""
    from consumers.records import REASONS

    require_binary("prometheus")  # before starting the service
    port = free_port()
    service_url = f"http://127.0.0.1:{port}"
    cmd = [
        sys.executable,
        "-m",
        "consumers",
        "--source",
        "-",
        "--output",
        os.devnull,
        "--dead-letter-output",
        os.devnull,
        "--max-poll-records",
        "64",
        "--metrics-address",
        "127.0.0.1",
        "--metrics-port",
        str(port),
        "--model-param",
        "hidden_sizes=[8]",
        "--model-param",
        "grow_every=256",
        "--model-param",
        "alpha=0.001",
        "--model-param",
        "batch_size=32",
        "--seed",
        "1",
        "--log-level",
        "WARNING",
    ]
    proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, cwd=ROOT)
    assert proc.stdin is not None
    try:
        deadline = time.monotonic() + 60
        while True:  # the server is up once /healthz answers
            with contextlib.suppress(OSError):
                if urllib.request.urlopen(service_url + "/healthz", timeout=2).status == 200:
                    break
            assert proc.poll() is None, "the service exited early"
            assert time.monotonic() < deadline, "the service never served /healthz"
            time.sleep(0.2)
        prom = prometheus_factory([f"127.0.0.1:{port}"])
        prom.wait_for('up{job="streamdas"}', lambda r: _value(r) == 1.0)
        start = time.time()

        replay = _import_replay()
        messages = replay.messages("complexity", n_samples=2500, seed=7, bad_fraction=0.02)
        width_q = 'streamdas_model_hidden_units{job="streamdas",model="stdin-0",layer="0"}'
        widths: list[int] = []
        initial = _get(
            _scrape(service_url + "/metrics"), "streamdas_model_hidden_units", model="stdin-0", layer="0"
        )
        if initial is not None:  # the model may exist before the first record
            widths.append(int(initial))
            prom.wait_for(width_q, lambda r: _value(r) == initial)
        sent = 0
        while len(widths) < 5:
            chunk = [value for _, value in itertools.islice(messages, 64)]
            if not chunk:
                break
            proc.stdin.write(b"".join(v + b"\n" for v in chunk))
            proc.stdin.flush()
            sent += len(chunk)
            # wait until the service has handled the chunk, then read its width
            deadline = time.monotonic() + 60
            while True:
                values = _scrape(service_url + "/metrics")
                handled = sum(
                    _get(values, "streamdas_records_total", model="service", outcome=o) or 0
                    for o in ("predicted", "dead_lettered")
                )
                if handled >= sent:
                    break
                assert proc.poll() is None and time.monotonic() < deadline, "service stuck"
                time.sleep(0.05)
            width = _get(values, "streamdas_model_hidden_units", model="stdin-0", layer="0")
            assert width is not None
            if not widths or int(width) != widths[-1]:
                widths.append(int(width))
                prom.wait_for(width_q, lambda r, w=width: _value(r) == w)
        assert len(widths) >= 3, f"the width changed fewer than twice: {widths}"
        series = prom.query_range(width_q, start - 1, time.time() + 1, step=0.5)
        stored = [int(float(v)) for _, v in series[0]["values"]]
        assert [w for i, w in enumerate(stored) if i == 0 or w != stored[i - 1]] == widths

        dead = prom.wait_for(
            'sum by (reason) (streamdas_dead_letters_total{job="streamdas"})',
            lambda r: sum(float(s["value"][1]) for s in r) > 0,
        )
        assert {s["metric"]["reason"] for s in dead} <= set(REASONS)
        # Prometheus ends up with exactly the service's own counts
        values = _scrape(service_url + "/metrics")
        for outcome in ("predicted", "learned", "dead_lettered"):
            own = _get(values, "streamdas_records_total", model="service", outcome=outcome)
            assert own is not None and own > 0, outcome
            prom.wait_for(
                f'streamdas_records_total{{model="service",outcome="{outcome}"}}',
                lambda r, own=own: _value(r) == own,
            )
        handled = sum(
            _get(values, "streamdas_records_total", model="service", outcome=o) or 0
            for o in ("predicted", "dead_lettered")
        )
        assert handled == sent
        prom.wait_for(
            'streamdas_prequential_accuracy{model="service"}',
            lambda r: _value(r) is not None and 0 <= _value(r) <= 1,
        )
    finally:
        proc.stdin.close()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
    assert proc.returncode == 0
