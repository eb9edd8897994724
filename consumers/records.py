"""Decode and validate input records before they reach the model.

Every input message is either turned into a :class:`Record` (features, optional label, optional
id) or rejected with a :class:`Rejection` naming a stable ``reason`` code. The service sends
rejections to the dead-letter topic, so one bad message can never fail a whole batch: the
estimator itself raises ``ValueError`` on NaN/inf/non-numeric features, and validating here first
keeps that from happening mid-batch. The checks are the library's own
(:func:`streamdas.features.check_value`, ``check_target``, ``check_label``), so the service and
the estimators accept the same inputs and the dead letter's ``detail`` is the estimator's
message: booleans are features (1 and 0) as in River, an empty ``x`` is refused by both, a bad
regression target is called the target.

Nothing here raises, whatever the bytes: numbers too large for an integer (more than
:data:`MAX_INT_DIGITS` digits) are read as infinite floats, so they are refused like any other
out-of-range value instead of stopping ``json.loads``; nesting too deep for the parser is
``invalid_json``; anything unexpected is ``internal_error``. Every field that grows with the input
is bounded: ``detail`` (:data:`MAX_DETAIL_CHARS`), feature names
(:data:`MAX_FEATURE_NAME_CHARS`) and ids (:data:`MAX_ID_CHARS`).
"""

from __future__ import annotations

import json
import math
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from streamdas.features import EMPTY_RECORD, check_label, check_target, check_value

__all__ = [
    "MAX_DETAIL_CHARS",
    "MAX_FEATURE_NAME_CHARS",
    "MAX_ID_CHARS",
    "MAX_INT_DIGITS",
    "REASONS",
    "Record",
    "Rejection",
    "check_features",
    "check_schema",
    "clip",
    "decode_json",
    "label_problem",
    "parse_record",
]

#: Longest ``detail`` of a :class:`Rejection`, in characters (longer ones are clipped).
MAX_DETAIL_CHARS = 1000
#: Longest feature name, in characters.
MAX_FEATURE_NAME_CHARS = 256
#: Longest id, in characters of its JSON text.
MAX_ID_CHARS = 256
#: JSON integers with more digits than this are read as floats (infinite for these sizes):
#: Python refuses to convert longer digit strings to ``int`` (``sys.get_int_max_str_digits``).
MAX_INT_DIGITS = 4300

#: Every dead-letter reason code the service can produce, with a short description.
REASONS: dict[str, str] = {
    "empty": "the message has no value (null / tombstone)",
    "oversized": "the value is larger than max_record_bytes",
    "oversized_key": "the message key is longer than the service's key bound",
    "undecodable": "the value is not valid UTF-8",
    "invalid_json": "the value is not valid JSON (or nests deeper than the parser can follow)",
    "not_object": "the JSON value is not an object",
    "missing_x": "the object has no 'x' field, or 'x' is not a non-empty object",
    "non_numeric_feature": "a feature value is not a number (strings, null, lists, ...)",
    "non_finite_feature": "a feature value is NaN, infinite or beyond float32's range",
    "feature_name_too_long": "a feature name is longer than MAX_FEATURE_NAME_CHARS",
    "missing_feature": "a feature of the configured schema (--features) is absent",
    "unknown_feature": "a feature not in the configured schema (--features) is present",
    "too_many_features": "the record would take the model beyond its max_features",
    "bad_label": "'y' is present but not usable for the task",
    "label_too_long": "the label is longer than the model's max_label_length",
    "too_many_classes": "a new label would take the model beyond its max_classes",
    "bad_id": "'id' is not a JSON scalar, not finite, or longer than MAX_ID_CHARS",
    "model_error": "the estimator rejected the record",
    "output_too_large": "the prediction would exceed the largest message the producer may send",
    "internal_error": "handling the record raised an unexpected error (named in the detail)",
    "undeliverable": "(counted, not written) the broker refused the dead letter even without "
    "the value's prefix",
}


