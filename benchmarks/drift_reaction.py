"""Drift reaction on or off: DASClassifier with and without a River drift detector on its loss.

When the detector (ADWIN on the minibatch loss) fires, the model runs a sizing cycle at once
instead of waiting for the next ``grow_every`` boundary. Same streams, same seed, one run:

    python -m benchmarks.drift_reaction [--n 20000]
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Iterable
from typing import Any

from river import drift, metrics
from river.datasets import synth

from streamdas import DASClassifier
from streamdas.threads import limit_threads

Stream = Callable[[int], Iterable[tuple[dict[str, Any], Any]]]


def _switch(*parts: tuple[Any, int]) -> Iterable[tuple[dict[str, Any], Any]]:
    for gen, n in parts:
        yield from gen.take(n)


STREAMS: dict[str, Stream] = {
    "SEA abrupt (0 -> 3)": lambda n: _switch(
        (synth.SEA(variant=0, seed=1), n // 2), (synth.SEA(variant=3, seed=2), n - n // 2)
    ),
    "Agrawal abrupt (1 -> 4 -> 7)": lambda n: _switch(
        (synth.Agrawal(classification_function=1, seed=1), n // 3),
        (synth.Agrawal(classification_function=4, seed=2), n // 3),
        (synth.Agrawal(classification_function=7, seed=3), n - 2 * (n // 3)),
    ),
    "RBF 2 -> 50 -> 2 centroids": lambda n: _switch(
        *[
            (synth.RandomRBF(seed_model=7, seed_sample=i, n_classes=4, n_features=10, n_centroids=c), n // 3)
            for i, c in enumerate((2, 50, 2))
        ]
    ),
}


def evaluate(stream: Iterable[tuple[dict[str, Any], Any]], model: DASClassifier) -> dict[str, Any]:
    acc, kappa = metrics.Accuracy(), metrics.CohenKappa()
    for x, y in stream:
        y_pred = model.predict_one(x)
        acc.update(y, y_pred)
        kappa.update(y, y_pred)
        model.learn_one(x, y)
    return {
        "accuracy": acc.get(),
        "kappa": kappa.get(),
        "sizes": model.layer_sizes,
        "drifts": model.n_drifts_detected,
        "cycles": model.n_sizing_cycles,
    }


def main(argv: list[str] | None = None) -> int:
    with limit_threads(1):  # one torch and one BLAS thread, as everywhere (streamdas.threads)
        return _main(argv)


def _main(argv: list[str] | None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=20_000, help="samples per stream")
    args = parser.parse_args(argv)
    print("| stream | reaction | accuracy | kappa | final widths | drifts | cycles |")
    print("| --- | --- | ---: | ---: | --- | ---: | ---: |")
    for name, make in STREAMS.items():
        for label, detector in (("off (default)", None), ("ADWIN on loss", drift.ADWIN())):
            r = evaluate(make(args.n), DASClassifier(seed=0, drift_detector=detector))
            print(
                f"| {name} | {label} | {r['accuracy']:.4f} | {r['kappa']:.4f} | {r['sizes']} "
                f"| {r['drifts']} | {r['cycles']} |"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
