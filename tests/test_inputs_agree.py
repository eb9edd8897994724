"""The library and the service accept the same inputs: a record is either learned by both
``DASClassifier``/``DASRegressor`` and ``streamdas consume``, or refused by both with the same
message (the dead letter's ``detail`` is the estimator's ``ValueError``)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from consumers.records import Record, Rejection, parse_record
from streamdas import DASClassifier, DASRegressor

X_CASES: list[tuple[str, dict[str, Any]]] = [
    ("numbers", {"a": 1, "b": 2.5}),
    ("boolean", {"a": True, "b": 2.5}),
    ("empty", {}),
    ("string", {"a": "1.5"}),
    ("null", {"a": None}),
    ("list", {"a": [1.0]}),
    ("nan", {"a": float("nan")}),
    ("infinity", {"a": float("-inf")}),
    ("beyond float32", {"a": 1e39}),
    ("huge integer", {"a": 10**400}),
]

Y_CASES: list[tuple[str, str, Any]] = [
    ("classification", "string", "spam"),
    ("classification", "boolean", True),
    ("classification", "float", 1.5),
    ("classification", "nan", float("nan")),
    ("classification", "list", [1]),
    ("classification", "object", {"k": 1}),
    ("regression", "number", 3.25),
    ("regression", "string", "abc"),
    ("regression", "boolean", False),
    ("regression", "nan", float("nan")),
    ("regression", "beyond float32", -1e39),
    ("regression", "list", [1.0]),
]


def _library(task: str, x: dict[str, Any], y: Any) -> str | None:
    model = (DASClassifier if task == "classification" else DASRegressor)(seed=0, batch_size=1)
    try:
        model.learn_one(x, y)
    except ValueError as exc:
        return str(exc)
    return None


def _service(task: str, x: dict[str, Any], y: Any) -> str | None:
    result = parse_record(json.dumps({"x": x, "y": y}).encode(), task=task)
    if isinstance(result, Rejection):
        return result.detail
    assert isinstance(result, Record)
    return None


@pytest.mark.parametrize(("case", "x"), X_CASES, ids=[c for c, _ in X_CASES])
def test_features_accepted_or_refused_alike(case: str, x: dict[str, Any]) -> None:
    library, service = _library("classification", x, 1), _service("classification", x, 1)
    assert library == service, (case, library, service)


@pytest.mark.parametrize(("task", "case", "y"), Y_CASES, ids=[f"{t}-{c}" for t, c, _ in Y_CASES])
def test_labels_accepted_or_refused_alike(task: str, case: str, y: Any) -> None:
    x = {"a": 1.0}
    library, service = _library(task, x, y), _service(task, x, y)
    assert library == service, (case, library, service)
    if task == "regression" and library is not None:
        assert library.startswith("target "), library  # the target, not a feature


def test_what_is_accepted_and_what_is_not() -> None:
    """The agreement above is not agreement on nothing: pin the policy itself."""
    assert _service("classification", {"a": True}, 1) is None  # booleans are 1/0, as in River
    assert _service("classification", {}, 1) == "x has no features: a record needs at least one"
    assert parse_record(b'{"x": {}}').reason == "missing_x"
    assert _service("regression", {"a": 1.0}, True) == "target is not numeric: True (bool)"
    assert parse_record(b'{"x": {"a": 1}, "y": "abc"}', task="regression").reason == "bad_label"
    assert parse_record(b'{"x": {"a": "1"}}').reason == "non_numeric_feature"
    assert parse_record(b'{"x": {"a": 1e400}}').reason == "non_finite_feature"
