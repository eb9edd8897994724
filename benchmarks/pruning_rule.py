"""Pruning test: the paper's instantaneous rule against the running-average rule (the default).

A RandomRBF stream goes from 2 to 50 to 2 centroids (10,000 samples each, ``--n``); a
``DASClassifier`` learns it prequentially with ``prune_horizon=0`` (the paper's test: all
incoming |w| < tau at that instant) and with the default ``prune_horizon=800``, once with the
paper's values (alpha 2e-5, lr 1e-3, tau 1e-3) and once with the classifier's stream defaults
(alpha 3e-5, lr = tau = 1e-2; both rows use its other defaults: ReLU, (64, 64), batch 16).
The neighbour memory is off (``memory=0``): the accuracy is the network's, whose widths the
rules decide. It prints the hidden widths every 2,500 samples and the prequential accuracy of
each.

    python -m benchmarks.pruning_rule
"""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from typing import Any

from river import metrics
from river.datasets import synth

from streamdas import DASClassifier
from streamdas.threads import limit_threads


def stream(seed: int = 7, n: int = 10_000) -> Iterator[tuple[dict[str, Any], Any]]:
    for i, centroids in enumerate((2, 50, 2)):
        gen = synth.RandomRBF(
            seed_model=seed, seed_sample=i, n_classes=4, n_features=10, n_centroids=centroids
        )
        yield from gen.take(n)


CONFIGS: dict[str, dict[str, float]] = {
    "paper values: alpha 2e-5, lr 1e-3, tau 1e-3": {"alpha": 2e-5, "lr": 1e-3, "tau": 1e-3},
    "stream defaults: alpha 3e-5, lr 1e-2, tau 1e-2": {},
}


def run(
    prune_horizon: int, config: dict[str, float], every: int = 2_500, seed: int = 0, n: int = 10_000
) -> tuple[list[list[int]], float]:
    model = DASClassifier(seed=seed, prune_horizon=prune_horizon, memory=0, **config)
    acc = metrics.Accuracy()
    widths = []
    for i, (x, y) in enumerate(stream(n=n)):
        acc.update(y, model.predict_one(x))
        model.learn_one(x, y)
        if (i + 1) % every == 0:
            widths.append(model.layer_sizes)
    return widths, acc.get()


def main(argv: list[str] | None = None) -> int:
    with limit_threads(1):  # one torch and one BLAS thread, as everywhere (streamdas.threads)
        return _main(argv)


def _main(argv: list[str] | None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=10_000, help="samples per segment (default 10,000)")
    n = parser.parse_args(argv).n
    every = max(n // 4, 1)
    for title, config in CONFIGS.items():
        results = {h: run(h, config, every=every, n=n) for h in (0, 800)}
        print(f"\n{title}\n")
        print("| samples | widths, prune_horizon=0 (paper) | widths, prune_horizon=800 (default) |")
        print("| ---: | --- | --- |")
        for k, (a, b) in enumerate(zip(results[0][0], results[800][0], strict=True)):
            print(f"| {(k + 1) * every:,} | {a} | {b} |")
        print(f"| accuracy | {results[0][1]:.4f} | {results[800][1]:.4f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
