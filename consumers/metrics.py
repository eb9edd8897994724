"""The Kafka service's own metrics: records, dead letters, latencies, lag, checkpoints, broker.

Everything here is knowledge of the service (:mod:`consumers.service`); the live shape of the
models and the exposition server are the core's (:mod:`streamdas.metrics`). Health is two
questions, served as two endpoints by :class:`consumers.telemetry.Telemetry`:

* **alive** (``/livez``, Kubernetes' liveness): the consume loop turned within
  ``stall_seconds``. A broker outage does not make the process dead -- restarting it would not
  bring the broker back.
* **ready** (``/readyz`` and ``/healthz``, readiness): alive, the broker reachable at the last
  poll, and the group joined (partitions assigned, possibly none).
"""

from __future__ import annotations

import math
import numbers
import re
import threading
import time
from collections import deque
from collections.abc import Iterable
from typing import Any

import prometheus_client
from prometheus_client.registry import CollectorRegistry

from streamdas.metrics import metric_name as _name

__all__ = ["DEFAULT_LATENCY_BUCKETS", "OUTCOMES", "ServiceMetrics"]

OUTCOMES = ("predicted", "learned", "dead_lettered")
"""Allowed values of the ``outcome`` label of ``streamdas_records_total``."""

DEFAULT_LATENCY_BUCKETS = (
    0.00001,
    0.000025,
    0.00005,
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)
"""Histogram buckets (seconds) for per-record learn/predict latency."""

