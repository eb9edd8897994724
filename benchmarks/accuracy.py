"""Accuracy suite (issue 11): DAS against River's learners and a per-sample MLP on drifting streams.

Prequential (predict, then learn), every learner on the same materialised samples, several
seeds (a synthetic stream's seed changes the stream and the learners' seeds; a dataset keeps its
order and only the learners' seeds change), mean and standard deviation over the seeds.

Classification (accuracy, %): SEA with an abrupt drift, Agrawal with a gradual drift, Hyperplane
(continuous gradual drift), RandomRBFDrift (50 moving centroids, 4 classes), LED with a gradual
drift, and River's Phishing, Bananas and ImageSegments datasets. Learners: ``DASClassifier()``
defaults, a per-sample (64, 64) Adam 1e-3 torch MLP behind a running StandardScaler, River's
ARFClassifier and HoeffdingAdaptiveTreeClassifier, StandardScaler | LogisticRegression
(one-vs-rest when multiclass) and StandardScaler | kNN with ADWIN (:class:`benchmarks.peers.KNNADWIN`).

Regression (MAE): TrumpApproval, ChickWeights and FriedmanDrift (global slow gradual drift).
Learners: ``DASRegressor()``, the running mean (``dummy.StatisticRegressor(stats.Mean())``),
StandardScaler | LinearRegression, the same behind a running-standardized target
(``TargetStandardScaler(StandardScaler() | LinearRegression())``, "LinReg (scaled y)"),
StandardScaler | ARFRegressor and the (64, 64) MLP (standardized target).

    python -m benchmarks --only accuracy            # all learners, fresh (the documented tables)
    python -m benchmarks.accuracy                   # the same; peers come from the cache when there
    python -m benchmarks.accuracy --das-only --das lr=1e-2,tau=1e-2 --das batch_size=8
    python -m benchmarks.accuracy --kind regression --streams TrumpApproval --seeds 2 --n 5000
    python -m benchmarks.accuracy --kind classification --streams "RandomRBF, 2 -> 50 -> 2 centroids, 4 cl."

The last one runs a stream outside the suite (:data:`EXTRA_CLASSIFICATION`): RandomRBF with 2,
then 50, then 2 centroids, where the concept gets harder and then easier again.

Every run stores each (stream, samples, seed, learner) result in ``results/accuracy_cache.json``;
``--das-only`` reruns only DAS (the defaults plus each ``--das`` variant) and takes the peers from
that cache (computing the missing ones), so tuning DAS costs seconds, not the peers' minutes.
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import re
import statistics
import sys
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

from benchmarks.common import Section, Sizes, take

__all__ = [
    "CLASSIFICATION",
    "EXTRA_CLASSIFICATION",
    "REGRESSION",
    "main",
    "parse_overrides",
    "run",
    "run_kind",
]

Data = list[tuple[dict, Any]]

CACHE = Path("results/accuracy_cache.json")
#: Part of every cache key: bump it when a stream or a peer's configuration changes.
CACHE_VERSION = 2  # 2: the MLP peer seeded in full


# --------------------------------------------------------------------------- streams
def _sea(n: int, seed: int) -> Data:
    from river.datasets import synth

    # Truly abrupt: the first half from one concept, the second from the other (River's
    # ConceptDriftStream overflows a float for a width this small on a long stream).
    return take(synth.SEA(variant=0, seed=seed, noise=0.1), n // 2) + take(
        synth.SEA(variant=3, seed=seed + 1, noise=0.1), n - n // 2
    )


def _agrawal(n: int, seed: int) -> Data:
    from river.datasets import synth

    s = synth.ConceptDriftStream(
        synth.Agrawal(classification_function=0, seed=seed, perturbation=0.05),
        synth.Agrawal(classification_function=2, seed=seed + 1, perturbation=0.05),
        position=n // 2,
        width=max(n // 10, 1),
        seed=seed,
    )
    return take(s, n)


def _hyperplane(n: int, seed: int) -> Data:
    from river.datasets import synth

    return take(
        synth.Hyperplane(
            seed=seed, n_features=10, n_drift_features=5, mag_change=0.001, noise_percentage=0.05
        ),
        n,
    )


def _rbf(n: int, seed: int) -> Data:
    from river.datasets import synth

    return take(
        synth.RandomRBFDrift(
            seed_model=seed,
            seed_sample=seed + 1,
            n_classes=4,
            n_features=10,
            n_centroids=50,
            change_speed=1e-3,
            n_drift_centroids=50,
        ),
        n,
    )


def _rbf_complexity(n: int, seed: int) -> Data:
    """RandomRBF with 2, then 50, then 2 centroids (a third of the samples each): the concept
    gets harder, then easier again (the stream of ``python -m benchmarks.pruning_rule``)."""
    from river.datasets import synth

    out: Data = []
    for i, centroids in enumerate((2, 50, 2)):
        k = n // 3 if i < 2 else n - 2 * (n // 3)
        out += take(
            synth.RandomRBF(
                seed_model=seed, seed_sample=seed + 10 * i, n_classes=4, n_features=10, n_centroids=centroids
            ),
            k,
        )
    return out


def _led(n: int, seed: int) -> Data:
    from river.datasets import synth

    s = synth.ConceptDriftStream(
        synth.LEDDrift(seed=seed, noise_percentage=0.1, irrelevant_features=True, n_drift_features=3),
        synth.LEDDrift(seed=seed + 1, noise_percentage=0.1, irrelevant_features=True, n_drift_features=7),
        position=n // 2,
        width=max(n // 20, 1),
        seed=seed,
    )
    return take(s, n)


def _dataset(name: str) -> Callable[[int, int], Data]:
    def make(n: int, seed: int) -> Data:
        from river import datasets

        return take(getattr(datasets, name)(), n)

    return make


def _friedman(n: int, seed: int) -> Data:
    from river.datasets import synth

    return take(
        synth.FriedmanDrift(
            drift_type="gsg", position=(n // 3, 2 * n // 3), transition_window=max(n // 20, 1), seed=seed
        ),
        n,
    )


#: stream name -> (n, seed) -> materialised samples.
CLASSIFICATION: dict[str, Callable[[int, int], Data]] = {
    "SEA, abrupt drift": _sea,
    "Agrawal, gradual drift": _agrawal,
    "Hyperplane, gradual": _hyperplane,
    "RandomRBFDrift, 50 moving, 4 cl.": _rbf,
    "LED, gradual drift": _led,
    "Phishing": _dataset("Phishing"),
    "Bananas": _dataset("Bananas"),
    "ImageSegments": _dataset("ImageSegments"),
}

#: Streams outside the suite: run by name (``--streams``), never by default, so the suite's goal
#: counts stay on the eight streams above.
EXTRA_CLASSIFICATION: dict[str, Callable[[int, int], Data]] = {
    "RandomRBF, 2 -> 50 -> 2 centroids, 4 cl.": _rbf_complexity,
}

REGRESSION: dict[str, Callable[[int, int], Data]] = {
    "TrumpApproval": _dataset("TrumpApproval"),
    "ChickWeights": _dataset("ChickWeights"),
    "FriedmanDrift, gradual": _friedman,
}


def _runnable(kind: str) -> dict[str, Callable[[int, int], Data]]:
    """Every stream of ``kind`` that can be run by name: the suite's and the extra ones."""
    return {**CLASSIFICATION, **EXTRA_CLASSIFICATION} if kind == "classification" else REGRESSION


