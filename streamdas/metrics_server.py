"""A small HTTP server with a fixed number of threads, for the metrics and health endpoints.

:class:`BoundedWSGIServer` serves a WSGI application (``prometheus_client.make_wsgi_app`` and
the health checks, see :func:`streamdas.metrics.serve`) so that no client can make it grow:

* one thread reads request heads from every connection at once (non-blocking sockets), and a
  request reaches a worker only once its head is complete, so clients that connect and send
  slowly, or nothing at all, hold no worker;
* a fixed pool of ``workers`` threads runs the application; the thread count never depends on
  the number of clients;
* requests for the ``fast_paths`` (health checks: cheap, and what an orchestrator restarts the
  process on) have a worker of their own, so slow requests for other paths (a scrape waiting
  for the models' lock) cannot delay them;
* at most ``max_connections`` connections wait for their head (the oldest is closed to admit a
  new one) and as many complete requests wait for a worker (beyond that: ``503``);
* every connection has ``timeout_s`` seconds, from its accept to its last byte sent, and at
  most ``max_head_bytes`` of request head (beyond that: ``431``).

Examples
--------
>>> import urllib.request
>>> def hello(environ, start_response):
...     start_response("200 OK", [("Content-Type", "text/plain")])
...     return [b"hello"]
>>> with BoundedWSGIServer("127.0.0.1", 0, hello, workers=2) as server:
...     urllib.request.urlopen(f"http://127.0.0.1:{server.port}/").read()
b'hello'
"""

from __future__ import annotations

import contextlib
import io
import logging
import queue
import selectors
import socket
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler

__all__ = ["BoundedWSGIServer"]

log = logging.getLogger(__name__)

WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]

_HEAD_ENDS = (b"\r\n\r\n", b"\n\n")

#: A complete request for a worker: connection, request head, client address, deadline.
_Job = tuple[socket.socket, bytes, Any, float]


def _path(head: bytes) -> str:
    """The path of a request head's request line, without its query (``""`` if malformed)."""
    parts = head.split(b"\n", 1)[0].split()
    if len(parts) < 2:
        return ""
    return parts[1].split(b"?", 1)[0].decode("latin-1")


def _refuse(conn: socket.socket, status: str) -> None:
    """Best-effort short answer on a connection that gets no worker, then close it."""
    body = status.encode() + b"\n"
    with contextlib.suppress(OSError):
        conn.setblocking(False)
        conn.send(
            b"HTTP/1.0 " + status.encode() + b"\r\nContent-Type: text/plain\r\n"
            b"Content-Length: " + str(len(body)).encode() + b"\r\nConnection: close\r\n\r\n" + body
        )
    conn.close()


@dataclass
class _Pending:
    """A connection whose request head is still arriving."""

    address: Any
    deadline: float
    head: bytearray = field(default_factory=bytearray)


class _Writer(io.BufferedIOBase):
    """The response stream: every write is sent whole, before the connection's deadline."""

    def __init__(self, conn: socket.socket, deadline: float) -> None:
        self._conn, self._deadline = conn, deadline

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        remaining = self._deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("request deadline passed")
        self._conn.settimeout(remaining)
        self._conn.sendall(data)
        return len(data)


class _LogStream(io.TextIOBase):
    """``wsgi.errors`` and wsgiref's error output, to the debug log instead of stderr."""

    def write(self, text: str) -> int:
        if text.strip():
            log.debug("%s", text.rstrip())
        return len(text)


class _Handler(WSGIRequestHandler):
    """wsgiref's request handler over a head that has already arrived in full."""

    def setup(self) -> None:
        self.connection, head, deadline = self.request
        self.rfile = io.BytesIO(head)
        self.wfile = _Writer(self.connection, deadline)

    def finish(self) -> None:
        self.rfile.close()

    def get_stderr(self) -> _LogStream:
        return _LogStream()

    def log_message(self, format: str, *args: Any) -> None:
        """Do not log every scrape."""


