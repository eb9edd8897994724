"""Benchmark 2: the cost of sizing, time in grow/prune as a share of learning time.

``DASTrainer.grow`` and ``DASTrainer.prune`` (and ``NumpyForward._refresh``, the rebuild of the
prediction fast path after a shape change) are wrapped with timers for the duration of the run;
the core is not edited. Learning time is the total time spent inside ``learn_one``.

    python -m benchmarks --only sizing
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from benchmarks.common import Section, Sizes, make_stream, take

__all__ = ["instrumented", "run"]


@contextmanager
def instrumented(targets: list[tuple[Any, str]]) -> Iterator[dict[str, list[float]]]:
    """Wrap ``getattr(owner, name)`` for each target with a timer; yields name -> durations.

    >>> class A:
    ...     def f(self): return 1
    >>> with instrumented([(A, "f")]) as t:
    ...     _ = A().f()
    >>> len(t["A.f"]), A.f.__name__
    (1, 'f')
    """
    timings: dict[str, list[float]] = {}
    saved: list[tuple[Any, str, Callable[..., Any]]] = []
    for owner, name in targets:
        original = owner.__dict__[name]
        key = f"{owner.__name__}.{name}"
        durations = timings.setdefault(key, [])

        def wrapper(
            *args: Any, _f: Callable[..., Any] = original, _d: list[float] = durations, **kwargs: Any
        ) -> Any:
            t0 = time.perf_counter()
            try:
                return _f(*args, **kwargs)
            finally:
                _d.append(time.perf_counter() - t0)

        saved.append((owner, name, original))
        setattr(owner, name, wrapper)
    try:
        yield timings
    finally:
        for owner, name, original in saved:
            setattr(owner, name, original)


def _one_run(data: list[tuple[dict, Any]], every: int) -> dict[str, Any]:
    from streamdas import DASClassifier, DASTrainer
    from streamdas.fastpath import NumpyForward

    model = DASClassifier(grow_every=every, seed=42)
    learn_s = predict_s = 0.0
    with instrumented([(DASTrainer, "grow"), (DASTrainer, "prune"), (NumpyForward, "_refresh")]) as t:
        for x, y in data:
            t0 = time.perf_counter()
            model.predict_one(x)
            t1 = time.perf_counter()
            model.learn_one(x, y)
            t2 = time.perf_counter()
            predict_s += t1 - t0
            learn_s += t2 - t1
    return {
        "learn": learn_s,
        "predict": predict_s,
        "grow": t["DASTrainer.grow"],
        "prune": t["DASTrainer.prune"],
        "refresh": t["NumpyForward._refresh"],
        "sizes": model.layer_sizes,
        "cycles": model.n_sizing_cycles,
    }


def run(sizes: Sizes) -> list[Section]:
    data = take(make_stream("hyperplane", n_features=10), sizes.sizing_n)
    rows: list[list[Any]] = []
    for every in (1_000, 10_000):
        runs = [_one_run(data, every) for _ in range(sizes.repeats)]
        shares = [(sum(r["grow"]) + sum(r["prune"])) / r["learn"] for r in runs]
        r = runs[min(range(len(runs)), key=lambda i: shares[i])]
        sizing = sum(r["grow"]) + sum(r["prune"])
        n_events = len(r["grow"]) + len(r["prune"])
        rows.append(
            [
                every,
                r["cycles"],
                r["learn"],
                sum(r["grow"]),
                sum(r["prune"]),
                100 * sizing / r["learn"],
                100 * max(shares),
                1e3 * sizing / max(n_events, 1),
                1e3 * sum(r["refresh"]),
                str(r["sizes"]),
            ]
        )
    notes = [
        f"{len(data):,} samples of the 10-feature Hyperplane stream, DASClassifier defaults except "
        f"grow_every=N; best (lowest share) of {sizes.repeats} runs, worst share shown too.",
        "grow/prune s: time inside DASTrainer.grow / DASTrainer.prune (the initial grow included); "
        "learn s: total time inside learn_one (which contains them).",
        "refresh ms: rebuilding the NumPy prediction views after shape changes (paid in predict_one).",
        "Target: grow + prune <= 5% of learning time at N = 1,000.",
    ]
    headers = [
        "N (grow_every)",
        "cycles",
        "learn s",
        "grow s",
        "prune s",
        "sizing % of learn (best)",
        "sizing % (worst)",
        "ms per grow/prune",
        "refresh ms total",
        "final sizes",
    ]
    return [
        Section("sizing", "2. Cost of sizing (grow + prune share of learning time)", headers, rows, notes)
    ]
