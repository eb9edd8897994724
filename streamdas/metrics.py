"""Prometheus metrics for streamdas: live model shape and service health.

Two pieces, both registered on a :class:`prometheus_client.CollectorRegistry`:

* :class:`ModelCollector` reads the *live* shape of one or more estimators at scrape
  time (hidden units per layer, parameters, bytes, units grown/pruned, samples learned,
  sizing cycles, drift detections). It needs no Kafka: any process holding a
  ``DASClassifier`` -- a simulation run, a notebook -- can expose it.
* :class:`ServiceMetrics` holds the streaming service's own counters, histograms and
  gauges (records by outcome, dead letters by reason, latencies, consumer lag,
  checkpoint time, rolling prequential accuracy/error, broker reachability, loop heartbeat).

:func:`serve` exposes ``/metrics`` (the registry, via ``prometheus_client``) and
``/healthz`` (200 when healthy, 503 otherwise) on a configurable address, loopback by
default. The exposition text is always produced by ``prometheus_client``.

Naming follows Prometheus conventions: the ``streamdas_`` prefix, base units
(``_seconds``, ``_bytes``), ``_total`` on counters, and only bounded labels
(``model``, ``layer``, ``partition``, ``outcome``, ``reason``).

Examples
--------
>>> import prometheus_client
>>> from types import SimpleNamespace
>>> model = SimpleNamespace(layer_sizes=[8, 4], n_parameters=90)
>>> registry = prometheus_client.CollectorRegistry()
>>> _ = ModelCollector({"default": model}, registry=registry)
>>> registry.get_sample_value("streamdas_model_hidden_units", {"model": "default", "layer": "1"})
4.0
>>> model.layer_sizes = [8, 6]          # the model grew: the next scrape sees it
>>> registry.get_sample_value("streamdas_model_hidden_units", {"model": "default", "layer": "1"})
6.0
"""

from __future__ import annotations

import json
import math
import numbers
import re
import socket
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import prometheus_client
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector, CollectorRegistry

__all__ = [
    "DEFAULT_LATENCY_BUCKETS",
    "OUTCOMES",
    "PREFIX",
    "MetricsServer",
    "ModelCollector",
    "ServiceMetrics",
    "expose_models",
    "serve",
]

PREFIX = "streamdas"
"""Prefix of every metric name exported by streamdas."""

OUTCOMES = ("predicted", "learned", "dead_lettered")
"""Allowed values of the ``outcome`` label of ``streamdas_records_total``."""

DEFAULT_LATENCY_BUCKETS = (
    0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005,
    0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)
"""Histogram buckets (seconds) for per-record learn/predict latency."""

_REASON_RE = re.compile(r"^[a-z][a-z0-9_]{0,47}$")
_OTHER_REASON = "other"
_MAX_REASONS = 32
_MIN_UNITS_ATTRS = ("min_units", "min_hidden_size", "min_layer_size", "min_size")

HealthCheck = Callable[[], "tuple[bool, str]"]


def _name(suffix: str) -> str:
    return f"{PREFIX}_{suffix}"


def _read(model: Any, attr: str) -> Any:
    """Return ``model.attr`` or ``None`` when it is missing or raises."""
    try:
        return getattr(model, attr)
    except Exception:  # a property that fails must not break the whole scrape
        return None


def _finite(value: Any) -> float | None:
    try:
        out = float(value)
    except (TypeError, ValueError):
        return None
    return out if math.isfinite(out) else None


def _per_layer(value: Any) -> list[float] | None:
    if value is None or isinstance(value, (str, bytes)):
        return None
    try:
        items = [_finite(v) for v in value]
    except TypeError:
        return None
    if any(v is None for v in items):
        return None
    return [float(v) for v in items]  # type: ignore[arg-type]