class BoundedWSGIServer:
    """Serve ``app`` on ``address:port`` with ``workers`` threads and one reader thread.

    Parameters
    ----------
    address
        Interface to bind (an address with ``:`` is IPv6).
    port
        TCP port, ``0..65535``; ``0`` picks a free one (read it back from :attr:`port`).
    app
        The WSGI application.
    workers
        Threads running ``app`` for paths other than ``fast_paths``.
    fast_paths
        Paths answered by one more thread of their own (``PATH_INFO``, the query aside).
    max_connections
        Connections whose request head is still arriving, and complete requests waiting for
        a worker, at most (each).
    timeout_s
        Seconds a connection may take, from its accept to its last byte sent.
    max_head_bytes
        Largest request head (request line and headers) accepted.

    Raises
    ------
    OSError
        When the address cannot be bound (in use, not an address of this host...).
    ValueError
        For a port outside ``0..65535`` or a bound below 1.
    """

    def __init__(
        self,
        address: str,
        port: int,
        app: WSGIApp,
        *,
        workers: int = 4,
        fast_paths: Iterable[str] = (),
        max_connections: int = 64,
        timeout_s: float = 10.0,
        max_head_bytes: int = 16384,
    ) -> None:
        if not 0 <= int(port) <= 65535:
            raise ValueError(f"port must be in 0..65535, got {port}")
        if workers < 1 or max_connections < 1 or max_head_bytes < 1 or not timeout_s > 0:
            raise ValueError("workers, max_connections, max_head_bytes and timeout_s must be > 0")
        self.app = app
        self.workers = int(workers)
        self.fast_paths = frozenset(fast_paths)
        self.max_connections = int(max_connections)
        self.timeout_s = float(timeout_s)
        self.max_head_bytes = int(max_head_bytes)
        family = socket.AF_INET6 if ":" in address else socket.AF_INET
        self._listener = socket.socket(family, socket.SOCK_STREAM)
        try:
            self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            self._listener.bind((address, int(port)))
            self._listener.listen(self.max_connections)
        except BaseException:
            self._listener.close()
            raise
        self._listener.setblocking(False)
        self.address = address
        self.port: int = self._listener.getsockname()[1]
        self.base_environ = {
            "SERVER_NAME": address,
            "SERVER_PORT": str(self.port),
            "GATEWAY_INTERFACE": "CGI/1.1",
            "REMOTE_HOST": "",
            "CONTENT_LENGTH": "",
            "SCRIPT_NAME": "",
        }
        self._pending: dict[socket.socket, _Pending] = {}  # insertion order: oldest first
        # Only the reader thread adds jobs, and it checks their number first.
        self._jobs: queue.Queue[_Job | None] = queue.Queue()
        self._fast_jobs: queue.Queue[_Job | None] = queue.Queue()
        self._stop = threading.Event()
        self._reader = threading.Thread(target=self._read_loop, name="streamdas-metrics", daemon=True)
        self._workers = [
            threading.Thread(
                target=self._work, args=(self._jobs,), name=f"streamdas-metrics-{i}", daemon=True
            )
            for i in range(self.workers)
        ]
        if self.fast_paths:
            self._workers.append(
                threading.Thread(
                    target=self._work, args=(self._fast_jobs,), name="streamdas-metrics-health", daemon=True
                )
            )
        for thread in [self._reader, *self._workers]:
            thread.start()

    # -- what wsgiref's request handler asks of its server ---------------------------------
    def get_app(self) -> WSGIApp:
        """The WSGI application (wsgiref's handler calls this)."""
        return self.app

    # -- the reader thread -----------------------------------------------------------------
    def _read_loop(self) -> None:
        with selectors.DefaultSelector() as selector:
            selector.register(self._listener, selectors.EVENT_READ)
            while not self._stop.is_set():
                for key, _ in selector.select(timeout=0.1):
                    if key.fileobj is self._listener:
                        self._accept(selector)
                    else:
                        self._read(selector, key.fileobj)  # type: ignore[arg-type]
                self._expire(selector, time.monotonic())
            for conn in list(self._pending):
                self._drop(selector, conn)
        self._listener.close()

    def _accept(self, selector: selectors.BaseSelector) -> None:
        for _ in range(self.max_connections):
            try:
                conn, address = self._listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # e.g. out of file descriptors: try again later
                log.debug("metrics server: accept failed: %s", exc)
                return
            if len(self._pending) >= self.max_connections:
                self._drop(selector, next(iter(self._pending)))
            conn.setblocking(False)
            self._pending[conn] = _Pending(address, time.monotonic() + self.timeout_s)
            selector.register(conn, selectors.EVENT_READ)

    def _read(self, selector: selectors.BaseSelector, conn: socket.socket) -> None:
        pending = self._pending[conn]
        try:
            data = conn.recv(4096)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            self._drop(selector, conn)
            return
        pending.head += data
        if any(end in pending.head for end in _HEAD_ENDS):
            selector.unregister(conn)
            del self._pending[conn]
            head = bytes(pending.head)
            jobs = self._fast_jobs if _path(head) in self.fast_paths else self._jobs
            if jobs.qsize() >= self.max_connections:
                _refuse(conn, "503 Service Unavailable")
            else:
                jobs.put((conn, head, pending.address, pending.deadline))
        elif len(pending.head) > self.max_head_bytes:
            selector.unregister(conn)
            del self._pending[conn]
            _refuse(conn, "431 Request Header Fields Too Large")

    def _expire(self, selector: selectors.BaseSelector, now: float) -> None:
        for conn, pending in list(self._pending.items()):
            if pending.deadline > now:
                break  # the rest arrived later
            self._drop(selector, conn)

    def _drop(self, selector: selectors.BaseSelector, conn: socket.socket) -> None:
        selector.unregister(conn)
        del self._pending[conn]
        conn.close()

    # -- the workers -----------------------------------------------------------------------
    def _work(self, jobs: queue.Queue[_Job | None]) -> None:
        while True:
            job = jobs.get()
            if job is None:
                return
            conn, head, address, deadline = job
            try:
                if deadline > time.monotonic():
                    conn.setblocking(True)
                    # wsgiref's handler unpacks this request in setup() and asks its server
                    # only for get_app() and base_environ: both duck-typed.
                    request: Any = (conn, head, deadline)
                    server: Any = self
                    _Handler(request, address, server)
            except Exception as exc:  # a client that went away or ran out of time
                log.debug("metrics server: request from %s failed: %s", address, exc)
            finally:
                conn.close()

    # -- lifecycle -------------------------------------------------------------------------
    @property
    def threads(self) -> list[threading.Thread]:
        """The server's threads: the reader and the workers (a fixed number)."""
        return [self._reader, *self._workers]

    def shutdown(self) -> None:
        """Stop serving, close every connection and release the port."""
        self._stop.set()
        self._reader.join(timeout=5)
        for jobs in (self._jobs, self._fast_jobs):
            while True:
                try:
                    job = jobs.get_nowait()
                except queue.Empty:
                    break
                if job is not None:
                    job[0].close()
        for _ in range(self.workers):
            self._jobs.put(None)
        self._fast_jobs.put(None)
        for thread in self._workers:
            thread.join(timeout=5)

    def __enter__(self) -> BoundedWSGIServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()
