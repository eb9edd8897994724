"""Pytest fixtures: a real Prometheus on loopback, scraping a streamdas metrics server.

``tests/conftest.py`` re-exports these with::

    from prometheus_fixtures import (  # noqa: F401
        metrics_endpoint, prometheus, prometheus_factory, promtool)

Binaries come from Debian's ``prometheus`` package (``/usr/bin/prometheus``,
``/usr/bin/promtool``), or ``$STREAMDAS_PROMETHEUS`` / ``$STREAMDAS_PROMTOOL``. When
one is missing the test is skipped -- unless ``STREAMDAS_REQUIRE_SERVICES=1`` (CI),
in which case it fails loudly.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import shutil
import socket
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from streamdas.metrics import MetricsServer, serve

SCRAPE_INTERVAL_S = 1
_RESERVED_PORTS = {9090, 9091, 9093, 9100, 9108}  # never collide with a system Prometheus & co.


def services_required() -> bool:
    """True when CI demands every external service (``STREAMDAS_REQUIRE_SERVICES=1``)."""
    return os.environ.get("STREAMDAS_REQUIRE_SERVICES", "") == "1"


def find_binary(name: str) -> str | None:
    """Path of ``name`` (``prometheus``/``promtool``): env override, then PATH."""
    override = os.environ.get(f"STREAMDAS_{name.upper()}")
    if override:
        return override if os.access(override, os.X_OK) else None
    return shutil.which(name)


def require_binary(name: str) -> str:
    """Return the binary's path; skip (or fail under STREAMDAS_REQUIRE_SERVICES=1) if absent."""
    path = find_binary(name)
    if path is None:
        msg = f"{name} not found (apt-get install -y prometheus, or set STREAMDAS_{name.upper()})"
        if services_required():
            pytest.fail(msg + " and STREAMDAS_REQUIRE_SERVICES=1", pytrace=False)
        pytest.skip(msg)
    return path


def free_port() -> int:
    """A free TCP port on 127.0.0.1, never one of the well-known Prometheus ports."""
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind(("127.0.0.1", 0))
            port = int(sock.getsockname()[1])
        if port not in _RESERVED_PORTS:
            return port


@dataclass
class MetricsEndpoint:
    """A streamdas ``/metrics`` server on loopback with an initially empty registry."""

    registry: CollectorRegistry
    server: MetricsServer

    @property
    def target(self) -> str:
        """``host:port`` as Prometheus wants it in ``static_configs``."""
        return f"127.0.0.1:{self.server.port}"


