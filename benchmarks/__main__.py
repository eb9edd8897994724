"""Run the benchmark suite and write one markdown report.

    python -m benchmarks                       # full sizes (docs/benchmarks.md)
    python -m benchmarks --quick               # shorter runs, same tables
    python -m benchmarks --only throughput --only sizing --out results/bench.md

Benchmarks: throughput, sizing, scaling, memory, minibatch, gpu, accuracy, startup. Torch runs on one
thread (``torch.set_num_threads(1)``) unless ``--threads`` says otherwise.
"""

from __future__ import annotations

import importlib
import sys
import time
from dataclasses import replace
from pathlib import Path

from benchmarks.common import PRESETS, Section, machine_description, setup_torch, warm_up
from streamdas.arguments import ArgumentParser, check_output_folder, integer

__all__ = ["BENCHMARKS", "main", "run_suite"]

#: name -> module (each has ``run(sizes) -> list[Section]``).
BENCHMARKS: dict[str, str] = {
    "throughput": "benchmarks.throughput",
    "sizing": "benchmarks.sizing_cost",
    "scaling": "benchmarks.scaling",
    "memory": "benchmarks.memory",
    "minibatch": "benchmarks.minibatch",
    "gpu": "benchmarks.gpu",
    "accuracy": "benchmarks.accuracy",
    "startup": "benchmarks.startup",
}


def run_suite(
    preset: str = "full", only: list[str] | None = None, repeats: int | None = None, progress: bool = False
) -> tuple[str, list[Section]]:
    """Run the chosen benchmarks; return (markdown report, sections)."""
    sizes = PRESETS[preset]
    if repeats is not None:
        sizes = replace(sizes, repeats=repeats)
    names = only or list(BENCHMARKS)
    unknown = [n for n in names if n not in BENCHMARKS]
    if unknown:
        raise ValueError(f"unknown benchmark(s) {unknown}; choose from {list(BENCHMARKS)}")
    warm_up()
    sections: list[Section] = []
    timings: list[str] = []
    for name in names:
        t0 = time.perf_counter()
        if progress:
            print(f"[benchmarks] {name} ...", file=sys.stderr, flush=True)
        sections.extend(importlib.import_module(BENCHMARKS[name]).run(sizes))
        timings.append(f"{name} {time.perf_counter() - t0:.0f} s")
    header = [
        "## streamdas benchmark report",
        "",
        f"- Machine: {machine_description()}",
        f"- Preset: `{preset}`, repeats: {sizes.repeats} (best reported; the machine may be shared)",
        f"- Wall time: {', '.join(timings)}",
        "",
    ]
    return "\n".join(header) + "\n" + "\n".join(s.to_markdown() for s in sections), sections


def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(prog="streamdas bench", description=__doc__.splitlines()[0])
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="shorter runs (minutes, not tens of minutes)")
    size.add_argument("--smoke", action="store_true", help="tiny runs that only check the suite works")
    parser.add_argument(
        "--only",
        action="append",
        choices=list(BENCHMARKS),
        metavar="NAME",
        help=f"run only this benchmark (repeatable): {', '.join(BENCHMARKS)}",
    )
    parser.add_argument("--repeats", type=integer(low=1), default=None, help="timed repeats (best reported)")
    parser.add_argument("--threads", type=integer(1, 1024), default=1, help="torch threads (default 1)")
    parser.add_argument("--out", type=Path, default=None, help="write the markdown report here")
    args = parser.parse_args(argv)
    if args.out is not None:  # before the run, not after it
        try:
            check_output_folder(str(args.out.parent))
            if args.out.is_dir():
                raise ValueError(f"cannot write '{args.out}': it is a folder")
        except ValueError as exc:
            parser.error(f"argument --out: {exc}")
    setup_torch(args.threads)
    preset = "smoke" if args.smoke else "quick" if args.quick else "full"
    report, _ = run_suite(preset, args.only, args.repeats, progress=True)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(report)
        print(f"[benchmarks] report written to {args.out}", file=sys.stderr)
    print(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
