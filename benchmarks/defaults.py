"""Stream defaults against the paper's values: prequential accuracy and final widths.

``DASClassifier()`` (stream defaults: alpha 3e-5, lr = tau = 1e-2, ReLU, (64, 64), batch 8)
against the same estimator with the paper's alpha 2e-5, lr 1e-3, tau 1e-3, on four synthetic
streams of 20,000 samples:

    python -m benchmarks.defaults
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Iterable
from typing import Any

from river import evaluate, metrics
from river.datasets import synth

from streamdas import DASClassifier
from streamdas.threads import limit_threads

STREAMS: dict[str, Callable[[int], Iterable[tuple[dict[str, Any], Any]]]] = {
    "Hyperplane (10 features, drifting)": lambda n: synth.Hyperplane(
        seed=1, n_features=10, mag_change=0.001
    ).take(n),
    "Agrawal function 2": lambda n: synth.Agrawal(classification_function=2, seed=1).take(n),
    "RandomRBF, 50 centroids, 4 classes": lambda n: synth.RandomRBF(
        seed_model=1, seed_sample=1, n_classes=4, n_features=10, n_centroids=50
    ).take(n),
    "SEA variant 1": lambda n: synth.SEA(seed=1, variant=1).take(n),
}

CONFIGS: dict[str, dict[str, float]] = {
    "paper values (alpha 2e-5, lr 1e-3, tau 1e-3)": {"alpha": 2e-5, "lr": 1e-3, "tau": 1e-3},
    "stream defaults (alpha 3e-5, lr 1e-2, tau 1e-2)": {},
}


def main(argv: list[str] | None = None) -> int:
    with limit_threads(1):  # one torch and one BLAS thread, as everywhere (streamdas.threads)
        return _main(argv)


def _main(argv: list[str] | None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=20_000, help="samples per stream")
    args = parser.parse_args(argv)
    print("| stream | settings | accuracy | final widths |")
    print("| --- | --- | ---: | --- |")
    for name, make in STREAMS.items():
        for label, config in CONFIGS.items():
            model = DASClassifier(seed=0, **config)
            acc = evaluate.progressive_val_score(make(args.n), model, metrics.Accuracy()).get()
            print(f"| {name} | {label} | {acc:.4f} | {model.layer_sizes} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
