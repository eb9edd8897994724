"""Embedded mode: the service's predict-then-learn loop over a local source, no broker.

Records come from :func:`consumers.sources.open_source` in batches of ``max_poll_records``;
predictions (same JSON as the output topic, with ``topic`` set to the source and ``offset`` to
the record's index) go to ``--output`` (JSONL, ``-`` for stdout) and dead letters to
``--dead-letter-output`` (default stderr). There is no checkpointing in this mode.
"""

from __future__ import annotations

import itertools
import json
import logging
import sys
import threading
from contextlib import ExitStack
from typing import IO, Any

from consumers.config import ServiceConfig
from consumers.model import ModelSpec, PartitionState, make_estimator, process_batch
from consumers.service import dead_letter_payload, prediction_payload
from consumers.sources import open_source
from consumers.telemetry import Telemetry

__all__ = ["run_embedded"]

log = logging.getLogger(__name__)


def _open(target: str | None, default: IO[str], stack: ExitStack) -> IO[str]:
    if target is None or target == "-":
        return default
    return stack.enter_context(open(target, "w", encoding="utf-8"))


def run_embedded(
    cfg: ServiceConfig, telemetry: Telemetry | None = None, stop: threading.Event | None = None
) -> int:
    """Run the loop over ``cfg.source``; returns the exit status.

    Examples
    --------
    >>> import io, contextlib
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
    telemetry.watch_models(lambda: {"embedded": state.estimator})
    telemetry.broker_up(True)
    values = open_source(cfg.source, seed=cfg.seed, limit=cfg.limit)
    offset = 0
    with ExitStack() as stack:
        out = _open(cfg.output, sys.stdout, stack)
        dead = _open(cfg.dead_letter_output, sys.stderr, stack)
        while not stop.is_set():
            batch = list(itertools.islice(values, cfg.max_poll_records))
            if not batch:
                break
            result = process_batch(state, batch, task=cfg.task, max_bytes=cfg.max_record_bytes)
            lines: list[tuple[int, str, Any]] = []
            for i, body in result.predictions:
                payload = prediction_payload(None, cfg.source, 0, offset + i, body)
                lines.append((i, "out", payload))
            for i, rejection in result.rejections:
                payload = dead_letter_payload(None, batch[i], cfg.source, 0, offset + i,
                                              rejection)
                lines.append((i, "dead", payload))
            for _, where, payload in sorted(lines, key=lambda t: t[0]):
                target = out if where == "out" else dead
                target.write(json.dumps(payload, separators=(",", ":"), default=str) + "\n")
            offset += len(batch)
            state.next_offset = offset
            telemetry.batch(result)
            telemetry.heartbeat()
        out.flush()
    log.info("embedded run done: %s", telemetry.totals)
    return 0