#: Issue 22's per-stream goals for DAS defaults: stream -> (peer, margin): the DAS mean is to
#: be at least that peer's mean plus the margin. Every other stream is to stay within 1 point of
#: the best peer; every stream at least the MLP - 0.3.
ISSUE22_GOALS: dict[str, tuple[str, float]] = {
    "RandomRBFDrift, 50 moving, 4 cl.": ("kNN+ADWIN", -5.0),
    "Bananas": ("ARF", -2.0),
    "Phishing": ("ARF", -0.5),
    "RandomRBF, 2 -> 50 -> 2 centroids, 4 cl.": ("MLP (64,64)", 0.0),
}


def issue22_goals(kind: str, results: dict[str, dict[str, list[dict[str, Any]]]]) -> str:
    """Issue 22's verdict on the streams of this run, with DAS's worst seed beside its mean.

    Classification: the goals of :data:`ISSUE22_GOALS`, within 1 point of the best peer on the
    others, at least the MLP - 0.3 everywhere. Regression: at least as good as every peer."""
    cls = kind == "classification"
    parts, met = [], 0
    for stream, by in results.items():
        scores = [r["score"] for r in by["DAS"]]
        if not scores:
            continue
        mean = statistics.fmean(scores)
        worst = min(scores) if cls else max(scores)
        peers = {
            lbl: statistics.fmean(r["score"] for r in rs)
            for lbl, rs in by.items()
            if rs and not lbl.startswith("DAS")
        }
        if cls:
            peer, margin = ISSUE22_GOALS.get(stream, (max(peers, key=peers.__getitem__), -1.0))
            goal = peers[peer] + margin
            ok = mean >= goal and mean >= peers["MLP (64,64)"] - 0.3
            name = stream.split(",")[0]
            text = f"{name} {mean:.2f} (worst seed {worst:.2f}) >= {goal:.2f} ({peer} {margin:+g})"
        else:
            peer = min(peers, key=peers.__getitem__)
            goal = peers[peer]
            ok = mean <= goal
            text = f"{stream.split(',')[0]} {mean:.3f} (worst seed {worst:.3f}) <= {goal:.3f} ({peer})"
        met += ok
        parts.append(f"{text}: {'met' if ok else 'NOT met'}")
    n = len(parts)
    head = "Issue 22 goals for DAS defaults" + (" (and >= MLP - 0.3 on each)" if cls else " (every peer)")
    return f"{head}: {met}/{n} met. " + "; ".join(parts) + "."


