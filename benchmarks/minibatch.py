"""Benchmark 5: mini-batch throughput of ``learn_many`` / ``predict_many`` at batch sizes 32..1,024.

The stream is cut into pandas mini-batches before timing; each batch is predicted
(``predict_many``), then learned (``learn_many``, one optimizer step per batch), as a
mini-batch prequential evaluation does.

    python -m benchmarks --only minibatch
"""

from __future__ import annotations

import time
from typing import Any

from benchmarks.common import Section, Sizes, best_of, frames, make_stream, take

__all__ = ["run"]


def _one(batches: list[tuple[Any, Any]]) -> tuple[float, float, Any]:
    from streamdas import DASClassifier

    model = DASClassifier(seed=42)
    t_pred = t_learn = 0.0
    for X, y in batches:
        t0 = time.perf_counter()
        model.predict_many(X)
        t1 = time.perf_counter()
        model.learn_many(X, y)
        t_learn += time.perf_counter() - t1
        t_pred += t1 - t0
    return t_pred, t_learn, model


def run(sizes: Sizes) -> list[Section]:
    data = take(make_stream("hyperplane", n_features=10), sizes.minibatch_n)
    rows: list[list[Any]] = []
    for b in sizes.batch_sizes:
        batches = frames(data, b)
        keep: dict[str, Any] = {}

        def once(batches: list[tuple[Any, Any]] = batches, keep: dict[str, Any] = keep) -> float:
            tp, tl, model = _one(batches)
            if tp + tl < keep.get("total", float("inf")):
                keep.update(total=tp + tl, tp=tp, tl=tl, model=model)
            return tp + tl

        best_of(sizes.repeats, once)
        n = len(data)
        rows.append(
            [
                b,
                n / keep["tp"],
                n / keep["tl"],
                n / keep["total"],
                1e3 * keep["tl"] / len(batches),
                str(keep["model"].layer_sizes),
            ]
        )
    notes = [
        f"{len(data):,} samples of the 10-feature Hyperplane stream as pandas mini-batches (built before "
        f"timing); DASClassifier() defaults (grow_every=1000 samples); best of {sizes.repeats}.",
        "predict_many and learn_many columns are samples/s of that call alone; 'both' is the mini-batch "
        "prequential rate (predict then learn every batch).",
    ]
    headers = [
        "batch",
        "predict_many samples/s",
        "learn_many samples/s",
        "both samples/s",
        "ms per learn_many",
        "final sizes",
    ]
    return [
        Section("minibatch", "5. Mini-batch throughput (predict_many then learn_many)", headers, rows, notes)
    ]
