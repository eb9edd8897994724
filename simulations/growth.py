"""Does growth buy accuracy? DAS against static MLPs of its start and peak widths (issue 11).

On the ``complexity`` scenario (the demo: 2 -> 16 -> 2 centroids), prequential accuracy over
the whole hard (16-centroid) segment, per seed, for: DAS with the simulations' settings; the
same network kept at DAS's *starting* width (no growth, no pruning, no regularizer); the same
kept at DAS's *peak* width (the widest each layer was at a sizing event in DAS's own run); and
River's ARF. The goals: DAS at least as accurate as the start-width MLP, within one point of the
peak-width MLP, within five points of ARF.

    python -m simulations.growth                      # seeds 42 1 2, 18,000 samples (the demo's)
    python -m simulations.growth --seeds 0 --n 3000   # short

>>> rows = run(seeds=[0], n=1200, with_arf=False)
>>> [k for k in rows[0]]
['seed', 'das', 'start', 'start_width', 'peak', 'peak_width', 'arf']
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from simulations.learners import das_core, make_das, make_learner
from simulations.scenarios import make_scenario
from streamdas.threads import limit_threads

__all__ = ["main", "run", "table"]


def _hard_accuracy(model: Any, data: list[tuple[dict, Any]], lo: int, hi: int) -> float:
    hits = 0
    for i, (x, y) in enumerate(data):
        if lo <= i < hi:
            hits += model.predict_one(x) == y
        model.learn_one(x, y)
    return hits / max(hi - lo, 1)


def _peak(model: Any) -> list[int]:
    core = das_core(model)
    sizes = [list(e["sizes"]) for e in core.size_history] if core is not None else []
    return [max(col) for col in zip(*sizes, strict=True)] if sizes else []


def run(
    seeds: list[int], n: int = 18_000, with_arf: bool = True, progress: bool = False
) -> list[dict[str, Any]]:
    """One row per seed: hard-segment accuracy of DAS, the start- and peak-width static MLPs
    (with their widths) and ARF (None when ``with_arf`` is off)."""
    rows = []
    for seed in seeds:
        scenario = make_scenario("complexity", n_samples=n, seed=seed)
        data = list(scenario.factory(n, seed))
        lo, hi = (d.position for d in scenario.drifts[:2])
        das = make_das("classification", "das", seed)
        core = das_core(das)
        start_width = list(core.hidden_sizes) if core is not None else []
        das_acc = _hard_accuracy(das, data, lo, hi)
        peak = _peak(das)
        start = make_das("classification", "static_mlp", seed)
        static_peak = make_das("classification", "static_mlp", seed, hidden_sizes=tuple(peak))
        row = {
            "seed": seed,
            "das": das_acc,
            "start": _hard_accuracy(start, data, lo, hi),
            "start_width": start_width,
            "peak": _hard_accuracy(static_peak, data, lo, hi),
            "peak_width": peak,
            "arf": _hard_accuracy(make_learner("arf", "classification", seed), data, lo, hi)
            if with_arf
            else None,
        }
        rows.append(row)
        if progress:
            print(
                f"[growth] seed {seed}: DAS {row['das']:.4f}, start {row['start']:.4f}, "
                f"peak {row['peak']:.4f}, ARF {row['arf']}",
                file=sys.stderr,
                flush=True,
            )
    return rows


def table(rows: list[dict[str, Any]], n: int) -> str:
    """Markdown: the accuracies, DAS's margins and the three goals' verdicts per seed."""
    lines = [
        "| seed | DAS | static, start width | static, peak width | ARF | DAS - start | "
        "DAS - peak | DAS - ARF |",
        "|---|---|---|---|---|---|---|---|",
    ]
    met = {"start": 0, "peak": 0, "arf": 0}
    for r in rows:
        arf = r["arf"]
        arf_cell = "" if arf is None else f"{arf:.4f}"
        arf_gap = "" if arf is None else f"{r['das'] - arf:+.4f}"
        met["start"] += r["das"] >= r["start"]
        met["peak"] += r["das"] >= r["peak"] - 0.01
        met["arf"] += arf is not None and r["das"] >= arf - 0.05
        lines.append(
            f"| {r['seed']} | {r['das']:.4f} | {r['start']:.4f} {tuple(r['start_width'])} | "
            f"{r['peak']:.4f} {tuple(r['peak_width'])} | {arf_cell} | "
            f"{r['das'] - r['start']:+.4f} | {r['das'] - r['peak']:+.4f} | {arf_gap} |"
        )
    k = len(rows)
    lines += [
        "",
        f"- Prequential accuracy over the whole hard (16-centroid) segment of the `complexity` "
        f"scenario, {n:,} samples; static MLPs are DAS's network with its simulation settings, "
        "fixed at the width shown (no growth, no pruning, no regularizer).",
        f"- Goals (issue 11): DAS >= the start-width MLP on {met['start']}/{k} seeds; within one "
        f"point of the peak-width MLP on {met['peak']}/{k}; within five points of ARF on "
        + (f"{met['arf']}/{k}." if all(r["arf"] is not None for r in rows) else "(ARF not run)."),
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m simulations.growth", description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[42, 1, 2])
    parser.add_argument("--n", type=int, default=18_000, help="samples (default 18,000, the demo's)")
    parser.add_argument("--no-arf", action="store_true", help="skip ARF (the slow one)")
    args = parser.parse_args(argv)
    if args.n < 300:
        parser.error("--n must be at least 300")
    with limit_threads():
        rows = run(args.seeds, args.n, with_arf=not args.no_arf, progress=True)
    print(table(rows, args.n), end="")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
