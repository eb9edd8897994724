"""Metrics, health and progress logging for the consumer service.

A :class:`~consumers.metrics.ServiceMetrics` (records by outcome, dead letters by reason,
latencies, lag, checkpoints, prequential score, broker reachability, loop heartbeat) and a
:class:`~streamdas.metrics.ModelCollector` over the live models (label
``model="<topic>-<partition>"`` in the partition scope, ``model="snapshot"`` for the snapshot in
use in the shared scope, with its version and age and the learner's gauges), served by
:func:`streamdas.metrics.serve` when
``metrics_port`` is set: ``/metrics``; ``/livez`` (liveness: 503 when the loop has not turned,
or has made no progress -- handled no new offset while it had records to handle -- for
``stall_seconds``, so a loop that only replays the same records is not live); ``/readyz`` and
``/healthz`` (readiness: also 503 while the broker is unreachable or no assignment was received
yet). Scrapes read the models under the service's
lock, so they see a consistent snapshot, never one half-way through a learning step.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import prometheus_client

from consumers.config import ServiceConfig
from consumers.metrics import ServiceMetrics
from consumers.model import BatchResult
from streamdas.metrics import ModelCollector, serve

__all__ = ["Telemetry"]

log = logging.getLogger(__name__)


class Telemetry:
    """Metrics registry, optional HTTP server, and a periodic progress line in the log.

    Parameters
    ----------
    cfg
        Service configuration (``metrics_address``, ``metrics_port``, ``stall_seconds``,
        ``task``).
    log_every_s
        Seconds between progress lines (records/s, dead letters, lag).

    Examples
    --------
    >>> t = Telemetry(ServiceConfig())
    >>> t.heartbeat(); t.broker_up(True)
    >>> t.health()
    (True, 'ok')
    >>> t.broker_up(False); t.health()[0]
    False
    """

    def __init__(self, cfg: ServiceConfig, log_every_s: float = 10.0) -> None:
        self.registry = prometheus_client.CollectorRegistry()
        self.metrics = ServiceMetrics(
            registry=self.registry, model="service", task=cfg.task, stall_seconds=cfg.stall_seconds
        )
        self.server = None
        if cfg.metrics_port is not None:
            self.server = serve(
                address=cfg.metrics_address,
                port=cfg.metrics_port,
                registry=self.registry,
                health=self.health,
                checks={"/livez": self.alive, "/readyz": self.health},
            )
            log.info(
                "metrics on %s/metrics, health on %s/livez, /readyz (= /healthz)",
                self.server.url,
                self.server.url,
            )
        self.log_every_s = log_every_s
        self.totals = {"records": 0, "predicted": 0, "learned": 0, "dead_lettered": 0}
        self._lags: dict[int, int] = {}
        self._last_progress = time.monotonic()
        self._last_log = time.monotonic()
        self._last_records = 0

    def watch_models(self, models: Callable[[], Mapping[str, Any]], lock: Any = None) -> None:
        """Export the live shape of the models returned by ``models()`` at each scrape,
        read while holding ``lock`` (the one the loop holds while the models change)."""
        ModelCollector(models, registry=self.registry, lock=lock)

    def health(self) -> tuple[bool, str]:
        """Readiness ``(ok, reason)``, as served on ``/readyz`` and ``/healthz``."""
        ok, reason = self.alive()
        return self.metrics.ready() if ok else (ok, reason)

    def alive(self) -> tuple[bool, str]:
        """Liveness ``(ok, reason)``, as served on ``/livez``: the loop turns and progresses.

        >>> t = Telemetry(ServiceConfig(stall_seconds=5))
        >>> t.heartbeat(); t._last_progress -= 6  # six seconds of replaying the same records
        >>> t.alive()
        (False, 'consume loop makes no progress: no new offset handled for 6.0 s')
        >>> t.progress(); t.alive()
        (True, 'ok')
        """
        ok, reason = self.metrics.alive()
        idle = time.monotonic() - self._last_progress
        if ok and idle > self.metrics.stall_seconds:
            return False, f"consume loop makes no progress: no new offset handled for {idle:.1f} s"
        return ok, reason

    def progress(self) -> None:
        """The loop moved on: it handled offsets it had never handled, or had nothing to do."""
        self._last_progress = time.monotonic()

    def assigned(self, assigned: bool) -> None:
        """Record whether the consumer holds a group assignment (feeds readiness)."""
        self.metrics.set_assigned(assigned)

    def heartbeat(self) -> None:
        """One loop iteration happened; also writes the periodic progress line."""
        self.metrics.heartbeat()
        now = time.monotonic()
        if now - self._last_log >= self.log_every_s:
            rate = (self.totals["records"] - self._last_records) / (now - self._last_log)
            ready, reason = self.metrics.ready()
            log.info(
                "progress: %s, %.0f records/s, lag %s%s",
                self.totals,
                rate,
                sum(self._lags.values()) if self._lags else "n/a",
                "" if ready else f"; not ready: {reason}",
            )
            self._last_log, self._last_records = now, self.totals["records"]

    def broker_up(self, up: bool, why: str | None = None) -> None:
        """Record broker reachability (feeds ``/healthz``; ``why``: what failed, if known)."""
        self.metrics.set_broker_up(up, why)

    def batch(self, result: BatchResult) -> None:
        """Count one processed batch."""
        m = self.metrics
        n_pred = len(result.predictions)
        self.totals["records"] += len({i for i, _ in result.predictions} | {i for i, _ in result.rejections})
        if n_pred:
            m.record("predicted", n=n_pred)
            m.observe_predict(result.predict_seconds, n=n_pred)
            self.totals["predicted"] += n_pred
        if result.n_learned:
            m.record("learned", n=result.n_learned)
            m.observe_learn(result.learn_seconds, n=result.n_learned)
            self.totals["learned"] += result.n_learned
        for _, rejection in result.rejections:
            m.record("dead_lettered", reason=rejection.reason)
            self.totals["dead_lettered"] += 1
        for y_true, y_pred in result.labels:
            m.observe_prequential(y_true, y_pred)

    def checkpointed(self) -> None:
        """A checkpoint was written."""
        self.metrics.mark_checkpoint()

    def checkpoint_fallback(self, to: str) -> None:
        """An unreadable checkpoint was skipped (``to``: ``"older"`` or ``"fresh"``)."""
        self.metrics.checkpoint_fallback(to)

    def snapshot(self, snapshot: Any) -> None:
        """The shared scope predicts with ``snapshot`` from now on (its epoch, version, records
        learned and publication time become gauges; its age is computed at each scrape)."""
        self.metrics.set_snapshot(snapshot.epoch, snapshot.version, snapshot.n_learned, snapshot.published_at)

    def watch_learner(self, learner: Callable[[], Any]) -> None:
        """Export whether ``learner()`` (the shared scope's learner, or ``None``) is the elected
        one, and the records it has learned, read at each scrape."""

        def elected() -> bool:
            current = learner()
            return bool(current is not None and current.is_learner)

        def learned() -> int:
            current = learner()
            return int(current.n_learned) if elected() else 0

        self.metrics.watch_learner(elected, learned)

    def lag(self, partition: int, lag: int) -> None:
        """Consumer lag of one partition, in messages."""
        self._lags[partition] = lag
        self.metrics.set_lag(partition, lag)

    def partitions(self, keep: Iterable[int]) -> None:
        """Forget the lag of partitions no longer assigned."""
        keep = list(keep)
        self._lags = {p: v for p, v in self._lags.items() if p in keep}
        self.metrics.forget_partitions(keep)

    def close(self) -> None:
        """Stop the HTTP server, if any."""
        if self.server is not None:
            self.server.shutdown()
            self.server = None
