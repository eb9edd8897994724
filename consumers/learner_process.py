"""The shared scope's learner in a process of its own.

A learner in a thread shares its interpreter with the predictor: under load each of its many
small steps waits for the other thread's turn, so it learns and publishes late and the
predictions' snapshots fall behind. :class:`LearnerProcess` runs the same
:class:`consumers.learner.Learner` in a child process (``python -m consumers.learner_process``)
and stands in for it in the service: the same ``run(stop)``, ``is_learner``, ``epoch`` and
``n_learned``, and the child's metrics served by the service's own ``/metrics``.

The two talk over pipes, in JSON lines only (nothing is unpickled):

* the parent writes the configuration (one JSON object of :class:`ServiceConfig` fields), later
  ``"stop"``; the child stops (saving its state, leaving the group) on ``"stop"``, on SIGTERM or
  SIGINT, and when its input closes, which is also what happens when the parent dies;
* the child writes its status every :data:`STATUS_EVERY_S`: ``is_learner``, ``epoch``,
  ``n_learned`` and its metric families (name, help, type, samples).

Its log lines go to the parent's standard error. A child that exits on its own makes
``run`` raise, and the service starts a new one (which takes over from the saved state).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from typing import IO, Any

from prometheus_client.core import Metric
from prometheus_client.registry import Collector, CollectorRegistry

from consumers.config import ServiceConfig, configure_logging

log = logging.getLogger(__name__)

__all__ = ["STATUS_EVERY_S", "ChildMetrics", "LearnerProcess", "main"]

#: How often the child reports its status and metrics.
STATUS_EVERY_S = 0.5

#: Longest status line the parent reads (the learner's metrics are a few KiB).
MAX_STATUS_BYTES = 1 << 20

#: Metric types a status may carry (anything else is dropped).
METRIC_TYPES = frozenset({"counter", "gauge", "summary", "histogram", "info", "stateset", "unknown"})


def metric_families(registry: CollectorRegistry) -> list[list[Any]]:
    """``registry``'s metric families as JSON-ready lists ``[name, help, type, samples]``."""
    return [
        [
            family.name,
            family.documentation,
            family.type,
            [[s.name, s.labels, s.value] for s in family.samples],
        ]
        for family in registry.collect()
    ]


class ChildMetrics(Collector):
    """Serves the metric families last reported by the child (a Prometheus collector).

    Examples
    --------
    >>> reg = CollectorRegistry()
    >>> child = ChildMetrics()
    >>> reg.register(child)
    >>> child.update([["learner_epoch", "Epoch", "gauge", [["learner_epoch", {}, 3.0]]]])
    >>> reg.get_sample_value("learner_epoch")
    3.0
    >>> child.update([["x", "X", "no-such-type", [["x", {}, 1.0]]]])  # dropped
    >>> reg.get_sample_value("x") is None
    True
    """

    def __init__(self) -> None:
        self._families: list[Metric] = []
        self._lock = threading.Lock()

    def describe(self) -> list[Metric]:
        """Nothing up front: the families are known once the child reports."""
        return []

    def update(self, families: Any) -> None:
        """Replace the families served with ``families`` (as :func:`metric_families` writes them);
        entries of another shape or an unknown type are dropped."""
        out = []
        for entry in families if isinstance(families, list) else []:
            try:
                name, documentation, kind, samples = entry
                if kind not in METRIC_TYPES:
                    continue
                metric = Metric(str(name), str(documentation), kind)
                for sample_name, labels, value in samples:
                    metric.add_sample(
                        str(sample_name), {str(k): str(v) for k, v in labels.items()}, float(value)
                    )
            except (TypeError, ValueError, AttributeError):
                continue
            out.append(metric)
        with self._lock:
            self._families = out

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            return iter(list(self._families))


