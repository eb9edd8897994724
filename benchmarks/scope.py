"""Model scopes compared: the service's prequential accuracy against one ``learn_one`` loop.

Records whose key says nothing about their concept are spread round-robin over the input
partitions (the common case), offered at 2,000 records a second (``--rate``) to two service
instances (``python -m consumers``, one group, a Tansu broker on loopback), once both are ready
(and, in the shared scope, one has been elected learner: its process takes a few seconds to
start, which is a start-up cost, not the steady state measured here). For each stream and
partition count the service runs once per model scope:

* ``shared`` (the default): one model for the whole stream, learned by the elected learner
  from every labelled record, predictions from its newest snapshot;
* ``partition``: one model per input partition, each learning 1/P of the records.

Figures are the prequential accuracy (%) over the second half of the stream, by record id, of
the first prediction each record got, beside that of one ``learn_one`` loop over the same
records in id order (``DASClassifier`` with the service's defaults and seed). The services fetch
with ``fetch_max_wait_ms=20`` (:data:`FETCH_MAX_WAIT_MS`: Tansu holds every fetch that long).
The shared scope
also reports how far behind its snapshots were: for the record with id ``i``, ``i`` minus the
records the predicting snapshot had learned (the records before it that its model had not
learned yet; median and 99th percentile over the second half).

    python -m benchmarks.scope                  # the documented table (several minutes)
    python -m benchmarks.scope --quick          # one small stream, 4 partitions (about 1 min)
    python -m benchmarks.scope --streams rbf --partitions 4 --rate 3000 --json scope.json

Streams: ``rbf`` (RandomRBFDrift, 4 classes, 10 features, 50 centroids moving 1e-4 per sample,
40,000 records), ``agrawal`` (Agrawal function 0 then 2, River's ConceptDriftStream with the
drift at the middle, 40,000 records), ``rbf-fast`` (the same RBF with centroids moving 1e-3,
100,000 records). This is a benchmark, not a test: it prints a table (``--json`` writes one).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from consumers.broker import TansuBroker, free_port  # noqa: E402

__all__ = ["STREAMS", "main", "reference_accuracy", "run_service", "stream"]

Data = list[tuple[dict[str, float], Any]]

#: The services' ``fetch_max_wait_ms`` on Tansu. Tansu 0.6.0 answers a fetch only when that wait
#: is over, even when records arrive meanwhile (Apache Kafka answers as soon as there are
#: records): with kafka-python's default of 500 ms every hop of the shared scope (input ->
#: predictor -> train topic -> learner) would add about a quarter of a second that Kafka does not.
FETCH_MAX_WAIT_MS = 20


def _rbf(n: int, seed: int, speed: float) -> Data:
    from river.datasets import synth

    gen = synth.RandomRBFDrift(
        seed_model=seed,
        seed_sample=seed + 1,
        n_classes=4,
        n_features=10,
        n_centroids=50,
        change_speed=speed,
        n_drift_centroids=50,
    )
    return [(dict(x), y) for x, y in gen.take(n)]


def _agrawal(n: int, seed: int) -> Data:
    from river.datasets import synth

    gen = synth.ConceptDriftStream(
        stream=synth.Agrawal(classification_function=0, seed=seed),
        drift_stream=synth.Agrawal(classification_function=2, seed=seed + 1),
        position=n // 2,
        seed=seed,
    )
    return [({k: float(v) for k, v in x.items()}, int(y)) for x, y in gen.take(n)]


#: Stream name -> (records in the full run, builder of ``n`` records from a seed).
STREAMS: dict[str, tuple[int, Callable[[int, int], Data]]] = {
    "rbf": (40_000, lambda n, seed: _rbf(n, seed, 1e-4)),
    "agrawal": (40_000, _agrawal),
    "rbf-fast": (100_000, lambda n, seed: _rbf(n, seed, 1e-3)),
}


def stream(name: str, n: int | None = None, seed: int = 1) -> Data:
    """``n`` records (default: the stream's full length) of stream ``name``.

    >>> [len(stream(s, 10)) for s in ("rbf", "agrawal")]
    [10, 10]
    """
    full, build = STREAMS[name]
    return build(full if n is None else n, seed)


def reference_accuracy(data: Data, seed: int = 42, params: dict[str, Any] | None = None) -> float:
    """Prequential accuracy (%) over the second half of one ``learn_one`` loop over ``data``.

    >>> 0 <= reference_accuracy(stream("rbf", 200)) <= 100
    True
    """
    from streamdas import DASClassifier

    model = DASClassifier(seed=seed, **(params or {}))
    hits = 0
    half = len(data) // 2
    for i, (x, y) in enumerate(data):
        if i >= half:
            hits += model.predict_one(x) == y
        model.learn_one(x, y)
    return 100.0 * hits / (len(data) - half)


# --------------------------------------------------------------------------- the service
def _ready(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as r:
            return r.status == 200
    except (urllib.error.URLError, OSError):
        return False


def _learning(port: int) -> bool:
    """Whether the instance on ``port`` is the shared scope's elected learner."""
    from prometheus_client.parser import text_string_to_metric_families

    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as r:
            text = r.read().decode()
    except (urllib.error.URLError, OSError):
        return False
    return any(
        s.value == 1
        for f in text_string_to_metric_families(text)
        if f.name == "streamdas_learner"
        for s in f.samples
    )


def _wait(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} within {timeout:.0f} s")
        time.sleep(0.2)


def _produce(bootstrap: str, data: Data, partitions: int, rate: float) -> None:
    from kafka import KafkaProducer

    producer = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=5, acks=1, enable_idempotence=False)
    t0 = time.monotonic()
    for i, (x, y) in enumerate(data):
        value = json.dumps({"x": x, "y": y, "id": i}).encode()
        producer.send("in", value=value, partition=i % partitions)  # round-robin
        if i % 100 == 99:
            ahead = (i + 1) / rate - (time.monotonic() - t0)
            if ahead > 0:
                time.sleep(ahead)
    producer.flush(timeout=120)
    producer.close()