def clip(text: str, limit: int = MAX_DETAIL_CHARS) -> str:
    """``text`` cut to at most ``limit`` characters (an ellipsis marks a cut).

    Examples
    --------
    >>> clip("abcdefgh", 6), clip("abc", 6)
    ('abc...', 'abc')
    """
    return text if len(text) <= limit else text[: max(limit - 3, 0)] + "..."


@dataclass(frozen=True)
class Record:
    """A validated input record.

    Parameters
    ----------
    x
        Feature name to finite float.
    y
        The label (``None`` when the record is unlabelled).
    id
        Optional caller-supplied identifier, echoed in the prediction.
    """

    x: dict[str, float]
    y: Any = None
    id: Any = None


@dataclass(frozen=True)
class Rejection:
    """Why a record cannot be used.

    Parameters
    ----------
    reason
        One of the codes in :data:`REASONS`.
    detail
        Human-readable detail (e.g. which feature), clipped to :data:`MAX_DETAIL_CHARS`.
    """

    reason: str
    detail: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "detail", clip(str(self.detail)))


#: float32's largest finite value.
_FLOAT32_MAX = struct.unpack("<f", b"\xff\xff\x7f\x7f")[0]


def check_features(raw_x: dict[str, Any]) -> dict[str, float] | Rejection:
    """A record's features as finite floats (the estimators' :func:`check_value`), or the
    :class:`Rejection` of the first one that is not usable.

    >>> check_features({"a": 1, "b": 2.5})
    {'a': 1.0, 'b': 2.5}
    >>> check_features({"a": "x"}).reason
    'non_numeric_feature'
    """
    x: dict[str, float] = {}
    for name, raw in raw_x.items():
        if len(name) > MAX_FEATURE_NAME_CHARS:
            return Rejection(
                "feature_name_too_long",
                f"feature name of {len(name)} characters > {MAX_FEATURE_NAME_CHARS}: {clip(repr(name), 80)}",
            )
        if type(raw) is float and -_FLOAT32_MAX <= raw <= _FLOAT32_MAX:  # what check_value keeps
            x[name] = raw
            continue
        try:
            x[name] = check_value(name, raw)
        except ValueError as exc:
            numeric = isinstance(raw, (int, float))
            return Rejection("non_finite_feature" if numeric else "non_numeric_feature", str(exc)[:200])
    return x


def label_problem(y: Any, task: str) -> str | None:
    """Why ``y`` cannot be a label for ``task`` (the estimators' own check), or ``None``.

    >>> label_problem(True, "regression") is not None, label_problem("cat", "classification")
    (True, None)
    """
    try:
        if task == "regression":
            check_target(y)
        else:
            check_label(y)
    except ValueError as exc:
        return str(exc)
    return None


def _bounded_int(digits: str) -> int | float:
    """``parse_int`` for :func:`json.loads`: an integer, or a float when it has too many digits
    (``inf`` or ``-inf``: Python would refuse the conversion, and no feature, label or id
    can use such a number)."""
    if len(digits) > MAX_INT_DIGITS:
        return float("-inf") if digits.startswith("-") else float("inf")
    return int(digits)


def _id_problem(rid: Any) -> str | None:
    if isinstance(rid, (dict, list)):
        return type(rid).__name__
    if isinstance(rid, float) and not math.isfinite(rid):
        return f"id {rid!r} is not a finite number (or has over {MAX_INT_DIGITS} digits)"
    text = rid if isinstance(rid, str) else repr(rid)
    if len(text) > MAX_ID_CHARS:
        return f"id of {len(text)} characters > {MAX_ID_CHARS}"
    return None


