"""The learner in a process of its own: configuration in, status and metrics out, stop on
request or when the parent goes away (no broker needed: the child keeps retrying one that is not
there)."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from consumers.config import ServiceConfig
from consumers.learner_process import LearnerProcess

REPO = Path(__file__).resolve().parents[1]
NO_BROKER = "127.0.0.1:1"  # nothing listens on port 1


def _config() -> ServiceConfig:
    return ServiceConfig(
        bootstrap_servers=NO_BROKER,
        group_id="g",
        model_params={"hidden_sizes": [4]},
        session_timeout_ms=6000,
        heartbeat_interval_ms=1000,
        retry_backoff_max_s=0.5,
        log_level="WARNING",
    )


def _child() -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.Popen(
        [sys.executable, "-m", "consumers.learner_process"],
        cwd=REPO,
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )


def _wait(predicate: Any, timeout: float = 60.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def test_the_child_reports_its_status_and_stops_when_its_input_closes() -> None:
    proc = _child()
    assert proc.stdin is not None and proc.stdout is not None
    proc.stdin.write(json.dumps(dataclasses.asdict(_config())).encode() + b"\n")
    proc.stdin.flush()
    status = json.loads(proc.stdout.readline())
    assert status["is_learner"] is False and status["epoch"] is None and status["n_learned"] == 0
    names = {family[0] for family in status["metrics"]}
    assert {"streamdas_learner_epoch", "streamdas_learner_records"} <= names
    proc.stdin.close()  # what the parent's death does to the pipe
    assert proc.wait(timeout=60) == 0
    proc.stdout.close()


def test_a_configuration_the_child_cannot_use_is_one_line_and_status_2() -> None:
    proc = _child()
    out, _ = proc.communicate(b'{"session_timeout_ms": "soon"}\n', timeout=60)
    assert proc.returncode == 2 and out == b""
    proc = _child()
    proc.communicate(b"[1, 2]\n", timeout=60)
    assert proc.returncode == 2


def test_run_serves_the_childs_metrics_and_stops_it_on_request() -> None:
    registry = CollectorRegistry()
    telemetry = type("T", (), {"registry": registry})()
    learner = LearnerProcess(_config(), telemetry)
    stop = threading.Event()
    errors: list[BaseException] = []

    def run() -> None:
        try:
            learner.run(stop)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    try:
        assert _wait(lambda: registry.get_sample_value("streamdas_learner_epoch") == -1.0)
        assert not learner.is_learner and learner.epoch is None
    finally:
        stop.set()
        thread.join(timeout=60)
    assert not thread.is_alive() and not errors
    assert learner.pid is not None
    with pytest.raises(ProcessLookupError):  # the child is gone
        os.kill(learner.pid, 0)


def test_run_raises_when_the_child_dies_so_the_service_starts_another() -> None:
    learner = LearnerProcess(_config())
    stop = threading.Event()
    errors: list[BaseException] = []

    def run() -> None:
        try:
            learner.run(stop)
        except RuntimeError as exc:
            errors.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    try:
        assert _wait(lambda: learner.pid is not None)
        assert learner.pid is not None
        os.kill(learner.pid, signal.SIGKILL)
        thread.join(timeout=60)
    finally:
        stop.set()
        thread.join(timeout=60)
    assert len(errors) == 1 and "exited with status -9" in str(errors[0])
