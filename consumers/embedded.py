"""Embedded mode: the service's predict-then-learn loop over a local source, no broker.

Records come from :func:`consumers.sources.open_source` in batches of ``max_poll_records``
(and at most about :data:`BATCH_BYTES`, as a Kafka fetch is bounded in bytes; from stdin,
``--source -``, a batch is whatever has arrived, up to that many: a live pipe gets each
prediction back as soon as its record is in, and SIGTERM or SIGINT ends the run with status 0
even while the pipe is still open);
predictions (same JSON as the output topic, with ``topic`` set to the source and ``offset`` to
the record's index) go to ``--output`` (JSONL, ``-`` for stdout) and dead letters to
``--dead-letter-output`` (default stderr), one standard JSON object per line, bounded as the
service's messages are (:mod:`consumers.messages`). There is no checkpointing in this mode. The model's
metrics carry ``model="<source>-0"`` (``stdin-0`` for ``-``), as the service's carry
``model="<topic>-<partition>"``.
"""

from __future__ import annotations

import logging
import queue
import sys
import threading
from collections.abc import Iterable, Iterator
from contextlib import ExitStack
from typing import IO, Any

from consumers.config import ServiceConfig
from consumers.messages import Origin, dead_letter_value_bytes, message_limit, render
from consumers.model import ModelSpec, PartitionState, make_estimator, process_guarded
from consumers.sources import open_source
from consumers.telemetry import Telemetry

__all__ = ["run_embedded"]

log = logging.getLogger(__name__)


def _open(target: str | None, default: IO[str], stack: ExitStack) -> IO[str]:
    if target is None or target == "-":
        return default
    return stack.enter_context(open(target, "w", encoding="utf-8"))


_END = object()

#: A batch ends once its values hold this many bytes (as a Kafka fetch is bounded in bytes).
BATCH_BYTES = 32 * 1024 * 1024


def batches(
    values: Iterable[bytes],
    size: int,
    live: bool = False,
    stop: threading.Event | None = None,
    max_bytes: int = BATCH_BYTES,
) -> Iterator[list[bytes]]:
    """Group ``values`` into lists of at most ``size`` values and about ``max_bytes`` bytes (a
    batch ends with the value that reaches ``max_bytes``).

    With ``live`` (a pipe), a batch is whatever has arrived, up to ``size``: a reader thread
    feeds a queue, the first value of a batch is waited for and the rest taken only if already
    there, so a slow writer gets each record handled as it arrives.

    Examples
    --------
    >>> [len(b) for b in batches(iter([b"1"] * 5), 2)]
    [2, 2, 1]
    >>> [len(b) for b in batches(iter([b"12"] * 5), 4, max_bytes=3)]
    [2, 2, 1]
    >>> sum(len(b) for b in batches(iter([b"1"] * 5), 2, live=True))
    5
    """
    values = iter(values)
    if not live:
        batch: list[bytes] = []
        held = 0
        for value in values:
            batch.append(value)
            held += len(value)
            if len(batch) >= size or held >= max_bytes:
                yield batch
                batch, held = [], 0
        if batch:
            yield batch
        return
    stop = stop or threading.Event()
    inbox: queue.Queue[Any] = queue.Queue(maxsize=4 * size)
    closed = threading.Event()  # the loop is over: the reader hands nothing more on

    def put(item: Any) -> bool:
        while not closed.is_set():
            try:
                inbox.put(item, timeout=0.2)
                return True
            except queue.Full:
                continue
        return False

    def pump() -> None:
        # A daemon thread, so a reader blocked waiting for a pipe's next line never holds up
        # a graceful stop; stdin is read with os.read (see consumers.sources._fd_lines), which
        # holds no Python lock, so abandoning the thread at shutdown is safe.
        try:
            for value in values:
                if not put(value):
                    return
        except BaseException as exc:  # handed to the loop, which raises it
            put(exc)
        put(_END)

    threading.Thread(target=pump, name="streamdas-source", daemon=True).start()
    done = False
    try:
        while not done and not stop.is_set():
            try:
                item = inbox.get(timeout=0.2)
            except queue.Empty:
                continue
            batch = []
            held = 0
            while True:
                if item is _END:
                    done = True
                    break
                if isinstance(item, BaseException):
                    raise item
                batch.append(item)
                held += len(item)
                if len(batch) >= size or held >= max_bytes:
                    break
                try:
                    item = inbox.get_nowait()
                except queue.Empty:
                    break
            if batch:
                yield batch
    finally:
        closed.set()


def run_embedded(
    cfg: ServiceConfig, telemetry: Telemetry | None = None, stop: threading.Event | None = None
) -> int:
    """Run the loop over ``cfg.source``; returns the exit status.

    Examples
    --------
    >>> import io, contextlib, json
    >>> cfg = ServiceConfig(source="river:SEA", limit=64, model="linear", max_poll_records=32)
    >>> out = io.StringIO()
    >>> with contextlib.redirect_stdout(out):
    ...     status = run_embedded(cfg)
    >>> lines = out.getvalue().splitlines()
    >>> status, len(lines), json.loads(lines[-1])["offset"]
    (0, 64, 63)
    """
    assert cfg.source is not None
    telemetry = telemetry or Telemetry(cfg)
    stop = stop or threading.Event()
    spec = ModelSpec(task=cfg.task, kind=cfg.model, params=dict(cfg.model_params), seed=cfg.seed)
    state = PartitionState(make_estimator(spec), list(cfg.features) if cfg.features else None)
    lock = threading.RLock()  # scrapes read the model between batches, never during one
    # the label the service uses, <topic>-<partition>: the source is partition 0 of its topic
    name = f"{'stdin' if cfg.source == '-' else cfg.source}-0"
    telemetry.watch_models(lambda: {name: state.estimator}, lock=lock)
    telemetry.broker_up(True)
    values = open_source(cfg.source, seed=cfg.seed, limit=cfg.limit)
    limit = message_limit(cfg.kafka)
    value_bytes = dead_letter_value_bytes(cfg.dead_letter_value_bytes, limit)
    offset = 0
    with ExitStack() as stack:
        out = _open(cfg.output, sys.stdout, stack)
        dead = _open(cfg.dead_letter_output, sys.stderr, stack)
        for batch in batches(values, cfg.max_poll_records, live=cfg.source == "-", stop=stop):
            with lock:
                result = process_guarded(state, batch, task=cfg.task, max_bytes=cfg.max_record_bytes)
            origins = [Origin(cfg.source, 0, offset + i, None, v) for i, v in enumerate(batch)]
            for message in render(result, origins, limit=limit, value_bytes=value_bytes):
                target = out if message.kind == "prediction" else dead
                target.write(message.value.decode("utf-8") + "\n")
            out.flush()  # each batch's predictions go out at once (a live pipe waits for them)
            dead.flush()
            offset += len(batch)
            state.next_offset = offset
            telemetry.batch(result)
            telemetry.heartbeat()
            telemetry.progress()
            if stop.is_set():
                break
        out.flush()
    log.info("embedded run done: %s", telemetry.totals)
    return 0
