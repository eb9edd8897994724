"""Prometheus metrics for streamdas models: their live shape, and the exposition server.

* :class:`ModelCollector` reads the *live* shape of one or more estimators at scrape
  time (hidden units per layer, parameters, bytes, units grown/pruned, samples learned,
  sizing cycles, drift detections). It needs no Kafka: any process holding a
  ``DASClassifier`` -- a simulation run, a notebook -- can expose it.
* :func:`serve` exposes ``/metrics`` (the registry, via ``prometheus_client``) and health
  endpoints (``/healthz`` and any others given: 200 when the check passes, 503 otherwise) on
  a configurable address, loopback by default; :func:`expose_models` is the one-call form.

What only the Kafka service knows (records by outcome, its queues, checkpoints and its
connection) lives with the service, in :mod:`consumers.metrics`.

It needs ``prometheus_client``, which the ``service`` extra installs
(``pip install 'streamdas[service]'``); the estimators do not import this module.

Naming follows Prometheus conventions: the ``streamdas_`` prefix, base units
(``_seconds``, ``_bytes``), ``_total`` on counters, and only bounded labels.

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
import logging
import math
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import prometheus_client
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector, CollectorRegistry

from streamdas.metrics_server import BoundedWSGIServer

__all__ = [
    "PREFIX",
    "MetricsServer",
    "ModelCollector",
    "expose_models",
    "metric_name",
    "serve",
]

log = logging.getLogger(__name__)

PREFIX = "streamdas"
"""Prefix of every metric name exported by streamdas."""

_MIN_UNITS_ATTRS = ("min_units", "min_hidden_size", "min_layer_size", "min_size")

#: A metric family the model collector fills.
_Family = GaugeMetricFamily | CounterMetricFamily

HealthCheck = Callable[[], "tuple[bool, str]"]


def metric_name(suffix: str) -> str:
    """The exported name of a metric: ``streamdas_<suffix>``.

    Examples
    --------
    >>> metric_name("model_parameters")
    'streamdas_model_parameters'
    """
    return f"{PREFIX}_{suffix}"


_name = metric_name


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
    def _families() -> dict[str, _Family]:
        gauge, counter = GaugeMetricFamily, CounterMetricFamily
        return {
            "hidden_units": gauge(
                _name("model_hidden_units"), "Hidden units per layer, now.", labels=["model", "layer"]
            ),
            "hidden_layers": gauge(
                _name("model_hidden_layers"), "Number of hidden layers.", labels=["model"]
            ),
            "min_hidden_units": gauge(
                _name("model_min_hidden_units"),
                "Smallest width a hidden layer may be pruned to.",
                labels=["model"],
            ),
            "parameters": gauge(_name("model_parameters"), "Trainable parameters, now.", labels=["model"]),
            "size_bytes": gauge(
                _name("model_size_bytes"), "Bytes held by the model's parameters.", labels=["model"]
            ),
            "grown": counter(
                _name("model_units_grown"), "Hidden units added, per layer.", labels=["model", "layer"]
            ),
            "pruned": counter(
                _name("model_units_pruned"), "Hidden units removed, per layer.", labels=["model", "layer"]
            ),
            "samples": counter(
                _name("model_samples_learned"), "Samples the model has learned from.", labels=["model"]
            ),
            "cycles": counter(_name("model_sizing_cycles"), "Grow/prune cycles run.", labels=["model"]),
            "nonfinite": counter(
                _name("model_nonfinite_skipped"),
                "Updates skipped because the loss or gradients were not finite.",
                labels=["model"],
            ),
            "drifts": counter(_name("model_drifts_detected"), "Concept drifts detected.", labels=["model"]),
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

    def _fill(self, fam: dict[str, _Family]) -> None:
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


# -- HTTP server -----------------------------------------------------------------------------
@dataclass
class MetricsServer:
    """A running ``/metrics`` + ``/healthz`` HTTP server (see :func:`serve`)."""

    address: str
    port: int
    _server: BoundedWSGIServer

    @property
    def url(self) -> str:
        """Base URL, e.g. ``http://127.0.0.1:9108``."""
        host = f"[{self.address}]" if ":" in self.address else self.address
        return f"http://{host}:{self.port}"

    def shutdown(self) -> None:
        """Stop serving and release the port."""
        self._server.shutdown()

    def __enter__(self) -> MetricsServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()


