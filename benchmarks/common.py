"""Shared pieces of the benchmark suite: run sizes, result sections, streams, timers, RSS.

Every benchmark module exposes ``run(sizes: Sizes) -> list[Section]``; :mod:`benchmarks.__main__`
runs them and writes one markdown report. Timings use ``time.perf_counter`` and are the best of
``sizes.repeats`` runs (the machine may be shared), each repeat starting from a fresh model.
"""

from __future__ import annotations

import gc
import os
import platform
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import torch

__all__ = [
    "LAST_CPU_SECONDS",
    "PRESETS",
    "Section",
    "Sizes",
    "TorchMLP",
    "best_of",
    "fmt",
    "machine_description",
    "make_stream",
    "prequential",
    "rss_bytes",
    "selu_mlp",
    "setup_torch",
    "warm_up",
]


@dataclass(frozen=True)
class Sizes:
    """How long each benchmark runs (``full``: the documented numbers; ``smoke``: the test).

    Parameters
    ----------
    repeats
        Timed repeats per measurement; the best one is reported.
    throughput_n
        Samples of the prequential throughput run.
    sizing_n
        Samples of each grow/prune cost run.
    scaling_n
        Samples per scaling point.
    widths
        Hidden widths of the scaling sweep.
    features
        Feature counts of the scaling sweep.
    profile_n
        Samples profiled with cProfile per profiled configuration.
    memory_n
        Samples of the memory run.
    memory_points
        RSS samples taken along the memory run.
    minibatch_n
        Samples per mini-batch point.
    batch_sizes
        Batch sizes of the mini-batch sweep.
    gpu_steps
        Timed optimizer steps per GPU model.
    gpu_batch
        Batch size of the GPU benchmark.
    accuracy_n
        Samples per accuracy stream.
    accuracy_seeds
        Seeds per accuracy stream (mean and standard deviation reported).
    """

    repeats: int = 3
    throughput_n: int = 20_000
    sizing_n: int = 30_000
    scaling_n: int = 4_000
    widths: tuple[int, ...] = (10, 32, 100, 300, 1000)
    features: tuple[int, ...] = (10, 100, 300, 1000)
    profile_n: int = 5_000
    memory_n: int = 1_000_000
    memory_points: int = 20
    minibatch_n: int = 32_768
    batch_sizes: tuple[int, ...] = (32, 128, 512, 1024)
    gpu_steps: int = 300
    gpu_batch: int = 128
    accuracy_n: int = 20_000
    accuracy_seeds: int = 3


PRESETS: dict[str, Sizes] = {
    "full": Sizes(),
    "quick": Sizes(
        repeats=1,
        throughput_n=5_000,
        sizing_n=10_000,
        scaling_n=1_500,
        profile_n=2_000,
        memory_n=100_000,
        memory_points=10,
        minibatch_n=8_192,
        gpu_steps=100,
        accuracy_n=5_000,
        accuracy_seeds=2,
    ),
    "smoke": Sizes(
        repeats=1,
        throughput_n=300,
        sizing_n=1_200,
        scaling_n=100,
        widths=(10, 50),
        features=(10, 30),
        profile_n=100,
        memory_n=1_500,
        memory_points=3,
        minibatch_n=256,
        batch_sizes=(32, 64),
        gpu_steps=3,
        gpu_batch=8,
        accuracy_n=150,
        accuracy_seeds=1,
    ),
}


@dataclass
class Section:
    """One result table with its title and notes.

    >>> s = Section("demo", "Demo", ["a", "b"], [[1, 2.5]], notes=["a note"])
    >>> print(s.to_markdown())
    ### Demo
    <BLANKLINE>
    | a | b |
    |---|---|
    | 1 | 2.5 |
    <BLANKLINE>
    - a note
    <BLANKLINE>
    """

    key: str
    title: str
    headers: list[str]
    rows: list[list[Any]]
    notes: list[str] = field(default_factory=list)

    def to_markdown(self) -> str:
        lines = [f"### {self.title}", ""]
        if self.headers:
            lines.append("| " + " | ".join(self.headers) + " |")
            lines.append("|" + "|".join("---" for _ in self.headers) + "|")
            lines.extend("| " + " | ".join(fmt(v) for v in row) + " |" for row in self.rows)
            lines.append("")
        lines.extend(f"- {n}" for n in self.notes)
        lines.append("")
        return "\n".join(lines)