def _read_predictions(bootstrap: str, n: int, timeout: float) -> dict[int, dict[str, Any]]:
    """The first prediction of each id (output topic order), until all ``n`` ids have one."""
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, max_poll_records=5000)
    tp = TopicPartition("out", 0)
    consumer.assign([tp])
    consumer.seek_to_beginning(tp)
    first: dict[int, dict[str, Any]] = {}
    deadline = time.monotonic() + timeout
    try:
        while len(first) < n and time.monotonic() < deadline:
            for messages in consumer.poll(timeout_ms=500).values():
                for m in messages:
                    p = json.loads(m.value)
                    first.setdefault(int(p["id"]), p)
    finally:
        consumer.close(autocommit=False)
    return first


def run_service(
    data: Data,
    *,
    partitions: int,
    scope: str,
    instances: int = 2,
    rate: float = 2000.0,
    workdir: Path,
    log_level: str = "WARNING",
) -> dict[str, Any]:
    """Run ``instances`` services of ``scope`` over ``data`` (round-robin over ``partitions``);
    the prequential accuracy of their predictions over the second half, and more."""
    from kafka import KafkaAdminClient
    from kafka.admin import NewTopic

    shutil.rmtree(workdir, ignore_errors=True)  # a rerun's partition scope must not resume old checkpoints
    workdir.mkdir(parents=True)
    broker = TansuBroker(log_path=workdir / "tansu.log").start()
    procs: list[subprocess.Popen[bytes]] = []
    logs = []
    try:
        admin = KafkaAdminClient(bootstrap_servers=broker.bootstrap)
        admin.create_topics([NewTopic("in", partitions, 1), NewTopic("out", 1, 1), NewTopic("dlq", 1, 1)])
        admin.close()
        ports = [free_port() for _ in range(instances)]
        env = {**os.environ, "PYTHONPATH": str(REPO), "PYTHONUNBUFFERED": "1"}
        for k, port in enumerate(ports):
            cmd = [
                sys.executable,
                "-m",
                "consumers",
                "--bootstrap-servers",
                broker.bootstrap,
                "--topics",
                "in",
                "--output-topic",
                "out",
                "--dead-letter-topic",
                "dlq",
                "--group-id",
                "scope",
                "--client-id",
                f"instance-{k}",
                "--model-scope",
                scope,
                "--checkpoint-dir",
                str(workdir / "ckpt"),
                "--session-timeout-ms",
                "6000",
                "--heartbeat-interval-ms",
                "1000",
                "--request-timeout-ms",
                "5000",
                "--metrics-port",
                str(port),
                "--log-level",
                log_level,
                "--kafka",
                f"fetch_max_wait_ms={FETCH_MAX_WAIT_MS}",
            ]
            logs.append(open(workdir / f"instance-{k}.log", "wb"))  # noqa: SIM115
            procs.append(subprocess.Popen(cmd, cwd=REPO, env=env, stdout=logs[-1], stderr=subprocess.STDOUT))
        _wait(lambda: all(_ready(p) for p in ports), 120, "the instances were not ready")
        if scope == "shared":  # the learner's process has started and won the election
            _wait(lambda: any(_learning(p) for p in ports), 120, "no learner was elected")
        t0 = time.monotonic()
        feeder = threading.Thread(
            target=_produce, args=(broker.bootstrap, data, partitions, rate), daemon=True
        )
        feeder.start()
        first = _read_predictions(broker.bootstrap, len(data), timeout=60 + 3 * len(data) / rate)
        elapsed = time.monotonic() - t0
        feeder.join(timeout=60)
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
        for proc in procs:
            proc.wait(timeout=120)
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        for f in logs:
            f.close()
        broker.stop()
    half = len(data) // 2
    second = [i for i in range(half, len(data))]
    hits = sum(1 for i in second if i in first and first[i]["prediction"] == data[i][1])
    behind = sorted(
        i - first[i]["model_records"] for i in second if i in first and first[i].get("snapshot") is not None
    )
    return {
        "scope": scope,
        "partitions": partitions,
        "instances": instances,
        "rate": rate,
        "records": len(data),
        "predicted": len(first),
        "accuracy": 100.0 * hits / len(second),
        "null_predictions_second_half": sum(
            1 for i in second if i in first and first[i]["prediction"] is None
        ),
        "behind_p50": statistics.median(behind) if behind else None,
        "behind_p99": behind[min(len(behind) - 1, int(0.99 * len(behind)))] if behind else None,
        "seconds": elapsed,
    }


