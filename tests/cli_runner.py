"""Run many ``streamdas`` command lines as real processes from one warm interpreter.

Each command line runs in a child forked from this process after the heavy imports, with its
own standard output and error, environment and exit status, and the interpreter's handling of
what ``main`` lets escape (an exception: its traceback on stderr and status 1), so a test sees
what a user's shell would see, at a fraction of a fresh interpreter's start-up cost.

    python tests/cli_runner.py < cases.json > results.json

``cases.json``: a list of ``{"argv": [...], "env": {...}, "timeout_s": 60}``; each result is
``{"status": int | None, "stdout": str, "stderr": str}`` (``status`` ``None``: still running
at ``timeout_s``, then killed).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
import tempfile
import time
from typing import Any


def _child(argv: list[str], env: dict[str, str], out: int, err: int) -> None:
    """Become ``streamdas ARGV``: never returns."""
    status = 1
    try:
        os.dup2(out, 1)
        os.dup2(err, 2)
        for key in [k for k in os.environ if k.startswith("STREAMDAS_")]:
            del os.environ[key]
        os.environ.update(env)
        sys.argv = ["streamdas", *argv]
        from streamdas.cli import main

        try:
            status = main()
        except SystemExit as exc:  # what the interpreter does with a SystemExit
            if exc.code is None or isinstance(exc.code, int):
                status = exc.code or 0
            else:
                print(exc.code, file=sys.stderr)
                status = 1
    except BaseException:  # what the interpreter does with any other exception
        sys.excepthook(*sys.exc_info())
        status = 1
    finally:
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        os._exit(status if isinstance(status, int) else 1)


def run_case(argv: list[str], env: dict[str, str] | None = None, timeout_s: float = 60.0) -> dict[str, Any]:
    """Run ``streamdas ARGV`` in a forked child; its status, stdout and stderr."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            _child(argv, dict(env or {}), out.fileno(), err.fileno())
        deadline = time.monotonic() + timeout_s
        status: int | None = None
        while True:
            done, code = os.waitpid(pid, os.WNOHANG)
            if done:
                status = os.waitstatus_to_exitcode(code)
                break
            if time.monotonic() > deadline:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                break
            time.sleep(0.02)
        out.seek(0)
        err.seek(0)
        return {
            "status": status,
            "stdout": out.read().decode(errors="replace"),
            "stderr": err.read().decode(errors="replace"),
        }


def main() -> None:
    cases = json.load(sys.stdin)
    import benchmarks.__main__  # noqa: F401 -- the heavy imports, once, before the forks
    import consumers.__main__  # noqa: F401
    import simulations.__main__  # noqa: F401
    import streamdas.cli  # noqa: F401

    results = [run_case(c["argv"], c.get("env"), c.get("timeout_s", 60.0)) for c in cases]
    json.dump(results, sys.stdout)


if __name__ == "__main__":
    main()