CLS_PEERS = ("MLP (64,64)", "ARF", "HAT", "LogReg", "kNN+ADWIN")

#: How ``DASClassifier``'s defaults were reached (issue 11), one change at a time from the
#: defaults before it; the last step is the defaults themselves. (label, overrides).
OLD_CLASSIFIER = {
    "hidden_sizes": (32, 32),
    "batch_size": 16,
    "alpha": 1e-4,
    "lr": 3e-3,
    "tau": 5e-3,
    "activation": "selu",
    "average_horizon": 0,
    "rehearsal": 0,
    "memory": 0,
    "batch_warmup": 0,
}
#: issue 11's rows: before rehearsal and the neighbour memory (issue 22)
_PRE = {"batch_size": 8, "rehearsal": 0, "memory": 0, "batch_warmup": 0}
LADDER: list[tuple[str, dict[str, Any]]] = [
    ("old defaults: SELU, (32, 32), batch 16, lr 3e-3, tau 5e-3, alpha 1e-4", OLD_CLASSIFIER),
    ("+ lr = tau = 1e-2", {**OLD_CLASSIFIER, "lr": 1e-2, "tau": 1e-2}),
    ("+ ReLU", {**OLD_CLASSIFIER, "lr": 1e-2, "tau": 1e-2, "activation": "relu"}),
    (
        "+ (64, 64)",
        {**OLD_CLASSIFIER, "lr": 1e-2, "tau": 1e-2, "activation": "relu", "hidden_sizes": (64, 64)},
    ),
    (
        "+ batch 12",
        {
            **OLD_CLASSIFIER,
            "lr": 1e-2,
            "tau": 1e-2,
            "activation": "relu",
            "hidden_sizes": (64, 64),
            "batch_size": 12,
        },
    ),
    (
        "+ alpha 5e-5 (live weights: average_horizon=0)",
        {**_PRE, "batch_size": 12, "alpha": 5e-5, "average_horizon": 0},
    ),
    ("+ Polyak averaging over 130 samples", {**_PRE, "batch_size": 12, "alpha": 5e-5}),
    ("+ batch 8, alpha 3e-5", _PRE),
    ("+ rehearsal 2", {**_PRE, "rehearsal": 2}),
    ("+ neighbour memory: 5 nearest of 512", {"batch_size": 8, "rehearsal": 2, "batch_warmup": 0}),
    ("+ batch 16, rehearsal 0", {"batch_warmup": 0}),
    ("+ batch warm-up 64 (the defaults)", {}),
]
REG_PEERS = ("Mean", "LinReg", "LinReg (scaled y)", "ARF", "MLP (64,64)")
#: The peers DAS is to match or beat on a regression stream (the note's second goal).
STRONG_REG_PEERS = ("LinReg", "LinReg (scaled y)", "ARF", "MLP (64,64)")


