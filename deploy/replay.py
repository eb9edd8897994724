"""Replay a streamdas drift scenario into a Kafka topic (the producer of deploy/docker-compose.yml).

Each sample of :func:`simulations.scenarios.make_scenario` becomes one JSON message
``{"x": {...}, "y": label, "id": "<pass>-<index>"}`` -- the record format the
``streamdas consume`` service reads. ``--bad-fraction`` mixes in unusable messages
(undecodable JSON, a non-numeric feature) so the dead-letter path shows up on the dashboard.

Run it as ``python deploy/replay.py --help``. Settings also come from the environment:
``STREAMDAS_BOOTSTRAP_SERVERS`` and ``STREAMDAS_TOPICS`` (the first topic is used), like the
service itself. ``--dry-run`` writes the messages to stdout as JSON lines instead of Kafka.

>>> msgs = list(messages("complexity", n_samples=30, seed=1, passes=1))
>>> len(msgs), sorted(json.loads(msgs[0][1]))
(30, ['id', 'x', 'y'])
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script from a checkout: make the repo importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

__all__ = ["build_parser", "main", "messages"]


def _plain(value: Any) -> Any:
    """numpy scalars and the like -> plain JSON types."""
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, (bool, int, float, str)) or value is None:
        return value
    return str(value)


def messages(
    scenario: str,
    n_samples: int | None = None,
    seed: int = 42,
    passes: int = 1,
    bad_fraction: float = 0.0,
) -> Iterator[tuple[bytes | None, bytes]]:
    """Yield ``(key, value)`` message pairs for ``passes`` runs over a scenario (0: forever).

    Parameters
    ----------
    scenario
        A name of :data:`simulations.scenarios.SCENARIOS` (e.g. ``complexity``).
    n_samples
        Scenario length (its default when ``None``).
    seed
        Scenario seed; pass ``k`` uses ``seed + k`` so repeated passes are not identical.
    passes
        How many times to replay the scenario; ``0`` repeats forever.
    bad_fraction
        Fraction of messages replaced by unusable ones (for the dead-letter path).

    Examples
    --------
    >>> bad = [v for _, v in messages("sea_abrupt", 200, seed=3, bad_fraction=0.5)]
    >>> 50 < sum(b"truncated" in v or b'"n/a"' in v for v in bad) < 150
    True
    """
    from simulations.scenarios import make_scenario

    if not 0.0 <= bad_fraction <= 1.0:
        raise ValueError(f"bad_fraction must be in [0, 1], got {bad_fraction}")
    rng = random.Random(seed)
    k = 0
    while passes == 0 or k < passes:
        stream = make_scenario(scenario, n_samples=n_samples, seed=seed + k)
        for i, (x, y) in enumerate(stream):
            rid = f"{k}-{i}"
            if bad_fraction and rng.random() < bad_fraction:
                if rng.random() < 0.5:
                    yield None, b'{"x": {"truncated'
                else:
                    bad = {name: _plain(v) for name, v in x.items()}
                    bad[next(iter(bad))] = "n/a"
                    yield None, json.dumps({"x": bad, "y": _plain(y), "id": rid}).encode()
                continue
            record = {"x": {name: float(v) for name, v in x.items()}, "y": _plain(y), "id": rid}
            yield None, json.dumps(record).encode()
        k += 1


def build_parser() -> argparse.ArgumentParser:
    """Command-line options (defaults from ``STREAMDAS_*`` environment variables)."""
    env = os.environ
    topics = env.get("STREAMDAS_TOPICS", "streamdas-input").split(",")
    parser = argparse.ArgumentParser(
        prog="replay.py", description="Replay a drift scenario into a Kafka topic as JSON records."
    )
    parser.add_argument(
        "--bootstrap-servers",
        default=env.get("STREAMDAS_BOOTSTRAP_SERVERS", "127.0.0.1:9092"),
        help="Kafka bootstrap servers (env STREAMDAS_BOOTSTRAP_SERVERS)",
    )
    parser.add_argument(
        "--topic", default=topics[0].strip(), help="input topic (env STREAMDAS_TOPICS, first entry)"
    )
    parser.add_argument(
        "--scenario",
        default=env.get("STREAMDAS_REPLAY_SCENARIO", "complexity"),
        help="scenario name (see `streamdas simulate --help`)",
    )
    parser.add_argument("--n-samples", type=int, default=None, help="scenario length")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--passes", type=int, default=1, help="replays of the scenario; 0: forever")
    parser.add_argument(
        "--rate",
        type=float,
        default=float(env.get("STREAMDAS_REPLAY_RATE", "0") or 0),
        help="messages per second; 0: as fast as the broker takes them",
    )
    parser.add_argument(
        "--bad-fraction",
        type=float,
        default=0.0,
        help="fraction of unusable messages, for the dead-letter path",
    )
    parser.add_argument("--limit", type=int, default=None, help="stop after this many messages")
    parser.add_argument("--dry-run", action="store_true", help="print JSON lines, no Kafka")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Replay; returns the process exit status.

    Examples
    --------
    >>> main(["--dry-run", "--scenario", "complexity", "--limit", "2"])  # doctest: +ELLIPSIS
    {"x": {...}, "y": ..., "id": "0-0"}
    {"x": {...}, "y": ..., "id": "0-1"}
    0
    """
    args = build_parser().parse_args(argv)
    source = messages(args.scenario, args.n_samples, args.seed, args.passes, args.bad_fraction)
    producer = None
    if not args.dry_run:
        from kafka import KafkaProducer

        producer = KafkaProducer(
            bootstrap_servers=args.bootstrap_servers.split(","), linger_ms=20, acks="all", retries=10
        )
    started = time.monotonic()
    sent = 0
    try:
        for key, value in source:
            if args.limit is not None and sent >= args.limit:
                break
            if producer is None:
                print(value.decode(), flush=False)
            else:
                producer.send(args.topic, key=key, value=value)
            sent += 1
            if args.rate > 0:
                ahead = sent / args.rate - (time.monotonic() - started)
                if ahead > 0:
                    time.sleep(ahead)
    finally:
        if producer is not None:
            producer.flush(timeout=60)
            producer.close(timeout=10)
        sys.stdout.flush()
    if producer is not None:
        print(f"replayed {sent} messages into {args.topic}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
