"""Record sources for the embedded (no-broker) mode, pluggable by prefix.

``--source`` accepts:

* ``path/to/file.jsonl`` -- one JSON record per line (the same schema as the Kafka topic);
* ``-`` -- the same, from stdin (read from its file descriptor, unbuffered by Python: see
  :func:`_fd_lines`);
* ``river:NAME`` -- a River synthetic stream, e.g. ``river:SEA`` or ``river:Friedman``
  (seeded with ``--seed``; capped by ``--limit``, default 10,000);
* ``sim:SCENARIO`` -- a :mod:`simulations` drift scenario, e.g. ``sim:sea_abrupt``.

Every source yields raw ``bytes`` values, exactly what a Kafka message would hold, so records
go through the same validation as in the service. Add a source with :func:`register_source`.
"""

from __future__ import annotations

import itertools
import json
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

__all__ = ["SOURCES", "check_source", "open_source", "register_source"]

#: ``prefix -> factory(argument, seed, limit) -> iterator of raw values``.
SOURCES: dict[str, Callable[[str, int, int | None], Iterator[bytes]]] = {}

DEFAULT_LIMIT = 10_000


def register_source(prefix: str) -> Callable[[Callable[..., Iterator[bytes]]], Any]:
    """Register a source factory for ``--source PREFIX:ARGUMENT``."""

    def wrap(factory: Callable[..., Iterator[bytes]]) -> Callable[..., Iterator[bytes]]:
        SOURCES[prefix] = factory
        return factory

    return wrap


def _encode(x: dict[str, Any], y: Any) -> bytes:
    if hasattr(y, "item"):
        y = y.item()
    x = {str(k): (v.item() if hasattr(v, "item") else v) for k, v in x.items()}
    return json.dumps({"x": x, "y": y}).encode("utf-8")


def _river_stream_class(name: str) -> type:
    """The ``river.datasets.synth`` class called ``name``: only names in its ``__all__``."""
    from river.datasets import synth

    if name not in synth.__all__:
        raise ValueError(
            f"unknown River stream {name!r}; choose from "
            f"{', '.join('river:' + n for n in sorted(synth.__all__))}"
        )
    return getattr(synth, name)


def _scenario_name(name: str) -> str:
    from simulations.scenarios import SCENARIOS

    if name not in SCENARIOS:
        raise ValueError(
            f"unknown scenario {name!r}; choose from {', '.join('sim:' + n for n in sorted(SCENARIOS))}"
        )
    return name


def check_source(spec: str) -> None:
    """Raise ``ValueError`` (naming the accepted forms) unless ``spec`` can be opened.

    Examples
    --------
    >>> check_source("river:SEA")
    >>> check_source("nosuch.jsonl")
    Traceback (most recent call last):
    ...
    ValueError: 'nosuch.jsonl' is not a file; expected a JSONL file, '-' (stdin), river:NAME or sim:SCENARIO
    """
    if spec == "-":
        return
    prefix, sep, argument = spec.partition(":")
    if sep and prefix == "river":
        _river_stream_class(argument)
    elif sep and prefix == "sim":
        _scenario_name(argument)
    elif not (sep and prefix in SOURCES) and not Path(spec).is_file():
        others = "".join(f", {p}:..." for p in sorted(SOURCES) if p not in ("river", "sim"))
        raise ValueError(
            f"{spec!r} is not a file; expected a JSONL file, '-' (stdin){others}, river:NAME or sim:SCENARIO"
        )


@register_source("river")
def _river_source(name: str, seed: int, limit: int | None) -> Iterator[bytes]:
    cls = _river_stream_class(name)
    try:
        stream = cls(seed=seed)
    except TypeError:
        stream = cls()
    n = DEFAULT_LIMIT if limit is None else limit
    for x, y in itertools.islice(iter(stream), n):
        yield _encode(x, y)


@register_source("sim")
def _simulation_source(name: str, seed: int, limit: int | None) -> Iterator[bytes]:
    from simulations.scenarios import make_scenario

    # a scenario is at least 10 samples long: cut it to the limit
    n_samples = None if limit is None else max(limit, 10)
    stream = make_scenario(_scenario_name(name), n_samples=n_samples, seed=seed)
    for x, y in itertools.islice(stream, limit):
        yield _encode(x, y)


def _lines(stream: Any) -> Iterator[bytes]:
    for line in stream:
        line = line.rstrip(b"\r\n")
        if line.strip():
            yield line


def _fd_lines(fd: int, chunk: int = 1 << 16) -> Iterator[bytes]:
    """Lines (newline-split, blank ones skipped) read from ``fd`` with :func:`os.read`.

    Stdin is read this way, not through ``sys.stdin.buffer``: the live-pipe reader is a daemon
    thread that may be blocked in a read when a signal ends the run, and a thread blocked
    inside a buffered read holds that reader's lock, so interpreter shutdown aborts ("Fatal
    Python error: _enter_buffered_busy", exit status 134). ``os.read`` holds no Python lock,
    and each read returns whatever the pipe has, so a record is handed on as it arrives.

    Examples
    --------
    >>> r, w = os.pipe()
    >>> _ = os.write(w, b'{"a": 1}\\r\\n\\n{"a": 2}')
    >>> os.close(w)
    >>> list(_fd_lines(r, chunk=4))
    [b'{"a": 1}', b'{"a": 2}']
    >>> os.close(r)
    """
    pending = bytearray()
    while data := os.read(fd, chunk):
        pending += data
        if b"\n" not in data:
            continue
        end = pending.rfind(b"\n")
        complete = bytes(pending[:end])
        del pending[: end + 1]
        for line in complete.split(b"\n"):
            line = line.rstrip(b"\r")
            if line.strip():
                yield line
    line = bytes(pending).rstrip(b"\r\n")
    if line.strip():
        yield line


def _stdin_lines() -> Iterator[bytes]:
    try:
        fd = sys.stdin.fileno()
    except (AttributeError, OSError, ValueError):  # no real stdin (replaced in-process)
        return _lines(sys.stdin.buffer)
    return _fd_lines(fd)


def _file_lines(path: Path) -> Iterator[bytes]:
    with path.open("rb") as f:
        yield from _lines(f)


def open_source(spec: str, seed: int = 42, limit: int | None = None) -> Iterator[bytes]:
    """Open ``spec`` as an iterator of raw record values.

    Examples
    --------
    >>> values = list(open_source("river:SEA", seed=1, limit=2))
    >>> len(values), sorted(json.loads(values[0])["x"])
    (2, ['0', '1', '2'])
    """
    if spec == "-":
        values: Iterator[bytes] = _stdin_lines()
    else:
        prefix, sep, argument = spec.partition(":")
        if sep and prefix in SOURCES:
            return SOURCES[prefix](argument, seed, limit)
        check_source(spec)
        values = _file_lines(Path(spec))
    return values if limit is None else itertools.islice(values, limit)
