"""Decode and validate input records before they reach the model.

Every input message is either turned into a :class:`Record` (features, optional label, optional
id) or rejected with a :class:`Rejection` naming a stable ``reason`` code. The service sends
rejections to the dead-letter topic, so one bad message can never fail a whole batch: the
estimator itself raises ``ValueError`` on NaN/inf/non-numeric features, and validating here first
keeps that from happening mid-batch.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

__all__ = [
    "REASONS",
    "Record",
    "Rejection",
    "check_schema",
    "parse_record",
]

#: Every dead-letter reason code this module can produce, with a short description.
REASONS: dict[str, str] = {
    "empty": "the message has no value (null / tombstone)",
    "oversized": "the value is larger than max_record_bytes",
    "undecodable": "the value is not valid UTF-8",
    "invalid_json": "the value is not valid JSON",
    "not_object": "the JSON value is not an object",
    "missing_x": "the object has no 'x' field, or 'x' is not a non-empty object",
    "non_numeric_feature": "a feature value is not a number (strings, booleans, null, ...)",
    "non_finite_feature": "a feature value is NaN or infinite",
    "missing_feature": "a feature of the model's schema is absent",
    "unknown_feature": "a feature not in the model's schema is present",
    "bad_label": "'y' is present but not usable for the task",
    "bad_id": "'id' is not a JSON scalar",
    "model_error": "the estimator rejected the record",
}


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
        Human-readable detail (e.g. which feature).
    """

    reason: str
    detail: str = ""


def _label_ok(y: Any, task: str) -> bool:
    if task == "regression":
        return (
            isinstance(y, (int, float))
            and not isinstance(y, bool)
            and math.isfinite(float(y))
        )
    if isinstance(y, float):
        return math.isfinite(y)
    return isinstance(y, (str, int, bool))


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    try:
        return float(value)
    except OverflowError:  # a huge JSON integer
        return math.inf


def parse_record(
    value: bytes | None, *, task: str = "classification", max_bytes: int = 1_048_576
) -> Record | Rejection:
    """Decode one message value into a :class:`Record` or a :class:`Rejection`.

    Parameters
    ----------
    value
        The raw message value.
    task
        ``"classification"`` (labels: strings, integers, booleans) or ``"regression"``
        (labels: finite numbers).
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
    """
    if value is None or len(value) == 0:
        return Rejection("empty")
    if len(value) > max_bytes:
        return Rejection("oversized", f"{len(value)} bytes > {max_bytes}")
    try:
        text = value.decode("utf-8")
    except UnicodeDecodeError as exc:
        return Rejection("undecodable", str(exc))
    try:
        obj = json.loads(text)
    except (json.JSONDecodeError, RecursionError) as exc:
        return Rejection("invalid_json", str(exc)[:200])
    if not isinstance(obj, dict):
        return Rejection("not_object", type(obj).__name__)
    raw_x = obj.get("x")
    if not isinstance(raw_x, dict) or not raw_x:
        return Rejection("missing_x")
    x: dict[str, float] = {}
    for name, raw in raw_x.items():
        number = _number(raw)
        if number is None:
            return Rejection("non_numeric_feature", f"feature {name!r}: {type(raw).__name__}")
        if not math.isfinite(number):
            return Rejection("non_finite_feature", f"feature {name!r}: {raw!r}")
        x[name] = number
    y = obj.get("y")
    if y is not None and not _label_ok(y, task):
        return Rejection("bad_label", f"{task} label {y!r}"[:200])
    rid = obj.get("id")
    if isinstance(rid, (dict, list)):
        return Rejection("bad_id", type(rid).__name__)
    return Record(x=x, y=y, id=rid)


def check_schema(x: dict[str, float], features: Sequence[str]) -> Rejection | None:
    """Compare a record's features with a model's feature schema.

    Parameters
    ----------
    x
        The record's features.
    features
        The schema: the exact feature names the model expects.

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
            return Rejection("missing_feature", f"feature {name!r}")
    extra = sorted(set(x) - set(features))
    return Rejection("unknown_feature", f"feature {extra[0]!r}")
