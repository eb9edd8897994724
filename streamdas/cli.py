"""The ``streamdas`` command: ``simulate``, ``consume``, ``bench`` and ``info``.

Each subcommand hands the rest of the command line to its own module's ``main(argv)``, so
``streamdas simulate --help`` and ``python -m simulations --help`` are the same program. Every
error is one line on stderr, ``streamdas ...: error: ...``, with exit status 2
(see :mod:`streamdas.arguments`), including a command whose extra is not installed
(``pip install 'streamdas[service]'`` for ``consume``, ``'streamdas[sim]'`` for ``simulate``).
``bench`` runs the benchmark suite of the source checkout streamdas is imported from
(``benchmarks/`` is not installed).

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
import importlib.util
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType
from typing import NoReturn

__all__ = ["main"]

COMMANDS = {
    "simulate": ("simulations.__main__", "run a drift scenario with DAS and River baselines"),
    "consume": ("consumers.__main__", "run the Kafka consumer service (or --source for no broker)"),
    "bench": ("benchmarks.__main__", "run the benchmark suite (from a source checkout)"),
}

# The modules a command needs beyond the library, and the extra that installs them.
EXTRAS = {
    "simulate": ("sim", ("matplotlib", "tqdm")),
    "consume": ("service", ("kafka", "prometheus_client")),
}

USAGE = (
    "usage: streamdas [--version] {simulate,consume,bench,info} [args...]\n\n"
    + "\n".join(f"  {name:<9} {help_}" for name, (_, help_) in COMMANDS.items())
    + "\n  info      print versions\n\nRun `streamdas COMMAND --help` for a command's options."
)


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
        print(
            f"streamdas: error: unknown command {command!r}; choose from simulate, consume, "
            f"bench, info (see streamdas --help)",
            file=sys.stderr,
        )
        return 2
    # Tiny networks: one torch and one BLAS thread are faster than several fighting over the
    # cores (streamdas.threads); STREAMDAS_THREADS overrides.
    from streamdas.arguments import integer
    from streamdas.params import usage_error
    from streamdas.threads import limit_threads

    try:
        threads = integer(1, 1024)(os.environ.get("STREAMDAS_THREADS", "1"))
    except argparse.ArgumentTypeError as exc:
        usage_error("streamdas", f"environment variable STREAMDAS_THREADS: {exc}")
    module = _command_module(command)
    with limit_threads(threads):
        return int(module.main(rest) or 0)


def _command_module(command: str) -> ModuleType:
    """The module that runs ``command``, or a usage error saying what to install."""
    prog = f"streamdas {command}"
    if command in EXTRAS:
        extra, needed = EXTRAS[command]
        missing = [name for name in needed if importlib.util.find_spec(name) is None]
        if missing:
            _usage_error(prog, f"needs {', '.join(missing)}: pip install 'streamdas[{extra}]'")
    if command == "bench":
        checkout = Path(__file__).resolve().parents[1]
        if (checkout / "benchmarks" / "__main__.py").is_file():
            if str(checkout) not in sys.path:
                sys.path.insert(0, str(checkout))
        elif importlib.util.find_spec("benchmarks") is None:
            _usage_error(
                prog,
                "the benchmark suite runs from a source checkout of streamdas "
                "(python -m benchmarks in the repository)",
            )
    return importlib.import_module(COMMANDS[command][0])


def _usage_error(prog: str, message: str) -> NoReturn:
    from streamdas.params import usage_error

    usage_error(prog, message)


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
