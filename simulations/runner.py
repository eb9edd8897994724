"""Prequential (test-then-train) comparison of several learners in one pass over one stream.

For every sample, every learner first predicts, the prediction is scored, then the learner learns
the sample. Every ``eval_every`` samples one row per learner is recorded: rolling and cumulative
metrics, and for the DAS-based learners the hidden widths and parameter count.

>>> import tempfile
>>> cfg = RunConfig("sea_abrupt", n_samples=400, learners=("hat", "logreg"), window=100,
...                 output=tempfile.mkdtemp(), progress=False, plots=False)
>>> res = run_simulation(cfg)
>>> sorted(res.summary["learners"])
['hat', 'logreg']
"""

from __future__ import annotations

import itertools
import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
from river import metrics, utils
from tqdm.auto import tqdm

from simulations.learners import LEARNERS, das_core, make_learner
from simulations.scenarios import ScenarioStream, make_scenario

__all__ = ["DEFAULT_LEARNERS", "RunConfig", "RunResult", "run_simulation"]

DEFAULT_LEARNERS: dict[str, tuple[str, ...]] = {
    "classification": ("das", "static_mlp", "static_wl1", "arf", "hat", "logreg"),
    "regression": ("das", "static_mlp", "static_wl1", "arf", "hat", "linreg"),
}


@dataclass
class RunConfig:
    """What to simulate.

    Parameters
    ----------
    scenario
        Catalog name (see ``python -m simulations --list``).
    n_samples
        Stream length; None for the scenario's default.
    seed
        Seed of the stream and of every learner.
    learners
        Learner names (see :mod:`simulations.learners`); None for all of the task's learners.
    window
        Size of the rolling metric windows (samples).
    eval_every
        Record a row every this many samples; None for ``n_samples // 200`` (at least 1).
    output
        Results folder (created).
    progress
        Show a tqdm progress bar.
    plots
        Write the PNG plots.
    das_kwargs
        Extra constructor arguments for the DAS-based learners.
    threads
        torch intra-op threads during the run (1 by default: the networks are small, and more
        threads only contend); None leaves torch's setting alone.

    >>> RunConfig("complexity").window
    1000
    """

    scenario: str = "complexity"
    n_samples: int | None = None
    seed: int = 42
    learners: tuple[str, ...] | None = None
    window: int = 1000
    eval_every: int | None = None
    output: str | Path = "results"
    progress: bool = True
    plots: bool = True
    das_kwargs: dict[str, Any] = field(default_factory=dict)
    threads: int | None = 1


@dataclass
class RunResult:
    """Where the results went, plus the summary (also written as ``summary.json``)."""

    output: Path
    files: dict[str, Path]
    summary: dict[str, Any]
    rows: pd.DataFrame
    events: pd.DataFrame


class _Tracker:
    """Metrics of one learner."""

    def __init__(self, task: str, window: int) -> None:
        self.task = task
        if task == "classification":
            self.rolling = {
                "accuracy": utils.Rolling(metrics.Accuracy, window_size=window),
                "kappa": utils.Rolling(metrics.CohenKappa, window_size=window),
            }
            self.cumulative = {"accuracy": metrics.Accuracy(), "kappa": metrics.CohenKappa()}
        else:
            self.rolling = {
                "mae": utils.Rolling(metrics.MAE, window_size=window),
                "rmse": utils.Rolling(metrics.RMSE, window_size=window),
            }
            self.cumulative = {"mae": metrics.MAE(), "rmse": metrics.RMSE()}
        self.predict_s = 0.0
        self.learn_s = 0.0

    def update(self, y: Any, y_pred: Any) -> None:
        if y_pred is None:  # nothing learned yet: count as a miss / as predicting 0
            y_pred = 0.0 if self.task == "regression" else _MISS
        for m in (*self.rolling.values(), *self.cumulative.values()):
            m.update(y, y_pred)

    def row(self) -> dict[str, float]:
        out = {f"{k}_rolling": float(m.get()) for k, m in self.rolling.items()}
        out.update({f"{k}_cumulative": float(m.get()) for k, m in self.cumulative.items()})
        return out


_MISS = "__no_prediction__"


def _shape(model: Any) -> dict[str, Any]:
    core = das_core(model)
    if core is None:
        return {}
    current = [int(s) for s in core.layer_sizes]
    sizes = effective_sizes(core)
    return {
        "current_sizes": "|".join(map(str, current)),
        "total_units": sum(sizes),
        "n_parameters": int(core.n_parameters),
        **{f"units_l{i}": s for i, s in enumerate(sizes)},
        **{f"now_l{i}": s for i, s in enumerate(current)},
    }