class ModelCollector(Collector):
    """Expose the live shape of estimators, read at scrape time.

    Every scrape reads the attributes below from each model (missing attributes are
    simply not exported, so the collector also works with partial or foreign models):

    ===========================================  ====================  =======================
    metric                                       type / labels         model attribute
    ===========================================  ====================  =======================
    ``streamdas_model_hidden_units``             gauge, model+layer    ``layer_sizes``
    ``streamdas_model_hidden_layers``            gauge, model          ``len(layer_sizes)``
    ``streamdas_model_min_hidden_units``         gauge, model          ``min_units`` (else 1)
    ``streamdas_model_parameters``               gauge, model          ``n_parameters``
    ``streamdas_model_size_bytes``               gauge, model          ``model_bytes``
    ``streamdas_model_units_grown_total``        counter, model+layer  ``n_units_grown``
    ``streamdas_model_units_pruned_total``       counter, model+layer  ``n_units_pruned``
    ``streamdas_model_samples_learned_total``    counter, model        ``n_samples_learned``
    ``streamdas_model_sizing_cycles_total``      counter, model        ``n_sizing_cycles``
    ``streamdas_model_nonfinite_skipped_total``  counter, model        ``n_nonfinite_skipped``
    ``streamdas_model_drifts_detected_total``    counter, model        ``n_drifts_detected``
    ===========================================  ====================  =======================

    Parameters
    ----------
    models
        A mapping ``{model_name: estimator}``; a callable returning such a mapping; or a
        single estimator (exported as ``model="default"``). A mapping is held by
        reference, so replacing ``models["default"]`` (e.g. after restoring a
        checkpoint) is picked up by the next scrape.
    registry
        Registry to register with; ``None`` leaves the collector unregistered.
    lock
        Optional lock held while reading the models, if the caller mutates them from
        another thread and wants consistent snapshots.

    Examples
    --------
    >>> import prometheus_client
    >>> from types import SimpleNamespace
    >>> m = SimpleNamespace(layer_sizes=[3], n_units_grown=[5], n_samples_learned=100)
    >>> reg = prometheus_client.CollectorRegistry()
    >>> _ = ModelCollector(m, registry=reg)
    >>> reg.get_sample_value(
    ...     "streamdas_model_units_grown_total", {"model": "default", "layer": "0"})
    5.0
    >>> reg.get_sample_value("streamdas_model_samples_learned_total", {"model": "default"})
    100.0
    """

    def __init__(
        self,
        models: Mapping[str, Any] | Callable[[], Mapping[str, Any]] | Any,
        registry: CollectorRegistry | None = None,
        lock: threading.Lock | threading.RLock | None = None,
    ) -> None:
        if isinstance(models, Mapping) or callable(models):
            self._models = models
        else:
            self._models = {"default": models}
        self._lock = lock
        if registry is not None:
            registry.register(self)

    def models(self) -> Mapping[str, Any]:
        """Return the current ``{name: estimator}`` mapping.

        Examples
        --------
        >>> sorted(ModelCollector({"a": object(), "b": object()}).models())
        ['a', 'b']
        """
        models = self._models
        if callable(models) and not isinstance(models, Mapping):
            models = models()
        return models

    @staticmethod
    def _families() -> dict[str, Metric]:
        gauge, counter = GaugeMetricFamily, CounterMetricFamily
        return {
            "hidden_units": gauge(
                _name("model_hidden_units"), "Hidden units per layer, now.",
                labels=["model", "layer"]),
            "hidden_layers": gauge(
                _name("model_hidden_layers"), "Number of hidden layers.", labels=["model"]),
            "min_hidden_units": gauge(
                _name("model_min_hidden_units"),
                "Smallest width a hidden layer may be pruned to.", labels=["model"]),
            "parameters": gauge(
                _name("model_parameters"), "Trainable parameters, now.", labels=["model"]),
            "size_bytes": gauge(
                _name("model_size_bytes"), "Bytes held by the model's parameters.",
                labels=["model"]),
            "grown": counter(
                _name("model_units_grown"), "Hidden units added, per layer.",
                labels=["model", "layer"]),
            "pruned": counter(
                _name("model_units_pruned"), "Hidden units removed, per layer.",
                labels=["model", "layer"]),
            "samples": counter(
                _name("model_samples_learned"), "Samples the model has learned from.",
                labels=["model"]),
            "cycles": counter(
                _name("model_sizing_cycles"), "Grow/prune cycles run.", labels=["model"]),
            "nonfinite": counter(
                _name("model_nonfinite_skipped"),
                "Updates skipped because the loss or gradients were not finite.",
                labels=["model"]),
            "drifts": counter(
                _name("model_drifts_detected"), "Concept drifts detected.", labels=["model"]),
        }

    def describe(self) -> Iterable[Metric]:
        """Yield empty families so the registry can check names without reading models."""
        return list(self._families().values())

    def collect(self) -> Iterator[Metric]:
        """Read every model now and yield the metric families."""
        fam = self._families()
        if self._lock is not None:
            with self._lock:
                self._fill(fam)
        else:
            self._fill(fam)
        yield from fam.values()

    def _fill(self, fam: dict[str, Metric]) -> None:
        for name, model in list(self.models().items()):
            label = str(name)
            sizes = _per_layer(_read(model, "layer_sizes"))
            if sizes is not None:
                for layer, width in enumerate(sizes):
                    fam["hidden_units"].add_metric([label, str(layer)], width)
                fam["hidden_layers"].add_metric([label], float(len(sizes)))
                min_units = 1.0
                for attr in _MIN_UNITS_ATTRS:
                    value = _finite(_read(model, attr))
                    if value is not None:
                        min_units = value
                        break
                fam["min_hidden_units"].add_metric([label], min_units)
            for key, attr in (("grown", "n_units_grown"), ("pruned", "n_units_pruned")):
                per_layer = _per_layer(_read(model, attr))
                for layer, count in enumerate(per_layer or []):
                    fam[key].add_metric([label, str(layer)], count)
            for key, attr in (
                ("parameters", "n_parameters"),
                ("size_bytes", "model_bytes"),
                ("samples", "n_samples_learned"),
                ("cycles", "n_sizing_cycles"),
                ("nonfinite", "n_nonfinite_skipped"),
                ("drifts", "n_drifts_detected"),
            ):
                value = _finite(_read(model, attr))
                if value is not None:
                    fam[key].add_metric([label], value)


