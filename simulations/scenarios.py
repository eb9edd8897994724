"""Named, seeded drift scenarios with known drift positions.

Every scenario is a :class:`ScenarioStream`: an iterable of ``(x, y)`` pairs (``x`` a dict of
floats, as River expects) of a fixed length, plus the positions of its drifts. Iterating twice
gives the same samples (each pass rebuilds its generators from the seed).

Concept switching is done here, sample by sample, not by River's ``ConceptDriftStream`` (whose
sigmoid overflows for narrow transition windows): an abrupt drift at position ``p`` means sample
``p`` is the first one drawn from the new concept; a gradual drift of width ``w`` draws each sample
of ``[p - w/2, p + w/2)`` from the new concept with a probability rising linearly from 0 to 1.

>>> s = make_scenario("sea_abrupt", n_samples=1000, seed=1)
>>> [d.position for d in s.drifts]
[250, 500, 750]
>>> len(list(s)) == 1000 and list(s)[:3] == list(s)[:3]
True
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np
from river.datasets import synth

__all__ = [
    "SCENARIOS",
    "Drift",
    "ScenarioSpec",
    "ScenarioStream",
    "list_scenarios",
    "make_scenario",
]

Sample = tuple[dict[str, float], Any]
#: A concept factory: ``seed -> infinite iterator of samples``.
ConceptFactory = Callable[[int], Iterator[Sample]]


@dataclass(frozen=True)
class Drift:
    """One drift (or a burst's start/end) in a scenario.

    Parameters
    ----------
    position
        Sample index where the new concept starts (the centre of a gradual transition, the start
        of an incremental one).
    width
        Transition length in samples (1 for abrupt).
    kind
        ``abrupt``, ``gradual``, ``incremental``, ``noise_start``/``noise_end``, ``features``,
        ``classes`` or ``complexity``.
    label
        Short human description (``"2 -> 50 centroids"``).

    >>> Drift(100).kind
    'abrupt'
    """

    position: int
    width: int = 1
    kind: str = "abrupt"
    label: str = ""


@dataclass
class ScenarioStream:
    """A finite, reproducible stream of ``(x, y)`` pairs with known drifts.

    Parameters
    ----------
    name
        Catalog name.
    task
        ``"classification"`` or ``"regression"``.
    n_samples
        Length of the stream.
    seed
        Seed every pass is rebuilt from.
    drifts
        The drifts, in order of position.
    description
        One line for ``--list`` and reports.
    concept_at
        ``concept_at(i)`` is the index of the concept that sample ``i`` is (mostly) drawn from.
    factory
        ``factory(n_samples, seed)`` returns a fresh iterator over the samples.

    >>> s = make_scenario("recurring", n_samples=400, seed=0)
    >>> [s.concept_at(i) for i in (0, 100, 200, 300)]
    [0, 1, 0, 1]
    """

    name: str
    task: str
    n_samples: int
    seed: int
    drifts: list[Drift]
    description: str
    concept_at: Callable[[int], int]
    factory: Callable[[int, int], Iterator[Sample]] = field(repr=False)

    def __iter__(self) -> Iterator[Sample]:
        return itertools.islice(self.factory(self.n_samples, self.seed), self.n_samples)

    def __len__(self) -> int:
        return self.n_samples

    @property
    def drift_positions(self) -> list[int]:
        """Positions of the drifts (sample indices)."""
        return [d.position for d in self.drifts]


# ----------------------------------------------------------------------------- switching core
def _switching(
    concepts: list[ConceptFactory],
    schedule: list[int],
    boundaries: list[int],
    widths: list[int],
    n: int,
    seed: int,
) -> Iterator[Sample]:
    """Draw from ``concepts[schedule[k]]`` between ``boundaries[k-1]`` and ``boundaries[k]``.

    ``schedule`` has one more entry than ``boundaries``. A boundary of width > 1 is a linear
    gradual transition centred on it. Every concept has its own generator (seeded from ``seed``
    and its index), advanced only when it is drawn from; the choice of concept in a transition
    uses a separate generator, so the result depends on ``seed`` alone.
    """
    iters = [c(seed * 1009 + 17 * k + 1) for k, c in enumerate(concepts)]
    rng = np.random.default_rng(seed + 7_919)
    seg = 0
    for t in range(n):
        while seg < len(boundaries) and t >= boundaries[seg] + widths[seg] // 2:
            seg += 1
        cur = schedule[seg]
        if seg < len(boundaries) and widths[seg] > 1:
            lo = boundaries[seg] - widths[seg] // 2
            if t >= lo:
                p_new = (t - lo + 0.5) / widths[seg]
                if rng.random() < p_new:
                    cur = schedule[seg + 1]
        yield next(iters[cur])


def _concept_index(schedule: list[int], boundaries: list[int]) -> Callable[[int], int]:
    def concept_at(i: int) -> int:
        k = sum(1 for b in boundaries if i >= b)
        return schedule[k]

    return concept_at


def _river(make: Callable[[int], Any], keys: list[str] | None = None) -> ConceptFactory:
    """Wrap a River synthetic dataset constructor ``seed -> dataset`` as a concept factory.

    Feature names become strings (``"x0"``...) so every scenario has str keys.
    """

    def factory(seed: int) -> Iterator[Sample]:
        for x, y in make(seed):
            if isinstance(y, bool):
                y = int(y)
            yield {f"x{k}" if isinstance(k, int) else str(k): float(v) for k, v in x.items()}, y

    return factory


# ----------------------------------------------------------------------------- custom concepts
def _blobs(
    n_centroids: int,
    n_features: int,
    n_classes: int,
    std: float,
    model_seed: int,
    classes: list[int] | None = None,
) -> ConceptFactory:
    """Random RBF concept: centroids uniform in [0, 1]^d, each with a class; a sample is a
    centroid (uniformly chosen) plus Gaussian noise of standard deviation ``std``.

    Centroid ``k`` has class ``k % n_classes`` (after a seeded shuffle of the centroids), so every
    class owns about the same number of clusters. ``classes`` restricts which classes are drawn.
    """
    rng = np.random.default_rng(model_seed)
    centres = rng.random((n_centroids, n_features))
    labels = np.arange(n_centroids) % n_classes
    rng.shuffle(labels)
    allowed = np.arange(n_centroids) if classes is None else np.flatnonzero(np.isin(labels, classes))

    def factory(seed: int) -> Iterator[Sample]:
        r = np.random.default_rng(seed)
        while True:
            k = allowed[r.integers(len(allowed))]
            x = centres[k] + r.normal(0.0, std, n_features)
            yield {f"x{j}": float(v) for j, v in enumerate(x)}, int(labels[k])

    return factory


def _incremental_hyperplane(
    n: int, seed: int, start: int, width: int, n_features: int = 10, noise: float = 0.05
) -> Iterator[Sample]:
    """Rotating hyperplane: y = [w(t) . x > sum(w(t)) / 2], with w moving linearly from w_A to
    w_B during ``[start, start + width)`` (incremental drift), constant before and after."""
    model = np.random.default_rng(seed + 101)
    w_a, w_b = model.random(n_features), model.random(n_features)
    w_b[: n_features // 2] *= -1.0  # make B genuinely different from A
    r = np.random.default_rng(seed)
    for t in range(n):
        s = min(max((t - start) / width, 0.0), 1.0)
        w = (1.0 - s) * w_a + s * w_b
        x = r.random(n_features)
        y = int(x @ w > 0.5 * w.sum())
        if r.random() < noise:
            y = 1 - y
        yield {f"x{j}": float(v) for j, v in enumerate(x)}, y


def _label_noise(
    base: ConceptFactory, start: int, end: int, rate: float
) -> Callable[[int, int], Iterator[Sample]]:
    def factory(n: int, seed: int) -> Iterator[Sample]:
        r = np.random.default_rng(seed + 31)
        for t, (x, y) in enumerate(itertools.islice(base(seed), n)):
            if start <= t < end and r.random() < rate:
                y = 1 - y
            yield x, y

    return factory


def _features_shift(n: int, seed: int, p1: int, p2: int) -> Iterator[Sample]:
    """Features that appear and disappear.

    Phase A (``t < p1``): features ``x0..x3``; the label depends on ``x0..x3``.
    Phase B (``p1 <= t < p2``): ``x2, x3`` disappear (absent from the dict), new features
    ``x4, x5`` appear and carry their part of the signal.
    Phase C (``t >= p2``): back to phase A's features and concept.
    """
    model = np.random.default_rng(seed + 202)
    w = model.normal(0, 1, 6)
    r = np.random.default_rng(seed)
    for t in range(n):
        v = r.normal(0, 1, 6)
        keys = (0, 1, 4, 5) if p1 <= t < p2 else (0, 1, 2, 3)
        score = sum(w[k] * v[k] for k in keys) + 0.5 * v[keys[0]] * v[keys[2]]
        yield {f"x{k}": float(v[k]) for k in keys}, int(score > 0)


# ----------------------------------------------------------------------------- the catalog
@dataclass(frozen=True)
class ScenarioSpec:
    """Catalog entry: how to build a scenario of any length and seed.

    ``build(n_samples, seed)`` returns the :class:`ScenarioStream`.

    >>> SCENARIOS["complexity"].task
    'classification'
    """

    name: str
    task: str
    description: str
    default_length: int
    build: Callable[[int, int], ScenarioStream]


def _switch_scenario(
    name: str,
    description: str,
    concepts: list[ConceptFactory],
    schedule: list[int],
    fractions: list[float],
    width_fraction: float,
    kind: str,
    labels: list[str],
    task: str = "classification",
) -> Callable[[int, int], ScenarioStream]:
    def build(n: int, seed: int) -> ScenarioStream:
        bounds = [round(f * n) for f in fractions]
        width = max(int(width_fraction * n), 1)
        widths = [width] * len(bounds)
        drifts = [
            Drift(b, width, kind if width > 1 else "abrupt", lab)
            for b, lab in zip(bounds, labels, strict=True)
        ]
        return ScenarioStream(
            name=name,
            task=task,
            n_samples=n,
            seed=seed,
            drifts=drifts,
            description=description,
            concept_at=_concept_index(schedule, bounds),
            factory=lambda n_, s_: _switching(concepts, schedule, bounds, widths, n_, s_),
        )

    return build


def _sea(variant: int) -> ConceptFactory:
    return _river(lambda s: synth.SEA(variant=variant, noise=0.05, seed=s))


def _agrawal(fn: int) -> ConceptFactory:
    return _river(lambda s: synth.Agrawal(classification_function=fn, seed=s))


def _rbf(model_seed: int) -> ConceptFactory:
    return _river(
        lambda s: synth.RandomRBF(
            seed_model=model_seed, seed_sample=s, n_classes=3, n_features=6, n_centroids=8
        )
    )


#: Centroid count of the complexity scenario's easy and hard concepts, its features and noise.
class Complexity(NamedTuple):
    """The complexity scenario's two concepts: blobs per class, easy then hard."""

    easy: int = 2
    hard: int = 16
    n_features: int = 2
    n_classes: int = 2
    std: float = 0.03


COMPLEXITY = Complexity()


def _complexity(n: int, seed: int) -> ScenarioStream:
    c = COMPLEXITY
    easy = _blobs(c.easy, c.n_features, c.n_classes, 0.08, model_seed=seed + 11)
    hard = _blobs(c.hard, c.n_features, c.n_classes, c.std, model_seed=seed + 13)
    bounds = [n // 3, 2 * n // 3]
    return ScenarioStream(
        name="complexity",
        task="classification",
        n_samples=n,
        seed=seed,
        drifts=[
            Drift(bounds[0], 1, "complexity", f"{c.easy} -> {c.hard} centroids"),
            Drift(bounds[1], 1, "complexity", f"{c.hard} -> {c.easy} centroids"),
        ],
        description=(
            f"RBF blobs in {c.n_features}-D: {c.easy} -> {c.hard} -> {c.easy} "
            "centroids at 1/3 and 2/3 (DAS should grow, then shrink)"
        ),
        concept_at=_concept_index([0, 1, 0], bounds),
        factory=lambda n_, s_: _switching([easy, hard], [0, 1, 0], bounds, [1, 1], n_, s_),
    )


def _incremental(n: int, seed: int) -> ScenarioStream:
    start, width = n // 3, n // 3
    return ScenarioStream(
        name="hyperplane_incremental",
        task="classification",
        n_samples=n,
        seed=seed,
        drifts=[Drift(start, width, "incremental", "hyperplane rotates A -> B")],
        description="rotating hyperplane (10 features): w moves linearly A -> B over [1/3, 2/3)",
        concept_at=lambda i: 0 if i < start + width // 2 else 1,
        factory=lambda n_, s_: _incremental_hyperplane(n_, s_, start, width),
    )


def _noise_burst(n: int, seed: int) -> ScenarioStream:
    start, end = int(0.4 * n), int(0.6 * n)
    return ScenarioStream(
        name="label_noise",
        task="classification",
        n_samples=n,
        seed=seed,
        drifts=[
            Drift(start, 1, "noise_start", "30% labels flipped"),
            Drift(end, 1, "noise_end", "noise ends"),
        ],
        description="SEA(0) with 30% of labels flipped in [0.4, 0.6) of the stream",
        concept_at=lambda i: 1 if start <= i < end else 0,
        factory=_label_noise(_sea(0), start, end, 0.30),
    )


def _features(n: int, seed: int) -> ScenarioStream:
    p1, p2 = n // 3, 2 * n // 3
    return ScenarioStream(
        name="features",
        task="classification",
        n_samples=n,
        seed=seed,
        drifts=[
            Drift(p1, 1, "features", "x2,x3 vanish; x4,x5 appear"),
            Drift(p2, 1, "features", "x4,x5 vanish; x2,x3 return"),
        ],
        description="features x2,x3 disappear and x4,x5 appear in [1/3, 2/3), then back",
        concept_at=lambda i: 1 if p1 <= i < p2 else 0,
        factory=lambda n_, s_: _features_shift(n_, s_, p1, p2),
    )


def _classes(n: int, seed: int) -> ScenarioStream:
    both = _blobs(12, 4, 4, 0.06, model_seed=seed + 5, classes=[0, 1])
    four = _blobs(12, 4, 4, 0.06, model_seed=seed + 5)
    bounds = [n // 2]
    return ScenarioStream(
        name="classes",
        task="classification",
        n_samples=n,
        seed=seed,
        drifts=[Drift(bounds[0], 1, "classes", "classes 2, 3 appear")],
        description="RBF blobs (4-D, 12 centroids): classes {0,1}, then {0,1,2,3} from 1/2",
        concept_at=_concept_index([0, 1], bounds),
        factory=lambda n_, s_: _switching([both, four], [0, 1], bounds, [1], n_, s_),
    )


def _friedman(n: int, seed: int) -> ScenarioStream:
    bounds = (n // 3, 2 * n // 3)

    def factory(n_: int, s_: int) -> Iterator[Sample]:
        ds = synth.FriedmanDrift(drift_type="gra", position=bounds, seed=s_)
        yield from _river(lambda _s: ds)(s_)

    return ScenarioStream(
        name="friedman",
        task="regression",
        n_samples=n,
        seed=seed,
        drifts=[
            Drift(bounds[0], 1, "abrupt", "global recurring drift (swap features)"),
            Drift(bounds[1], 1, "abrupt", "back to the first concept"),
        ],
        description="Friedman #1 regression with global recurring abrupt drift at 1/3 and 2/3",
        concept_at=_concept_index([0, 1, 0], list(bounds)),
        factory=factory,
    )


def _spec(name: str, task: str, description: str, length: int, build: Callable) -> ScenarioSpec:
    return ScenarioSpec(name, task, description, length, build)


_B = _switch_scenario
SCENARIOS: dict[str, ScenarioSpec] = {
    s.name: s
    for s in [
        _spec(
            "complexity",
            "classification",
            "RBF blobs 2 -> 16 -> 2 centroids (DAS grows, then shrinks)",
            30_000,
            _complexity,
        ),
        _spec(
            "sea_abrupt",
            "classification",
            "SEA 0 -> 1 -> 2 -> 3, abrupt at 1/4, 1/2, 3/4",
            20_000,
            _B(
                "sea_abrupt",
                "SEA variants 0 -> 1 -> 2 -> 3, abrupt at 1/4, 1/2, 3/4",
                [_sea(v) for v in range(4)],
                [0, 1, 2, 3],
                [0.25, 0.5, 0.75],
                0.0,
                "abrupt",
                ["SEA 0->1", "SEA 1->2", "SEA 2->3"],
            ),
        ),
        _spec(
            "sea_gradual",
            "classification",
            "SEA 0 -> 3, gradual over 10% of the stream",
            20_000,
            _B(
                "sea_gradual",
                "SEA variant 0 -> 3, gradual (linear) over 10% centred at 1/2",
                [_sea(0), _sea(3)],
                [0, 1],
                [0.5],
                0.1,
                "gradual",
                ["SEA 0->3"],
            ),
        ),
        _spec(
            "agrawal_abrupt",
            "classification",
            "Agrawal functions 1 -> 4 -> 7, abrupt",
            20_000,
            _B(
                "agrawal_abrupt",
                "Agrawal functions 1 -> 4 -> 7, abrupt at 1/3 and 2/3",
                [_agrawal(1), _agrawal(4), _agrawal(7)],
                [0, 1, 2],
                [1 / 3, 2 / 3],
                0.0,
                "abrupt",
                ["Agrawal 1->4", "Agrawal 4->7"],
            ),
        ),
        _spec(
            "agrawal_gradual",
            "classification",
            "Agrawal function 0 -> 2, gradual over 20%",
            20_000,
            _B(
                "agrawal_gradual",
                "Agrawal function 0 -> 2, gradual over 20% centred at 1/2",
                [_agrawal(0), _agrawal(2)],
                [0, 1],
                [0.5],
                0.2,
                "gradual",
                ["Agrawal 0->2"],
            ),
        ),
        _spec(
            "rbf_abrupt",
            "classification",
            "RandomRBF model A -> model B, abrupt at 1/2",
            20_000,
            _B(
                "rbf_abrupt",
                "River RandomRBF (6-D, 8 centroids, 3 classes): A -> B at 1/2",
                [_rbf(1), _rbf(2)],
                [0, 1],
                [0.5],
                0.0,
                "abrupt",
                ["RBF A->B"],
            ),
        ),
        _spec(
            "hyperplane_incremental",
            "classification",
            "rotating hyperplane, incremental drift over [1/3, 2/3)",
            20_000,
            _incremental,
        ),
        _spec(
            "recurring",
            "classification",
            "SEA 0, 3, 0, 3 (recurring concepts A, B, A, B)",
            20_000,
            _B(
                "recurring",
                "recurring concepts SEA 0, 3, 0, 3 (A, B, A, B) at 1/4, 1/2, 3/4",
                [_sea(0), _sea(3)],
                [0, 1, 0, 1],
                [0.25, 0.5, 0.75],
                0.0,
                "abrupt",
                ["A->B", "B->A", "A->B"],
            ),
        ),
        _spec(
            "features",
            "classification",
            "features x2,x3 disappear, x4,x5 appear, then back",
            20_000,
            _features,
        ),
        _spec("classes", "classification", "classes 2 and 3 appear at 1/2", 20_000, _classes),
        _spec(
            "label_noise", "classification", "burst of 30% label noise in [0.4, 0.6)", 20_000, _noise_burst
        ),
        _spec(
            "friedman", "regression", "Friedman #1 with global abrupt drift (DASRegressor)", 20_000, _friedman
        ),
    ]
}


def make_scenario(name: str, n_samples: int | None = None, seed: int = 42) -> ScenarioStream:
    """Build a catalog scenario by name.

    Parameters
    ----------
    name
        A key of :data:`SCENARIOS`.
    n_samples
        Stream length (the scenario's default if None); drift positions scale with it.
    seed
        Seed; the same seed gives the same stream.

    >>> s = make_scenario("complexity", n_samples=300, seed=3)
    >>> s.drift_positions, s.concept_at(150)
    ([100, 200], 1)
    """
    if name not in SCENARIOS:
        raise KeyError(f"unknown scenario {name!r}; choose one of {sorted(SCENARIOS)}")
    spec = SCENARIOS[name]
    n = spec.default_length if n_samples is None else int(n_samples)
    if n < 10:
        raise ValueError("n_samples must be at least 10")
    return spec.build(n, int(seed))


def list_scenarios() -> list[tuple[str, str, str, int]]:
    """``(name, task, description, default length)`` for every scenario.

    >>> any(row[0] == "friedman" and row[1] == "regression" for row in list_scenarios())
    True
    """
    return [(s.name, s.task, s.description, s.default_length) for s in SCENARIOS.values()]
