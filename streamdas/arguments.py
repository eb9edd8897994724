"""Command-line conventions shared by every ``streamdas`` subcommand.

* :class:`ArgumentParser`: argparse whose errors are one line on stderr,
  ``PROG: error: MESSAGE``, with exit status 2 (argparse's status), never a usage block or a
  traceback.
* Argument types that check a value when it is read, not when the work needs it:
  :func:`integer`, :func:`number`, :func:`choice` (usable as argparse ``type=`` and on values
  read from the environment or a TOML file, which may already be numbers), and the checks of
  output paths, :func:`check_output_file` and :func:`check_output_folder`, run before any work
  starts so that a long run cannot end in an unwritable path.

Examples
--------
>>> parser = ArgumentParser(prog="demo")
>>> _ = parser.add_argument("-n", type=integer(low=1), default=10)
>>> parser.parse_args(["-n", "3"]).n
3
>>> parser.parse_args(["-n", "0"])
Traceback (most recent call last):
...
SystemExit: 2
"""

from __future__ import annotations

import argparse
import math
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

from streamdas.params import usage_error

__all__ = ["ArgumentParser", "check_output_file", "check_output_folder", "choice", "integer", "number"]

#: Largest port number (``port = integer(0, PORT_MAX)``).
PORT_MAX = 65535


class ArgumentParser(argparse.ArgumentParser):
    """argparse with one-line errors: ``PROG: error: MESSAGE`` on stderr, exit status 2.

    argparse prints its usage block above the message; for a command with many options that
    buries the one line that matters, and ``--help`` shows the usage anyway.

    Examples
    --------
    >>> import contextlib, io
    >>> parser = ArgumentParser(prog="demo")
    >>> _ = parser.add_argument("--port", type=integer(0, PORT_MAX))
    >>> err = io.StringIO()
    >>> with contextlib.redirect_stderr(err):
    ...     try:
    ...         parser.parse_args(["--port", "99999"])
    ...     except SystemExit as exc:
    ...         print(exc.code)
    2
    >>> err.getvalue()
    "demo: error: argument --port: expected an integer in 0..65535, got '99999'\\n"
    """

    def error(self, message: str) -> NoReturn:
        usage_error(self.prog, message)


def _describe(kind: str, low: float | None, high: float | None, above: float | None) -> str:
    def text(bound: float) -> str:
        return str(bound) if isinstance(bound, int) else f"{bound:g}"

    if low is not None and high is not None:
        return f"{kind} in {text(low)}..{text(high)}"
    parts = [
        f"> {text(above)}" if above is not None else None,
        f">= {text(low)}" if low is not None else None,
        f"<= {text(high)}" if high is not None else None,
    ]
    return " ".join([kind, " and ".join(p for p in parts if p)]).strip()


def integer(low: int | None = None, high: int | None = None) -> Callable[[Any], int]:
    """An argument type: an integer in ``low..high`` (either bound may be ``None``).

    Accepts a string (a flag, an environment variable) or an ``int`` (a TOML value), never a
    ``bool`` or a float.

    Examples
    --------
    >>> count = integer(low=1)
    >>> count("12"), count(12)
    (12, 12)
    >>> count("0")
    Traceback (most recent call last):
    ...
    argparse.ArgumentTypeError: expected an integer >= 1, got '0'
    >>> integer(0, 65535)(1.5)
    Traceback (most recent call last):
    ...
    argparse.ArgumentTypeError: expected an integer in 0..65535, got 1.5
    """
    what = _describe("an integer", low, high, None)

    def convert(value: Any) -> int:
        try:
            if isinstance(value, bool) or not isinstance(value, (str, int)):
                raise ValueError
            number = int(value.strip()) if isinstance(value, str) else int(value)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what}, got {value!r}") from None
        if (low is not None and number < low) or (high is not None and number > high):
            raise argparse.ArgumentTypeError(f"expected {what}, got {value!r}")
        return number

    convert.__name__ = "integer"
    return convert