@dataclass
class Prometheus:
    """A running Prometheus and helpers around its HTTP API."""

    url: str
    process: subprocess.Popen[bytes]
    config_path: Path
    log_path: Path
    job: str = "streamdas"
    _log: list[str] = field(default_factory=list)

    def api(self, path: str, **params: Any) -> Any:
        """GET ``/api/v1/<path>`` and return ``data`` (raises on a non-success status)."""
        query = urllib.parse.urlencode(params)
        with urllib.request.urlopen(f"{self.url}/api/v1/{path}?{query}", timeout=10) as resp:
            payload = json.loads(resp.read())
        if payload.get("status") != "success":
            raise RuntimeError(f"Prometheus API error: {payload}")
        return payload["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        """Instant query; returns the ``result`` vector."""
        return self.api("query", query=expr)["result"]

    def query_range(self, expr: str, start: float, end: float, step: float = 1.0) -> list[dict[str, Any]]:
        """Range query; returns the ``result`` matrix."""
        return self.api("query_range", query=expr, start=f"{start:.3f}", end=f"{end:.3f}", step=f"{step}")[
            "result"
        ]

    def wait_for(self, expr: str, predicate: Any, timeout: float = 30.0) -> list[dict[str, Any]]:
        """Poll ``expr`` until ``predicate(result)`` is true; fail the test on timeout."""
        deadline = time.monotonic() + timeout
        result: list[dict[str, Any]] = []
        while time.monotonic() < deadline:
            self.check_alive()
            result = self.query(expr)
            if predicate(result):
                return result
            time.sleep(0.25)
        pytest.fail(
            f"Prometheus never satisfied the condition on {expr!r}; last: {result}\n"
            f"log tail:\n{self.log_tail()}"
        )

    def check_alive(self) -> None:
        """Fail with the log if Prometheus died."""
        if self.process.poll() is not None:
            pytest.fail(f"Prometheus exited with {self.process.returncode}:\n{self.log_tail()}")

    def log_tail(self, n: int = 40) -> str:
        """Last ``n`` lines of Prometheus' log."""
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return "(no log)"


@pytest.fixture
def promtool() -> str:
    """Path of ``promtool`` (skips or fails if missing, see module docstring)."""
    return require_binary("promtool")


@pytest.fixture
def metrics_endpoint() -> Iterator[MetricsEndpoint]:
    """A streamdas metrics server on a free loopback port; register collectors on ``.registry``."""
    registry = CollectorRegistry()
    server = serve(address="127.0.0.1", port=0, registry=registry)
    try:
        yield MetricsEndpoint(registry=registry, server=server)
    finally:
        server.shutdown()


def _write_config(path: Path, targets: list[str], job: str) -> None:
    config = {
        "global": {
            "scrape_interval": f"{SCRAPE_INTERVAL_S}s",
            "evaluation_interval": f"{SCRAPE_INTERVAL_S}s",
        },
        "scrape_configs": [
            {
                "job_name": job,
                "scrape_interval": f"{SCRAPE_INTERVAL_S}s",
                "scrape_timeout": f"{SCRAPE_INTERVAL_S}s",
                "static_configs": [{"targets": list(targets)}],
            }
        ],
    }
    path.write_text(json.dumps(config, indent=2))  # JSON is valid YAML


def _start(binary: str, config: Path, data: Path, port: int, log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as log_file:
        return subprocess.Popen(
            [
                binary,
                f"--config.file={config}",
                f"--storage.tsdb.path={data}",
                f"--web.listen-address=127.0.0.1:{port}",
                "--storage.tsdb.retention.time=1h",
                "--log.level=warn",
            ],
            stdout=log_file,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=config.parent,
        )


def _ready(url: str) -> bool:
    with contextlib.suppress(OSError), urllib.request.urlopen(f"{url}/-/ready", timeout=2) as resp:
        return resp.status == 200
    return False


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)


def start_prometheus(
    targets: list[str], workdir: Path, job: str = "streamdas"
) -> contextlib.AbstractContextManager[Prometheus]:
    """Start Prometheus scraping ``targets`` (``host:port``) every second; stop it on exit."""

    @contextlib.contextmanager
    def run() -> Iterator[Prometheus]:
        binary = require_binary("prometheus")
        workdir.mkdir(parents=True, exist_ok=True)
        config = workdir / "prometheus.yml"
        log = workdir / "prometheus.log"
        _write_config(config, targets, job)
        last_error = ""
        for _attempt in range(3):  # the free port may be taken between probe and bind
            port = free_port()
            url = f"http://127.0.0.1:{port}"
            process = _start(binary, config, workdir / f"data-{port}", port, log)
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and process.poll() is None and not _ready(url):
                time.sleep(0.2)
            if process.poll() is None and _ready(url):
                try:
                    yield Prometheus(url=url, process=process, config_path=config, log_path=log, job=job)
                finally:
                    _stop(process)
                return
            _stop(process)
            last_error = log.read_text(errors="replace")[-3000:] if log.exists() else ""
        pytest.fail(f"Prometheus did not become ready:\n{last_error}")

    return run()


@pytest.fixture
def prometheus_factory(tmp_path: Path) -> Iterator[Any]:
    """``prometheus_factory(targets)`` starts a Prometheus scraping ``targets``; all are stopped
    after the test."""
    with contextlib.ExitStack() as stack:
        counter = itertools.count()

        def factory(targets: list[str], job: str = "streamdas") -> Prometheus:
            workdir = tmp_path / f"prometheus-{next(counter)}"
            return stack.enter_context(start_prometheus(targets, workdir, job))

        yield factory


@pytest.fixture
def prometheus(metrics_endpoint: MetricsEndpoint, tmp_path: Path) -> Iterator[Prometheus]:
    """A real Prometheus on a free loopback port scraping ``metrics_endpoint`` every second."""
    with start_prometheus([metrics_endpoint.target], tmp_path / "prometheus") as prom:
        yield prom
