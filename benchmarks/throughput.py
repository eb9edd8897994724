"""Benchmark 1: prequential predict-then-learn throughput on one pre-materialised stream.

DASClassifier with default settings against River's LogisticRegression,
HoeffdingAdaptiveTreeClassifier, ARFClassifier, and a per-sample static torch MLP (plain torch
forward per sample, one Adam step per sample) of DAS's initial size and of DAS's final size,
all on the same 10-feature binary Hyperplane stream, in the same process.

Benchmark 1b runs the learners inside River's own prequential loop,
``river.evaluate.progressive_val_score`` (its metric update included), on SEA: what a River
evaluation pipeline sees. DAS with defaults has a target of 20,000 samples/s there, with River's
LogisticRegression behind a StandardScaler measured in the same run beside it.

    python -m benchmarks --only throughput
"""

from __future__ import annotations

from typing import Any

from benchmarks import common
from benchmarks.common import Section, Sizes, TorchMLP, best_of, make_stream, prequential, take

__all__ = ["run"]


def _baselines(final_sizes: tuple[int, ...]) -> dict[str, Any]:
    from river import forest, linear_model, tree

    return {
        "river LogisticRegression": lambda: linear_model.LogisticRegression(),
        "river HoeffdingAdaptiveTree": lambda: tree.HoeffdingAdaptiveTreeClassifier(seed=42),
        "river ARFClassifier": lambda: forest.ARFClassifier(seed=42),
        "torch MLP per sample (32, 32)": lambda: TorchMLP(10, (32, 32), 2),
        f"torch MLP per sample {final_sizes} (DAS final)": lambda: TorchMLP(10, final_sizes, 2),
    }


def _measure(
    factory: Any, data: list[tuple[dict, Any]], repeats: int
) -> tuple[float, float, float, Any, int]:
    """Best and worst wall seconds and best CPU seconds of a fresh prequential run, the last model
    and its correct count."""
    last: dict[str, Any] = {}
    cpu: list[float] = []

    def once() -> float:
        model = factory()
        seconds, correct = prequential(model, data)
        cpu.append(common.LAST_CPU_SECONDS[0])
        last.update(model=model, correct=correct)
        return seconds

    best, times = best_of(repeats, once)
    return best, max(times), min(cpu), last["model"], last["correct"]


DAS_NAME = "DASClassifier() (defaults)"
#: The columns both tables start with.
RATE_HEADERS = (
    "learner",
    "samples/s (best)",
    "samples/s (worst)",
    "samples/s (CPU)",
    "us/sample (best)",
    "accuracy",
)


def run(sizes: Sizes) -> list[Section]:
    from streamdas import DASClassifier

    data = take(make_stream("hyperplane", n_features=10), sizes.throughput_n)
    n = len(data)
    rows: list[list[Any]] = []
    results: dict[str, float] = {}
    best, worst, cpu, das_model, correct = _measure(lambda: DASClassifier(seed=42), data, sizes.repeats)
    final_sizes = tuple(int(h) for h in das_model.layer_sizes)
    rows.append([DAS_NAME, n / best, n / worst, n / cpu, best / n * 1e6, correct / n, str(list(final_sizes))])
    results[DAS_NAME] = n / best
    cpu_rates = {DAS_NAME: n / cpu}
    for name, factory in _baselines(final_sizes).items():
        best, worst, cpu, _model, correct = _measure(factory, data, sizes.repeats)
        results[name] = n / best
        cpu_rates[name] = n / cpu
        rows.append([name, n / best, n / worst, n / cpu, best / n * 1e6, correct / n, ""])
    das = results[DAS_NAME]
    for row in rows:
        row.append(das / results[row[0]])
    mlp_name = next(k for k in results if k.endswith("(DAS final)"))
    mlp_final = results[mlp_name]
    notes = [
        f"{n:,} samples of Hyperplane(n_features=10, n_drift_features=2, mag_change=0.001, noise 5%), "
        f"materialised as a list of dicts before timing; each repeat starts from a fresh model; "
        f"best of {sizes.repeats} repeats (worst shown too: the machine is shared).",
        "Targets: DAS >= 20,000 samples/s with defaults on one core, and >= 10x the per-sample torch "
        "MLP of the same size.",
        f"DAS: {das:,.0f} samples/s = {das / 20_000:.2f}x the 20,000/s target; "
        f"{das / mlp_final:.1f}x the per-sample torch MLP of its final size {final_sizes}. By CPU time: "
        f"{cpu_rates[DAS_NAME]:,.0f} samples/s = {cpu_rates[DAS_NAME] / 20_000:.2f}x the target, "
        f"{cpu_rates[DAS_NAME] / cpu_rates[mlp_name]:.1f}x the MLP.",
        "samples/s (CPU) = samples / process CPU seconds of the best run: what one dedicated core would "
        "give when other processes compete for the cores (wall-clock columns include that contention).",
        "The torch MLP gets the raw features (no standardization) and one Adam step per sample.",
    ]
    headers = [*RATE_HEADERS, "final hidden sizes", "DAS speed / this"]
    return [
        Section("throughput", "1. Prequential throughput (predict_one then learn_one)", headers, rows, notes),
        river_loop(sizes),
    ]