def effective_sizes(core: Any) -> list[int]:
    """Hidden widths after the latest pruning (what the network kept); before any pruning, the
    initial widths; for a network without a size history, the current widths.

    Between sizing cycles a DAS network also holds the units grown at the last cycle, tiny and
    mostly pruned at the next one; the widths after pruning are its effective size.

    >>> class Fake:
    ...     layer_sizes = [40, 40]
    ...     size_history = [{"event": "prune", "sizes": [20, 25]}, {"event": "grow", "sizes": [40, 40]}]
    >>> effective_sizes(Fake())
    [20, 25]
    """
    for ev in reversed(getattr(core, "size_history", [])):
        if ev.get("event") in ("prune", "init"):
            return [int(v) for v in ev["sizes"]]
    return [int(v) for v in core.layer_sizes]


def _segments(stream: ScenarioStream) -> list[tuple[int, int]]:
    cuts = [0, *stream.drift_positions, stream.n_samples]
    return [(a, b) for a, b in itertools.pairwise(cuts) if b > a]


def _segment_stats(rows: pd.DataFrame, stream: ScenarioStream, metric: str) -> list[dict]:
    out = []
    for a, b in _segments(stream):
        part = rows[(rows["n_samples"] > a) & (rows["n_samples"] <= b)]
        # second half of each segment: after the learner had time to adapt
        tail = part[part["n_samples"] > a + (b - a) / 2]
        entry: dict[str, Any] = {"start": a, "end": b}
        if len(tail):
            entry[f"{metric}_rolling_2nd_half"] = float(tail[f"{metric}_rolling"].mean())
            if "total_units" in tail and tail["total_units"].notna().all():
                entry["mean_units_2nd_half"] = float(tail["total_units"].mean())
                entry["units_at_end"] = float(part["total_units"].iloc[-1])
        out.append(entry)
    return out


def _events(name: str, model: Any) -> list[dict[str, Any]]:
    core = das_core(model)
    if core is None:
        return []
    rows = []
    prev: list[int] | None = None
    for ev in getattr(core, "size_history", []):
        sizes = [int(s) for s in ev["sizes"]]
        delta = 0 if prev is None else sum(sizes) - sum(prev)
        rows.append(
            {
                "learner": name,
                "n_samples": int(ev["n_samples"]),
                "event": str(ev.get("event", "")),
                "sizes": "|".join(map(str, sizes)),
                "total_units": sum(sizes),
                "delta_units": delta,
            }
        )
        prev = sizes
    return rows


def run_simulation(config: RunConfig) -> RunResult:
    """Run the simulation described by ``config`` and write its results folder.

    Files written: ``metrics.csv`` (one row per learner per evaluation step), ``events.csv``
    (every DAS sizing event), ``summary.json``, ``results.md`` and, with ``plots=True``,
    ``accuracy.png`` (or ``error.png``), ``hidden_units.png``, ``parameters.png``,
    ``events.png`` and ``overview.png``.
    """
    if config.threads is None:
        return _run(config)
    from streamdas.threads import limit_threads

    with limit_threads(config.threads):
        return _run(config)


