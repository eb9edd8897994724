"""The paper's experiments, scaled down to run in minutes on 2 CPU cores.

``python -m simulations.paper fig1``     final layer sizes against alpha (8-puzzle regression)
``python -m simulations.paper fig2``     starting widths 10 / 100 / 300 converge (8-puzzle)
``python -m simulations.paper table1``   sizes grow with task difficulty (streams; digits CNN)
``python -m simulations.paper table23``  DAS against static / weighted-L1 / l2,1 / no-growth
                                         models (digits CNN, mean ± 2SD over seeds)
``python -m simulations.paper all``      all four

Each writes ``results.json``, a PNG and ``table.md`` under ``--output`` (default
``results/paper/<experiment>``) and prints the table. ``--quick`` shrinks everything to a smoke
test (seconds) and writes to ``results/paper-quick/<experiment>`` instead.
The 8-puzzle set (all 181,440 states, exact BFS distances) is generated on first
use and cached outside the repository (see :mod:`simulations.experiments.puzzle`).

>>> build_parser().parse_args(["fig1", "--quick"]).quick
True
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import torch

from simulations.experiments.common import BatchSpec, mean_2sd, save_json, train_batch
from simulations.experiments.puzzle import load_puzzle, one_hot

__all__ = ["EXPERIMENTS", "build_parser", "fig1", "fig2", "main", "table1", "table23"]

DPI = 80


def _puzzle_split(n_train: int, n_test: int, seed: int) -> tuple[np.ndarray, ...]:
    states, dist = load_puzzle()
    X, y = one_hot(states), dist.astype(np.float32)
    idx = np.random.default_rng(seed).permutation(len(X))
    tr, te = idx[:n_train], idx[len(idx) - n_test :]
    mu, sd = float(y[tr].mean()), float(y[tr].std())
    return X[tr], (y[tr] - mu) / sd, X[te], (y[te] - mu) / sd, sd


def _save_fig(fig: plt.Figure, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return path


# ----------------------------------------------------------------------------- Fig. 1
def fig1(out: Path, quick: bool = False, seed: int = 0) -> dict[str, Any]:
    """Final hidden-layer sizes of fully-connected DAS models against alpha (8-puzzle).

    Paper: 15-puzzle, 5 hidden layers. Here: 8-puzzle (72 one-hot inputs, target = optimal
    solution length, standardised), 3 hidden layers starting at 100, 60,000 training states,
    20 epochs of Algorithm 1 per alpha; paper defaults otherwise (tau 1e-3, lr 1e-3, batch 128).
    """
    n_train, epochs = (4000, 4) if quick else (60_000, 20)
    alphas = [1e-5, 1e-2] if quick else [1e-5, 3e-5, 1e-4, 3e-4, 1e-3]
    X, y, Xv, yv, sd = _puzzle_split(n_train, 2000 if quick else 10_000, seed)
    rows = []
    for a in alphas:
        spec = BatchSpec(hidden_sizes=(100, 100, 100), epochs=epochs, alpha=a, seed=seed)
        run = train_batch(X, y, Xv, yv, spec, task="regression", y_scale=sd)
        rows.append(
            {
                "alpha": a,
                "final_sizes": run.final_sizes,
                "sizes": run.sizes,
                "test_mae_moves": run.score,
                "n_parameters": run.n_parameters,
            }
        )
        print(f"alpha={a:g}: sizes {run.final_sizes}, test MAE {run.score:.3f} moves", flush=True)
    fig, ax = plt.subplots(figsize=(6, 3.5))
    for layer in range(3):
        ax.plot(
            alphas, [r["final_sizes"][layer] for r in rows], marker="o", label=f"hidden layer {layer + 1}"
        )
    ax.set_xscale("log")
    ax.set_xlabel("alpha (weighted L1 strength)")
    ax.set_ylabel("final units")
    ax.set_title("8-puzzle: final layer sizes vs alpha", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    _save_fig(fig, out / "fig1_sizes_vs_alpha.png")
    lines = ["| alpha | final sizes | total units | parameters | test MAE (moves) |", "|---|---|---|---|---|"]
    lines += [
        f"| {r['alpha']:g} | {'/'.join(map(str, r['final_sizes']))} | "
        f"{sum(r['final_sizes'])} | {r['n_parameters']} | {r['test_mae_moves']:.3f} |"
        for r in rows
    ]
    return {"rows": rows, "table": "\n".join(lines), "n_train": n_train, "epochs": epochs}


# ----------------------------------------------------------------------------- Fig. 2
def fig2(out: Path, quick: bool = False, seed: int = 0) -> dict[str, Any]:
    """Starting widths 10, 100 and 300 converge to similar sizes (8-puzzle, alpha = 1e-4).

    Paper: last conv layer on CIFAR-100. Here: 3-layer MLP on the 8-puzzle set, every layer
    starting at the same width, 60,000 training states, 25 epochs.
    """
    n_train, epochs = (4000, 4) if quick else (60_000, 25)
    starts = [10, 100] if quick else [10, 100, 300]
    alpha = 1e-4
    X, y, Xv, yv, sd = _puzzle_split(n_train, 2000 if quick else 10_000, seed)
    rows = []
    for w in starts:
        spec = BatchSpec(hidden_sizes=(w, w, w), epochs=epochs, alpha=alpha, seed=seed)
        run = train_batch(X, y, Xv, yv, spec, task="regression", y_scale=sd)
        rows.append(
            {"start": w, "sizes": run.sizes, "final_sizes": run.final_sizes, "test_mae_moves": run.score}
        )
        print(f"start {w}: final sizes {run.final_sizes}, test MAE {run.score:.3f}", flush=True)
    fig, axes = plt.subplots(1, 3, figsize=(10, 3.2), sharey=True)
    for layer, ax in enumerate(axes):
        for r in rows:
            ax.plot(range(1, epochs + 1), [s[layer] for s in r["sizes"]], label=f"start {r['start']}")
        ax.set_title(f"hidden layer {layer + 1}", fontsize=9)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("units after pruning")
    axes[0].legend(fontsize=8)
    fig.suptitle(f"8-puzzle, alpha={alpha:g}: sizes over training", fontsize=10)
    _save_fig(fig, out / "fig2_start_widths.png")
    lines = ["| start width | final sizes | test MAE (moves) |", "|---|---|---|"]
    lines += [
        f"| {r['start']} | {'/'.join(map(str, r['final_sizes']))} | {r['test_mae_moves']:.3f} |" for r in rows
    ]
    return {"rows": rows, "table": "\n".join(lines), "alpha": alpha, "epochs": epochs}


# ----------------------------------------------------------------------------- digits
def _digits(classes: int, seed: int) -> tuple[np.ndarray, ...]:
    from sklearn.datasets import load_digits

    d = load_digits()
    keep = d.target < classes
    X = (d.images[keep] / 16.0).astype(np.float32)[:, None, :, :]
    X = (X - X.mean()) / X.std()  # standardised inputs (self-normalising SELU net)
    y = d.target[keep].astype(np.int64)
    idx = np.random.default_rng(seed).permutation(len(X))
    cut = int(0.75 * len(X))
    return X[idx[:cut]], y[idx[:cut]], X[idx[cut:]], y[idx[cut:]]


#: The paper's CNN on 8x8 digits: 4 conv (strides 1,2,1,2; dropout after conv2/conv4) + dense.
#: It starts small (8 filters, 16 dense units) and grows; alpha = 3e-4, tau and lr as the paper.
CNN_SPEC = BatchSpec(
    hidden_sizes=(8, 8, 8, 8, 16), epochs=20, batch_size=32, cnn=True, input_hw=(8, 8), alpha=3e-4, lr=1e-3
)


#: Strength of the l2,1 (group lasso) baseline, set by hand so that its final size is of the
#: order of DAS's (3e-2 ended larger, 1e-1 far smaller, on seed 0; see docs/experiments.md).
L21_ALPHA = 5e-2


# ----------------------------------------------------------------------------- Table I
def _stream_sizes(n_centroids: int, n: int, seed: int) -> dict[str, Any]:
    from simulations.learners import make_das
    from simulations.runner import effective_sizes
    from simulations.scenarios import _blobs

    concept = _blobs(n_centroids, 2, 2, 0.03, model_seed=seed + 97)
    model = make_das("classification", "das", seed)
    hits, sizes = 0, []
    it = concept(seed)
    for i in range(n):
        x, y = next(it)
        hits += int(model.predict_one(x) == y) if i >= n // 2 else 0
        model.learn_one(x, y)
        if i >= 3 * n // 4 and i % 100 == 0:
            sizes.append(sum(effective_sizes(model)))
    return {
        "units": float(np.mean(sizes)),
        "final_sizes": effective_sizes(model),
        "accuracy_2nd_half": hits / (n - n // 2),
    }


def table1(out: Path, quick: bool = False, seed: int = 0) -> dict[str, Any]:
    """Sizes grow with task difficulty.

    (a) Streams: stationary RBF-blob streams with 2 .. 32 centroids (2-D, 2 classes), DAS with
    the simulation settings, mean total units over the last quarter, 3 seeds.
    (b) Batch: scikit-learn's 8x8 digits restricted to 2, 5 and 10 classes, the paper's CNN
    (4 conv + 1 dense, starting at 8/8/8/8/16), Algorithm 1 for 20 epochs, 3 seeds.
    """
    seeds = [seed] if quick else [seed, seed + 1, seed + 2]
    ks = [2, 16] if quick else [2, 4, 8, 16, 32]
    n = 2000 if quick else 12_000
    stream_rows = []
    for k in ks:
        res = [_stream_sizes(k, n, s) for s in seeds]
        u_mean, u_2sd = mean_2sd([r["units"] for r in res])
        a_mean, a_2sd = mean_2sd([r["accuracy_2nd_half"] for r in res])
        stream_rows.append(
            {
                "centroids": k,
                "units_mean": u_mean,
                "units_2sd": u_2sd,
                "accuracy_mean": a_mean,
                "accuracy_2sd": a_2sd,
                "runs": res,
            }
        )
        print(f"stream, {k} centroids: {u_mean:.1f} ± {u_2sd:.1f} units, accuracy {a_mean:.3f}", flush=True)
    digit_rows = []
    spec = replace(CNN_SPEC, epochs=3) if quick else CNN_SPEC
    for c in [2, 10] if quick else [2, 5, 10]:
        runs = []
        for s in seeds:
            X, y, Xv, yv = _digits(c, s)
            runs.append(train_batch(X, y, Xv, yv, replace(spec, seed=s)))
        sizes = np.array([r.final_sizes for r in runs], dtype=float)
        acc = mean_2sd([r.score for r in runs])
        digit_rows.append(
            {
                "classes": c,
                "mean_sizes": sizes.mean(0).round(1).tolist(),
                "mean_parameters": float(np.mean([r.n_parameters for r in runs])),
                "accuracy_mean": acc[0],
                "accuracy_2sd": acc[1],
                "runs": [r.to_dict() for r in runs],
            }
        )
        print(
            f"digits, {c} classes: sizes {sizes.mean(0).round(1).tolist()}, "
            f"accuracy {acc[0]:.3f} ± {acc[1]:.3f}",
            flush=True,
        )
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(9, 3.2))
    a1.errorbar(
        ks,
        [r["units_mean"] for r in stream_rows],
        yerr=[r["units_2sd"] for r in stream_rows],
        marker="o",
        capsize=3,
    )
    a1.set_xscale("log", base=2)
    a1.set_xlabel("centroids in the stream")
    a1.set_ylabel("DAS hidden units (total)")
    a1.set_title("streams: units vs complexity", fontsize=9)
    a1.grid(alpha=0.3)
    cls = [r["classes"] for r in digit_rows]
    for layer, name in enumerate(["conv1", "conv2", "conv3", "conv4", "dense"]):
        a2.plot(cls, [r["mean_sizes"][layer] for r in digit_rows], marker="o", label=name)
    a2.set_xlabel("digit classes")
    a2.set_ylabel("units / filters")
    a2.set_title("digits CNN: sizes vs classes", fontsize=9)
    a2.grid(alpha=0.3)
    a2.legend(fontsize=7)
    _save_fig(fig, out / "table1_sizes_vs_difficulty.png")
    lines = ["| stream | DAS units (mean ± 2SD) | prequential accuracy, 2nd half |", "|---|---|---|"]
    lines += [
        f"| {r['centroids']} centroids | {r['units_mean']:.1f} ± {r['units_2sd']:.1f} | "
        f"{r['accuracy_mean']:.3f} ± {r['accuracy_2sd']:.3f} |"
        for r in stream_rows
    ]
    lines += [
        "",
        "| digits | parameters | conv1 | conv2 | conv3 | conv4 | dense | test accuracy (mean ± 2SD) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {r['classes']} classes | {r['mean_parameters']:.0f} | "
        + " | ".join(f"{v:.1f}" for v in r["mean_sizes"])
        + f" | {r['accuracy_mean']:.3f} ± {r['accuracy_2sd']:.3f} |"
        for r in digit_rows
    ]
    return {"streams": stream_rows, "digits": digit_rows, "table": "\n".join(lines)}


# ----------------------------------------------------------------------------- Tables II/III
def table23(out: Path, quick: bool = False, seed: int = 0) -> dict[str, Any]:
    """DAS (weighted L1) against baselines on 10-class digits with the paper's CNN.

    Per seed (a different train/test split and initialisation): DAS with weighted L1 trains
    first (20 epochs of Algorithm 1, then 10 static fine-tuning epochs); its final sizes are the
    architecture of the static baselines, trained for the same 30 epochs:
    *Static A* (no regularization), *Static, weighted L1* (no growth, no pruning),
    *Dynamic, l2,1* (growth and pruning with group lasso), *DAS without growth* (starts at the
    DAS sizes, prunes only, fine-tuned) and *Static, initial size* (the unregularized CNN of DAS's
    starting widths). Mean ± 2SD of test accuracy.
    """
    seeds = [seed, seed + 1] if quick else [seed, seed + 1, seed + 2]
    base = (
        replace(CNN_SPEC, epochs=3, fine_tune_epochs=1) if quick else replace(CNN_SPEC, fine_tune_epochs=10)
    )
    total = base.epochs + base.fine_tune_epochs
    variants: dict[str, Callable[[tuple[int, ...]], BatchSpec]] = {
        "Static A (DAS sizes, no reg.)": lambda sz: replace(
            base,
            hidden_sizes=sz,
            regularizer="none",
            grow=False,
            prune=False,
            epochs=total,
            fine_tune_epochs=0,
        ),
        "Static, weighted L1 (DAS sizes)": lambda sz: replace(
            base, hidden_sizes=sz, grow=False, prune=False, epochs=total, fine_tune_epochs=0
        ),
        "Dynamic, l2,1": lambda sz: replace(base, regularizer="l21", alpha=L21_ALPHA),
        "DAS without growth (from DAS sizes)": lambda sz: replace(base, hidden_sizes=sz, grow=False),
        "Static, initial size (no reg.)": lambda sz: replace(
            base, regularizer="none", grow=False, prune=False, epochs=total, fine_tune_epochs=0
        ),
    }
    results: dict[str, list[dict[str, Any]]] = {"DAS, weighted L1": []}
    for name in variants:
        results[name] = []
    for s in seeds:
        X, y, Xv, yv = _digits(10, s)
        das = train_batch(X, y, Xv, yv, replace(base, seed=s))
        results["DAS, weighted L1"].append(das.to_dict())
        sizes = tuple(int(v) for v in das.final_sizes)
        print(f"seed {s}: DAS sizes {list(sizes)}, accuracy {das.score:.3f}", flush=True)
        for name, make in variants.items():
            run = train_batch(X, y, Xv, yv, replace(make(sizes), seed=s))
            results[name].append(run.to_dict())
            print(f"  {name}: sizes {run.final_sizes}, accuracy {run.score:.3f}", flush=True)
    rows = []
    for name, runs in results.items():
        m, sd2 = mean_2sd([r["score"] for r in runs])
        p = float(np.mean([r["n_parameters"] for r in runs]))
        sizes = np.mean([r["final_sizes"] for r in runs], axis=0).round(1).tolist()
        rows.append(
            {
                "model": name,
                "accuracy_mean": m,
                "accuracy_2sd": sd2,
                "mean_parameters": p,
                "mean_sizes": sizes,
            }
        )
    fig, ax = plt.subplots(figsize=(7, 3.2))
    ax.barh(
        [r["model"] for r in rows],
        [r["accuracy_mean"] for r in rows],
        xerr=[r["accuracy_2sd"] for r in rows],
        color="tab:blue",
        alpha=0.7,
        capsize=3,
    )
    lo = min(r["accuracy_mean"] - r["accuracy_2sd"] for r in rows)
    ax.set_xlim(max(0.0, lo - 0.02), 1.0)
    ax.invert_yaxis()
    ax.set_xlabel("test accuracy (mean ± 2SD)")
    ax.set_title(f"8x8 digits, paper's CNN, {len(seeds)} seeds", fontsize=10)
    ax.tick_params(axis="y", labelsize=7)
    _save_fig(fig, out / "table23_baselines.png")
    lines = [
        "| model | test accuracy (mean ± 2SD) | mean parameters | mean final sizes |",
        "|---|---|---|---|",
    ]
    lines += [
        f"| {r['model']} | {100 * r['accuracy_mean']:.1f} % ± {100 * r['accuracy_2sd']:.1f}"
        f" | {r['mean_parameters']:.0f} | {'/'.join(f'{v:g}' for v in r['mean_sizes'])} |"
        for r in rows
    ]
    return {"rows": rows, "runs": results, "table": "\n".join(lines), "seeds": seeds}


EXPERIMENTS: dict[str, Callable[..., dict[str, Any]]] = {
    "fig1": fig1,
    "fig2": fig2,
    "table1": table1,
    "table23": table23,
}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m simulations.paper", description=__doc__.split("\n")[0])
    p.add_argument("experiment", choices=[*EXPERIMENTS, "all"])
    p.add_argument(
        "-o",
        "--output",
        default=None,
        help="results folder (default results/paper/<experiment>, with --quick "
        "results/paper-quick/<experiment>: a smoke run never overwrites a full one)",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quick", action="store_true", help="tiny smoke-test version (seconds)")
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    return p


def default_output(name: str, quick: bool, output: str | None = None, several: bool = False) -> Path:
    """Where experiment ``name`` writes: ``results/paper/<name>``, or ``results/paper-quick/<name>``
    with ``--quick`` (so a smoke run never overwrites a full run's results); under ``-o DIR``,
    ``DIR`` for one experiment and ``DIR/<name>`` for several.

    >>> default_output("fig1", quick=False).as_posix(), default_output("fig1", quick=True).as_posix()
    ('results/paper/fig1', 'results/paper-quick/fig1')
    >>> default_output("fig1", quick=True, output="out", several=True).as_posix()
    'out/fig1'
    """
    if output:
        return Path(output) / name if several else Path(output)
    return Path("results/paper-quick" if quick else "results/paper") / name


def main(argv: list[str] | None = None) -> int:
    """Run one experiment (or all); returns the exit status."""
    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    torch.set_num_threads(args.threads)
    names = list(EXPERIMENTS) if args.experiment == "all" else [args.experiment]
    for name in names:
        out = default_output(name, args.quick, args.output, several=len(names) > 1)
        out.mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter()
        res = EXPERIMENTS[name](out, quick=args.quick, seed=args.seed)
        res["seconds"] = round(time.perf_counter() - t0, 1)
        res["command"] = "python -m simulations.paper " + " ".join(sys.argv[1:] if argv is None else argv)
        save_json(out / "results.json", res)
        (out / "table.md").write_text(res["table"] + "\n")
        print(f"\n## {name} ({res['seconds']} s) -> {out}\n\n{res['table']}\n", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