def number(
    low: float | None = None, high: float | None = None, *, above: float | None = None
) -> Callable[[Any], float]:
    """An argument type: a finite number ``>= low`` (or ``> above``) and ``<= high``.

    Examples
    --------
    >>> seconds = number(above=0, high=1e9)
    >>> seconds("2.5"), seconds(3)
    (2.5, 3.0)
    >>> seconds("nan")
    Traceback (most recent call last):
    ...
    argparse.ArgumentTypeError: expected a number > 0 and <= 1e+09, got 'nan'
    """
    what = _describe("a number", low, high, above)

    def convert(value: Any) -> float:
        try:
            if isinstance(value, bool) or not isinstance(value, (str, int, float)):
                raise ValueError
            result = float(value)
        except (ValueError, OverflowError):
            raise argparse.ArgumentTypeError(f"expected {what}, got {value!r}") from None
        if (
            not math.isfinite(result)
            or (low is not None and result < low)
            or (above is not None and result <= above)
            or (high is not None and result > high)
        ):
            raise argparse.ArgumentTypeError(f"expected {what}, got {value!r}")
        return result

    convert.__name__ = "number"
    return convert


def choice(*names: str, upper: bool = False) -> Callable[[Any], str]:
    """An argument type: one of ``names`` (compared in upper case when ``upper``).

    Examples
    --------
    >>> level = choice("DEBUG", "INFO", upper=True)
    >>> level("info")
    'INFO'
    >>> level("LOUD")
    Traceback (most recent call last):
    ...
    argparse.ArgumentTypeError: expected one of DEBUG, INFO, got 'LOUD'
    """

    def convert(value: Any) -> str:
        text = value.strip().upper() if upper and isinstance(value, str) else value
        if not isinstance(text, str) or text not in names:
            raise argparse.ArgumentTypeError(f"expected one of {', '.join(names)}, got {value!r}")
        return text

    convert.__name__ = "choice"
    return convert


def _probe(folder: Path) -> None:
    """Create and remove a file in ``folder``: the only reliable test that it is writable
    (``os.access`` says yes to root everywhere, /proc included)."""
    fd, name = tempfile.mkstemp(dir=folder, prefix=".streamdas-probe-")
    os.close(fd)
    os.unlink(name)


def check_output_file(path: str) -> None:
    """Raise ``ValueError`` unless a file can be written at ``path`` (``-``: standard output).

    An existing file must be writable and not a folder; a new one's folder must exist and
    accept new files. Nothing is created or changed.

    Examples
    --------
    >>> check_output_file("-")
    >>> check_output_file("/nonexistent/dir/x.jsonl")
    Traceback (most recent call last):
    ...
    ValueError: cannot write '/nonexistent/dir/x.jsonl': folder '/nonexistent/dir' does not exist
    """
    if path == "-":
        return
    target = Path(path)
    where = f"cannot write {path!r}"
    if not path:
        raise ValueError("expected a file path or '-', got ''")
    if target.is_dir():
        raise ValueError(f"{where}: it is a folder")
    if target.exists():
        if not os.access(target, os.W_OK):
            raise ValueError(f"{where}: permission denied")
        return
    folder = target.parent
    if not folder.exists():
        raise ValueError(f"{where}: folder '{folder}' does not exist")
    if not folder.is_dir():
        raise ValueError(f"{where}: '{folder}' is not a folder")
    try:
        _probe(folder)
    except OSError as exc:
        raise ValueError(f"{where}: cannot create files in '{folder}' ({exc.strerror or exc})") from None


def check_output_folder(path: str) -> None:
    """Raise ``ValueError`` unless files can be written in folder ``path``, existing or to be
    created (its nearest existing ancestor must then be a writable folder). Nothing is left
    behind.

    Examples
    --------
    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     check_output_folder(tmp + "/new/results")
    >>> check_output_folder("/proc/nope")
    Traceback (most recent call last):
    ...
    ValueError: cannot write in '/proc/nope': cannot create files in '/proc' (...)
    """
    if not path:
        raise ValueError("expected a folder path, got ''")
    target = Path(path)
    where = f"cannot write in {path!r}"
    existing = target
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        what = "it" if existing == target else f"'{existing}'"
        raise ValueError(f"{where}: {what} is not a folder")
    try:
        if existing == target:
            _probe(target)
        else:
            os.rmdir(tempfile.mkdtemp(dir=existing, prefix=".streamdas-probe-"))
    except OSError as exc:
        raise ValueError(f"{where}: cannot create files in '{existing}' ({exc.strerror or exc})") from None
