"""Benchmark 8: start-up cost inside the stream: the first samples' cost and RSS growth.

Each estimator runs in a fresh child process (``python -m benchmarks.startup --json``) that has
imported streamdas, River and the stream (materialised before anything is measured) and built
the estimator; then every sample of a prequential run (``predict_one`` then ``learn_one``) is
timed on its own, and RSS is read before the first sample and after the last. Reported: the first
sample, the sample of the first optimizer step, the slowest of the first two minibatches, the
median of the rest, and the RSS growth.

    python -m benchmarks --only startup
    python -m benchmarks.startup --estimator regressor --n 20000

Targets (issue 11): the first calls cost no more than a later one by more than 50 ms, and RSS
grows by no more than 10 MB over a 20,000-sample run.
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks.common import Section, Sizes, make_stream, rss_bytes, setup_torch, take

__all__ = ["main", "measure", "run"]

REPO = Path(__file__).resolve().parents[1]
ESTIMATORS = ("classifier", "regressor")


def measure(estimator: str, n: int, seed: int = 42) -> dict[str, Any]:
    """Time each sample (``predict_one`` + ``learn_one``) of a prequential run of a freshly
    built estimator (this process must not have learned anything before: the point is what the
    first calls pay)."""
    from streamdas import DASClassifier, DASRegressor

    data = take(make_stream("hyperplane", seed=seed, n_features=10), n)
    if estimator == "regressor":
        data = [(x, float(y) + sum(x.values())) for x, y in data]
        model: Any = DASRegressor(seed=seed)
    else:
        model = DASClassifier(seed=seed)
    gc.collect()
    rss0 = rss_bytes()
    times = []
    clock = time.perf_counter
    for x, y in data:  # one sample = predict_one then learn_one, timed together
        t0 = clock()
        model.predict_one(x)
        model.learn_one(x, y)
        times.append(clock() - t0)
    gc.collect()
    rss1 = rss_bytes()
    batch = int(model.batch_size)
    head = times[: 2 * batch]
    rest = times[2 * batch :] or times
    return {
        "estimator": estimator,
        "n": n,
        "batch_size": batch,
        "first": times[0],
        "first_step": times[batch - 1] if len(times) >= batch else float("nan"),
        "head_max": max(head),
        "median": statistics.median(rest),
        "max_rest": max(rest),
        "rss_before": rss0,
        "rss_after": rss1,
        "sizes": list(model.layer_sizes),
    }


def _child(estimator: str, n: int) -> dict[str, Any]:
    cmd = [sys.executable, "-m", "benchmarks.startup", "--estimator", estimator, "--n", str(n), "--json"]
    out = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, check=True, timeout=1800)
    return json.loads(out.stdout.strip().splitlines()[-1])


def run(sizes: Sizes) -> list[Section]:
    rows, notes = [], []
    for est in ESTIMATORS:
        r = _child(est, sizes.throughput_n)
        excess = 1e3 * (r["head_max"] - r["median"])
        growth = (r["rss_after"] - r["rss_before"]) / 2**20
        rows.append(
            [
                f"DAS{'Classifier' if est == 'classifier' else 'Regressor'}()",
                r["n"],
                1e3 * r["first"],
                1e3 * r["first_step"],
                1e3 * r["head_max"],
                1e3 * r["median"],
                excess,
                "yes" if excess <= 50 else "no",
                r["rss_before"] / 2**20,
                r["rss_after"] / 2**20,
                growth,
                "yes" if growth <= 10 else "no",
            ]
        )
    notes.append(
        "Fresh process per estimator (`python -m benchmarks.startup --estimator NAME --n N "
        "--json`): streamdas imported and the estimator built before the first sample; "
        "10-feature Hyperplane (the regressor's target: label + sum of features)."
    )
    notes.append(
        "A sample = predict_one then learn_one, timed together. first-calls excess = the "
        "slowest sample of the first two minibatches minus the "
        "median of the later ones (target <= 50 ms); RSS growth from before the first "
        "sample to after the last (target <= 10 MiB)."
    )
    headers = [
        "estimator",
        "samples",
        "1st sample ms",
        "1st step's sample ms",
        "slowest of first 2 batches ms",
        "median later ms",
        "first-calls excess ms",
        "<= 50 ms",
        "RSS before MiB",
        "RSS after MiB",
        "RSS growth MiB",
        "<= 10 MiB",
    ]
    return [
        Section(
            "startup", "8. Start-up: first samples' cost and RSS growth (fresh process)", headers, rows, notes
        )
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--estimator", choices=ESTIMATORS, default="classifier")
    parser.add_argument("--n", type=int, default=20_000, help="samples")
    parser.add_argument("--json", action="store_true", help="print the result as one JSON line")
    args = parser.parse_args(argv)
    setup_torch(1)
    result = measure(args.estimator, args.n)
    if args.json:
        print(json.dumps(result))
    else:
        for k, v in result.items():
            print(f"{k:>12}: {v}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
