"""PNG plots of a simulation's results (matplotlib, Agg backend, small files).

>>> import tempfile, pandas as pd
>>> from simulations.scenarios import make_scenario
>>> s = make_scenario("sea_abrupt", 400)
>>> df = pd.DataFrame({"n_samples": [200, 400], "learner": ["hat", "hat"],
...                    "accuracy_rolling": [0.7, 0.8]})
>>> p = plot_metric(df, s, tempfile.mkdtemp() + "/acc.png", "accuracy")
>>> p.suffix
'.png'
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import pandas as pd
from matplotlib.axes import Axes

from simulations.scenarios import ScenarioStream

__all__ = ["plot_all", "plot_events", "plot_metric", "plot_overview", "plot_sizes"]

DPI = 80
COLORS = {
    "das": "tab:red",
    "static_mlp": "tab:gray",
    "static_wl1": "tab:purple",
    "arf": "tab:green",
    "hat": "tab:orange",
    "logreg": "tab:blue",
    "linreg": "tab:blue",
}


def _drift_markers(ax: Axes, stream: ScenarioStream) -> None:
    for k, d in enumerate(stream.drifts):
        lab = "drift" if k == 0 else None
        if d.width > 1:
            lo = d.position if d.kind == "incremental" else d.position - d.width / 2
            ax.axvspan(lo, lo + d.width, color="k", alpha=0.08, label=lab)
        else:
            ax.axvline(d.position, color="k", ls="--", lw=1, alpha=0.6, label=lab)


#: Line styles that keep learners apart where their curves coincide (DAS drawn on top).
STYLES = {"das": ("-", 2.0, 3), "static_mlp": ("--", 1.3, 2), "static_wl1": (":", 1.6, 2)}
LAYER_STYLES = ["-", "--", ":", "-."]


def _metric_axes(ax: Axes, df: pd.DataFrame, stream: ScenarioStream, metric: str) -> None:
    col = f"{metric}_rolling"
    for name, part in df.groupby("learner", sort=False):
        ls, lw, z = STYLES.get(str(name), ("-", 1.1, 1))
        ax.plot(part["n_samples"], part[col], label=name, color=COLORS.get(str(name)), lw=lw, ls=ls, zorder=z)
    _drift_markers(ax, stream)
    ax.set_ylabel(f"rolling {metric}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2, loc="lower left" if metric == "accuracy" else "upper left")


def _size_axes(ax: Axes, df: pd.DataFrame, stream: ScenarioStream, learner: str = "das") -> bool:
    part = df[df["learner"] == learner]
    layer_cols = sorted(c for c in df.columns if c.startswith("units_l"))
    if part.empty or not layer_cols:
        return False
    for k, c in enumerate(layer_cols):
        if part[c].notna().any():
            (line,) = ax.plot(
                part["n_samples"],
                part[c],
                label=f"layer {c[7:]} after pruning",
                lw=1.6,
                ls=LAYER_STYLES[k % len(LAYER_STYLES)],
                drawstyle="steps-post",
                zorder=3,
            )
            now = f"now_l{c[7:]}"
            if now in part and part[now].notna().any():
                ax.plot(
                    part["n_samples"],
                    part[now],
                    color=line.get_color(),
                    lw=0.8,
                    alpha=0.35,
                    drawstyle="steps-post",
                    label=f"layer {c[7:]} now (with units just grown)",
                )
    _drift_markers(ax, stream)
    ax.set_ylabel("DAS hidden units")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    return True


def _save(fig: plt.Figure, path: str | Path) -> Path:
    path = Path(path)
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return path


def plot_metric(df: pd.DataFrame, stream: ScenarioStream, path: str | Path, metric: str) -> Path:
    """Rolling ``metric`` of every learner against samples seen, with drift markers."""
    fig, ax = plt.subplots(figsize=(8, 3.5))
    _metric_axes(ax, df, stream, metric)
    ax.set_xlabel("samples")
    ax.set_title(f"{stream.name}: prequential rolling {metric}", fontsize=10)
    return _save(fig, path)


def plot_sizes(df: pd.DataFrame, stream: ScenarioStream, path: str | Path) -> Path:
    """Hidden units per layer of DAS over time (the static MLPs stay flat and are omitted)."""
    fig, ax = plt.subplots(figsize=(8, 3))
    _size_axes(ax, df, stream)
    ax.set_xlabel("samples")
    ax.set_title(f"{stream.name}: DAS hidden units per layer (after each pruning; faint: now)", fontsize=10)
    return _save(fig, path)


def plot_parameters(df: pd.DataFrame, stream: ScenarioStream, path: str | Path) -> Path:
    """Parameter count of every neural learner over time."""
    fig, ax = plt.subplots(figsize=(8, 3))
    if "n_parameters" in df:
        for name, part in df[df["n_parameters"].notna()].groupby("learner", sort=False):
            ax.plot(part["n_samples"], part["n_parameters"], label=name, color=COLORS.get(str(name)), lw=1.3)
        ax.legend(fontsize=7)
    _drift_markers(ax, stream)
    ax.set_xlabel("samples")
    ax.set_ylabel("parameters")
    ax.grid(alpha=0.3)
    ax.set_title(f"{stream.name}: parameter count", fontsize=10)
    return _save(fig, path)


def plot_events(events: pd.DataFrame, stream: ScenarioStream, path: str | Path) -> Path:
    """Per DAS sizing cycle (prune, then grow, at the same sample): units pruned (down), units
    grown (up), and the cycle's net change (dots), all hidden layers together."""
    fig, ax = plt.subplots(figsize=(8, 3))
    part = events[events["learner"] == "das"] if len(events) else events
    if len(part):
        d = part["delta_units"]
        cycles = (
            pd.DataFrame(
                {
                    "grown": d.where(d > 0, 0),
                    "pruned": d.where(d < 0, 0),
                    "n": part["n_samples"],
                }
            )
            .groupby("n")
            .sum()
        )
        width = max(stream.n_samples / 250, 1)
        ax.bar(cycles.index, cycles["grown"], width=width, color="tab:green", label="grown")
        ax.bar(cycles.index, cycles["pruned"], width=width, color="tab:red", label="pruned")
        ax.plot(cycles.index, cycles["grown"] + cycles["pruned"], "k.", ms=4, label="net change of the cycle")
        ax.legend(fontsize=7, ncol=3)
    ax.axhline(0, color="k", lw=0.5)
    _drift_markers(ax, stream)
    ax.set_xlabel("samples")
    ax.set_ylabel("units per sizing cycle")
    ax.grid(alpha=0.3)
    ax.set_title(f"{stream.name}: DAS grow / prune events", fontsize=10)
    return _save(fig, path)