def _infer_task(y_true: Any, y_pred: Any) -> str:
    """Guess ``"regression"`` when a float prediction is seen, else ``"classification"``."""
    if isinstance(y_pred, float) or (
        isinstance(y_pred, numbers.Real) and not isinstance(y_pred, numbers.Integral)
    ):
        return "regression"
    return "classification"


class ServiceMetrics:
    """Counters, histograms and gauges of the streaming service.

    ===============================================  =========  ===================
    metric                                           type       labels
    ===============================================  =========  ===================
    ``streamdas_records_total``                      counter    model, outcome
    ``streamdas_dead_letters_total``                 counter    model, reason
    ``streamdas_predict_latency_seconds``            histogram  model
    ``streamdas_learn_latency_seconds``              histogram  model
    ``streamdas_consumer_lag_messages``              gauge      model, partition
    ``streamdas_last_checkpoint_timestamp_seconds``  gauge      model
    ``streamdas_checkpoints_total``                  counter    model
    ``streamdas_checkpoint_fallbacks_total``         counter    model, to
    ``streamdas_prequential_accuracy``               gauge      model (classifiers)
    ``streamdas_prequential_mean_absolute_error``    gauge      model (regressors)
    ``streamdas_prequential_window_samples``         gauge      model
    ``streamdas_broker_up``                          gauge      model
    ``streamdas_last_heartbeat_timestamp_seconds``   gauge      model
    ``streamdas_start_time_seconds``                 gauge      model
    ===============================================  =========  ===================

    Parameters
    ----------
    registry
        Registry to register the metrics with (``None``: the default global registry).
    model
        Value of the ``model`` label.
    window
        Rolling window (records) of the prequential accuracy / error.
    task
        ``"classification"``, ``"regression"`` or ``None`` (inferred from the first
        :meth:`observe_prequential`: a float prediction means regression).
    stall_seconds
        :meth:`health` reports the loop as stuck when :meth:`heartbeat` was not called
        for this long.
    buckets
        Latency histogram buckets, in seconds.

    Examples
    --------
    >>> import prometheus_client
    >>> reg = prometheus_client.CollectorRegistry()
    >>> m = ServiceMetrics(registry=reg)
    >>> m.record("learned", n=3)
    >>> m.record("dead_lettered", reason="invalid_feature")
    >>> reg.get_sample_value("streamdas_records_total", {"model": "default", "outcome": "learned"})
    3.0
    >>> reg.get_sample_value(
    ...     "streamdas_dead_letters_total", {"model": "default", "reason": "invalid_feature"})
    1.0
    >>> for y_true, y_pred in [(1, 1), (0, 1), (1, 1), (0, 0)]:
    ...     m.observe_prequential(y_true, y_pred)
    >>> reg.get_sample_value("streamdas_prequential_accuracy", {"model": "default"})
    0.75
    >>> m.heartbeat(); m.set_broker_up(True)
    >>> m.health()
    (True, 'ok')
    """

    def __init__(
        self,
        registry: CollectorRegistry | None = None,
        model: str = "default",
        window: int = 1000,
        task: str | None = None,
        stall_seconds: float = 60.0,
        buckets: Iterable[float] = DEFAULT_LATENCY_BUCKETS,
    ) -> None:
        if window < 1:
            raise ValueError(f"window must be >= 1, got {window}")
        if task not in (None, "classification", "regression"):
            raise ValueError(f"task must be 'classification', 'regression' or None, got {task!r}")
        if stall_seconds <= 0:
            raise ValueError(f"stall_seconds must be > 0, got {stall_seconds}")
        reg = prometheus_client.REGISTRY if registry is None else registry
        self.model = str(model)
        self.task = task
        self.stall_seconds = float(stall_seconds)
        self._lock = threading.Lock()
        self._window: deque[float] = deque(maxlen=int(window))
        self._window_sum = 0.0
        self._since_resum = 0
        self._reasons: set[str] = set()
        self._broker_up: bool | None = None
        self._last_heartbeat: float | None = None
        self._started = time.time()
        buckets = tuple(buckets)

        self.records = prometheus_client.Counter(
            _name("records"), "Records handled, by outcome.", ["model", "outcome"],
            registry=reg)
        self.dead_letters = prometheus_client.Counter(
            _name("dead_letters"), "Records sent to the dead-letter topic, by reason.",
            ["model", "reason"], registry=reg)
        self.predict_latency = prometheus_client.Histogram(
            _name("predict_latency_seconds"), "Per-record prediction latency.", ["model"],
            buckets=buckets, registry=reg)
        self.learn_latency = prometheus_client.Histogram(
            _name("learn_latency_seconds"), "Per-record learning latency.", ["model"],
            buckets=buckets, registry=reg)
        self.lag = prometheus_client.Gauge(
            _name("consumer_lag_messages"), "Messages behind the partition's end offset.",
            ["model", "partition"], registry=reg)
        self.last_checkpoint = prometheus_client.Gauge(
            _name("last_checkpoint_timestamp_seconds"),
            "Unix time of the last successful checkpoint.", ["model"], registry=reg)
        self.checkpoints = prometheus_client.Counter(
            _name("checkpoints"), "Checkpoints written.", ["model"], registry=reg)
        self.checkpoint_fallbacks = prometheus_client.Counter(
            _name("checkpoint_fallbacks"),
            "Unreadable checkpoints skipped, by what was loaded instead (older, fresh).",
            ["model", "to"], registry=reg)
        self.accuracy = prometheus_client.Gauge(
            _name("prequential_accuracy"),
            "Rolling test-then-train accuracy (classifiers), 0..1.", ["model"], registry=reg)
        self.mae = prometheus_client.Gauge(
            _name("prequential_mean_absolute_error"),
            "Rolling test-then-train mean absolute error (regressors), target units.",
            ["model"], registry=reg)
        self.window_samples = prometheus_client.Gauge(
            _name("prequential_window_samples"),
            "Records in the rolling prequential window.", ["model"], registry=reg)
        self.broker_up = prometheus_client.Gauge(
            _name("broker_up"), "1 when the broker was reachable at the last poll.",
            ["model"], registry=reg)
        self.last_heartbeat = prometheus_client.Gauge(
            _name("last_heartbeat_timestamp_seconds"),
            "Unix time of the last consume-loop iteration.", ["model"], registry=reg)
        self.start_time = prometheus_client.Gauge(
            _name("start_time_seconds"), "Unix time the service started.", ["model"],
            registry=reg)
        self.start_time.labels(self.model).set(self._started)
        # Pre-create the bounded label sets so rates exist from the first scrape.
        for outcome in OUTCOMES:
            self.records.labels(self.model, outcome)
        self.checkpoints.labels(self.model)
        self.window_samples.labels(self.model).set(0)

    # -- records ---------------------------------------------------------------------------
    def _reason_label(self, reason: str | None) -> str:
        reason = "unknown" if reason is None else str(reason)
        if not _REASON_RE.match(reason):
            return _OTHER_REASON
        with self._lock:
            if reason not in self._reasons:
                if len(self._reasons) >= _MAX_REASONS:
                    return _OTHER_REASON
                self._reasons.add(reason)
        return reason

    def record(self, outcome: str, n: int = 1, reason: str | None = None) -> None:
        """Count ``n`` records with ``outcome`` (``predicted``, ``learned``, ``dead_lettered``).

        ``reason`` is only used for dead letters; it must be a short snake_case code
        (``decode_error``, ``invalid_feature``...) -- anything else, or more than 32
        distinct reasons, is counted as ``other`` so the label stays bounded.

        Examples
        --------
        >>> import prometheus_client
        >>> reg = prometheus_client.CollectorRegistry()
        >>> m = ServiceMetrics(registry=reg)
        >>> m.record("dead_lettered", reason="Bad message #42!")
        >>> reg.get_sample_value(
        ...     "streamdas_dead_letters_total", {"model": "default", "reason": "other"})
        1.0
        """
        if outcome not in OUTCOMES:
            raise ValueError(f"outcome must be one of {OUTCOMES}, got {outcome!r}")
        if n < 0:
            raise ValueError(f"n must be >= 0, got {n}")
        if n == 0:
            return
        self.records.labels(self.model, outcome).inc(n)
        if outcome == "dead_lettered":
            self.dead_letters.labels(self.model, self._reason_label(reason)).inc(n)

    def observe_predict(self, seconds: float, n: int = 1) -> None:
        """Observe a predict call over ``n`` records that took ``seconds`` (per-record time).

        Examples
        --------
        >>> import prometheus_client
        >>> reg = prometheus_client.CollectorRegistry()
        >>> m = ServiceMetrics(registry=reg)
        >>> m.observe_predict(0.02, n=10)
        >>> reg.get_sample_value("streamdas_predict_latency_seconds_sum", {"model": "default"})
        0.002
        """
        self._observe(self.predict_latency, seconds, n)

    def observe_learn(self, seconds: float, n: int = 1) -> None:
        """Observe a learn call over ``n`` records that took ``seconds`` (per-record time).

        Examples
        --------
        >>> import prometheus_client
        >>> m = ServiceMetrics(registry=prometheus_client.CollectorRegistry())
        >>> m.observe_learn(0.5, n=100)
        """
        self._observe(self.learn_latency, seconds, n)

    def _observe(self, histogram: prometheus_client.Histogram, seconds: float, n: int) -> None:
        if n < 1:
            return
        if not math.isfinite(seconds) or seconds < 0:
            raise ValueError(f"seconds must be finite and >= 0, got {seconds}")
        histogram.labels(self.model).observe(seconds / n)

    # -- consumer --------------------------------------------------------------------------
    def set_lag(self, partition: int, lag: int) -> None:
        """Set the consumer lag (messages) of ``partition``.

        Examples
        --------
        >>> import prometheus_client
        >>> reg = prometheus_client.CollectorRegistry()
        >>> m = ServiceMetrics(registry=reg)
        >>> m.set_lag(0, 12)
        >>> lag = {"model": "default", "partition": "0"}
        >>> reg.get_sample_value("streamdas_consumer_lag_messages", lag)
        12.0
        """
        self.lag.labels(self.model, str(int(partition))).set(max(0, int(lag)))

    def forget_partitions(self, keep: Iterable[int] = ()) -> None:
        """Drop the lag series of partitions not in ``keep`` (call after a rebalance).

        Examples
        --------
        >>> import prometheus_client
        >>> reg = prometheus_client.CollectorRegistry()
        >>> m = ServiceMetrics(registry=reg)
        >>> m.set_lag(0, 1); m.set_lag(1, 2)
        >>> m.forget_partitions(keep=[1])
        >>> lag = {"model": "default", "partition": "0"}
        >>> reg.get_sample_value("streamdas_consumer_lag_messages", lag) is None
        True
        """
        kept = {str(int(p)) for p in keep}
        for metric in self.lag.collect():
            for sample in metric.samples:
                labels = sample.labels
                if labels["model"] == self.model and labels["partition"] not in kept:
                    self.lag.remove(self.model, labels["partition"])

    def mark_checkpoint(self, timestamp: float | None = None) -> None:
        """Record a successful checkpoint at ``timestamp`` (default: now)."""
        self.last_checkpoint.labels(self.model).set(
            time.time() if timestamp is None else float(timestamp))
        self.checkpoints.labels(self.model).inc()

    def checkpoint_fallback(self, to: str) -> None:
        """An unreadable checkpoint was skipped for an ``"older"`` one or a ``"fresh"`` model."""
        self.checkpoint_fallbacks.labels(self.model, to).inc()

    def observe_prequential(self, y_true: Any, y_pred: Any) -> None:
        """Update the rolling test-then-train accuracy (or absolute error) with one record.

        A missing prediction (``None``, e.g. before the first class is seen) counts as
        wrong for classifiers and is ignored for regressors.
        """
        task = self.task
        if task is None:
            if y_pred is None:
                return
            task = self.task = _infer_task(y_true, y_pred)
        if task == "classification":
            value = 1.0 if (y_pred is not None and y_pred == y_true) else 0.0
        else:
            if y_pred is None:
                return
            value = abs(float(y_true) - float(y_pred))
            if not math.isfinite(value):
                return
        with self._lock:
            if len(self._window) == self._window.maxlen:
                self._window_sum -= self._window[0]
            self._window.append(value)
            self._window_sum += value
            self._since_resum += 1
            if self._since_resum >= len(self._window):  # bound floating-point drift
                self._window_sum = math.fsum(self._window)
                self._since_resum = 0
            mean = self._window_sum / len(self._window)
            size = len(self._window)
        gauge = self.accuracy if task == "classification" else self.mae
        gauge.labels(self.model).set(mean)
        self.window_samples.labels(self.model).set(size)

    # -- health ----------------------------------------------------------------------------
    def set_broker_up(self, up: bool) -> None:
        """Record whether the broker answered the last poll."""
        self._broker_up = bool(up)
        self.broker_up.labels(self.model).set(1 if up else 0)

    def heartbeat(self, timestamp: float | None = None) -> None:
        """Mark one iteration of the consume loop (call it every iteration)."""
        now = time.time() if timestamp is None else float(timestamp)
        self._last_heartbeat = now
        self.last_heartbeat.labels(self.model).set(now)

    def health(self, now: float | None = None) -> tuple[bool, str]:
        """Return ``(ok, reason)``: unhealthy when the loop is stuck or the broker is down.

        Before the first heartbeat the service counts as starting and healthy for
        ``stall_seconds`` after construction.

        Examples
        --------
        >>> m = ServiceMetrics(registry=prometheus_client.CollectorRegistry(), stall_seconds=5)
        >>> m.heartbeat(timestamp=100.0)
        >>> m.health(now=103.0)
        (True, 'ok')
        >>> m.health(now=110.0)
        (False, 'consume loop stalled: no heartbeat for 10.0 s')
        >>> m.set_broker_up(False)
        >>> m.health(now=101.0)
        (False, 'broker unreachable')
        """
        now = time.time() if now is None else now
        if self._broker_up is False:
            return False, "broker unreachable"
        last = self._started if self._last_heartbeat is None else self._last_heartbeat
        idle = now - last
        if idle > self.stall_seconds:
            what = "no heartbeat" if self._last_heartbeat is not None else "no heartbeat yet"
            return False, f"consume loop stalled: {what} for {idle:.1f} s"
        return True, "ok"