def _run(config: RunConfig) -> RunResult:
    stream = make_scenario(config.scenario, config.n_samples, config.seed)
    names = tuple(config.learners or DEFAULT_LEARNERS[stream.task])
    for n in names:
        if n not in LEARNERS[stream.task]:
            raise KeyError(
                f"learner {n!r} does not fit a {stream.task} scenario; "
                f"choose from {sorted(LEARNERS[stream.task])}"
            )
    models = {n: make_learner(n, stream.task, config.seed, **config.das_kwargs) for n in names}
    trackers = {n: _Tracker(stream.task, config.window) for n in names}
    every = config.eval_every or max(stream.n_samples // 200, 1)
    metric = "accuracy" if stream.task == "classification" else "mae"

    rows: list[dict[str, Any]] = []
    wall = time.perf_counter()
    bar = tqdm(
        total=stream.n_samples,
        desc=f"{stream.name}",
        unit="smp",
        disable=not config.progress,
        mininterval=0.5,
    )
    for i, (x, y) in enumerate(stream, start=1):
        for n, model in models.items():
            tr = trackers[n]
            t0 = time.perf_counter()
            y_pred = model.predict_one(x)
            t1 = time.perf_counter()
            model.learn_one(x, y)
            tr.learn_s += time.perf_counter() - t1
            tr.predict_s += t1 - t0
            tr.update(y, y_pred)
        if i % every == 0 or i == stream.n_samples:
            for n, model in models.items():
                rows.append({"n_samples": i, "learner": n, **trackers[n].row(), **_shape(model)})
        if i % 200 == 0:
            bar.update(200)
    bar.update(stream.n_samples - bar.n)
    bar.close()
    wall = time.perf_counter() - wall

    df = pd.DataFrame(rows)
    ev = pd.DataFrame(
        [e for n, m in models.items() for e in _events(n, m)],
        columns=["learner", "n_samples", "event", "sizes", "total_units", "delta_units"],
    )
    out = Path(config.output)
    out.mkdir(parents=True, exist_ok=True)
    files = {
        "metrics": out / "metrics.csv",
        "events": out / "events.csv",
        "summary": out / "summary.json",
        "table": out / "results.md",
    }
    df.to_csv(files["metrics"], index=False)
    ev.to_csv(files["events"], index=False)

    summary = _summary(config, stream, models, trackers, df, ev, metric, wall)
    files["summary"].write_text(json.dumps(summary, indent=2, default=str))
    files["table"].write_text(markdown_table(summary))
    if config.plots:
        from simulations.plots import plot_all

        files.update(plot_all(df, ev, stream, out, metric))
    return RunResult(out, files, summary, df, ev)


def _summary(
    config: RunConfig,
    stream: ScenarioStream,
    models: dict[str, Any],
    trackers: dict[str, _Tracker],
    df: pd.DataFrame,
    ev: pd.DataFrame,
    metric: str,
    wall: float,
) -> dict[str, Any]:
    learners: dict[str, Any] = {}
    for n, model in models.items():
        tr = trackers[n]
        part = df[df["learner"] == n]
        entry: dict[str, Any] = {
            **{f"final_{k}": v for k, v in tr.row().items()},
            f"mean_{metric}_rolling": float(part[f"{metric}_rolling"].mean()),
            "predict_seconds": round(tr.predict_s, 3),
            "learn_seconds": round(tr.learn_s, 3),
            "segments": _segment_stats(part, stream, metric),
        }
        core = das_core(model)
        if core is not None:
            entry.update(
                final_sizes=effective_sizes(core),
                final_current_sizes=[int(s) for s in core.layer_sizes],
                n_parameters=int(core.n_parameters),
                max_total_units=int(part["total_units"].max()),
                min_total_units=int(part["total_units"].min()),
                units_grown=[int(v) for v in getattr(core, "n_units_grown", [])],
                units_pruned=[int(v) for v in getattr(core, "n_units_pruned", [])],
                n_sizing_cycles=int(getattr(core, "n_sizing_cycles", 0)),
                n_size_events=int((ev["learner"] == n).sum()) if len(ev) else 0,
            )
        learners[n] = entry
    cfg = asdict(config)
    cfg["output"] = str(cfg["output"])
    return {
        "scenario": stream.name,
        "description": stream.description,
        "task": stream.task,
        "n_samples": stream.n_samples,
        "seed": stream.seed,
        "drifts": [asdict(d) for d in stream.drifts],
        "config": cfg,
        "wall_seconds": round(wall, 2),
        "learners": learners,
    }


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return "nan" if math.isnan(v) else f"{v:.4f}"
    if isinstance(v, list):
        return "/".join(map(str, v))
    return "" if v is None else str(v)


def markdown_table(summary: dict[str, Any]) -> str:
    """One row per learner: final metrics, mean rolling metric, final sizes, time.

    >>> print(markdown_table({"scenario": "s", "description": "d", "n_samples": 1, "seed": 0,
    ...     "task": "classification", "drifts": [], "learners": {"hat": {
    ...     "final_accuracy_cumulative": 0.5, "final_kappa_cumulative": 0.1,
    ...     "mean_accuracy_rolling": 0.6, "learn_seconds": 1.0, "predict_seconds": 0.5}}}))
    ... # doctest: +ELLIPSIS
    ### s ...
    | hat | 0.5000 | 0.1000 | 0.6000 |  |  |  | 1.5 |
    """
    cls = summary["task"] == "classification"
    m1, m2 = ("accuracy", "kappa") if cls else ("mae", "rmse")
    drifts = ", ".join(str(d["position"]) for d in summary["drifts"])
    lines = [
        f"### {summary['scenario']} — {summary['description']}",
        "",
        f"{summary['n_samples']} samples, seed {summary['seed']}, drifts at [{drifts}].",
        "",
        f"| learner | {m1} (cumulative) | {m2} (cumulative) | mean rolling {m1} "
        "| hidden sizes (after last pruning) | hidden sizes now | parameters now | seconds |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for n, e in summary["learners"].items():
        secs = e.get("learn_seconds", 0.0) + e.get("predict_seconds", 0.0)
        lines.append(
            f"| {n} | {_fmt(e.get(f'final_{m1}_cumulative'))} | "
            f"{_fmt(e.get(f'final_{m2}_cumulative'))} | {_fmt(e.get(f'mean_{m1}_rolling'))} | "
            f"{_fmt(e.get('final_sizes'))} | {_fmt(e.get('final_current_sizes'))} | "
            f"{_fmt(e.get('n_parameters'))} | {secs:.1f} |"
        )
    return "\n".join(lines) + "\n"
