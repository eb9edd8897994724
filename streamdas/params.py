"""Estimator arguments given as text (``--das alpha=1e-3``, ``--model-param lr=0.01``).

The command line parses ``NAME=VALUE`` pairs into Python values; :func:`check_params` then
checks each value against the type of the constructor's default and builds the estimator once,
so a bad value fails *before* a run starts, with one message naming the argument and the forms
it accepts (no traceback, no ``'<' not supported between instances of 'str' and 'int'``).
:func:`usage_error` prints such a message the way argparse does and exits with status 2.

Examples
--------
>>> from streamdas import DASClassifier
>>> check_params(DASClassifier, {"alpha": 1e-3, "hidden_sizes": [8, 8]})
{'alpha': 0.001, 'hidden_sizes': (8, 8)}
>>> check_params(DASClassifier, {"alpha": "abc"})
Traceback (most recent call last):
...
ValueError: alpha='abc': expected a number (float), e.g. alpha=0.0001
>>> check_params(DASClassifier, {"nosuch": 1})  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
ValueError: unknown parameter 'nosuch'; DASClassifier accepts: activation, alpha, ...
"""

from __future__ import annotations

import inspect
import sys
from collections.abc import Mapping
from typing import Any, NoReturn

__all__ = ["check_params", "usage_error"]


def _expected(name: str, default: Any) -> tuple[str, str] | None:
    """(description, example) of the values ``name`` accepts, from its default."""
    if isinstance(default, bool):
        return "true or false", f"{name}=false" if default else f"{name}=true"
    if isinstance(default, int):
        return "an integer", f"{name}={default}"
    if isinstance(default, float):
        return "a number (float)", f"{name}={default:g}"
    if isinstance(default, str):
        return "a string", f"{name}={default}"
    if isinstance(default, tuple):
        return "a list of integers", f"{name}=[{','.join(str(v) for v in default)}]"
    return None


def _coerce(name: str, value: Any, default: Any) -> Any:
    expected = _expected(name, default)
    if expected is None or value is None:
        return value
    ok: bool
    if isinstance(default, bool):
        ok = isinstance(value, bool)
    elif isinstance(default, int):
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif isinstance(default, float):
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        value = float(value) if ok else value
    elif isinstance(default, str):
        ok = isinstance(value, str)
    else:  # tuple
        ok = isinstance(value, (list, tuple)) and all(
            isinstance(v, int) and not isinstance(v, bool) for v in value
        )
        value = tuple(value) if ok else value
    if not ok:
        raise ValueError(f"{name}={value!r}: expected {expected[0]}, e.g. {expected[1]}")
    return value


def check_params(cls: type, params: Mapping[str, Any]) -> dict[str, Any]:
    """Check constructor arguments of ``cls`` given on a command line; returns them coerced.

    Parameters
    ----------
    cls
        The estimator class (e.g. :class:`~streamdas.DASClassifier`).
    params
        Argument name to parsed value (numbers, booleans, strings, lists).

    Returns
    -------
    dict
        The arguments, ints widened to floats and lists to tuples where the default says so.

    Raises
    ------
    ValueError
        One line naming the argument and the values it accepts, or the estimator's own
        validation message.
    """
    signature = inspect.signature(cls)
    accepted = {
        n: p.default
        for n, p in signature.parameters.items()
        if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
    }
    out: dict[str, Any] = {}
    for name, value in params.items():
        if name not in accepted:
            raise ValueError(
                f"unknown parameter {name!r}; {cls.__name__} accepts: {', '.join(sorted(accepted))}"
            )
        out[name] = _coerce(name, value, accepted[name])
    try:
        cls(**out)
    except (TypeError, ValueError) as exc:
        shown = ", ".join(f"{k}={v!r}" for k, v in out.items())
        raise ValueError(f"{cls.__name__}({shown}): {exc}") from None
    return out


def usage_error(prog: str, message: str) -> NoReturn:
    """Print ``PROG: error: MESSAGE`` on stderr and exit with status 2 (argparse's convention)."""
    print(f"{prog}: error: {message}", file=sys.stderr)
    raise SystemExit(2)
