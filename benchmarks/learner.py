"""The shared-scope learner's rate: labelled records per second through decode, dedup and learn.

A stream of training-topic values (:func:`consumers.training.encode_training_record`: 10
features, a binary label, 4 source partitions) goes through
:meth:`consumers.training.LearnerState.learn` in poll-sized pieces, as the learner's loop hands
them over: every value is decoded and checked, its source offset compared with the highest
learned of its partition, and the records learned with ``learn_many(split=True)`` by a
:class:`~streamdas.DASClassifier` with its defaults, on one thread. No broker: the figure is the
learner's own cost, the ceiling of the whole group's learning rate. A share of the values is
sent twice (a forwarder's replay), as redeliveries the learner skips. Also timed apart: the
decode and dedup step alone, and the learner's snapshot and full-state encodings.

    python -m benchmarks.learner            # the documented sizes
    python -m benchmarks.learner --quick
"""

from __future__ import annotations

import argparse
import time
from typing import Any

from benchmarks.common import Section, Sizes, best_of, make_stream, setup_torch, take

__all__ = ["learner_rate", "main", "run"]

#: Values per poll handed to the learner (the service's default ``max_poll_records``).
POLL = 1000


def _values(n: int, replay_every: int = 0) -> list[tuple[int, bytes]]:
    """``(training-topic offset, value)`` of ``n`` labelled records from 4 source partitions;
    with ``replay_every`` > 0, every such many records the last 100 are sent again."""
    from consumers.training import encode_training_record

    out: list[tuple[int, bytes]] = []
    data = take(make_stream("hyperplane", n_features=10), n)
    sent: list[bytes] = []
    for i, (x, y) in enumerate(data):
        value = encode_training_record("in", i % 4, i // 4, {str(k): float(v) for k, v in x.items()}, int(y))
        sent.append(value)
        out.append((len(out), value))
        if replay_every and (i + 1) % replay_every == 0:
            out.extend((len(out) + j, v) for j, v in enumerate(sent[-100:]))
    return out


def learner_rate(n: int, repeats: int = 3, replay_every: int = 0) -> dict[str, Any]:
    """Best-of-``repeats`` rates (records/s) of the learner's step on ``n`` labelled records:
    ``learn`` (decode + dedup + learn) and ``decode`` (decode + dedup alone)."""
    from consumers.training import LearnerState
    from streamdas import DASClassifier

    values = _values(n, replay_every)
    keep: dict[str, Any] = {}

    def whole() -> float:
        state = LearnerState(DASClassifier(seed=42), topics=["in"])
        t0, c0 = time.perf_counter(), time.process_time()
        for start in range(0, len(values), POLL):
            state.learn(values[start : start + POLL])
        elapsed, cpu = time.perf_counter() - t0, time.process_time() - c0
        keep["state"] = state
        keep["cpu"] = min(cpu, keep.get("cpu", cpu))
        return elapsed

    class _NoModel:  # decode + dedup only: a learner whose model takes nothing
        n_samples_buffered = 0
        n_samples_learned = 0
        feature_names: frozenset[str] = frozenset()

        def learn_many(self, X: Any, y: Any, split: bool = False) -> None:
            pass

    def decode_only() -> float:
        state = LearnerState(_NoModel(), topics=["in"])
        state._split = True
        t0 = time.perf_counter()
        for start in range(0, len(values), POLL):
            state.learn(values[start : start + POLL])
        return time.perf_counter() - t0

    learn_s, _ = best_of(repeats, whole)
    decode_s, _ = best_of(repeats, decode_only)
    state = keep["state"]
    return {
        "records": len(values),
        "learned": state.n_learned,
        "duplicates": state.n_duplicates,
        "learn_rate": state.n_learned / learn_s,
        "learn_rate_cpu": state.n_learned / keep["cpu"],
        "values_rate": len(values) / learn_s,
        "decode_rate": len(values) / decode_s,
        "state": state,
    }


def _encodings(state: Any, repeats: int) -> tuple[float, int, float, int]:
    from consumers.snapshots import encode_snapshot

    snap: dict[str, bytes] = {}

    def snapshot() -> float:
        t0 = time.perf_counter()
        snap["b"] = encode_snapshot(state.estimator, n_learned=state.n_learned)
        return time.perf_counter() - t0

    def full() -> float:
        t0 = time.perf_counter()
        snap["f"] = state.to_blob()
        return time.perf_counter() - t0

    snap_s, _ = best_of(repeats, snapshot)
    full_s, _ = best_of(repeats, full)
    return snap_s, len(snap["b"]), full_s, len(snap["f"])


def run(sizes: Sizes) -> list[Section]:
    """The learner's rate as a report section (``sizes.throughput_n`` records)."""
    n = sizes.throughput_n
    plain = learner_rate(n, sizes.repeats)
    replayed = learner_rate(n, sizes.repeats, replay_every=1000)
    snap_s, snap_b, full_s, full_b = _encodings(plain["state"], sizes.repeats)
    rows = [
        [
            "distinct records",
            f"{plain['learned']:,}",
            f"{plain['learn_rate']:,.0f}",
            f"{plain['learn_rate_cpu']:,.0f}",
            f"{plain['decode_rate']:,.0f}",
        ],
        [
            "10% replayed",
            f"{replayed['learned']:,} + {replayed['duplicates']:,} skipped",
            f"{replayed['learn_rate']:,.0f}",
            f"{replayed['learn_rate_cpu']:,.0f}",
            f"{replayed['decode_rate']:,.0f}",
        ],
    ]
    notes = [
        f"DASClassifier defaults, one thread, {POLL} values per learn call; best of {sizes.repeats}.",
        f"Snapshot encoding: {snap_s * 1000:.1f} ms for {snap_b / 1024:.0f} KiB; full learner state: "
        f"{full_s * 1000:.1f} ms for {full_b / 1024:.0f} KiB.",
    ]
    return [
        Section(
            "learner",
            "Shared-scope learner: labelled records/s (decode + dedup + learn)",
            [
                "stream",
                "records learned",
                "learned records/s",
                "by CPU time",
                "decode + dedup only, values/s",
            ],
            rows,
            notes,
        )
    ]


def main(argv: list[str] | None = None) -> int:
    from benchmarks.common import PRESETS

    parser = argparse.ArgumentParser(prog="python -m benchmarks.learner", description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="shorter runs")
    args = parser.parse_args(argv)
    setup_torch(1)
    sizes = PRESETS["quick" if args.quick else "full"]
    for section in run(sizes):
        print(section.to_markdown())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