class LearnerProcess:
    """Runs :class:`consumers.learner.Learner` in a child process; the same interface.

    Parameters
    ----------
    cfg
        The service's configuration, handed to the child as JSON.
    telemetry
        Its ``registry`` serves the child's metrics.
    stop_timeout_s
        How long :meth:`run` waits, once stopped, for the child to save and leave before it is
        killed (default: the group's session timeout plus 10 s).
    """

    def __init__(
        self, cfg: ServiceConfig, telemetry: Any = None, stop_timeout_s: float | None = None
    ) -> None:
        self.cfg = cfg
        self.is_learner = False
        self.epoch: int | None = None
        self.n_learned = 0
        self.pid: int | None = None
        self.stop_timeout_s = cfg.session_timeout_ms / 1000 + 10 if stop_timeout_s is None else stop_timeout_s
        self.metrics = ChildMetrics()
        registry = getattr(telemetry, "registry", None)
        if registry is not None:
            registry.register(self.metrics)

    def _status(self, line: bytes) -> None:
        try:
            status = json.loads(line)
        except ValueError:
            log.warning("learner process: unreadable status line (%d bytes)", len(line))
            return
        if not isinstance(status, dict):
            return
        self.is_learner = status.get("is_learner") is True
        epoch = status.get("epoch")
        self.epoch = epoch if isinstance(epoch, int) and not isinstance(epoch, bool) else None
        n = status.get("n_learned")
        if isinstance(n, int) and not isinstance(n, bool):
            self.n_learned = n
        self.metrics.update(status.get("metrics"))

    def _read(self, stream: IO[bytes]) -> None:
        for line in iter(lambda: stream.readline(MAX_STATUS_BYTES), b""):
            self._status(line)
        self.is_learner, self.epoch = False, None

    def run(self, stop: threading.Event) -> None:
        """Start the child and wait until ``stop`` is set; then ask it to stop (it saves and
        leaves its group) and wait for it. Raises ``RuntimeError`` if the child exits first."""
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        proc = subprocess.Popen(
            [sys.executable, "-m", "consumers.learner_process"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=env,
        )
        assert proc.stdin is not None and proc.stdout is not None
        self.pid = proc.pid
        reader = threading.Thread(target=self._read, args=(proc.stdout,), name="learner-status", daemon=True)
        reader.start()
        try:
            proc.stdin.write(json.dumps(dataclasses.asdict(self.cfg)).encode() + b"\n")
            proc.stdin.flush()
            while not stop.wait(0.2):
                if proc.poll() is not None:
                    raise RuntimeError(f"the learner process exited with status {proc.returncode}")
            with contextlib.suppress(OSError):
                proc.stdin.write(b"stop\n")
                proc.stdin.flush()
            try:
                proc.wait(timeout=self.stop_timeout_s)
            except subprocess.TimeoutExpired:
                log.error("the learner process did not stop within %.0f s; killing it", self.stop_timeout_s)
        finally:
            with contextlib.suppress(OSError):
                proc.stdin.close()
            if proc.poll() is None:
                proc.kill()
            proc.wait()
            reader.join(timeout=5)
            proc.stdout.close()
            self.is_learner, self.epoch = False, None


def _report(learner: Any, out: IO[bytes], stop: threading.Event) -> None:
    """Write the learner's status and metrics every :data:`STATUS_EVERY_S` until stopped."""
    while True:
        status = {
            "is_learner": bool(learner.is_learner),
            "epoch": learner.epoch,
            "n_learned": int(learner.n_learned),
            "metrics": metric_families(learner.registry),
        }
        try:
            out.write(json.dumps(status).encode() + b"\n")
            out.flush()
        except (OSError, ValueError):  # the parent is gone
            stop.set()
            return
        if stop.wait(STATUS_EVERY_S):
            return


def _watch(stream: IO[bytes], stop: threading.Event) -> None:
    """Set ``stop`` on ``"stop"`` or when the parent closes the pipe (or dies)."""
    for line in iter(lambda: stream.readline(1024), b""):
        if line.strip() == b"stop":
            break
    stop.set()


def main() -> int:
    """The child: read the configuration, then run the learner until told to stop."""
    line = sys.stdin.buffer.readline(MAX_STATUS_BYTES)
    fields = {f.name for f in dataclasses.fields(ServiceConfig)}
    try:
        settings = json.loads(line)
        cfg = ServiceConfig(**{k: v for k, v in settings.items() if k in fields})
    except (ValueError, TypeError, AttributeError) as exc:
        print(f"learner process: bad configuration: {exc}", file=sys.stderr)
        return 2
    configure_logging(cfg)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda signum, frame: stop.set())
    from consumers.learner import Learner
    from streamdas.threads import limit_threads

    learner = Learner(cfg)
    out = sys.stdout.buffer
    sys.stdout = sys.stderr  # stray prints must not corrupt the status stream
    threading.Thread(target=_watch, args=(sys.stdin.buffer, stop), name="learner-input", daemon=True).start()
    reporter = threading.Thread(target=_report, args=(learner, out, stop), name="learner-report", daemon=True)
    reporter.start()
    with limit_threads(max(1, cfg.torch_threads)):
        worker = threading.Thread(target=learner.run, args=(stop,), name="learner", daemon=True)
        worker.start()
        stop.wait()
        # The elected learner publishes, saves and leaves its group; a member that is not the
        # learner has nothing to save and does not wait for a broker that is not answering.
        worker.join(timeout=cfg.session_timeout_ms / 1000 + 5 if learner.is_learner else 1.0)
    reporter.join(timeout=2)
    logging.shutdown()
    os._exit(0)  # not waiting for client threads still retrying a broker


if __name__ == "__main__":
    sys.exit(main())