#: The target of DAS's rate in River's own loop, with defaults (issue 22).
RIVER_LOOP_TARGET = 20_000


def _river_loop_learners(variants: tuple[dict[str, Any], ...] = ()) -> dict[str, Any]:
    from river import linear_model, preprocessing, tree

    from streamdas import DASClassifier

    def das(overrides: dict[str, Any]) -> Any:
        return lambda: DASClassifier(seed=42, **overrides)

    named = {
        f"DASClassifier({', '.join(f'{k}={value!r}' for k, value in overrides.items())})": das(overrides)
        for overrides in variants
    }
    return {
        DAS_NAME: lambda: DASClassifier(seed=42),
        **named,
        "river StandardScaler | LogisticRegression": lambda: (
            preprocessing.StandardScaler() | linear_model.LogisticRegression()
        ),
        "river HoeffdingAdaptiveTree": lambda: tree.HoeffdingAdaptiveTreeClassifier(seed=42),
    }


def river_loop(sizes: Sizes, variants: tuple[dict[str, Any], ...] = ()) -> Section:
    """Benchmark 1b: each learner in ``evaluate.progressive_val_score`` on SEA, best of
    ``sizes.repeats`` fresh runs, wall and CPU time; ``variants``: DASClassifier settings
    measured beside the defaults (``python -m benchmarks.throughput --das KEY=VALUE,...``)."""
    import time

    from river import datasets, evaluate, metrics

    data = take(datasets.synth.SEA(seed=42, noise=0.1), sizes.throughput_n)
    n = len(data)
    rows: list[list[Any]] = []
    for name, factory in _river_loop_learners(variants).items():
        cpu: list[float] = []
        score: list[float] = []

        def once(factory: Any = factory, cpu: list[float] = cpu, score: list[float] = score) -> float:
            model, metric = factory(), metrics.Accuracy()
            c0, t0 = time.process_time(), time.perf_counter()
            evaluate.progressive_val_score(data, model, metric)
            wall = time.perf_counter() - t0
            cpu.append(time.process_time() - c0)
            score.append(metric.get())
            return wall

        best, times = best_of(sizes.repeats, once)
        rows.append([name, n / best, n / max(times), n / min(cpu), best / n * 1e6, score[-1]])
    das = rows[0]
    met = "met" if das[1] >= RIVER_LOOP_TARGET else "NOT met"
    notes = [
        f"{n:,} samples of SEA(seed=42, noise=0.1), materialised as a list of dicts; "
        "`evaluate.progressive_val_score(data, model, metrics.Accuracy())`, River's own predict, "
        f"update-the-metric, learn loop; best of {sizes.repeats} fresh runs (worst shown too).",
        f"Target: DAS with defaults >= {RIVER_LOOP_TARGET:,} samples/s in this loop on one core: "
        f"{das[1]:,.0f} ({met}, {das[1] / RIVER_LOOP_TARGET:.2f}x); by CPU time {das[3]:,.0f}.",
    ]
    headers = list(RATE_HEADERS)
    return Section(
        "river_loop", "1b. River's own loop (evaluate.progressive_val_score), SEA", headers, rows, notes
    )


def main(argv: list[str] | None = None) -> int:
    """``python -m benchmarks.throughput --das KEY=VALUE,... [--das ...]``: benchmark 1b alone,
    with each DASClassifier setting beside the defaults, printed as markdown."""
    import argparse

    from benchmarks.accuracy import parse_overrides
    from streamdas.threads import limit_threads

    parser = argparse.ArgumentParser(prog="python -m benchmarks.throughput", description=main.__doc__)
    parser.add_argument("--das", action="append", default=[], type=parse_overrides, help="a setting")
    parser.add_argument("--smoke", action="store_true", help="tiny runs that only check it works")
    args = parser.parse_args(argv)
    with limit_threads(1):
        print(river_loop(common.PRESETS["smoke" if args.smoke else "full"], tuple(args.das)).to_markdown())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
