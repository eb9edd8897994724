"""Load benchmark of the consumer service: sustained end-to-end messages/s and consumer lag.

Starts a Tansu broker on loopback (unless ``--bootstrap`` is given), loads a backlog of labelled
records into the input topic, starts ``--instances`` service processes (``python -m
consumers``, one group, ``--model-scope``), and samples their ``/metrics`` once a second:
records handled so far, hence throughput and lag (messages produced but not yet handled). With
``--rate`` the input is produced *while* the services run, at that rate, and the report shows
whether lag stays bounded. Finally it reads the output topic back and checks that every input
record got a prediction.

In the shared scope it also reports how fresh the predictions' model was, from what the topics
hold: the snapshot manifests (each says when it was published and how many records its model
had learned), the state manifests (the learner's checkpoints) and each prediction's snapshot and
timestamp. **Behind**: the records the learner had learned when the prediction was made
(interpolated between the snapshots published just before and just after it) less those its
snapshot had learned; **age**: the prediction's time less its snapshot's publication; **first
use**: the first prediction made with a snapshot less its publication; with the
sizes of the snapshots and checkpoints. On Tansu the services fetch with
``fetch_max_wait_ms=20`` (Tansu holds every fetch for the whole wait; Kafka answers as soon as
there are records).

    python -m benchmarks.kafka_load --messages 200000 --partitions 3
    python -m benchmarks.kafka_load --messages 150000 --rate 5000
    python -m benchmarks.kafka_load --messages 150000 --rate 10000 --instances 2

This is a benchmark, not a test: it prints a report (and ``--json`` writes one).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from consumers.broker import TansuBroker, free_port  # noqa: E402


def _records(n: int, start: int, n_features: int, seed: int) -> list[bytes]:
    rng = random.Random(seed + start)
    out = []
    for i in range(start, start + n):
        x = {f"f{j}": rng.uniform(-1, 1) for j in range(n_features)}
        y = int(x["f0"] + x["f1"] > 0)
        out.append(json.dumps({"x": x, "y": y, "id": i}).encode())
    return out


def _producer(bootstrap: str) -> Any:
    from kafka import KafkaProducer

    return KafkaProducer(
        bootstrap_servers=bootstrap, linger_ms=20, batch_size=512 * 1024, acks=1, enable_idempotence=False
    )


def _produce(
    bootstrap: str,
    topic: str,
    n: int,
    n_features: int,
    seed: int,
    rate: float | None,
    counter: list[int],
    first: int = 0,
) -> None:
    producer = _producer(bootstrap)
    chunk = 500
    t0 = time.monotonic()
    sent = 0
    for start in range(first, first + n, chunk):
        values = _records(min(chunk, first + n - start), start, n_features, seed)
        for i, value in enumerate(values):
            producer.send(topic, key=str(start + i).encode(), value=value)
        counter[0] += len(values)
        sent += len(values)
        if rate:
            ahead = sent / rate - (time.monotonic() - t0)
            if ahead > 0:
                time.sleep(ahead)
    producer.flush(timeout=120)
    producer.close()


def _produce_rest(
    bootstrap: str, n: int, first: int, n_features: int, seed: int, rate: float, counter: list[int]
) -> None:
    _produce(bootstrap, "load-in", n, n_features, seed, rate, counter, first=first)


def _read(bootstrap: str, topic: str, timeout: float = 60.0) -> list[Any]:
    """Every message of ``topic`` (all partitions), until three empty polls in a row."""
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(
        bootstrap_servers=bootstrap,
        enable_auto_commit=False,
        max_poll_records=5000,
        fetch_max_bytes=64 * 1024 * 1024,
        max_partition_fetch_bytes=64 * 1024 * 1024,
    )
    try:
        parts = consumer.partitions_for_topic(topic) or set()
        tps = [TopicPartition(topic, p) for p in sorted(parts)]
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        out: list[Any] = []
        idle, deadline = 0, time.monotonic() + timeout
        while idle < 3 and time.monotonic() < deadline:
            batch = consumer.poll(timeout_ms=500)
            idle = 0 if batch else idle + 1
            for messages in batch.values():
                out += messages
        return out
    finally:
        consumer.close(autocommit=False)


def _quantiles(values: list[float]) -> dict[str, float | None]:
    values = sorted(values)
    if not values:
        return {"p50": None, "p99": None}
    return {"p50": values[len(values) // 2], "p99": values[min(len(values) - 1, int(0.99 * len(values)))]}


def _manifests(messages: list[Any], name: str) -> list[dict[str, Any]]:
    key = f"{name}/manifest".encode()
    return [json.loads(m.value) for m in messages if m.key == key and m.value]


def freshness(bootstrap: str, group: str, output: str = "load-out") -> dict[str, Any]:
    """How far behind the learner the predictions' snapshots were, how old, and the sizes."""
    import bisect

    snaps = sorted(
        (m["meta"]["published_at"], m["meta"]["n_learned"], m["epoch"], m["version"], m["length"])
        for m in _manifests(_read(bootstrap, f"{group}.snapshots"), "snapshot")
    )
    states = _manifests(_read(bootstrap, f"{group}.state"), "learner")
    published = {(e, v): (t, n) for t, n, e, v, _ in snaps}
    times = [t for t, *_ in snaps]
    behind, age = [], []
    first_use: dict[tuple[int, int], float] = {}
    for m in _read(bootstrap, output):
        p = json.loads(m.value)
        tag = p.get("snapshot")
        if tag is None or (tag["epoch"], tag["version"]) not in published:
            continue
        t = m.timestamp / 1000
        key = (tag["epoch"], tag["version"])
        first_use[key] = min(first_use.get(key, t), t)
        k = bisect.bisect_right(times, t)
        if k == 0 or k == len(times):
            continue  # the learner's count is known between two snapshots only
        (t0, n0), (t1, n1) = snaps[k - 1][:2], snaps[k][:2]
        learned = n0 + (n1 - n0) * (t - t0) / (t1 - t0) if t1 > t0 else n0
        behind.append(learned - p["model_records"])
        age.append(t - published[(tag["epoch"], tag["version"])][0])
    sizes = sorted(size for *_, size in snaps)
    return {
        "snapshots": len(snaps),
        "behind_records": _quantiles(behind),
        "age_s": _quantiles(age),
        "first_use_s": _quantiles([t - published[key][0] for key, t in first_use.items()]),
        "snapshot_bytes": _quantiles(sizes)["p50"],
        "checkpoint_bytes": states[-1]["length"] if states else None,
    }