# --------------------------------------------------------------------------- learners
def _das_label(overrides: dict[str, Any]) -> str:
    if not overrides:
        return "DAS"
    return "DAS[" + ",".join(f"{k}={v!r}" for k, v in overrides.items()) + "]"


def _make(kind: str, learner: str, seed: int, n_classes: int, overrides: dict[str, Any]) -> Any:
    from river import dummy, forest, linear_model, multiclass, preprocessing, stats, tree

    from benchmarks.peers import KNNADWIN, MLPRegressor, ScaledMLPClassifier
    from streamdas import DASClassifier, DASRegressor

    if learner.startswith("DAS"):
        return (DASClassifier if kind == "classification" else DASRegressor)(seed=seed, **overrides)
    if kind == "classification":
        if learner == "MLP (64,64)":
            return ScaledMLPClassifier(n_classes=n_classes, seed=seed)
        if learner == "ARF":
            return forest.ARFClassifier(seed=seed)
        if learner == "HAT":
            return tree.HoeffdingAdaptiveTreeClassifier(seed=seed)
        if learner == "LogReg":
            lr = linear_model.LogisticRegression()
            return preprocessing.StandardScaler() | (
                lr if n_classes <= 2 else multiclass.OneVsRestClassifier(lr)
            )
        if learner == "kNN+ADWIN":
            return preprocessing.StandardScaler() | KNNADWIN()
    else:
        if learner == "Mean":
            return dummy.StatisticRegressor(stats.Mean())
        if learner == "LinReg":
            return preprocessing.StandardScaler() | linear_model.LinearRegression()
        if learner == "LinReg (scaled y)":
            return preprocessing.TargetStandardScaler(
                preprocessing.StandardScaler() | linear_model.LinearRegression()
            )
        if learner == "ARF":  # its leaf models diverge on raw features (TrumpApproval's dates)
            return preprocessing.StandardScaler() | forest.ARFRegressor(seed=seed)
        if learner == "MLP (64,64)":
            return MLPRegressor(seed=seed)
    raise ValueError(f"unknown {kind} learner {learner!r}")


def _evaluate(kind: str, model: Any, data: Data) -> dict[str, Any]:
    from river import metrics

    metric = metrics.Accuracy() if kind == "classification" else metrics.MAE()
    predict, learn, update = model.predict_one, model.learn_one, metric.update
    t0 = time.perf_counter()
    for x, y in data:
        update(y, predict(x))
        learn(x, y)
    seconds = time.perf_counter() - t0
    out: dict[str, Any] = {
        "score": metric.get() * (100.0 if kind == "classification" else 1.0),
        "rate": len(data) / seconds,
        "n": len(data),
    }
    if hasattr(model, "layer_sizes"):
        final = [int(s) for s in model.layer_sizes]
        peak = list(final)
        for event in model.size_history:
            sizes = event.get("sizes") or event.get("hidden_sizes") or []
            peak = [max(p, int(s)) for p, s in zip(peak, sizes, strict=False)]
        out["final"], out["peak"] = final, peak
    return out


def parse_overrides(text: str) -> dict[str, Any]:
    """``"lr=1e-2,hidden_sizes=(64, 64)"`` -> keyword arguments (values are Python literals,
    anything else stays a string).

    >>> parse_overrides("lr=1e-2,hidden_sizes=(64, 64),optimizer=sgd")
    {'lr': 0.01, 'hidden_sizes': (64, 64), 'optimizer': 'sgd'}
    """
    out: dict[str, Any] = {}
    for part in re.split(r",(?![^()\[\]]*[)\]])", text):
        if not part.strip():
            continue
        key, sep, value = part.partition("=")
        if not sep or not key.strip().isidentifier():
            raise ValueError(f"expected key=value, got {part!r}")
        try:
            out[key.strip()] = ast.literal_eval(value.strip())
        except (ValueError, SyntaxError):
            out[key.strip()] = value.strip()
    return out


# --------------------------------------------------------------------------- running
def _cache_key(kind: str, stream: str, n: int, seed: int, learner: str) -> str:
    return f"v{CACHE_VERSION}|{kind}|{stream}|{n}|{seed}|{learner}"


def _read_cache(cache: Path | None) -> dict[str, Any]:
    if cache is None or not cache.exists():
        return {}
    try:
        data = json.loads(cache.read_text())
    except ValueError:  # a damaged cache is only a cache: start over
        return {}
    return data if isinstance(data, dict) else {}