def plot_overview(df: pd.DataFrame, stream: ScenarioStream, path: str | Path, metric: str) -> Path:
    """Two panels: rolling metric of all learners, and DAS hidden units per layer."""
    fig, (a1, a2) = plt.subplots(2, 1, figsize=(8, 5.5), sharex=True)
    _metric_axes(a1, df, stream, metric)
    a1.set_title(f"{stream.name}: {stream.description}", fontsize=9)
    _size_axes(a2, df, stream)
    a2.set_title(
        "DAS hidden units per layer, read after each pruning (faint: with the units grown since)", fontsize=8
    )
    a2.set_xlabel("samples")
    return _save(fig, path)


def plot_all(
    df: pd.DataFrame, events: pd.DataFrame, stream: ScenarioStream, out: Path, metric: str
) -> dict[str, Path]:
    """Write every plot into ``out``; return ``{name: path}``."""
    name = "accuracy" if metric == "accuracy" else "error"
    return {
        name: plot_metric(df, stream, out / f"{name}.png", metric),
        "hidden_units": plot_sizes(df, stream, out / "hidden_units.png"),
        "parameters": plot_parameters(df, stream, out / "parameters.png"),
        "events_plot": plot_events(events, stream, out / "events.png"),
        "overview": plot_overview(df, stream, out / "overview.png", metric),
    }