def _scrape(port: int) -> dict[str, float]:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    from prometheus_client.parser import text_string_to_metric_families

    values: dict[str, float] = {"handled": 0.0, "predicted": 0.0, "learned": 0.0}
    for family in text_string_to_metric_families(text):
        if family.name != "streamdas_records":
            continue
        for sample in family.samples:
            if sample.name.endswith("_total"):
                outcome = sample.labels.get("outcome")
                if outcome in ("predicted", "dead_lettered"):
                    values["handled"] += sample.value
                if outcome in values:
                    values[outcome] += sample.value
    return values


def _count_topic(
    bootstrap: str, topic: str, expected: int, timeout: float
) -> tuple[int, dict[int, list[int]]]:
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, max_poll_records=5000)
    tps = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic))]
    consumer.assign(tps)
    consumer.seek_to_beginning(*tps)
    seen: set[tuple[int, int]] = set()
    widths: dict[int, tuple[int, list[int]]] = {}
    deadline = time.monotonic() + timeout
    while len(seen) < expected and time.monotonic() < deadline:
        for messages in consumer.poll(timeout_ms=500).values():
            for m in messages:
                p = json.loads(m.value)
                seen.add((p["partition"], p["offset"]))
                if p["offset"] >= widths.get(p["partition"], (-1, []))[0]:
                    widths[p["partition"]] = (p["offset"], p["hidden_sizes"])
    consumer.close(autocommit=False)
    return len(seen), {part: w for part, (_, w) in sorted(widths.items())}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=200_000)
    parser.add_argument("--partitions", type=int, default=3)
    parser.add_argument("--features", type=int, default=8)
    parser.add_argument(
        "--rate", type=float, default=None, help="produce while the service runs, at this many messages/s"
    )
    parser.add_argument("--model", default="das", choices=["das", "linear"])
    parser.add_argument("--instances", type=int, default=1, help="service processes (one group)")
    parser.add_argument("--model-scope", default="shared", choices=["shared", "partition"])
    parser.add_argument(
        "--max-poll-records",
        type=int,
        default=None,
        help="the services' poll size (default: the service's own default)",
    )
    parser.add_argument(
        "--service-arg",
        action="append",
        default=[],
        metavar="FLAG",
        help="pass FLAG to every service, e.g. --service-arg=--publish-every=250",
    )
    parser.add_argument("--bootstrap", default=None, help="use this broker instead of Tansu")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", default=None, help="write the report to this file")
    args = parser.parse_args(argv)

    from kafka import KafkaAdminClient
    from kafka.admin import NewTopic

    broker = None
    if args.bootstrap is None:
        broker = TansuBroker().start()
        bootstrap = broker.bootstrap
    else:
        bootstrap = args.bootstrap
    workdir = Path(tempfile.mkdtemp(prefix="streamdas-load-"))
    services: list[subprocess.Popen[bytes]] = []
    try:
        admin = KafkaAdminClient(bootstrap_servers=bootstrap)
        admin.create_topics(
            [
                NewTopic("load-in", args.partitions, 1),
                NewTopic("load-out", args.partitions, 1),
                NewTopic("load-dlq", 1, 1),
            ]
        )
        admin.close()
        produced = [0]
        feeder = None
        # with --rate, a small warm-up backlog tells when the service has joined and started
        backlog = args.messages if args.rate is None else min(1000, args.messages)
        t = time.monotonic()
        _produce(bootstrap, "load-in", backlog, args.features, args.seed, None, produced)
        print(f"backlog of {backlog} messages loaded in {time.monotonic() - t:.1f} s")
        ports = [free_port() for _ in range(args.instances)]
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        for k, metrics_port in enumerate(ports):
            cmd = [
                sys.executable,
                "-m",
                "consumers",
                "--bootstrap-servers",
                bootstrap,
                "--topics",
                "load-in",
                "--output-topic",
                "load-out",
                "--dead-letter-topic",
                "load-dlq",
                "--group-id",
                "load",
                "--client-id",
                f"load-{k}",
                "--model-scope",
                args.model_scope,
                "--checkpoint-dir",
                str(workdir / "ckpt"),
                "--model",
                args.model,
                "--session-timeout-ms",
                "6000",
                "--heartbeat-interval-ms",
                "1000",
                "--metrics-port",
                str(metrics_port),
                "--log-level",
                "WARNING",
            ]
            if args.max_poll_records is not None:
                cmd += ["--max-poll-records", str(args.max_poll_records)]
            cmd += args.service_arg
            if broker is not None:  # Tansu holds every fetch for fetch_max_wait_ms
                cmd += ["--kafka", "fetch_max_wait_ms=20"]
            services.append(
                subprocess.Popen(
                    cmd,
                    cwd=REPO,
                    env=env,
                    stdout=subprocess.DEVNULL,
                    stderr=open(workdir / f"service-{k}.log", "wb"),  # noqa: SIM115
                )
            )

        def handled() -> dict[str, float]:
            total = {"handled": 0.0, "predicted": 0.0, "learned": 0.0}
            for port in ports:
                for key, value in _scrape(port).items():
                    total[key] += value
            return total

        if args.rate is not None:
            while True:
                time.sleep(0.5)
                try:
                    if handled()["handled"] >= backlog:
                        break
                except OSError:
                    pass
            feeder = threading.Thread(
                target=_produce_rest,
                args=(
                    bootstrap,
                    args.messages - backlog,
                    backlog,
                    args.features,
                    args.seed,
                    args.rate,
                    produced,
                ),
                daemon=True,
            )
            feeder.start()
        samples: list[dict[str, float]] = []
        t_start = time.monotonic()
        first_at = None
        while time.monotonic() - t_start < 900:
            time.sleep(1.0)
            try:
                m = handled()
            except OSError:
                continue
            now = time.monotonic()
            if first_at is None and m["handled"] > 0:
                first_at = now
            lag = produced[0] - m["handled"]
            samples.append({"t": now - t_start, "handled": m["handled"], "lag": lag, "produced": produced[0]})
            print(f"t={now - t_start:6.1f}s handled={int(m['handled']):>8} lag={int(lag):>8}")
            if m["handled"] >= args.messages:
                break
        end = samples[-1]
        # sustained rate: from the first sample with work done to the end, excluding startup
        busy = [s for s in samples if s["handled"] > 0]
        rate = (
            (busy[-1]["handled"] - busy[0]["handled"]) / (busy[-1]["t"] - busy[0]["t"])
            if len(busy) > 1
            else float("nan")
        )
        window = busy[1:-1] or busy
        steady = (
            (window[-1]["handled"] - window[0]["handled"]) / (window[-1]["t"] - window[0]["t"])
            if len(window) > 1
            else rate
        )
        for service in services:
            service.send_signal(signal.SIGTERM)
        for service in services:
            service.wait(timeout=60)
        covered, widths = _count_topic(bootstrap, "load-out", args.messages, timeout=120)
        report = {
            "messages": args.messages,
            "partitions": args.partitions,
            "features": args.features,
            "model": args.model,
            "instances": args.instances,
            "model_scope": args.model_scope,
            "rate_target": args.rate,
            "max_poll_records": args.max_poll_records,
            "service_args": args.service_arg,
            "handled": end["handled"],
            "throughput_msgs_per_s": rate,
            "steady_msgs_per_s": steady,
            "max_lag": max(s["lag"] for s in samples),
            "final_lag": end["lag"],
            "predictions_in_output_topic": covered,
            "service_exit": [service.returncode for service in services],
            "final_hidden_sizes": widths,
        }
        if args.model_scope == "shared":
            report["freshness"] = freshness(bootstrap, "load")
        print(json.dumps(report, indent=2))
        if args.json:
            Path(args.json).write_text(json.dumps({**report, "samples": samples}, indent=2))
        return 0 if covered == args.messages else 1
    finally:
        for service in services:
            if service.poll() is None:
                service.kill()
        if broker is not None:
            broker.stop()


if __name__ == "__main__":
    sys.exit(main())