def fmt(value: Any) -> str:
    """Format a table cell: thousands separators for big numbers, 3 significant digits otherwise;
    ``|`` is escaped so it cannot break the markdown table.

    >>> fmt(23456.7), fmt(0.012345), fmt(3), fmt([1, 2])
    ('23,457', '0.0123', '3', '[1, 2]')
    >>> fmt("a | b") == "a " + chr(92) + "| b"
    True
    """
    if isinstance(value, bool) or value is None:
        return str(value)
    if isinstance(value, (int, np.integer)):
        return f"{int(value):,}"
    if isinstance(value, (float, np.floating)):
        v = float(value)
        if not np.isfinite(v):
            return str(v)
        if abs(v) >= 1000:
            return f"{v:,.0f}"
        return f"{v:.3g}"
    return str(value).replace("|", "\\|")


def setup_torch(threads: int = 1) -> None:
    """Single-threaded torch and NumPy BLAS, as documented (one core).

    NumPy's OpenBLAS would otherwise spread small matrix products over both cores; on a shared
    2-core machine that made a (32 x 70) @ (70 x 240) product 10x slower (204 us vs 20 us).
    """
    torch.set_num_threads(threads)
    import river.forest  # noqa: F401  (load the BLAS copies River's stack brings, so they are limited too)

    try:
        import scipy.linalg  # noqa: F401
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - threadpoolctl comes with scikit-learn
        os.environ.setdefault("OPENBLAS_NUM_THREADS", str(threads))
    else:
        threadpool_limits(threads)


def machine_description() -> str:
    """One line: CPU model, cores, Python, torch, River versions."""
    import river

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    blas = "?"
    try:
        from threadpoolctl import threadpool_info

        blas = ",".join(str(i["num_threads"]) for i in threadpool_info() if i["user_api"] == "blas")
    except ImportError:  # pragma: no cover
        pass
    return (
        f"{cpu}, {os.cpu_count()} cores, torch threads={torch.get_num_threads()}, "
        f"NumPy BLAS threads={blas}, "
        f"Python {platform.python_version()}, torch {torch.__version__}, River {river.__version__}"
    )