_REASON_RE = re.compile(r"^[a-z][a-z0-9_]{0,47}$")
_OTHER_REASON = "other"
_MAX_REASONS = 32


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
    ``streamdas_snapshot_epoch``                     gauge      model (shared scope)
    ``streamdas_snapshot_version``                   gauge      model (shared scope)
    ``streamdas_snapshot_records_learned``           gauge      model (shared scope)
    ``streamdas_snapshot_age_seconds``               gauge      model (shared scope)
    ``streamdas_learner``                            gauge      model (shared scope)
    ``streamdas_learner_records_learned``            gauge      model (shared scope)
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
        self._broker_why: str | None = None
        self._assigned: bool | None = None  # None: not tracked (unknown counts as assigned)
        self._last_heartbeat: float | None = None
        self._started = time.time()
        buckets = tuple(buckets)

        self.records = prometheus_client.Counter(
            _name("records"), "Records handled, by outcome.", ["model", "outcome"], registry=reg
        )
        self.dead_letters = prometheus_client.Counter(
            _name("dead_letters"),
            "Records sent to the dead-letter topic, by reason.",
            ["model", "reason"],
            registry=reg,
        )
        self.predict_latency = prometheus_client.Histogram(
            _name("predict_latency_seconds"),
            "Per-record prediction latency.",
            ["model"],
            buckets=buckets,
            registry=reg,
        )
        self.learn_latency = prometheus_client.Histogram(
            _name("learn_latency_seconds"),
            "Per-record learning latency.",
            ["model"],
            buckets=buckets,
            registry=reg,
        )
        self.lag = prometheus_client.Gauge(
            _name("consumer_lag_messages"),
            "Messages behind the partition's end offset.",
            ["model", "partition"],
            registry=reg,
        )
        self.last_checkpoint = prometheus_client.Gauge(
            _name("last_checkpoint_timestamp_seconds"),
            "Unix time of the last successful checkpoint.",
            ["model"],
            registry=reg,
        )
        self.checkpoints = prometheus_client.Counter(
            _name("checkpoints"), "Checkpoints written.", ["model"], registry=reg
        )
        self.checkpoint_fallbacks = prometheus_client.Counter(
            _name("checkpoint_fallbacks"),
            "Unreadable checkpoints skipped, by what was loaded instead (older, fresh).",
            ["model", "to"],
            registry=reg,
        )
        self.accuracy = prometheus_client.Gauge(
            _name("prequential_accuracy"),
            "Rolling test-then-train accuracy (classifiers), 0..1.",
            ["model"],
            registry=reg,
        )
        self.mae = prometheus_client.Gauge(
            _name("prequential_mean_absolute_error"),
            "Rolling test-then-train mean absolute error (regressors), target units.",
            ["model"],
            registry=reg,
        )
        self.window_samples = prometheus_client.Gauge(
            _name("prequential_window_samples"),
            "Records in the rolling prequential window.",
            ["model"],
            registry=reg,
        )
        self.broker_up = prometheus_client.Gauge(
            _name("broker_up"), "1 when the broker was reachable at the last poll.", ["model"], registry=reg
        )
        self.last_heartbeat = prometheus_client.Gauge(
            _name("last_heartbeat_timestamp_seconds"),
            "Unix time of the last consume-loop iteration.",
            ["model"],
            registry=reg,
        )
        self.start_time = prometheus_client.Gauge(
            _name("start_time_seconds"), "Unix time the service started.", ["model"], registry=reg
        )
        self.start_time.labels(self.model).set(self._started)
        self.snapshot_epoch = prometheus_client.Gauge(
            _name("snapshot_epoch"),
            "Epoch (learner term) of the model snapshot predictions use.",
            ["model"],
            registry=reg,
        )
        self.snapshot_version = prometheus_client.Gauge(
            _name("snapshot_version"),
            "Version of the model snapshot predictions use.",
            ["model"],
            registry=reg,
        )
        self.snapshot_learned = prometheus_client.Gauge(
            _name("snapshot_records_learned"),
            "Records the model of the snapshot in use had learned.",
            ["model"],
            registry=reg,
        )
        self.snapshot_age = prometheus_client.Gauge(
            _name("snapshot_age_seconds"),
            "Seconds since the learner published the snapshot in use (its clock against ours).",
            ["model"],
            registry=reg,
        )
        self.learner = prometheus_client.Gauge(
            _name("learner"), "1 while this instance is the group's elected learner.", ["model"], registry=reg
        )
        self.learner_learned = prometheus_client.Gauge(
            _name("learner_records_learned"),
            "Records learned by this instance's learner's model (0 unless it is the learner).",
            ["model"],
            registry=reg,
        )
        self._snapshot_published: float | None = None
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
        self.last_checkpoint.labels(self.model).set(time.time() if timestamp is None else float(timestamp))
        self.checkpoints.labels(self.model).inc()

    def checkpoint_fallback(self, to: str) -> None:
        """An unreadable checkpoint was skipped for an ``"older"`` one or a ``"fresh"`` model."""
        self.checkpoint_fallbacks.labels(self.model, to).inc()

    def observe_prequential(self, y_true: Any, y_pred: Any) -> None:
        """Update the rolling test-then-train accuracy (or absolute error) with one record.

        A missing prediction (``None``: a model that has learned nothing yet) is ignored, as
        River's evaluation ignores it: it says nothing about the model's accuracy.

        >>> m = ServiceMetrics(registry=prometheus_client.CollectorRegistry())
        >>> m.observe_prequential(1, None); m.observe_prequential(1, 1)
        >>> m.window_samples.labels(m.model)._value.get()
        1.0
        """
        if y_pred is None:
            return
        task = self.task
        if task is None:
            task = self.task = _infer_task(y_true, y_pred)
        if task == "classification":
            value = 1.0 if y_pred == y_true else 0.0
        else:
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

    # -- shared scope ----------------------------------------------------------------------
    def set_snapshot(self, epoch: int, version: int, n_learned: int, published_at: float) -> None:
        """Record the snapshot predictions now use; its age is computed at each scrape.

        Examples
        --------
        >>> reg = prometheus_client.CollectorRegistry()
        >>> m = ServiceMetrics(registry=reg)
        >>> m.set_snapshot(2, 17, 8500, published_at=time.time() - 3)
        >>> reg.get_sample_value("streamdas_snapshot_version", {"model": "default"})
        17.0
        >>> 2.5 < reg.get_sample_value("streamdas_snapshot_age_seconds", {"model": "default"}) < 60
        True
        """
        self.snapshot_epoch.labels(self.model).set(epoch)
        self.snapshot_version.labels(self.model).set(version)
        self.snapshot_learned.labels(self.model).set(n_learned)
        if self._snapshot_published is None:
            self.snapshot_age.labels(self.model).set_function(self._snapshot_age)
        self._snapshot_published = float(published_at)

    def _snapshot_age(self) -> float:
        published = self._snapshot_published
        return 0.0 if published is None else max(0.0, time.time() - published)

    def watch_learner(self, is_learner: Any, n_learned: Any) -> None:
        """Read the learner's state at each scrape: ``is_learner()`` and ``n_learned()``.

        Examples
        --------
        >>> reg = prometheus_client.CollectorRegistry()
        >>> m = ServiceMetrics(registry=reg)
        >>> m.watch_learner(lambda: True, lambda: 1200)
        >>> reg.get_sample_value("streamdas_learner", {"model": "default"})
        1.0
        """
        self.learner.labels(self.model).set_function(lambda: 1.0 if is_learner() else 0.0)
        self.learner_learned.labels(self.model).set_function(lambda: float(n_learned()))

    # -- health ----------------------------------------------------------------------------
    def set_broker_up(self, up: bool, why: str | None = None) -> None:
        """Record whether the broker answered the last poll (``why``: what failed, if known;
        readiness then says ``broker unreachable (why)``)."""
        self._broker_up = bool(up)
        self._broker_why = None if up else why
        self.broker_up.labels(self.model).set(1 if up else 0)

    def heartbeat(self, timestamp: float | None = None) -> None:
        """Mark one iteration of the consume loop (call it every iteration)."""
        now = time.time() if timestamp is None else float(timestamp)
        self._last_heartbeat = now
        self.last_heartbeat.labels(self.model).set(now)

    def set_assigned(self, assigned: bool) -> None:
        """Record whether the consumer holds a group assignment (feeds :meth:`ready`)."""
        self._assigned = bool(assigned)

    def alive(self, now: float | None = None) -> tuple[bool, str]:
        """``(ok, reason)``: whether the loop turned within ``stall_seconds`` (liveness).

        Before the first heartbeat the service counts as starting, and alive for
        ``stall_seconds`` after construction. The broker plays no part.

        Examples
        --------
        >>> m = ServiceMetrics(registry=prometheus_client.CollectorRegistry(), stall_seconds=5)
        >>> m.heartbeat(timestamp=100.0); m.set_broker_up(False)
        >>> m.alive(now=103.0)
        (True, 'ok')
        >>> m.alive(now=110.0)
        (False, 'consume loop stalled: no heartbeat for 10.0 s')
        """
        now = time.time() if now is None else now
        last = self._started if self._last_heartbeat is None else self._last_heartbeat
        idle = now - last
        if idle > self.stall_seconds:
            what = "no heartbeat" if self._last_heartbeat is not None else "no heartbeat yet"
            return False, f"consume loop stalled: {what} for {idle:.1f} s"
        return True, "ok"

    def ready(self, now: float | None = None) -> tuple[bool, str]:
        """``(ok, reason)``: alive, broker reachable, group joined (readiness).

        Examples
        --------
        >>> m = ServiceMetrics(registry=prometheus_client.CollectorRegistry(), stall_seconds=5)
        >>> m.heartbeat(timestamp=100.0); m.set_broker_up(True)
        >>> m.ready(now=101.0)
        (True, 'ok')
        >>> m.set_assigned(False); m.ready(now=101.0)
        (False, 'no partitions assigned yet')
        >>> m.set_broker_up(False); m.ready(now=101.0)
        (False, 'broker unreachable')
        >>> m.set_broker_up(False, why="group coordinator unknown"); m.ready(now=101.0)
        (False, 'broker unreachable (group coordinator unknown)')
        """
        ok, reason = self.alive(now)
        if not ok:
            return ok, reason
        if self._broker_up is False:
            why = self._broker_why
            return False, f"broker unreachable ({why})" if why else "broker unreachable"
        if self._assigned is False:
            return False, "no partitions assigned yet"
        return True, "ok"

    def health(self, now: float | None = None) -> tuple[bool, str]:
        """Readiness, as ``/healthz`` serves it (see :meth:`ready`).

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
        return self.ready(now)
