"""``streamdas simulate`` / ``python -m simulations``: run a drift scenario, write its results.

With no arguments: a short demo of the ``complexity`` scenario (DAS grows when the hard concept
begins and shrinks when it ends); it prints where the overview plot went.

>>> main(["--list"])  # doctest: +ELLIPSIS
complexity ...
0
"""

from __future__ import annotations

import argparse
import ast
import sys
from pathlib import Path
from typing import Any

from simulations.runner import RunConfig, run_simulation
from simulations.scenarios import SCENARIOS, list_scenarios
from streamdas.arguments import ArgumentParser, check_output_folder, integer
from streamdas.params import check_params, usage_error

__all__ = ["DEMO", "build_parser", "main"]

#: The no-argument demo: short enough for well under a minute on 2 cores.
DEMO = {"scenario": "complexity", "n_samples": 18_000, "output": "results/demo"}

#: Shortest stream a scenario generates (:func:`simulations.scenarios.make_scenario`).
MIN_LENGTH = 10


def _das_arg(text: str) -> tuple[str, Any]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    try:
        parsed: Any = ast.literal_eval(value)
    except (ValueError, SyntaxError):
        parsed = value
    return key.strip(), parsed


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (also used by ``streamdas simulate``); errors are one line, exit 2."""
    p = ArgumentParser(
        prog="streamdas simulate",
        description="Prequential drift simulation: DAS against static MLPs and River baselines. "
        "No arguments: a short demo on the 'complexity' scenario.",
    )
    p.add_argument("scenario", nargs="?", help="scenario name (see --list)")
    p.add_argument("--list", action="store_true", help="list the scenarios and exit")
    p.add_argument(
        "-n",
        "--length",
        type=integer(low=MIN_LENGTH),
        default=None,
        help=f"stream length (samples, at least {MIN_LENGTH})",
    )
    p.add_argument("--seed", type=integer(0, 2**32 - 1), default=42)
    p.add_argument(
        "--learners", default=None, help="comma-separated learners (default: all for the task), e.g. das,hat"
    )
    p.add_argument(
        "-o", "--output", default=None, help="results folder (default results/<scenario>-seed<seed>)"
    )
    p.add_argument(
        "--window",
        type=integer(low=1),
        default=None,
        help="rolling metric window (default: length/20, at least 200)",
    )
    p.add_argument("--eval-every", type=integer(low=1), default=None, help="record a row every N samples")
    p.add_argument(
        "--das",
        action="append",
        type=_das_arg,
        default=[],
        metavar="KEY=VALUE",
        help="extra DAS constructor argument, repeatable (e.g. --das alpha=1e-4)",
    )
    p.add_argument(
        "--threads",
        type=integer(1, 1024),
        default=1,
        help="torch threads (default 1: small networks only lose from more)",
    )
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    return p


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; returns the exit status."""
    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    if args.list:
        for name, task, desc, length in list_scenarios():
            print(f"{name:24s} {task:15s} {length:>7d}  {desc}")
        return 0
    demo = args.scenario is None
    scenario = DEMO["scenario"] if demo else args.scenario
    if scenario not in SCENARIOS:
        usage_error(
            "streamdas simulate",
            f"argument scenario: unknown scenario {scenario!r}; "
            f"choose from {', '.join(sorted(SCENARIOS))} (see --list)",
        )
    if args.length is not None:
        length = args.length
    else:
        length = DEMO["n_samples"] if demo else SCENARIOS[scenario].default_length
    output = args.output or (DEMO["output"] if demo else f"results/{scenario}-seed{args.seed}")
    try:  # before the run, not after it
        check_output_folder(output)
    except ValueError as exc:
        usage_error("streamdas simulate", f"argument -o/--output: {exc}")
    task = SCENARIOS[scenario].task
    das_kwargs = dict(args.das)
    try:  # check --das against the estimator before anything runs
        from simulations.learners import das_class, das_defaults

        checked = check_params(das_class(task), {**das_defaults(task), **das_kwargs, "seed": args.seed})
        das_kwargs = {k: checked[k] for k in das_kwargs}
    except ValueError as exc:
        usage_error("streamdas simulate", f"argument --das: {exc}")
    if args.learners:
        from simulations.learners import LEARNERS

        unknown = [s.strip() for s in args.learners.split(",") if s.strip() not in LEARNERS[task]]
        if unknown:
            usage_error(
                "streamdas simulate",
                f"argument --learners: unknown learner(s) "
                f"{', '.join(unknown)} for {task}; choose from "
                f"{','.join(sorted(LEARNERS[task]))}",
            )
    cfg = RunConfig(
        scenario=scenario,
        n_samples=length,
        seed=args.seed,
        learners=tuple(s.strip() for s in args.learners.split(",")) if args.learners else None,
        window=args.window or max(length // 20, 200),
        eval_every=args.eval_every,
        output=output,
        progress=not args.no_progress,
        plots=not args.no_plots,
        das_kwargs=das_kwargs,
        threads=args.threads,
    )
    try:
        res = run_simulation(cfg)
    except (KeyError, TypeError, ValueError) as exc:
        usage_error("streamdas simulate", str(exc).splitlines()[0] if str(exc) else repr(exc))
    print(Path(res.files["table"]).read_text())
    for key, path in res.files.items():
        print(f"{key:>13s}: {path}")
    if "overview" in res.files:
        print(f"\nplot: {res.files['overview']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