# -- HTTP server -----------------------------------------------------------------------------
class _ThreadingWSGIServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True
    allow_reuse_address = True


class _ThreadingWSGIServer6(_ThreadingWSGIServer):
    address_family = socket.AF_INET6


class _SilentHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        """Do not log every scrape to stderr."""


@dataclass
class MetricsServer:
    """A running ``/metrics`` + ``/healthz`` HTTP server (see :func:`serve`)."""

    address: str
    port: int
    _server: WSGIServer
    _thread: threading.Thread

    @property
    def url(self) -> str:
        """Base URL, e.g. ``http://127.0.0.1:9108``."""
        host = f"[{self.address}]" if ":" in self.address else self.address
        return f"http://{host}:{self.port}"

    def shutdown(self) -> None:
        """Stop serving and release the port."""
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> MetricsServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()


def _make_app(registry: CollectorRegistry, health: HealthCheck | None) -> Callable[..., Any]:
    metrics_app = prometheus_client.make_wsgi_app(registry)

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "/")
        if path == "/metrics":
            return metrics_app(environ, start_response)
        if path == "/healthz":
            try:
                ok, reason = health() if health is not None else (True, "ok")
            except Exception as exc:  # a failing check is itself unhealthy
                ok, reason = False, f"health check raised {type(exc).__name__}: {exc}"
            body = json.dumps({"status": "ok" if ok else "unhealthy", "reason": reason})
            status = "200 OK" if ok else "503 Service Unavailable"
            start_response(status, [("Content-Type", "application/json"),
                                    ("Cache-Control", "no-store")])
            return [body.encode() + b"\n"]
        start_response("404 Not Found", [("Content-Type", "text/plain")])
        return [b"not found; try /metrics or /healthz\n"]

    return app


