"""The ``streamdas`` command: ``simulate``, ``consume``, ``bench`` and ``info``.

Each subcommand hands the rest of the command line to its own module's ``main(argv)``, so
``streamdas simulate --help`` and ``python -m simulations --help`` are the same program. Every
error is one line on stderr, ``streamdas ...: error: ...``, with exit status 2
(see :mod:`streamdas.arguments`).

>>> main(["info"])  # doctest: +ELLIPSIS
streamdas ...
0
>>> main(["--version"])  # doctest: +ELLIPSIS
streamdas ...
0
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence

__all__ = ["main"]

COMMANDS = {
    "simulate": ("simulations.__main__", "run a drift scenario with DAS and River baselines"),
    "consume": ("consumers.__main__", "run the Kafka consumer service (or --source for no broker)"),
    "bench": ("benchmarks.__main__", "run the benchmark suite (from a source checkout)"),
}

USAGE = "usage: streamdas [--version] {simulate,consume,bench,info} [args...]\n\n" + "\n".join(
    f"  {name:<9} {help_}" for name, (_, help_) in COMMANDS.items()
) + "\n  info      print versions\n\nRun `streamdas COMMAND --help` for a command's options."


def main(argv: Sequence[str] | None = None) -> int:
    """Dispatch to a subcommand; returns the exit status."""
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help"):
        print(USAGE)
        return 0 if args else 2
    command, rest = args[0], args[1:]
    if command in ("-V", "--version"):
        from streamdas import __version__

        print(f"streamdas {__version__}")
        return 0
    if command == "info":
        from streamdas.arguments import ArgumentParser

        ArgumentParser(
            prog="streamdas info", description="Print the versions of streamdas, torch and River."
        ).parse_args(rest)
        import river
        import torch

        from streamdas import __version__

        print(f"streamdas {__version__} (torch {torch.__version__}, river {river.__version__})")
        return 0
    if command not in COMMANDS:
        print(f"streamdas: error: unknown command {command!r}; choose from simulate, consume, "
              f"bench, info (see streamdas --help)", file=sys.stderr)
        return 2
    # Tiny networks: one torch and one BLAS thread are far faster than several fighting over
    # the cores (see streamdas.threads for the measurements); STREAMDAS_THREADS overrides.
    from streamdas.arguments import integer
    from streamdas.params import usage_error
    from streamdas.threads import limit_threads

    try:
        threads = integer(1, 1024)(os.environ.get("STREAMDAS_THREADS", "1"))
    except argparse.ArgumentTypeError as exc:
        usage_error("streamdas", f"environment variable STREAMDAS_THREADS: {exc}")
    module = importlib.import_module(COMMANDS[command][0])
    with limit_threads(threads):
        return int(module.main(rest) or 0)


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
