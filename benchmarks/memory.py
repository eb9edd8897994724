"""Benchmark 4: model bytes and process RSS across a long prequential run (1,000,000 samples).

The run happens in a fresh child process (``python -m benchmarks.memory``), so the RSS it
reports is DAS's alone, not the rest of the suite's. The stream is generated lazily (never held
in memory). RSS growth is measured from the first checkpoint (after 1/``points`` of the run, when
imports and first allocations are done) to the end.

    python -m benchmarks --only memory             # 1,000,000 samples
    python -m benchmarks.memory --n 1000000 --points 20
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks.common import Section, Sizes, make_stream, rss_bytes, setup_torch, warm_up

__all__ = ["main", "measure", "run"]

REPO = Path(__file__).resolve().parents[1]


def measure(n: int, points: int, seed: int = 42) -> dict[str, Any]:
    """Prequential DASClassifier() over ``n`` Hyperplane samples; RSS and model bytes at ``points``
    evenly spaced checkpoints."""
    import gc

    from streamdas import DASClassifier

    model = DASClassifier(seed=seed)
    every = max(n // max(points, 1), 1)
    trace: list[dict[str, Any]] = []
    t0 = time.perf_counter()
    correct = 0
    for i, (x, y) in enumerate(make_stream("hyperplane", seed=seed, n_features=10)):
        if i >= n:
            break
        correct += model.predict_one(x) == y
        model.learn_one(x, y)
        if (i + 1) % every == 0 or i + 1 == n:
            gc.collect()
            trace.append(
                {
                    "n": i + 1,
                    "rss": rss_bytes(),
                    "model_bytes": model.model_bytes,
                    "sizes": model.layer_sizes,
                    "seconds": time.perf_counter() - t0,
                    "history_len": len(model.size_history),
                }
            )
    return {"n": n, "trace": trace, "accuracy": correct / max(n, 1)}


def run(sizes: Sizes) -> list[Section]:
    cmd = [
        sys.executable,
        "-m",
        "benchmarks.memory",
        "--n",
        str(sizes.memory_n),
        "--points",
        str(sizes.memory_points),
        "--json",
    ]
    out = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, check=True)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    trace = result["trace"]
    ref, end = trace[0], trace[-1]
    peak = max(p["rss"] for p in trace)
    growth = 100 * (end["rss"] - ref["rss"]) / ref["rss"] if ref["rss"] else float("nan")
    peak_growth = 100 * (peak - ref["rss"]) / ref["rss"] if ref["rss"] else float("nan")
    rows = [
        [
            p["n"],
            p["rss"] / 2**20,
            p["model_bytes"] / 2**10,
            str(p["sizes"]),
            p["history_len"],
            p["n"] / p["seconds"] if p["seconds"] else 0.0,
        ]
        for p in trace
    ]
    notes = [
        f"`{' '.join(['python', *cmd[1:]])}`: DASClassifier() defaults, prequential on a lazily generated "
        f"10-feature Hyperplane stream, in a fresh process; accuracy {result['accuracy']:.4f}.",
        f"RSS growth from the first checkpoint ({ref['n']:,} samples, {ref['rss'] / 2**20:.1f} MiB) to the "
        f"end ({end['rss'] / 2**20:.1f} MiB): {growth:+.2f}% (peak {peak / 2**20:.1f} MiB, "
        f"{peak_growth:+.2f}%). Target: <= 5%.",
        "model KiB = parameters + Adam state (DASClassifier.model_bytes); it moves with the "
        "hidden sizes, which DAS changes every 1,000 samples.",
    ]
    headers = ["samples", "RSS MiB", "model KiB", "hidden sizes", "size_history events", "samples/s so far"]
    return [Section("memory", f"4. Memory over {sizes.memory_n:,} samples", headers, rows, notes)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1_000_000, help="samples")
    parser.add_argument("--points", type=int, default=20, help="RSS checkpoints")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--json", action="store_true", help="print the result as one JSON line")
    args = parser.parse_args(argv)
    setup_torch(1)
    warm_up()
    result = measure(args.n, args.points, args.seed)
    if args.json:
        print(json.dumps(result))
    else:
        for p in result["trace"]:
            print(
                f"{p['n']:>9,}  RSS {p['rss'] / 2**20:8.1f} MiB  model {p['model_bytes'] / 2**10:8.1f} KiB"
                f"  sizes {p['sizes']}"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