def _make_app(registry: CollectorRegistry, routes: Mapping[str, HealthCheck | None]) -> Callable[..., Any]:
    metrics_app = prometheus_client.make_wsgi_app(registry)

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "/")
        if path == "/metrics":
            return metrics_app(environ, start_response)
        if path in routes:
            check = routes[path]
            try:
                ok, reason = check() if check is not None else (True, "ok")
            except Exception:  # a failing check is itself unhealthy; its text stays in the log
                log.exception("health check %s raised", path)
                ok, reason = False, "health check failed (see the log)"
            body = json.dumps({"status": "ok" if ok else "unhealthy", "reason": reason})
            status = "200 OK" if ok else "503 Service Unavailable"
            start_response(status, [("Content-Type", "application/json"), ("Cache-Control", "no-store")])
            return [body.encode() + b"\n"]
        start_response("404 Not Found", [("Content-Type", "text/plain")])
        return [f"not found; try /metrics or {' or '.join(routes)}\n".encode()]

    return app


def serve(
    address: str = "127.0.0.1",
    port: int = 9108,
    registry: CollectorRegistry | None = None,
    health: HealthCheck | None = None,
    checks: Mapping[str, HealthCheck] | None = None,
    workers: int = 4,
    max_connections: int = 64,
    timeout_s: float = 10.0,
) -> MetricsServer:
    """Serve ``/metrics``, ``/healthz`` and the paths in ``checks`` from background threads.

    The server has a fixed number of threads, whatever its clients do: slow or idle
    connections hold none of the ``workers`` and are closed after ``timeout_s``, and the health
    endpoints have a thread of their own, so slow scrapes never delay them (see
    :class:`~streamdas.metrics_server.BoundedWSGIServer`); the exposition itself is
    ``prometheus_client``'s WSGI application.

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
        503 otherwise, with a small JSON body (``{"status": ..., "reason": ...}``; a check
        that raises is unhealthy, its text only logged). ``None``: always healthy.
    checks
        More such endpoints, ``{path: check}`` (e.g. ``{"/livez": ..., "/readyz": ...}``).
    workers
        Threads answering ``/metrics`` (the most scrapes answered at the same time); the
        health endpoints have one more.
    max_connections
        Connections still sending their request at most (the oldest is closed for a new
        one), and as many complete requests waiting for a worker (beyond that: 503).
    timeout_s
        Seconds a connection may last, from its accept to the end of the answer (Prometheus
        gives up a scrape after 10 s by default).

    Returns
    -------
    MetricsServer
        Call ``shutdown()`` (or use it as a context manager) to stop it.

    Raises
    ------
    OSError
        When ``address:port`` cannot be bound (the port is in use, the address is not one of
        this host's...).
    ValueError
        For a port outside ``0..65535``.

    Examples
    --------
    >>> import urllib.request
    >>> from types import SimpleNamespace
    >>> reg = prometheus_client.CollectorRegistry()
    >>> _ = ModelCollector({"m": SimpleNamespace(n_parameters=90)}, registry=reg)
    >>> with serve(port=0, registry=reg, health=lambda: (True, "ok")) as server:
    ...     text = urllib.request.urlopen(server.url + "/metrics").read().decode()
    ...     code = urllib.request.urlopen(server.url + "/healthz").status
    >>> 'streamdas_model_parameters{model="m"} 90.0' in text, code
    (True, 200)
    """
    reg = prometheus_client.REGISTRY if registry is None else registry
    routes: dict[str, HealthCheck | None] = {"/healthz": health, **dict(checks or {})}
    server = BoundedWSGIServer(
        address,
        int(port),
        _make_app(reg, routes),
        workers=workers,
        fast_paths=routes,
        max_connections=max_connections,
        timeout_s=timeout_s,
    )
    return MetricsServer(address=address, port=server.port, _server=server)


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