def serve(
    address: str = "127.0.0.1",
    port: int = 9108,
    registry: CollectorRegistry | None = None,
    health: HealthCheck | None = None,
) -> MetricsServer:
    """Serve ``/metrics`` and ``/healthz`` from a background thread.

    Parameters
    ----------
    address
        Interface to bind; loopback by default (use ``0.0.0.0`` in a container; an
        address with ``:`` is IPv6, e.g. ``::1``).
    port
        TCP port; ``0`` picks a free one (read it back from ``server.port``).
    registry
        Registry to expose (``None``: the default global registry).
    health
        Callable returning ``(ok, reason)``; ``/healthz`` answers 200 when ``ok`` and
        503 otherwise, with a small JSON body. ``None``: always healthy.

    Returns
    -------
    MetricsServer
        Call ``shutdown()`` (or use it as a context manager) to stop it.

    Examples
    --------
    >>> import urllib.request
    >>> reg = prometheus_client.CollectorRegistry()
    >>> m = ServiceMetrics(registry=reg)
    >>> with serve(port=0, registry=reg, health=lambda: (True, "ok")) as server:
    ...     text = urllib.request.urlopen(server.url + "/metrics").read().decode()
    ...     code = urllib.request.urlopen(server.url + "/healthz").status
    >>> "streamdas_records_total" in text, code
    (True, 200)
    """
    reg = prometheus_client.REGISTRY if registry is None else registry
    server_class = _ThreadingWSGIServer6 if ":" in address else _ThreadingWSGIServer
    server = make_server(address, int(port), _make_app(reg, health),
                         server_class=server_class, handler_class=_SilentHandler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1},
                              name="streamdas-metrics", daemon=True)
    thread.start()
    return MetricsServer(address=address, port=int(server.server_port), _server=server,
                         _thread=thread)


def expose_models(
    models: Mapping[str, Any] | Any,
    address: str = "127.0.0.1",
    port: int = 9108,
    registry: CollectorRegistry | None = None,
) -> MetricsServer:
    """Expose only the model-shape metrics of ``models`` (no Kafka needed).

    Handy for a simulation run or a notebook: one call, then scrape
    ``server.url + "/metrics"``.

    Examples
    --------
    >>> import urllib.request
    >>> from types import SimpleNamespace
    >>> model = SimpleNamespace(layer_sizes=[16, 8])
    >>> with expose_models(model, port=0) as server:
    ...     text = urllib.request.urlopen(server.url + "/metrics").read().decode()
    >>> 'streamdas_model_hidden_units{layer="1",model="default"} 8.0' in text
    True
    """
    reg = CollectorRegistry() if registry is None else registry
    ModelCollector(models, registry=reg)
    return serve(address=address, port=port, registry=reg)
