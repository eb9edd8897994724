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
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from streamdas.features import EMPTY_RECORD, check_label, check_target, check_value

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
    "non_numeric_feature": "a feature value is not a number (strings, null, lists, ...)",
    "non_finite_feature": "a feature value is NaN, infinite or beyond float32's range",
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


def _label_problem(y: Any, task: str) -> str | None:
    try:
        if task == "regression":
            check_target(y)
        else:
            check_label(y)
    except ValueError as exc:
        return str(exc)
    return None


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
    if not isinstance(raw_x, dict):
        return Rejection("missing_x", "no 'x' object")
    if not raw_x:
        return Rejection("missing_x", EMPTY_RECORD)
    x: dict[str, float] = {}
    for name, raw in raw_x.items():
        try:
            x[name] = check_value(name, raw)
        except ValueError as exc:
            numeric = isinstance(raw, (int, float))
            return Rejection("non_finite_feature" if numeric else "non_numeric_feature",
                             str(exc)[:200])
    y = obj.get("y")
    problem = None if y is None else _label_problem(y, task)
    if problem is not None:
        return Rejection("bad_label", problem[:200])
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