def _fmt(value: float | None, spec: str = ".1f") -> str:
    return "n/a" if value is None else format(value, spec)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick", action="store_true", help="rbf only, 4,000 records, 4 partitions (a smoke run)"
    )
    parser.add_argument("--streams", default="rbf,agrawal,rbf-fast")
    parser.add_argument("--partitions", default="4,12")
    parser.add_argument("--instances", type=int, default=2)
    parser.add_argument("--rate", type=float, default=2000.0, help="records offered per second")
    parser.add_argument("--n", type=int, default=None, help="records per stream (default: full)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--json", default=None, help="write the results to this file")
    parser.add_argument("--workdir", default=None, help="keep logs here (default: a temp dir)")
    parser.add_argument("--log-level", default="WARNING", help="the instances' log level")
    args = parser.parse_args(argv)
    streams = ["rbf"] if args.quick else [s.strip() for s in args.streams.split(",")]
    counts = [4] if args.quick else [int(p) for p in args.partitions.split(",")]
    n = 4000 if args.quick and args.n is None else args.n
    for name in streams:
        if name not in STREAMS:
            parser.error(f"unknown stream {name!r}; choose from {', '.join(STREAMS)}")
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="streamdas-scope-"))
    rows: list[dict[str, Any]] = []
    print(
        f"| stream | records | partitions | learn_one loop | shared | partition | "
        f"shared snapshot behind (p50 / p99 records) |\n|{' --- |' * 7}",
        flush=True,
    )
    for name in streams:
        data = stream(name, n, args.seed)
        reference = reference_accuracy(data)
        for count in counts:
            results = {}
            for scope in ("shared", "partition"):
                where = workdir / f"{name}-{count}-{scope}"
                results[scope] = run_service(
                    data,
                    partitions=count,
                    scope=scope,
                    instances=args.instances,
                    rate=args.rate,
                    workdir=where,
                    log_level=args.log_level,
                )
            shared, part = results["shared"], results["partition"]
            row = {
                "stream": name,
                "records": len(data),
                "partitions": count,
                "reference": reference,
                "shared": shared,
                "partition": part,
            }
            rows.append(row)
            print(
                f"| {name} | {len(data):,} | {count} | {reference:.1f} | "
                f"{shared['accuracy']:.1f} | {part['accuracy']:.1f} | "
                f"{_fmt(shared['behind_p50'], '.0f')} / {_fmt(shared['behind_p99'], '.0f')} |",
                flush=True,
            )
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))
    print(f"(logs in {workdir})")
    complete = all(r[s]["predicted"] == r["records"] for r in rows for s in ("shared", "partition"))
    return 0 if complete else 1


if __name__ == "__main__":
    sys.exit(main())