def parse_record(
    value: bytes | None, *, task: str = "classification", max_bytes: int = 1_048_576
) -> Record | Rejection:
    """Decode one message value into a :class:`Record` or a :class:`Rejection`; never raises.

    Parameters
    ----------
    value
        The raw message value.
    task
        ``"classification"`` (labels: strings, integers, booleans) or ``"regression"``
        (labels: finite numbers, not booleans).
    max_bytes
        Values longer than this are rejected as ``oversized`` without being parsed.

    Returns
    -------
    Record | Rejection

    Examples
    --------
    >>> parse_record(b'{"x": {"a": 1, "b": 2.5}, "y": 1, "id": "r1"}')
    Record(x={'a': 1.0, 'b': 2.5}, y=1, id='r1')
    >>> parse_record(b'{"x": {"a": NaN}}').reason
    'non_finite_feature'
    >>> parse_record(b'[1, 2]').reason
    'not_object'
    >>> parse_record(b'{"x": {"a": 1}, "id": ' + b"1" * 5000 + b"}").reason
    'bad_id'
    """
    try:
        return _parse(value, task, max_bytes)
    except Exception as exc:  # a record must never stop the caller: name what went wrong
        return Rejection("internal_error", f"{type(exc).__name__}: {exc}")


def decode_json(value: bytes | None, max_bytes: int) -> Any:
    """A message's JSON value, or the :class:`Rejection` saying why it has none (``empty``,
    ``oversized``, ``undecodable``, ``invalid_json``). Integers of more than
    :data:`MAX_INT_DIGITS` digits read as ``inf`` or ``-inf``.

    >>> decode_json(b'{"a": [1, 2.5]}', 100)
    {'a': [1, 2.5]}
    >>> decode_json(b"1" * 5000, 10_000)
    inf
    >>> decode_json(b"{}", 1).reason
    'oversized'
    """
    if value is None or len(value) == 0:
        return Rejection("empty")
    if len(value) > max_bytes:
        return Rejection("oversized", f"{len(value)} bytes > {max_bytes}")
    try:
        text = bytes(value).decode("utf-8")
    except UnicodeDecodeError as exc:
        return Rejection("undecodable", str(exc))
    try:
        return json.loads(text, parse_int=_bounded_int)
    except (ValueError, RecursionError) as exc:  # JSONDecodeError is a ValueError
        return Rejection("invalid_json", str(exc)[:200])


def _parse(value: bytes | None, task: str, max_bytes: int) -> Record | Rejection:
    obj = decode_json(value, max_bytes)
    if isinstance(obj, Rejection):
        return obj
    if not isinstance(obj, dict):
        return Rejection("not_object", type(obj).__name__)
    raw_x = obj.get("x")
    if not isinstance(raw_x, dict):
        return Rejection("missing_x", "no 'x' object")
    if not raw_x:
        return Rejection("missing_x", EMPTY_RECORD)
    x = check_features(raw_x)
    if isinstance(x, Rejection):
        return x
    y = obj.get("y")
    problem = None if y is None else label_problem(y, task)
    if problem is not None:
        return Rejection("bad_label", problem[:200])
    rid = obj.get("id")
    problem = _id_problem(rid)
    if problem is not None:
        return Rejection("bad_id", problem)
    return Record(x=x, y=y, id=rid)


def check_schema(x: dict[str, float], features: Sequence[str]) -> Rejection | None:
    """Compare a record's features with a model's feature schema.

    Parameters
    ----------
    x
        The record's features.
    features
        The configured schema (``--features``): the exact feature names a record must have.

    Returns
    -------
    Rejection | None
        ``None`` when the record matches the schema.

    Examples
    --------
    >>> check_schema({"a": 1.0}, ["a", "b"]).reason
    'missing_feature'
    >>> check_schema({"a": 1.0, "b": 2.0}, ["a", "b"]) is None
    True
    """
    if len(x) == len(features) and all(name in x for name in features):
        return None
    for name in features:
        if name not in x:
            return Rejection("missing_feature", f"feature {clip(repr(name), 300)}")
    extra = sorted(set(x) - set(features))
    return Rejection("unknown_feature", f"feature {clip(repr(extra[0]), 300)}")
