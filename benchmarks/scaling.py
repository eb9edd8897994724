"""Benchmark 3: throughput as hidden width (10..1,000) and features (10..1,000) grow, and where
the time goes (cProfile).

The sweeps hold the shape fixed (``grow=False, prune=False``; the weighted-L1 regularizer stays
on, so each step costs what a DAS step costs between two sizing cycles). The profile runs the
default DASClassifier (sizing on) on the 10-feature stream and, for contrast, a fixed 1,000-wide net.

    python -m benchmarks --only scaling
"""

from __future__ import annotations

import cProfile
import pstats
from typing import Any

from benchmarks import common
from benchmarks.common import Section, Sizes, best_of, make_stream, prequential, take

__all__ = ["profile_components", "run"]

#: (label, file suffix, function name): cumulative time of these entry points.
COMPONENTS: list[tuple[str, str, str]] = [
    ("predict_one total", "streamdas/estimators.py", "predict_one"),
    ("  dict -> standardized vector (_predict_input)", "streamdas/estimators.py", "_predict_input"),
    ("  NumPy forward (NumpyForward.__call__)", "streamdas/fastpath.py", "__call__"),
    ("  network and vote mixed (mixed_label)", "streamdas/mixture.py", "mixed_label"),
    ("dict validation, memoised (FeatureIndex.values; predict and learn)", "streamdas/features.py", "values"),
    ("learn_one total", "streamdas/estimators.py", "learn_one"),
    ("  dict -> vector (_learn_vector)", "streamdas/estimators.py", "_learn_vector"),
    ("  minibatch assembly and statistics (_flush)", "streamdas/estimators.py", "_flush"),
    ("    running statistics update", "streamdas/features.py", "update"),
    (
        "    both experts scored, batch kept in the memory (score_and_keep)",
        "streamdas/mixture.py",
        "score_and_keep",
    ),
    ("    DASTrainer.step", "streamdas/trainer.py", "step"),
    ("      optimizer step (optimizer_step)", "streamdas/trainer.py", "optimizer_step"),
    ("        NumPy loss + gradients (NumpyBackprop.__call__)", "streamdas/backprop.py", "__call__"),
    ("        regularizer gradient (add_grad_arrays)", "streamdas/regularizers.py", "add_grad_arrays"),
    ("        Adam update (NumpyAdam.step)", "streamdas/adam.py", "step"),
    ("        running averages (update_averages)", "streamdas/sizing.py", "update_averages"),
    ("        autograd fallback (DASNet.forward)", "streamdas/model.py", "forward"),
    ("        torch optimizer fallback (Optimizer.step)", "torch/optim/optimizer.py", "wrapper"),
    ("      grow", "streamdas/trainer.py", "grow"),
    ("      prune", "streamdas/trainer.py", "prune"),
]


def profile_components(
    model: Any, data: list[tuple[dict, Any]], top: int = 8
) -> tuple[list[list[Any]], list[list[Any]], float]:
    """Profile a prequential run; return (component rows, top-``top`` by own time, total s)."""
    prof = cProfile.Profile()
    prof.enable()
    prequential(model, data)
    prof.disable()
    stats = pstats.Stats(prof)
    raw: dict[tuple[str, int, str], tuple[Any, ...]] = stats.stats  # type: ignore[attr-defined]
    total = max((v[3] for k, v in raw.items() if k[2] == "prequential"), default=0.0)
    rows: list[list[Any]] = []
    for label, suffix, func in COMPONENTS:
        cum = sum(v[3] for k, v in raw.items() if k[0].endswith(suffix) and k[2] == func)
        calls = sum(v[1] for k, v in raw.items() if k[0].endswith(suffix) and k[2] == func)
        rows.append([label, calls, cum, 100 * cum / total if total else 0.0, 1e6 * cum / max(len(data), 1)])
    own = sorted(raw.items(), key=lambda kv: -kv[1][2])[:top]
    top_rows = [
        [f"{_short(k[0])}:{k[1]}({k[2]})", v[1], v[2], 100 * v[2] / total if total else 0.0] for k, v in own
    ]
    return rows, top_rows, total


def _short(path: str) -> str:
    """``.../site-packages/torch/x.py`` -> ``torch/x.py``; ``/any/repo/streamdas/x.py`` -> ``streamdas/x.py``.

    >>> _short("/a/b/site-packages/torch/x.py"), _short("/tmp/repo/streamdas/fastpath.py")
    ('torch/x.py', 'streamdas/fastpath.py')
    """
    if "site-packages/" in path:
        return path.split("site-packages/", 1)[1]
    for marker in ("/streamdas/", "/benchmarks/"):
        if marker in path:
            return marker[1:] + path.rsplit(marker, 1)[1]
    return path


def run(sizes: Sizes) -> list[Section]:
    from streamdas import DASClassifier

    sections: list[Section] = []
    data10 = take(make_stream("hyperplane", n_features=10), sizes.scaling_n)
    rows: list[list[Any]] = []
    points = [("width", (w, w), 10) for w in sizes.widths]
    points += [("features", (32, 32), d) for d in sizes.features]
    for sweep, hidden, d in points:
        data = data10 if d == 10 else take(make_stream("hyperplane", n_features=d), sizes.scaling_n)
        cpu: list[float] = []

        def once(
            hidden: tuple[int, int] = hidden, data: list[tuple[dict, Any]] = data, cpu: list[float] = cpu
        ) -> float:
            model = DASClassifier(hidden_sizes=hidden, grow=False, prune=False, seed=42)
            wall = prequential(model, data)[0]
            cpu.append(common.LAST_CPU_SECONDS[0])
            return wall

        best, _ = best_of(sizes.repeats, once)
        n = len(data)
        rows.append([sweep, str(hidden), d, n / best, n / min(cpu), 1e6 * min(cpu) / n])
    sections.append(
        Section(
            "scaling",
            "3a. Scaling: prequential throughput vs hidden width and number of features",
            [
                "sweep",
                "hidden sizes",
                "features",
                "samples/s (wall, best)",
                "samples/s (CPU)",
                "CPU us/sample",
            ],
            rows,
            [
                f"{sizes.scaling_n:,} samples of Hyperplane per point, fixed shape (grow=False, prune=False, "
                f"weighted L1 on), batch_size=16, best of {sizes.repeats}."
            ],
        )
    )

    profile_data = take(make_stream("hyperplane", n_features=10), sizes.profile_n)
    for label, factory in [
        ("DASClassifier() defaults, 10 features", lambda: DASClassifier(seed=42)),
        (
            f"fixed ({max(sizes.widths)}, {max(sizes.widths)}), 10 features",
            lambda: DASClassifier(hidden_sizes=(max(sizes.widths),) * 2, grow=False, prune=False, seed=42),
        ),
    ]:
        model = factory()
        comp, top, total = profile_components(model, profile_data)
        sections.append(
            Section(
                "profile",
                f"3b. Where the time goes: {label}",
                ["component (cumulative, nested)", "calls", "s", "% of run", "us/sample"],
                comp,
                [
                    f"cProfile of {len(profile_data):,} prequential samples, {total:.2f} s under the "
                    f"profiler (profiling inflates Python-level costs); final sizes {model.layer_sizes}.",
                    "Top functions by own time: "
                    + "; ".join(f"`{r[0]}` {r[3]:.0f}% ({r[1]:,} calls)" for r in top)
                    + ".",
                ],
            )
        )
    return sections