def rss_bytes() -> int:
    """Resident set size of this process (Linux ``/proc``; 0 where unavailable)."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def make_stream(name: str, seed: int = 42, n_features: int = 10) -> Iterator[tuple[dict, Any]]:
    """A River synthetic binary stream by name (lazy; ``take`` what you need).

    ``hyperplane`` (``n_features`` features, gradual drift), ``sea`` (3 features),
    ``agrawal`` (9 features), ``rbf`` (RandomRBFDrift, ``n_features`` features, 2 classes).

    >>> x, y = next(iter(make_stream("hyperplane", n_features=4)))
    >>> len(x), y in (0, 1)
    (4, True)
    """
    from river.datasets import synth

    if name == "hyperplane":
        return iter(
            synth.Hyperplane(
                seed=seed, n_features=n_features, n_drift_features=2, mag_change=0.001, noise_percentage=0.05
            )
        )
    if name == "sea":
        return iter(synth.SEA(seed=seed))
    if name == "agrawal":
        return iter(synth.Agrawal(seed=seed))
    if name == "rbf":
        return iter(
            synth.RandomRBFDrift(
                seed_model=seed,
                seed_sample=seed + 1,
                n_classes=2,
                n_features=n_features,
                n_centroids=50,
                change_speed=1e-4,
                n_drift_centroids=50,
            )
        )
    raise ValueError(f"unknown stream {name!r}")


def take(stream: Iterable[tuple[dict, Any]], n: int) -> list[tuple[dict, Any]]:
    """Materialise ``n`` samples of a stream (features copied into plain float dicts)."""
    out = []
    for i, (x, y) in enumerate(stream):
        if i >= n:
            break
        out.append(({k: float(v) for k, v in x.items()}, y))
    return out


#: CPU seconds of the last :func:`prequential` call (the wall time is what it returns). On a
#: shared machine CPU time is the better estimate of one dedicated core's speed.
LAST_CPU_SECONDS: list[float] = [0.0]


def prequential(model: Any, data: list[tuple[dict, Any]]) -> tuple[float, int]:
    """Predict-then-learn over ``data``; return (wall seconds, correct predictions).

    The process CPU time of the run is left in ``LAST_CPU_SECONDS[0]``.
    """
    correct = 0
    predict, learn = model.predict_one, model.learn_one
    c0 = time.process_time()
    t0 = time.perf_counter()
    for x, y in data:
        correct += predict(x) == y
        learn(x, y)
    wall = time.perf_counter() - t0
    LAST_CPU_SECONDS[0] = time.process_time() - c0
    return wall, int(correct)


def best_of(repeats: int, fn: Callable[[], float]) -> tuple[float, list[float]]:
    """Run ``fn`` (returning seconds) ``repeats`` times; return (best, all)."""
    times = []
    for _ in range(max(repeats, 1)):
        gc.collect()
        times.append(fn())
    return min(times), times


def warm_up() -> None:
    """Pay one-time costs (imports, first calls) before anything is timed. (The estimators
    already pay torch's optimizer import, ``torch._dynamo``, when constructed; benchmark 8
    measures what the first samples of a fresh process cost.)"""
    from streamdas import DASClassifier

    m = DASClassifier(hidden_sizes=(4,), batch_size=2, seed=0)
    for i in range(8):
        x = {"a": float(i % 3), "b": float(i % 2)}
        m.predict_one(x)
        m.learn_one(x, i % 2)
    mlp = TorchMLP(2, (4,), 2)
    mlp.predict_one({"a": 0.0, "b": 1.0})
    mlp.learn_one({"a": 0.0, "b": 1.0}, 1)


def selu_mlp(n_in: int, hidden_sizes: tuple[int, ...], n_out: int, seed: int) -> torch.nn.Sequential:
    """A static SELU MLP with LeCun-normal hidden weights and zero biases (the peers' MLP); the
    output layer has torch's default ranges (uniform within ``1/sqrt(fan_in)``). Every
    parameter is drawn from ``seed`` alone, never from torch's global generator, so one seed
    gives one network whatever ran before it in the process.

    >>> [m.weight.shape[0] for m in selu_mlp(3, (4, 5), 2, seed=0) if hasattr(m, "weight")]
    [4, 5, 2]
    >>> a, b = selu_mlp(3, (4,), 2, seed=0), (torch.rand(5), selu_mlp(3, (4,), 2, seed=0))[1]
    >>> all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
    True
    """
    g = torch.Generator().manual_seed(seed)
    layers: list[torch.nn.Module] = []
    fan = n_in
    for h in hidden_sizes:
        lin = torch.nn.Linear(fan, h)
        with torch.no_grad():
            lin.weight.normal_(0.0, fan**-0.5, generator=g)
            lin.bias.zero_()
        layers += [lin, torch.nn.SELU()]
        fan = h
    out = torch.nn.Linear(fan, n_out)
    bound = fan**-0.5
    with torch.no_grad():
        out.weight.uniform_(-bound, bound, generator=g)
        out.bias.uniform_(-bound, bound, generator=g)
    layers.append(out)
    return torch.nn.Sequential(*layers)


class TorchMLP:
    """A static torch MLP learning per sample: plain torch forward to predict, one Adam step per
    sample to learn (the naive baseline DAS's fast path is compared with).

    Features are read in the order of the first dict seen; labels are mapped to output units in
    order of appearance (``n_classes`` outputs reserved up front).

    >>> m = TorchMLP(2, (8,), 2, seed=0)
    >>> m.learn_one({"a": 1.0, "b": 0.0}, True)
    >>> m.predict_one({"a": 1.0, "b": 0.0})
    True
    """

    def __init__(
        self, n_features: int, hidden_sizes: tuple[int, ...], n_classes: int, lr: float = 1e-3, seed: int = 42
    ) -> None:
        self.net = selu_mlp(n_features, hidden_sizes, n_classes, seed)
        self.opt = torch.optim.Adam(self.net.parameters(), lr=lr)
        self.loss = torch.nn.CrossEntropyLoss()
        self.keys: list[Any] | None = None
        self.labels: list[Any] = []
        self.n_classes = n_classes

    def _x(self, x: dict) -> torch.Tensor:
        if self.keys is None:
            self.keys = list(x)
        return torch.tensor([[x.get(k, 0.0) for k in self.keys]], dtype=torch.float32)

    def predict_one(self, x: dict) -> Any:
        with torch.no_grad():
            out = self.net(self._x(x))
        if not self.labels:
            return None
        i = int(out[0, : len(self.labels)].argmax())
        return self.labels[i]

    def learn_one(self, x: dict, y: Any) -> None:
        if y not in self.labels and len(self.labels) < self.n_classes:
            self.labels.append(y)
        target = torch.tensor([self.labels.index(y)])
        self.opt.zero_grad(set_to_none=True)
        self.loss(self.net(self._x(x)), target).backward()
        self.opt.step()


def frames(data: list[tuple[dict, Any]], batch: int) -> list[tuple[pd.DataFrame, pd.Series]]:
    """Chunks of ``data`` as (DataFrame, Series) mini-batches, built before any timing."""
    out = []
    for s in range(0, len(data), batch):
        chunk = data[s : s + batch]
        X = pd.DataFrame([x for x, _ in chunk])
        y = pd.Series([y for _, y in chunk])
        out.append((X, y))
    return out
