"""Accuracy comparison (issue 3): prequential accuracy and Cohen's kappa on drifting streams.

Streams (binary, with drift): SEA (abrupt concept drift at the middle, variant 0 -> 2), Agrawal
(abrupt drift at the middle, function 0 -> 4), Hyperplane (continuous gradual drift) and
RandomRBFDrift (moving centroids). Learners, in one run on the same materialised samples:
DASClassifier() defaults, DAS with an ADWIN drift reaction, River's ARFClassifier,
HoeffdingAdaptiveTreeClassifier, LogisticRegression (behind a StandardScaler: it has no
standardization of its own), and a static MLP of DAS's final size on that stream
(``DASClassifier(grow=False, prune=False, regularizer="none", hidden_sizes=final sizes)``).

    python -m benchmarks --only accuracy
"""

from __future__ import annotations

import time
from typing import Any

from benchmarks.common import Section, Sizes, take

__all__ = ["STREAMS", "run"]

STREAMS = ("SEA (drift 0->2)", "Agrawal (drift 0->4)", "Hyperplane (gradual)", "RandomRBFDrift")


def _stream(name: str, n: int, seed: int = 7) -> list[tuple[dict, Any]]:
    from river.datasets import synth

    width = max(n // 20, 1)
    if name.startswith("SEA"):
        s = synth.ConceptDriftStream(synth.SEA(variant=0, seed=seed, noise=0.05),
                                     synth.SEA(variant=2, seed=seed + 1, noise=0.05),
                                     position=n // 2, width=width, seed=seed)
    elif name.startswith("Agrawal"):
        s = synth.ConceptDriftStream(synth.Agrawal(classification_function=0, seed=seed),
                                     synth.Agrawal(classification_function=4, seed=seed + 1),
                                     position=n // 2, width=width, seed=seed)
    elif name.startswith("Hyperplane"):
        s = synth.Hyperplane(seed=seed, n_features=10, n_drift_features=5, mag_change=0.001,
                             noise_percentage=0.05)
    else:
        s = synth.RandomRBFDrift(seed_model=seed, seed_sample=seed + 1, n_classes=2, n_features=10,
                                 n_centroids=50, change_speed=1e-3, n_drift_centroids=25)
    return take(s, n)


def _evaluate(model: Any, data: list[tuple[dict, Any]]) -> dict[str, Any]:
    from river import metrics

    acc, kappa = metrics.Accuracy(), metrics.CohenKappa()
    t0 = time.perf_counter()
    for x, y in data:
        p = model.predict_one(x)
        acc.update(y, p)
        kappa.update(y, p)
        model.learn_one(x, y)
    seconds = time.perf_counter() - t0
    return {"accuracy": acc.get(), "kappa": kappa.get(), "rate": len(data) / seconds,
            "sizes": getattr(model, "layer_sizes", None)}


def run(sizes: Sizes) -> list[Section]:
    from river import drift, forest, linear_model, preprocessing, tree

    from streamdas import DASClassifier

    rows: list[list[Any]] = []
    verdicts: list[str] = []
    for stream in STREAMS:
        data = _stream(stream, sizes.accuracy_n)
        results: dict[str, dict[str, Any]] = {}
        results["DAS (defaults)"] = _evaluate(DASClassifier(seed=42), data)
        final = tuple(results["DAS (defaults)"]["sizes"])
        results["DAS + ADWIN drift reaction"] = _evaluate(
            DASClassifier(drift_detector=drift.ADWIN(), seed=42), data)
        results[f"static MLP {final} (DAS final)"] = _evaluate(
            DASClassifier(grow=False, prune=False, regularizer="none", hidden_sizes=final, seed=42), data)
        results["ARFClassifier"] = _evaluate(forest.ARFClassifier(seed=42), data)
        results["HoeffdingAdaptiveTree"] = _evaluate(tree.HoeffdingAdaptiveTreeClassifier(seed=42), data)
        results["StandardScaler | LogisticRegression"] = _evaluate(
            preprocessing.StandardScaler() | linear_model.LogisticRegression(), data)
        ranked = sorted(results, key=lambda k: -results[k]["accuracy"])
        for name, r in results.items():
            rows.append([stream, name, r["accuracy"], r["kappa"], ranked.index(name) + 1, r["rate"],
                         "" if r["sizes"] is None else str(list(r["sizes"]))])
        das = results["DAS (defaults)"]
        best_other = max((k for k in results if not k.startswith("DAS")),
                         key=lambda k: results[k]["accuracy"])
        diff = 100 * (das["accuracy"] - results[best_other]["accuracy"])
        verdicts.append(
            f"{stream}: DAS {'wins' if diff > 0 else 'loses'} against the best non-DAS learner "
            f"({best_other}, {100 * results[best_other]['accuracy']:.2f}%) by {diff:+.2f} points of "
            f"accuracy; DAS rank {ranked.index('DAS (defaults)') + 1} of {len(results)}.")
    notes = [
        f"{sizes.accuracy_n:,} samples per stream (drift at the middle for SEA and Agrawal, width 5% of "
        f"the stream), predict-then-learn, all learners on the same materialised samples.",
        *verdicts,
    ]
    headers = ["stream", "learner", "accuracy", "kappa", "rank", "samples/s", "final sizes"]
    return [Section("accuracy", "7. Prequential accuracy and Cohen's kappa on drifting streams", headers,
                    rows, notes)]