def _write_cache(cache: Path, stored: dict[str, Any]) -> None:
    """Merge into what is on disk (another run may share the file), then replace it atomically."""
    merged = {**_read_cache(cache), **stored}
    cache.parent.mkdir(parents=True, exist_ok=True)
    tmp = cache.with_name(f"{cache.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(merged, indent=0, sort_keys=True))
    os.replace(tmp, cache)


def _task(
    kind: str, stream: str, n: int, seed: int, learners: list[tuple[str, dict[str, Any]]], threads: int
) -> dict[str, dict[str, Any]]:
    """One stream and seed: materialise it once, run each learner; {learner label: result}."""
    from benchmarks.common import setup_torch

    setup_torch(threads)
    data = _runnable(kind)[stream](n, 7 + 1000 * seed)
    n_classes = len({y for _, y in data}) if kind == "classification" else 0
    out = {}
    for label, overrides in learners:
        t0 = time.perf_counter()
        out[label] = _evaluate(kind, _make(kind, label, seed, n_classes, overrides), data)
        print(
            f"[accuracy] {kind} {stream} seed {seed} {label}: "
            f"{out[label]['score']:.3f} in {time.perf_counter() - t0:.1f} s",
            file=sys.stderr,
            flush=True,
        )
    return out


def run_kind(
    kind: str,
    n: int,
    seeds: int,
    streams: list[str] | None = None,
    das_variants: list[dict[str, Any]] | None = None,
    das_only: bool = False,
    cache: Path | None = CACHE,
    read_cache: bool = False,
    jobs: int = 1,
    threads: int = 1,
) -> tuple[dict[str, dict[str, list[dict[str, Any]]]], list[str]]:
    """Run one kind's suite; return ({stream: {learner: [result per seed]}}, learner labels).

    DAS defaults and each variant always run; a peer is read from ``cache`` when ``read_cache``
    (or ``das_only``) is set and the cache has it, else it runs (and is stored).
    """
    table = CLASSIFICATION if kind == "classification" else REGRESSION
    names = streams or list(table)
    known = _runnable(kind)
    unknown = [s for s in names if s not in known]
    if unknown:
        raise ValueError(f"unknown {kind} stream(s) {unknown}; choose from {list(known)}")
    variants = [{}] + [v for v in (das_variants or []) if v]
    das = [(_das_label(v), v) for v in variants]
    peers = [(p, {}) for p in (CLS_PEERS if kind == "classification" else REG_PEERS)]
    labels = [lbl for lbl, _ in das + peers]
    stored = _read_cache(cache)
    use_cache = read_cache or das_only
    results: dict[str, dict[str, list[dict[str, Any]]]] = {s: {lbl: [] for lbl in labels} for s in names}
    tasks = []
    for stream in names:
        for seed in range(seeds):
            todo = list(das)
            for label, ov in peers:
                key = _cache_key(kind, stream, n, seed, label)
                if use_cache and key in stored:
                    results[stream][label].append({**stored[key], "cached": True})
                else:
                    todo.append((label, ov))
            tasks.append((stream, seed, todo))

    def collect(stream: str, seed: int, out: dict[str, dict[str, Any]]) -> None:
        for label, r in out.items():
            results[stream][label].append(r)
            stored[_cache_key(kind, stream, n, seed, label)] = r
        if cache is not None:
            _write_cache(cache, stored)

    if jobs <= 1:
        for stream, seed, todo in tasks:
            collect(stream, seed, _task(kind, stream, n, seed, todo, threads))
    else:
        with ProcessPoolExecutor(max_workers=jobs) as pool:
            futures = [
                (stream, seed, pool.submit(_task, kind, stream, n, seed, todo, threads))
                for stream, seed, todo in tasks
            ]
            for stream, seed, fut in futures:
                collect(stream, seed, fut.result())
    return results, labels


# --------------------------------------------------------------------------- tables
def _ms(values: list[float]) -> tuple[float, float]:
    if not values:
        return float("nan"), float("nan")
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def _pm(values: list[float], digits: int) -> str:
    m, s = _ms(values)
    return f"{m:.{digits}f} ± {s:.{digits}f}"


def _widths(rs: list[dict[str, Any]], key: str) -> str:
    ws = [r[key] for r in rs if key in r]
    if not ws:
        return ""
    return str([round(statistics.fmean(col)) for col in zip(*ws, strict=True)])


def sections(
    kind: str, results: dict[str, dict[str, list[dict[str, Any]]]], labels: list[str], n: int, seeds: int
) -> list[Section]:
    """The score table (mean ± sd), the speed/width table and the verdict notes of one kind."""
    cls = kind == "classification"
    digits = 2 if cls else 3
    better = max if cls else min
    das_labels = [lbl for lbl in labels if lbl.startswith("DAS")]
    peer_labels = [lbl for lbl in labels if not lbl.startswith("DAS")]
    rows, speed_rows, notes = [], [], []
    checks = {"mlp": 0, "arf": 0, "best": 0, "mean": 0, "strong": 0}
    for stream, by in results.items():
        means = {lbl: _ms([r["score"] for r in by[lbl]])[0] for lbl in labels}
        best_peer = better(peer_labels, key=lambda lbl: means[lbl])
        best_all = better(labels, key=lambda lbl: means[lbl])
        length = by[labels[0]][0]["n"] if by[labels[0]] else 0
        row: list[Any] = [stream, length]
        row += [_pm([r["score"] for r in by[lbl]], digits) for lbl in labels]
        row += [best_peer, f"{means['DAS'] - means[best_peer]:+.{digits}f}", best_all]
        rows.append(row)
        speed = [stream]
        for lbl in das_labels:
            speed += [_widths(by[lbl], "final"), _widths(by[lbl], "peak")]
        speed += [_ms([r["rate"] for r in by[lbl]])[0] for lbl in labels]
        speed_rows.append(speed)
        d = means["DAS"]
        if cls:
            checks["mlp"] += d >= means["MLP (64,64)"] - 0.3
            checks["arf"] += d >= means["ARF"]
            checks["best"] += d >= means[best_peer] - 1.0
        else:
            checks["mean"] += d <= means["Mean"]
            checks["strong"] += d <= min(means[p] for p in STRONG_REG_PEERS)
    k = len(results)
    what = "accuracy (%, higher is better)" if cls else "MAE (lower is better)"
    notes.append(
        f"{what}, mean ± sd over {seeds} seed(s); prequential, up to {n:,} samples a stream "
        "(a dataset runs its full length if shorter); all learners on the same samples."
    )
    if cls:
        notes.append(
            f"Issue 11 goals for DAS defaults: not below the MLP by more than 0.3 on any stream "
            f"-> {checks['mlp']}/{k}; at least as accurate as ARF on >= 5 -> {checks['arf']}/{k}; "
            f"within 1 point of the best peer on >= 4 -> {checks['best']}/{k}."
        )
    else:
        notes.append(
            f"Issue 11 goals for DAS defaults: never worse than the running mean -> "
            f"{checks['mean']}/{k}; at least as good as the best of "
            f"{', '.join(STRONG_REG_PEERS)} on >= 2 "
            f"-> {checks['strong']}/{k}."
        )
    notes.append(issue22_goals(kind, results))
    title_score = "accuracy (%)" if cls else "MAE"
    headers = ["stream", "samples", *labels, "best peer", "DAS - best peer", "best"]
    speed_headers = ["stream"]
    for lbl in das_labels:
        speed_headers += [f"{lbl} final widths", f"{lbl} peak widths"]
    speed_headers += [f"{lbl} samples/s" for lbl in labels]
    key = "accuracy" if cls else "regression"
    return [
        Section(
            key,
            f"7{'a' if cls else 'b'}. {kind.capitalize()} on drifting streams: {title_score}",
            headers,
            rows,
            notes,
        ),
        Section(
            key,
            f"7{'a' if cls else 'b'}. {kind.capitalize()}: DAS widths and samples/s (mean over seeds)",
            speed_headers,
            speed_rows,
            [
                "Widths: mean over seeds per hidden layer; peak = widest each layer was at a sizing "
                "event. samples/s is wall clock of the prequential loop (the machine may be shared).",
                *(
                    [
                        "Some peer results were read from the cache: their samples/s come from the run "
                        "that computed them, not from this one (compare speeds only within one run)."
                    ]
                    if any(r.get("cached") for by in results.values() for rs in by.values() for r in rs)
                    else []
                ),
            ],
        ),
    ]


def ladder_section(results: dict[str, dict[str, list[dict[str, Any]]]], n: int, seeds: int) -> Section:
    """The classifier's defaults, reached one change at a time (:data:`LADDER`), in one run."""
    rows = []
    for name, overrides in LADDER:
        label = _das_label(overrides)
        means = [_ms([r["score"] for r in by[label]])[0] for by in results.values()]
        rows.append([name, *(f"{m:.2f}" for m in means), f"{statistics.fmean(means):.2f}"])
    for peer in ("MLP (64,64)", "ARF"):
        means = [_ms([r["score"] for r in by[peer]])[0] for by in results.values()]
        rows.append([peer, *(f"{m:.2f}" for m in means), f"{statistics.fmean(means):.2f}"])
    short = [s.split(",")[0] for s in results]
    return Section(
        "accuracy",
        "7c. How DASClassifier's defaults were reached: accuracy (%)",
        ["settings (cumulative)", *short, "mean"],
        rows,
        [
            f"Mean over {seeds} seed(s), {n:,} samples a stream, the same run and samples as "
            "table 7a; each row changes one setting of the row above (the first row is the "
            "defaults before issue 11), the last row is `DASClassifier()`."
        ],
    )


def run(sizes: Sizes) -> list[Section]:
    """Both suites, every learner fresh (the cache is written, not read); classification also
    runs the :data:`LADDER` of DAS settings (table 7c)."""
    out: list[Section] = []
    for kind in ("classification", "regression"):
        cls = kind == "classification"
        variants = [ov for _, ov in LADDER if ov] if cls else []
        results, labels = run_kind(
            kind,
            sizes.accuracy_n,
            sizes.accuracy_seeds,
            das_variants=variants,
            cache=None if sizes.accuracy_n < 1000 else CACHE,
        )
        main_labels = [lbl for lbl in labels if lbl not in {_das_label(v) for v in variants}]
        out.extend(sections(kind, results, main_labels, sizes.accuracy_n, sizes.accuracy_seeds))
        if cls:
            out.append(ladder_section(results, sizes.accuracy_n, sizes.accuracy_seeds))
    return out


def main(argv: list[str] | None = None) -> int:
    from streamdas.threads import limit_threads

    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.accuracy", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--kind", choices=["classification", "regression", "both"], default="both")
    parser.add_argument("--n", type=int, default=20_000, help="samples per stream (default 20,000)")
    parser.add_argument("--seeds", type=int, default=3, help="seeds per stream (default 3)")
    parser.add_argument("--streams", nargs="+", metavar="NAME", help="only these streams (exact names)")
    parser.add_argument(
        "--das",
        action="append",
        default=[],
        metavar="K=V[,K=V...]",
        help="a DAS variant (estimator keyword overrides), repeatable; each runs beside the defaults",
    )
    parser.add_argument(
        "--das-only",
        action="store_true",
        help="rerun only DAS; peers come from the cache (missing ones are computed)",
    )
    parser.add_argument("--fresh", action="store_true", help="ignore cached peer results")
    parser.add_argument("--cache", type=Path, default=CACHE, help=f"result cache (default {CACHE})")
    parser.add_argument("--jobs", type=int, default=1, help="worker processes (default 1)")
    parser.add_argument("--out", type=Path, default=None, help="also write the markdown here")
    args = parser.parse_args(argv)
    variants = [parse_overrides(v) for v in args.das]
    kinds = ["classification", "regression"] if args.kind == "both" else [args.kind]
    secs: list[Section] = []
    t0 = time.perf_counter()
    with limit_threads(1):
        for kind in kinds:
            known = _runnable(kind)
            streams = [s for s in args.streams if s in known] if args.streams else None
            if args.streams and not streams:
                continue
            results, labels = run_kind(
                kind,
                args.n,
                args.seeds,
                streams,
                variants,
                args.das_only,
                args.cache,
                read_cache=not args.fresh,
                jobs=args.jobs,
            )
            secs.extend(sections(kind, results, labels, args.n, args.seeds))
    report = "\n".join(s.to_markdown() for s in secs)
    report += f"\n- Wall time {time.perf_counter() - t0:.0f} s.\n"
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(report)
    print(report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
